"""Choose the post-filters' settings: paired scores of one vocoder output under several.

Each folder is the ``--wav-dir`` of ``dmol evaluate ... --postfilter 0 --envelope 0`` (the
model's own samples: ``NAME_original.wav`` and ``NAME_wavenet.wav``). Every setting
``GAIN:DB[:PASSES]`` runs the pitch post-filter of gain GAIN (F0 estimated from the original's
mel, what the vocoder was given) and then PASSES (default 2) envelope passes limited to DB dB
(0: none) on the same WaveNet audio, so the rows differ only by the filters; the means are
over all folders::

    for s in 0 1; do dmol evaluate pretrained data --max-utterances 8 --max-seconds 3 \\
        --seed $s --postfilter 0 --envelope 0 --wav-dir out/held-out_s$s; done
    python docs/scripts/postfilter_settings.py out/held-out_s0 out/held-out_s1 \\
        --settings 0:0,0.35:0,0:6,0.7:6,0.7:6:3
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dmol.audio.features import recipe_for
from dmol.audio.metrics import evaluate_pair
from dmol.audio.pitch import pitch_from_mel
from dmol.audio.postfilter import envelope_postfilter, pitch_postfilter

KEYS = ("mcd_db", "log_mel_l1", "mrstft", "f0_rmse_hz", "vuv_error")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--settings", default="0:0,0.35:0,0:6,0.7:6,0.7:6:3")
    p.add_argument("--preset", default="small-16k", help="the mel recipe of the model")
    a = p.parse_args()
    gains = [tuple(float(v) for v in g.split(":")) for g in a.settings.split(",")]
    recipe = recipe_for(a.preset)
    hop = recipe.hop_length
    scores = {g: [] for g in gains}  # per folder: the mean over its utterances
    for folder in a.folders:
        names = sorted(f.name[: -len("_original.wav")] for f in folder.glob("*_original.wav"))
        if not names:
            raise SystemExit(f"{folder}: no NAME_original.wav (a dmol evaluate --wav-dir?)")
        per = {g: [] for g in gains}
        for name in names:
            x, sr = sf.read(folder / f"{name}_original.wav")
            y, _ = sf.read(folder / f"{name}_wavenet.wav")
            frames = len(y) // hop
            mel = recipe.compute(x)[:frames]
            f0 = pitch_from_mel(torch.from_numpy(mel)[None], recipe)[0][0].numpy()
            for g in gains:
                z = pitch_postfilter(y[:frames * hop], f0, sr, hop, gain=g[0])
                for _ in range(int(g[2]) if len(g) > 2 else 2) if g[1] > 0 else ():
                    z = envelope_postfilter(z, mel, recipe, max_gain_db=g[1])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = evaluate_pair(x, z, sr)
                per[g].append([r[k] for k in KEYS])
        for g in gains:
            scores[g].append(np.nanmean(per[g], axis=0))
        print(f"{folder}: {len(names)} utterances", flush=True)
    print("| pitch gain | envelope dB x passes | MCD dB | log-mel L1 | MR-STFT | F0 RMSE Hz "
          "| V/UV |")
    print("|---|---|---|---|---|---|---|")
    for g in gains:
        m = np.mean(scores[g], axis=0)
        env = f"{g[1]:g} x {int(g[2]) if len(g) > 2 else 2}" if g[1] > 0 else "off"
        print(f"| {g[0]:g} | {env} | {m[0]:.2f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.1f} | "
              f"{m[4]:.3f} |")


if __name__ == "__main__":
    main()
