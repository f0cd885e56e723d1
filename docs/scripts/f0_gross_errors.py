"""Where the F0 RMSE of copy synthesis comes from: a few frames far off, or all frames a bit.

    for S in 0 1 2 3; do dmol evaluate pretrained data --max-utterances 28 --max-seconds 3 \\
        --seed $S --wav-dir out/s$S; done
    python docs/scripts/f0_gross_errors.py out/s0 out/s1 out/s2 out/s3

Reads ``NAME_original.wav``, ``NAME_wavenet.wav`` and ``NAME_griffinlim.wav`` (as written by
``dmol evaluate --wav-dir``; one folder per seed) and tracks F0 as ``dmol evaluate`` does
(WORLD harvest, 5 ms frames). On the frames both signals call voiced it splits the error into
*gross* frames (more than 300 cents off, a minor third) and the rest, and prints per system:
the F0 RMSE (Hz, mean over prompts, the metric), the same without the gross frames, their
share of the frames and of the squared error. For the WaveNet's gross frames it says where they
are: where the recording's F0 is low for the prompt (below 0.75 of its median: creak, phrase
ends), within 20 ms of a voicing edge of the recording, where the recording's pitch moves fast
(over 100 cents in 10 ms), and whether the output's pitch is that of the mel's estimate
(``dmol.audio.pitch``, the one the network was given; within 100 cents) rather than the
recording's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dmol.audio.features import recipe_for
from dmol.audio.metrics import f0_track
from dmol.audio.pitch import pitch_from_mel

GROSS_CENTS = 300.0
SYSTEMS = {"WaveNet": "wavenet", "Griffin-Lim": "griffinlim"}


def cents(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1200.0 * np.log2(a / b)


def main(folders: list[str]) -> None:
    recipe = recipe_for("lp-16k-ltpe")
    stats = {s: {"rmse": [], "rmse_fine": [], "frames": 0, "gross": 0, "sq": 0.0, "sq_gross": 0.0}
             for s in SYSTEMS}
    where = {"low": 0, "edge": 0, "fast": 0, "follows estimate": 0, "near recording": 0}
    for folder in folders:
        for orig in sorted(Path(folder).glob("*_original.wav")):
            name = orig.name[: -len("_original.wav")]
            x, sr = sf.read(orig, dtype="float32")
            fx, t = f0_track(x, sr)
            voiced = fx > 0
            median = np.median(fx[voiced]) if voiced.any() else 0.0
            # the mel's estimate at each 5 ms frame: the mel frame whose centre is nearest
            est, _ = pitch_from_mel(torch.from_numpy(recipe.compute(x)), recipe)
            est = est.numpy()[np.minimum(np.round(t * sr / recipe.hop_length).astype(int),
                                         len(est) - 1)]
            edge = np.zeros_like(voiced)
            change = np.flatnonzero(np.diff(voiced.astype(int))) + 1
            for c in change:
                edge[max(0, c - 4): c + 4] = True
            slope = np.zeros(len(fx))
            both_v = voiced[1:] & voiced[:-1]
            slope[1:][both_v] = np.abs(cents(fx[1:][both_v], fx[:-1][both_v]))  # per 5 ms
            for system, suffix in SYSTEMS.items():
                y, _ = sf.read(Path(folder) / f"{name}_{suffix}.wav", dtype="float32")
                fy, _ = f0_track(y[: len(x)], sr)
                n = min(len(fx), len(fy))
                both = (fx[:n] > 0) & (fy[:n] > 0)
                if not both.any():
                    continue
                idx = np.flatnonzero(both)
                err = fy[idx] - fx[idx]
                gross = np.abs(cents(fy[idx], fx[idx])) > GROSS_CENTS
                s = stats[system]
                s["rmse"].append(np.sqrt(np.mean(err**2)))
                if (~gross).any():
                    s["rmse_fine"].append(np.sqrt(np.mean(err[~gross] ** 2)))
                s["frames"] += len(idx)
                s["gross"] += int(gross.sum())
                s["sq"] += float(np.sum(err**2))
                s["sq_gross"] += float(np.sum(err[gross] ** 2))
                if system == "WaveNet":
                    g = idx[gross]
                    where["low"] += int(np.sum(fx[g] < 0.75 * median))
                    where["edge"] += int(np.sum(edge[g]))
                    fast = np.maximum(slope[g], slope[np.minimum(g + 1, len(slope) - 1)])
                    where["fast"] += int(np.sum(fast > 50.0))  # > 100 cents in 10 ms
                    where["follows estimate"] += int(np.sum(np.abs(cents(fy[g], est[g])) < 100))
                    where["near recording"] += int(np.sum(np.abs(cents(est[g], fx[g])) < 100))
    print(f"{len(folders)} folder(s); gross = more than {GROSS_CENTS:g} cents off")
    print("| system | F0 RMSE Hz | without gross frames | gross frames | their share of the "
          "squared error |")
    print("|---|---|---|---|---|")
    for system, s in stats.items():
        print(f"| {system} | {np.mean(s['rmse']):.1f} | {np.mean(s['rmse_fine']):.1f} | "
              f"{s['gross']} of {s['frames']} ({s['gross'] / s['frames']:.1%}) | "
              f"{s['sq_gross'] / s['sq']:.0%} |")
    n = max(1, stats["WaveNet"]["gross"])
    print("\nthe WaveNet's gross frames (a frame may count in several rows):")
    labels = {"low": "the recording's F0 below 0.75 of the prompt's median (creak, phrase ends)",
              "edge": "within 20 ms of a voicing edge of the recording",
              "fast": "the recording's pitch moving over 100 cents in 10 ms",
              "follows estimate": "the output within 100 cents of the mel's estimate",
              "near recording": "the mel's estimate within 100 cents of the recording"}
    for key, label in labels.items():
        print(f"  {label}: {where[key]} ({where[key] / n:.0%})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
