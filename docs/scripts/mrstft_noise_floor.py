"""What the multi-resolution STFT distance gives two equally good *random* signals.

A vocoder that samples its excitation (every WaveNet here) re-creates noise-like parts of
speech (fricatives, breath, the space between harmonics) as a new realization of the same
random process, never the recorded one. This script prints the MR-STFT distance, and its two
terms, between independent realizations of the same noise: the floor a sampling vocoder pays
on such content however good it is. Griffin-Lim reconstructs the recorded STFT magnitudes
themselves and does not pay it (docs/quality.md compares the two).

    python docs/scripts/mrstft_noise_floor.py
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from dmol.audio.metrics import multi_resolution_stft_parts


def main(seconds: float = 3.0, sr: int = 16000, trials: int = 4) -> None:
    rng = np.random.default_rng(0)
    b, a = signal.butter(4, 0.3)  # a low-pass "coloured" noise, like a voiceless envelope
    rows = {"white noise": lambda z: z, "coloured noise (4th-order low-pass)":
            lambda z: signal.lfilter(b, a, z)}
    n = int(seconds * sr)
    print("independent realizations of the same process, same power, "
          f"{seconds:g} s at {sr} Hz, mean of {trials}:")
    for name, shape in rows.items():
        parts = np.mean([multi_resolution_stft_parts(shape(0.1 * rng.standard_normal(n)),
                                                     shape(0.1 * rng.standard_normal(n)))
                         for _ in range(trials)], axis=0)
        print(f"  {name:36s} spectral convergence {parts[0]:.3f} + log-magnitude "
              f"{parts[1]:.3f} = MR-STFT {parts.sum():.3f}")


if __name__ == "__main__":
    main()
