"""Spectrograms for docs/quality.md: an utterance, Griffin-Lim, the WaveNet's own samples and
the same samples through the command-line post-filters, all vocoded from the utterance's own
log-mel (scale temperature 1).

    python docs/scripts/quality_figures.py pretrained data/ docs/figures/quality_spectrograms.png
"""

from __future__ import annotations

import sys

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dmol.audio.corpus import list_split, load_utterance  # noqa: E402
from dmol.audio.features import griffin_lim  # noqa: E402
from dmol.wavenet.checkpoint import load_model  # noqa: E402
from dmol.wavenet.demo import _spectrogram_db  # noqa: E402
from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, vocode  # noqa: E402


def main(model_path: str, data_dir: str, out: str, index: int = 2, seconds: float = 3.0) -> None:
    torch.set_num_threads(1)
    model, head, recipe, info = load_model(model_path)
    path = list_split(data_dir, "val")[index]
    audio, mel = load_utterance(path)
    frames = min(len(mel), int(seconds * recipe.sample_rate) // recipe.hop_length)
    audio, mel = audio[: frames * recipe.hop_length], mel[:frames]
    rows = [("original", audio), ("Griffin-Lim (60 iterations)", griffin_lim(mel, recipe))]
    both = f"pitch post-filter {CLI_POSTFILTER:g} + envelope {CLI_ENVELOPE_DB:g} dB"
    for pf, env, what in ((0.0, 0.0, "its own samples"),
                          (CLI_POSTFILTER, CLI_ENVELOPE_DB, both)):
        wave = vocode(model, head, recipe, mel, mode="folded", seed=0, postfilter=pf,
                      envelope=env)
        rows.append((f"LP-WaveNet, step {info['step']}: {what}", np.asarray(wave)))
    fig, axs = plt.subplots(len(rows), 1, figsize=(10, 2.4 * len(rows)), constrained_layout=True)
    top = max(_spectrogram_db(w).max() for _, w in rows)
    for ax, (name, wave) in zip(axs, rows, strict=True):
        s = _spectrogram_db(wave)
        ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, len(wave) / recipe.sample_rate, 0, recipe.sample_rate / 2000))
        ax.set(ylabel="kHz", title=f"{name} (rms {np.std(wave):.3f})")
    axs[-1].set_xlabel(f"time (s): {path.stem}, held out")
    fig.savefig(out, dpi=72)


if __name__ == "__main__":
    main(*sys.argv[1:4])
