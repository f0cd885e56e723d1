"""Where the voicing (V/UV) errors of `dmol evaluate` are: by direction, by the recording's
level, at the start of the output or later, and which stretches.

Reads the `--wav-dir` folders of `dmol evaluate` runs (NAME_original / _wavenet / _griffinlim
.wav, written as the scored float samples) and tracks F0 with Harvest as `dmol evaluate` does
(5 ms frames, 71-800 Hz), so the totals equal the V/UV column of those runs (made with the
default `--f0-method harvest`). The figures are
fractions of all frames, averaged over prompts (as `dmol evaluate` averages) and then over the
folders given (one per seed).

    dmol evaluate pretrained data --max-utterances 8 --max-seconds 3 --seed 0 --wav-dir w0
    python docs/scripts/vuv_breakdown.py w0 w1 --stretches

`--pcm16` also scores each output after a 16-bit WAV round trip (what `dmol vocode` writes):
an inaudible change, which shows how stable the voicing decisions are.
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from dmol.audio.metrics import f0_track

LEVELS = (-60.0, -40.0, -20.0)  # dB re the prompt's loudest frame: bin edges
START_S = 0.12  # "the start": the output's first 120 ms, where its past is still empty
SYSTEMS = ("wavenet", "griffinlim")


def _levels(x: np.ndarray, sr: int, frames: int) -> np.ndarray:
    """Level of each 5 ms frame (25 ms window) in dB re the loudest."""
    hop, half = sr // 200, sr // 80
    rms = np.array([np.sqrt(np.mean(x[max(0, i * hop - half): i * hop + half] ** 2) + 1e-20)
                    for i in range(frames)])
    return 20 * np.log10(rms / rms.max())


def _stretches(bad: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """(first, last) frame of each run of at least ``min_frames`` True values."""
    edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(np.int8), 0]))
    return [(a, b - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_frames]


def _pcm16(y: np.ndarray, sr: int) -> np.ndarray:
    """``y`` written to a 16-bit WAV in memory and read back."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    buf.seek(0)
    return sf.read(buf, dtype="float64")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="--wav-dir folders of dmol evaluate")
    ap.add_argument("--stretches", action="store_true",
                    help="also list each prompt's error stretches of >= 4 frames (20 ms)")
    ap.add_argument("--pcm16", action="store_true",
                    help="also the V/UV error after a 16-bit WAV round trip of each output")
    a = ap.parse_args()
    edges = (-np.inf, *LEVELS, np.inf)
    cells = [f"{d}{k}" for d in ("V->UV", "UV->V")
             for k in ("start", *(f"[{lo:g},{hi:g})" for lo, hi in zip(edges[:-1], edges[1:],
                                                                       strict=True)))]
    sums = {s: np.zeros(len(cells)) for s in SYSTEMS}
    totals = {s: 0.0 for s in SYSTEMS}
    rounded = {s: 0.0 for s in SYSTEMS}
    runs = 0
    for d in a.dirs:
        prompts = sorted(p.name[: -len("_original.wav")] for p in d.glob("*_original.wav"))
        if not prompts:
            raise SystemExit(f"{d}: no *_original.wav (a dmol evaluate --wav-dir folder?)")
        runs += 1
        per = {s: np.zeros(len(cells)) for s in SYSTEMS}
        for name in prompts:
            for s in ("original", *SYSTEMS):
                if sf.info(str(d / f"{name}_{s}.wav")).subtype != "FLOAT":
                    warnings.warn(f"{d / name}_{s}.wav is not 32-bit float: not the samples "
                                  "dmol evaluate scored (a folder from before session 16?)",
                                  stacklevel=1)
            x, sr = sf.read(str(d / f"{name}_original.wav"), dtype="float64")
            for s in SYSTEMS:
                y, _ = sf.read(str(d / f"{name}_{s}.wav"), dtype="float64")
                x_, y_ = x[: len(y)], y[: len(x)]  # as dmol.audio.metrics trims a pair
                fx, _ = f0_track(x_, sr)
                fy, _ = f0_track(y_, sr)
                level = _levels(x_, sr, len(fx))
                start = np.arange(len(fx)) * 0.005 < START_S
                n = min(len(fx), len(fy))
                vx, vy, lv, st = fx[:n] > 0, fy[:n] > 0, level[:n], start[:n]
                row = []
                for wrong in (vx & ~vy, ~vx & vy):
                    row.append(np.sum(wrong & st))
                    row += [np.sum(wrong & ~st & (lv >= lo) & (lv < hi))
                            for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
                per[s] += np.array(row) / n / len(prompts)
                if a.pcm16:
                    fq, _ = f0_track(_pcm16(y_, sr), sr)
                    m = min(len(fx), len(fq))
                    rounded[s] += np.mean((fx[:m] > 0) != (fq[:m] > 0)) / len(prompts)
                if a.stretches and s == "wavenet":
                    marks = [f"{i * 0.005:.2f}-{j * 0.005:.2f}s "
                             f"{'V->UV' if vx[i] else 'UV->V'} {lv[i:j + 1].mean():.0f} dB "
                             f"(ref {fx[i:j + 1].max():.0f} Hz, gen {fy[i:j + 1].max():.0f} Hz)"
                             for i, j in _stretches(vx != vy, 4)]
                    print(f"{d.name} {name}: {np.mean(vx != vy):.3f}  " + "; ".join(marks))
        for s in SYSTEMS:
            sums[s] += per[s]
            totals[s] += per[s].sum()
    print(f"\nfractions of frames, mean over prompts and {runs} run(s); 'start' = the first "
          f"{START_S * 1000:.0f} ms, levels in dB re the prompt's loudest 5 ms frame")
    width = max(len(c) for c in cells)
    print(f"{'':{width}}  " + "  ".join(f"{s:>10}" for s in SYSTEMS))
    for i, c in enumerate(cells):
        print(f"{c:{width}}  " + "  ".join(f"{sums[s][i] / runs:10.4f}" for s in SYSTEMS))
    print(f"{'V/UV error':{width}}  " + "  ".join(f"{totals[s] / runs:10.4f}" for s in SYSTEMS))
    if a.pcm16:
        print(f"{'... as 16-bit WAV':{width}}  "
              + "  ".join(f"{rounded[s] / runs:10.4f}" for s in SYSTEMS))


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="pkg_resources")
    main()
