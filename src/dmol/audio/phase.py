"""A phase clock: the fundamental's phase at every sample, as extra conditioning.

A vocoder that generates voiced speech from its own past must also keep the glottal pulses
on time, period after period; a small autoregressive network drifts and jitters (the pitch of
what it generates moves more from frame to frame than the recording's). Source-filter neural
vocoders (NSF, and the sinusoidal inputs of harmonic-plus-noise models) give the network the
clock instead: here ``cos(2 pi k phi[t])`` and ``sin(2 pi k phi[t])`` for ``k = 1 .. H``,
with ``phi`` in cycles.

* **Synthesis** integrates the mel's F0 estimate (:func:`dmol.audio.pitch.pitch_from_mel`):
  :func:`clock_phase`. Sample t advances by the F0 of its nearest frame (as the LPC and the
  pitch lags), so a frame's samples need that frame and the next, and the phase at the start of
  each frame follows from the previous one: a stream computes the same numbers as a whole
  utterance, frame by frame (:func:`frame_phase`).
* **Training** gives the phase of the recording's own fundamental, so that the network learns
  where the pulses sit relative to the clock: :func:`analysis_phase` demodulates the signal
  at the integrated estimate and adds the angle of the smoothed baseband (a zero-phase Hann
  low-pass whose main lobe ends 60 Hz from the carrier: it keeps the fundamental, whose
  frequency the estimate misses by a few percent, and attenuates the other harmonics, at least
  one F0 away; for voices near the 60 Hz floor the second harmonic leaks in).

The features are read from a table of :data:`TABLE` phases per cycle, so that they are the
same numbers however many samples are computed at once (a vectorized ``cos`` need not be).

Example::

    >>> phi = clock_phase(torch.full((1, 10), 100.0), hop=160, sample_rate=16000)  # (1, 1600)
    >>> phase_features(phi, 2).shape                     # cos, sin of phi and 2 phi
    torch.Size([1, 4, 1600])
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TABLE", "analysis_phase", "clock_phase", "frame_phase", "phase_features"]

TABLE = 4096  # phases per cycle in the feature table: 0.09 degrees apart
SMOOTH_HZ = 30.0  # the baseband low-pass: a Hann window of sample_rate / SMOOTH_HZ samples


def _check_f0(f0: Tensor) -> Tensor:
    if not isinstance(f0, Tensor) or f0.dim() != 2:
        got = tuple(f0.shape) if isinstance(f0, Tensor) else type(f0).__name__
        raise ValueError(f"f0 must be a (B, frames) tensor in Hz, got {got}")
    if f0.shape[1] == 0 or not bool(torch.isfinite(f0).all()) or bool((f0 <= 0).any()):
        raise ValueError("f0 must have at least one frame, every value finite and > 0 Hz")
    return f0.double()


def frame_phase(start: float, f0_a: float, f0_b: float, hop: int, sample_rate: int
                ) -> tuple[Tensor, float]:
    """The phase (cycles in [0, 1), float64 (hop,)) of one frame's samples, and the phase at
    the next frame's first sample.

    The frame's first ``hop - hop // 2`` samples advance by ``f0_a / sample_rate`` each (the
    frame's own F0), the rest by ``f0_b / sample_rate`` (the next frame's): each sample's
    nearest frame centre, as :func:`dmol.audio.lpc.lp_predict`. ``phi[0] = start``.
    """
    n_a = hop - hop // 2
    inc_a, inc_b = f0_a / sample_rate, f0_b / sample_rate
    j = torch.arange(hop, dtype=torch.float64)
    mid = start + n_a * inc_a
    phi = torch.where(j <= n_a, start + j * inc_a, mid + (j - n_a) * inc_b)
    nxt = mid + (hop - n_a) * inc_b
    return phi - torch.floor(phi), nxt - math.floor(nxt)


def clock_phase(f0: Tensor, hop: int, sample_rate: int, start: float = 0.0) -> Tensor:
    """The integrated F0, sample by sample: (B, frames) Hz -> (B, frames * hop) float64 cycles
    in [0, 1), starting at ``start``. The numbers of :func:`frame_phase` frame after frame (the
    last frame's second half keeps its own F0), so a stream gets the same ones: the frames'
    start phases follow one another in Python floats, then every sample is the same elementwise
    expression, evaluated for all frames at once."""
    f0 = _check_f0(f0)
    n_a = hop - hop // 2
    rows = []
    for row in f0.tolist():
        nxt = row[1:] + row[-1:]
        starts, phi = [], float(start)
        for fa, fb in zip(row, nxt, strict=True):
            starts.append(phi)
            end = (phi + n_a * (fa / sample_rate)) + (hop - n_a) * (fb / sample_rate)
            phi = end - math.floor(end)
        s0 = torch.tensor(starts, dtype=torch.float64)[:, None]
        inc_a = torch.tensor(row, dtype=torch.float64)[:, None] / sample_rate
        inc_b = torch.tensor(nxt, dtype=torch.float64)[:, None] / sample_rate
        j = torch.arange(hop, dtype=torch.float64)
        mid = s0 + n_a * inc_a
        p = torch.where(j <= n_a, s0 + j * inc_a, mid + (j - n_a) * inc_b)
        rows.append((p - torch.floor(p)).reshape(-1))
    return torch.stack(rows).to(f0.device)


@functools.lru_cache(maxsize=4)
def _table(harmonics: int) -> Tensor:
    """(TABLE, 2 H) float32: cos, sin of 2 pi k i / TABLE for k = 1 .. H."""
    i = torch.arange(TABLE, dtype=torch.float64) * (2 * math.pi / TABLE)
    k = torch.arange(1, harmonics + 1, dtype=torch.float64)
    a = i[:, None] * k
    return torch.stack([torch.cos(a), torch.sin(a)], dim=-1).reshape(TABLE, 2 * harmonics).float()


def phase_features(phi: Tensor, harmonics: int) -> Tensor:
    """(B, T) phase in cycles -> (B, 2 H, T) float32: ``cos(2 pi k phi), sin(2 pi k phi)``,
    k = 1 .. H (channels in that order, k outer), phi rounded to the table's 1 / TABLE."""
    if isinstance(harmonics, bool) or not isinstance(harmonics, int) or harmonics < 1:
        raise ValueError(f"harmonics must be a positive integer, got {harmonics!r}")
    if not isinstance(phi, Tensor) or phi.dim() != 2:
        raise ValueError("phi must be a (B, T) tensor of phases in cycles")
    idx = torch.remainder(torch.floor(phi.double() * TABLE + 0.5).long(), TABLE)
    return _table(harmonics).to(phi.device)[idx].permute(0, 2, 1)


def analysis_phase(x: Tensor, f0: Tensor, hop: int, sample_rate: int) -> Tensor:
    """The phase of a signal's fundamental (B, T) float64 cycles, near the clock of ``f0``.

    Args:
        x: (B, T) signal, T = frames * hop; f0: (B, frames) the estimate (Hz) to demodulate at.

    The signal is moved to baseband by the clock of ``f0`` (:func:`clock_phase`), smoothed
    by a zero-phase Hann window of ``sample_rate / SMOOTH_HZ`` samples (zeros beyond the
    ends) and the baseband's angle is added back: where the signal has no fundamental (silence)
    the angle is noise or 0, and the clock is what remains.
    """
    f0 = _check_f0(f0)
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape != (f0.shape[0], f0.shape[1] * hop):
        raise ValueError(f"x must be (B, frames * hop) = {(f0.shape[0], f0.shape[1] * hop)}")
    clock = clock_phase(f0, hop, sample_rate)
    ang = 2 * math.pi * clock
    xd = x.double()
    n = int(round(sample_rate / SMOOTH_HZ)) | 1  # odd: centred on each sample
    w = torch.hann_window(n + 2, periodic=False, dtype=torch.float64, device=x.device)[1:-1]
    w = (w / w.sum()).view(1, 1, n)
    base = torch.stack([xd * torch.cos(ang), -xd * torch.sin(ang)], 1)  # x e^{-i ang}: re, im
    base = F.conv1d(F.pad(base.reshape(-1, 1, x.shape[1]), (n // 2, n // 2)), w)
    base = base.view(x.shape[0], 2, x.shape[1])
    phi = clock + torch.atan2(base[:, 1], base[:, 0]) / (2 * math.pi)
    return phi - torch.floor(phi)
