"""Where the MR-STFT and F0 errors of copy synthesis come from: the low harmonics' pitch.

    dmol evaluate pretrained data --max-utterances 8 --max-seconds 3 --wav-dir out/
    python docs/scripts/voiced_error.py out/ [more folders]

Reads ``NAME_original.wav``, ``NAME_wavenet.wav`` and ``NAME_griffinlim.wav`` (as written by
``dmol evaluate --wav-dir`` and ``dmol demo``) and prints, per system:

* the spectral convergence ``||X - Y|| / ||X||`` over the metric's STFT resolutions, and the
  share of its squared error below 1 kHz and in the louder half of the frames;
* the pitch deviation from the original, in cents, on frames both call voiced (WORLD harvest,
  one frame per mel hop): median and the share within 20 / 50 cents. For the WaveNet also its
  deviation from the pitch it was given (``dmol.audio.pitch``, the mel's estimate);
* the jitter around the given pitch: the median change, from one voiced frame to the next, of
  the pitch's deviation (cents) from the mel's estimate, for the original and each system (a
  clock that slips shows here; the speaker's own intonation, which the estimate follows,
  mostly cancels);
* the level by band: in the louder half of the frames (2048-point STFT), the mean of
  ``log |Y| - log |X|`` per octave band (nats; > 0: the system is louder there than the
  original), which shows a rumble below the voice or noise filling the gaps between harmonics.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dmol.audio.features import recipe_for
from dmol.audio.metrics import STFT_RESOLUTIONS, _stft_mag
from dmol.audio.pitch import pitch_from_mel

SYSTEMS = ("wavenet", "griffinlim")
BANDS_HZ = (0, 60, 125, 250, 500, 1000, 2000, 4000, 8000)  # octaves, the lowest split at 60 Hz


def _harvest(x: np.ndarray, sr: int, period_ms: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyworld

    f0, _ = pyworld.harvest(x.astype(np.float64), sr, frame_period=period_ms)
    return f0


def _cents(ref: np.ndarray, f0: np.ndarray) -> np.ndarray:
    n = min(len(ref), len(f0))
    ref, f0 = ref[:n], f0[:n]
    both = (ref > 0) & (f0 > 0)
    return 1200.0 * np.log2(f0[both] / ref[both])


def _jitter(f0: np.ndarray, given: np.ndarray) -> np.ndarray:
    """|change| of the deviation from ``given`` (cents) between consecutive voiced frames."""
    n = min(len(f0), len(given))
    f0, given = f0[:n], given[:n]
    ok = (f0 > 0) & (given > 0)
    dev = 1200.0 * np.log2(np.where(ok, f0, 1.0) / np.where(ok, given, 1.0))
    both = ok[1:] & ok[:-1]
    return np.abs(np.diff(dev))[both]


def _band_bias(x: np.ndarray, y: np.ndarray, sr: int) -> list[float]:
    """Mean log-magnitude difference (gen - ref) per band of BANDS_HZ, in the louder half."""
    mx, my = _stft_mag(x, 2048, 512, 2048), _stft_mag(y, 2048, 512, 2048)
    loud = (mx ** 2).sum(0) >= np.median((mx ** 2).sum(0))
    f = np.arange(mx.shape[0]) * sr / 2048
    d = np.log(my[:, loud]) - np.log(mx[:, loud])
    top = min(BANDS_HZ[-1], sr / 2) + 1  # the last band includes Nyquist
    edges = (*BANDS_HZ[:-1], top)
    pairs = zip(edges[:-1], edges[1:], strict=True)
    return [float(d[(f >= lo) & (f < hi)].mean()) for lo, hi in pairs]


def folder(d: Path) -> None:
    recipe = recipe_for("lp-16k-ltp")
    names = sorted(p.name[: -len("_original.wav")] for p in d.glob("*_original.wav"))
    if not names:
        raise SystemExit(f"{d}: no NAME_original.wav files")
    sc = {s: [] for s in SYSTEMS}
    cents = {s: [] for s in (*SYSTEMS, "wavenet vs given", "given vs original")}
    jitter = {s: [] for s in ("original", *SYSTEMS)}
    bias = {s: [] for s in SYSTEMS}
    for name in names:
        x, sr = sf.read(d / f"{name}_original.wav", dtype="float32")
        period = 1000.0 * recipe.hop_length / sr
        fx = _harvest(x, sr, period)
        given, _ = pitch_from_mel(torch.from_numpy(recipe.compute(x))[None], recipe)
        given = np.where(fx[: given.shape[1]] > 0, given[0, : len(fx)].double().numpy(), 0.0)
        cents["given vs original"].append(_cents(fx, given))
        jitter["original"].append(_jitter(fx, given))
        for s in SYSTEMS:
            y, _ = sf.read(d / f"{name}_{s}.wav", dtype="float32")
            n = min(len(x), len(y))
            for n_fft, hop, win in STFT_RESOLUTIONS:
                mx, my = _stft_mag(x[:n], n_fft, hop, win), _stft_mag(y[:n], n_fft, hop, win)
                err = (mx - my) ** 2
                loud = (mx ** 2).sum(0) >= np.median((mx ** 2).sum(0))
                low = np.arange(mx.shape[0]) < mx.shape[0] * 1000.0 / (sr / 2)
                sc[s].append((np.sqrt(err.sum() / (mx ** 2).sum()), err[:, loud].sum() / err.sum(),
                              err[low].sum() / err.sum()))
            bias[s].append(_band_bias(x[:n], y[:n], sr))
            fy = _harvest(y[:n], sr, period)
            cents[s].append(_cents(fx, fy))
            jitter[s].append(_jitter(fy, given))
            if s == "wavenet":
                cents["wavenet vs given"].append(_cents(given, fy))
    print(f"{d} ({len(names)} utterances)")
    for s in SYSTEMS:
        v = np.mean(sc[s], axis=0)
        print(f"  {s:10s} spectral convergence {v[0]:.3f}; of its squared error "
              f"{100 * v[1]:.0f}% in the louder half of the frames, {100 * v[2]:.0f}% below 1 kHz")
    for s in SYSTEMS:
        b = np.mean(bias[s], axis=0)
        cells = zip(BANDS_HZ[:-1], BANDS_HZ[1:], b, strict=True)
        print(f"  {s:10s} level by band, loud frames, nats: "
              + ", ".join(f"{lo}-{hi} Hz {v:+.2f}" for lo, hi, v in cells))
    for what, parts in cents.items():
        c = np.abs(np.concatenate(parts))
        print(f"  pitch, {what:18s} {len(c):5d} frames: median {np.median(c):4.0f} cents, "
              f"within 20 cents {np.mean(c < 20):.2f}, within 50 cents {np.mean(c < 50):.2f}")
    for what, parts in jitter.items():
        j = np.concatenate(parts)
        print(f"  jitter around the given pitch, {what:10s} {len(j):5d} frame pairs: median "
              f"{np.median(j):4.0f} cents")


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["."]:
        folder(Path(arg))
