"""Pure tones through an LP vocoder: does the stream lock into a saturated limit cycle?

Vocodes audio files (default: the three tones among the French prompts, `beep`, `beeperr`,
`ascending-2tone`) with many seeds, the model's own samples (incremental, no post-filters),
and prints per file the log-mel L1 to the input's mel (median and worst seed), how many seeds
ran away (L1 > 1 Np), and the strongest frequency of the output against the input's; draws
the spectrograms of one file's input and its worst seed. Run it on two commits to compare
synthesis code on the same model::

    python docs/scripts/lp_loop_tones.py --out docs/figures/lp_loop_tones_after.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dmol.audio.corpus import prepare_audio  # noqa: E402
from dmol.wavenet.checkpoint import load_model  # noqa: E402
from dmol.wavenet.synthesis import vocode  # noqa: E402

JUNE = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
TONES = [JUNE / f"{n}.g722" for n in ("beep", "beeperr", "ascending-2tone")]


def peak_hz(x: np.ndarray, sr: int) -> float:
    """The strongest frequency of the first 4096 samples (Hann window)."""
    n = min(len(x), 4096)
    spec = np.abs(np.fft.rfft(x[:n] * np.hanning(n)))
    return float(spec.argmax() * sr / n)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, default=TONES)
    p.add_argument("--checkpoint", default="pretrained")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--out", type=Path, help="PNG: spectrograms of the first file, worst seed")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, head, recipe, _ = load_model(a.checkpoint)
    sr = recipe.sample_rate
    rows, worst_pair = [], None
    for f in a.files:
        audio, mel = prepare_audio(f, recipe)
        l1s, hz, outs = [], [], []
        for s in range(a.seeds):
            y = vocode(model, head, recipe, mel, mode="incremental", seed=s, progress=False)
            l1s.append(float(np.abs(recipe.compute(y) - mel).mean()))
            hz.append(peak_hz(y, sr))
            outs.append(y)
        worst = int(np.argmax(l1s))
        rows.append({"name": f.stem, "input_hz": peak_hz(audio, sr),
                     "median_l1": float(np.median(l1s)), "worst_l1": l1s[worst],
                     "worst_seed": worst, "ran_away": int(sum(v > 1.0 for v in l1s)),
                     "seeds": a.seeds, "median_hz": float(np.median(hz))})
        if worst_pair is None:
            worst_pair = (f.stem, audio, outs[worst], worst, l1s[worst])
        r = rows[-1]
        print(f"{r['name']:16s} input {r['input_hz']:6.0f} Hz | output median {r['median_hz']:6.0f}"
              f" Hz | log-mel L1 median {r['median_l1']:.2f}, worst {r['worst_l1']:.2f} (seed "
              f"{worst}) | ran away (L1 > 1): {r['ran_away']}/{a.seeds}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"checkpoint": a.checkpoint, "rows": rows}, indent=1))
    if a.out and worst_pair:
        name, x, y, seed, l1 = worst_pair
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
        for ax, sig, title in ((axes[0], x, f"{name}: input"),
                               (axes[1], y, f"vocoded, worst of {a.seeds} seeds (seed {seed},"
                                            f" log-mel L1 {l1:.2f})")):
            ax.specgram(sig, NFFT=512, Fs=sr, noverlap=384, cmap="magma", vmin=-120)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("time [s]")
        axes[0].set_ylabel("frequency [Hz]")
        fig.tight_layout()
        fig.savefig(a.out, dpi=110)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
