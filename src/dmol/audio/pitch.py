"""Pitch from the log-mel, and the past samples one pitch period back (a long-term predictor).

Linear prediction (:mod:`dmol.audio.lpc`) gives a vocoder the spectral envelope; what is left,
the excitation, is a pulse train in voiced speech. Predicting a pulse is easy for a model that
sees the signal one pitch period back (the adaptive codebook of CELP speech codecs; LPCNet and
FARGAN feed the pitch too), and hard for a small one that must infer the period itself. So
the vocoder is also given the samples around ``x[t - T0]``, ``T0`` the pitch period of t's frame.

The period comes from the mel, so it is the same number in training and synthesis (the mel
is all a vocoder receives). Below ~1 kHz the Slaney mel bands are ~36 Hz apart (small-16k),
narrower than the harmonic spacing of speech, so a voiced frame's low bands ripple at the
harmonics. Per frame, the detrended log-mel of the bands below ``band_hz`` is correlated with
the same analysis of ideal harmonic combs (the analysis window's magnitude response at every
multiple of a candidate F0, through the mel filterbank), for candidates spaced 1% apart; the
best candidate is the estimate and its correlation (in [-1, 1]) the voicing strength. By
default each frame's estimate depends on that frame alone; with ``continuity > 0`` a causal
track (:class:`PitchTracker`) keeps it from jumping an octave for a frame or two, the
estimator's commonest gross error (11% -> 9% of voiced held-out frames > 0.2 octave off).

On 8 held-out utterances of the built-in corpus (dio + stonemask F0 as reference), 92% of
voiced frames are within 7% of the reference, with 4 Hz RMS error among those; octave errors
are below 1% (``python docs/scripts/pitch_accuracy.py data/``, which also measures two voices
the vocoder never heard). The strength alone separates voiced from unvoiced frames poorly
(~20% error): the model gets the taps and the mel, and decides itself how much to trust them.

Example::

    >>> recipe = recipe_for("small-16k")
    >>> mel = torch.from_numpy(recipe.compute(audio))[None]        # (1, F, n_mels)
    >>> f0, strength = pitch_from_mel(mel, recipe)                 # (1, F) each
    >>> lags = pitch_lags(f0, recipe.sample_rate)                  # (1, F) samples
    >>> taps = pitch_taps(torch.from_numpy(audio)[None], lags, recipe.hop_length, 5)  # (1, 5, T)
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dmol.audio.features import MelRecipe, _mel_basis
from dmol.audio.lpc import _frame_of_sample, check_log_mel

__all__ = ["F0_CEILING_LIMIT", "F0_MAX", "F0_MIN", "PitchTracker", "check_f0_max",
           "pitch_candidates", "pitch_excitation_taps", "pitch_from_mel", "pitch_lags",
           "pitch_scores", "pitch_taps", "resolves_harmonics"]

F0_MIN, F0_MAX = 60.0, 420.0  # Hz: the default range of speaking voices searched
#: the highest ceiling a caller may ask for: above it the combs have one harmonic below BAND_HZ
F0_CEILING_LIMIT = 1000.0
BAND_HZ = 1000.0  # bands centred below this resolve the harmonics (the mel is linear there)
CANDIDATES = 200  # log-spaced between F0_MIN and F0_MAX: ~1% apart
DETREND_BANDS = 5  # the envelope removed from a frame: a moving average over this many bands


def _detrend(m: Tensor) -> Tensor:
    """Remove the envelope (moving average over bands, edges replicated), then the mean, and
    scale each row to unit norm: what remains is the harmonic ripple."""
    k = DETREND_BANDS
    flat = m.reshape(-1, 1, m.shape[-1])
    smooth = F.avg_pool1d(F.pad(flat, (k // 2, k // 2), mode="replicate"), k, stride=1)
    r = (flat - smooth).reshape(m.shape)
    r = r - r.mean(-1, keepdim=True)
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-9)


@functools.lru_cache(maxsize=8)
def resolves_harmonics(recipe: MelRecipe) -> bool:
    """Whether :func:`pitch_from_mel` works with this recipe (enough bands below 1 kHz)."""
    try:
        _templates(recipe)
    except ValueError:
        return False
    return True


def check_f0_max(f0_max: float) -> float:
    """A pitch ceiling in Hz as a float, ``2 * F0_MIN <= f0_max <= F0_CEILING_LIMIT``, or a
    one-line ValueError."""
    ok = isinstance(f0_max, numbers.Real) and not isinstance(f0_max, bool | np.bool_)
    if not ok or not 2 * F0_MIN <= float(f0_max) <= F0_CEILING_LIMIT:
        raise ValueError(f"the pitch ceiling must be a number of Hz in [{2 * F0_MIN:g}, "
                         f"{F0_CEILING_LIMIT:g}], got {f0_max!r}")
    return float(f0_max)


@functools.lru_cache(maxsize=16)
def _grid(f0_max: float) -> np.ndarray:
    """The candidate F0s (Hz) up to ``f0_max``: the CANDIDATES log-spaced ones of F0_MIN ..
    F0_MAX, continued above F0_MAX at the same ratio (or cut below it). A candidate's value
    does not depend on the ceiling, so a higher ceiling changes an estimate only where a
    candidate above the old one wins."""
    base = np.exp(np.linspace(math.log(F0_MIN), math.log(F0_MAX), CANDIDATES))
    ratio = base[1] / base[0]
    if f0_max <= F0_MAX:
        return base[base <= f0_max * (1 + 1e-12)]
    more = int(math.floor(math.log(f0_max / F0_MAX) / math.log(ratio) + 1e-9))
    return np.concatenate([base, F0_MAX * ratio ** np.arange(1, more + 1)])


@functools.lru_cache(maxsize=16)
def _templates(recipe: MelRecipe, f0_max: float = F0_MAX) -> tuple[Tensor, Tensor, int]:
    """(candidates,) F0 in Hz, (candidates, bands) detrended comb templates, bands used."""
    basis = _mel_basis(recipe).astype(np.float64)  # (n_mels, 1 + n_fft/2)
    freqs = np.arange(basis.shape[1]) * recipe.sample_rate / recipe.n_fft
    centres = (basis * freqs).sum(1) / np.maximum(basis.sum(1), 1e-12)
    bands = int((centres < BAND_HZ).sum())
    if bands < 2 * DETREND_BANDS:
        raise ValueError(f"the recipe has {bands} mel bands below {BAND_HZ:g} Hz: too few to "
                         f"resolve harmonics (need {2 * DETREND_BANDS})")
    # the analysis window's magnitude response, finely sampled (peak 1)
    over = 16
    win = np.hanning(recipe.win_length + 1)[:-1]  # periodic Hann, as the STFT uses
    resp = np.abs(np.fft.rfft(win, over * recipe.n_fft))
    resp /= resp[0]
    resp_f = np.arange(len(resp)) * recipe.sample_rate / (over * recipe.n_fft)
    f0 = _grid(check_f0_max(f0_max))
    combs = np.zeros((len(f0), len(freqs)))
    for i, f in enumerate(f0):
        for h in np.arange(1, int(BAND_HZ * 1.5 // f) + 2) * f:  # harmonics reaching the bands
            combs[i] += np.interp(np.abs(freqs - h), resp_f, resp, right=0.0)
    # the mel is log(filterbank @ magnitude); 1e-3: a floor well below a harmonic's peak
    t = torch.from_numpy(np.log(combs @ basis.T + 1e-3)[:, :bands])
    return torch.from_numpy(f0), _detrend(t), bands


def pitch_scores(log_mel: Tensor, recipe: MelRecipe, f0_max: float = F0_MAX) -> Tensor:
    """Each frame's correlation with every candidate comb: (..., frames, n_mels) ->
    (..., frames, C) float64, candidates ~1% apart from F0_MIN to ``f0_max``
    (:func:`pitch_candidates`). A frame's scores depend on that frame alone."""
    m = check_log_mel(log_mel, recipe)
    _, templates, bands = _templates(recipe, check_f0_max(f0_max))
    return _detrend(m[..., :bands].double()) @ templates.to(m.device).T


def pitch_candidates(recipe: MelRecipe, f0_max: float = F0_MAX) -> Tensor:
    """The candidate F0s (C,) in Hz that :func:`pitch_scores` scores, float64: the
    CANDIDATES log-spaced ones of F0_MIN .. F0_MAX (420 Hz), continued at the same ratio up to
    ``f0_max`` (the values below 420 Hz are the same whatever the ceiling)."""
    return _templates(recipe, check_f0_max(f0_max))[0]


def pitch_from_mel(log_mel: Tensor, recipe: MelRecipe, continuity: float = 0.0,
                   ramp: tuple[float, float] | None = None,
                   f0_max: float = F0_MAX) -> tuple[Tensor, Tensor]:
    """F0 estimate and voicing strength of each frame of a natural-log magnitude mel.

    Args:
        log_mel: (..., frames, n_mels) as :meth:`MelRecipe.compute` returns it.
        recipe: the mel recipe the features were made with.
        continuity: 0 (default): each frame's best comb, frame by frame. ``> 0``: the end of
            the best path so far through the frames' scores, where a path pays
            ``continuity`` (in correlation units) per octave it jumps between consecutive
            frames (:class:`PitchTracker`; causal, so a stream gets the same numbers).
        ramp: ``(lo, hi)``: a frame's jump cost scales with its best comb's score, from 0
            (score <= lo) to ``continuity`` (>= hi); None: the full cost in every frame.
        f0_max: the ceiling of the search (Hz, default F0_MAX = 420); the training voice of
            the built-in corpus reaches ~540 Hz in a few glides (docs/quality.md, session 17).

    Returns:
        f0 (..., frames) float32 in [F0_MIN, f0_max] Hz (an estimate in every frame, voiced
        or not), strength (..., frames) float32 in [-1, 1] (the chosen comb's correlation).
    """
    scores = pitch_scores(log_mel, recipe, f0_max)
    return PitchTracker(recipe, continuity, ramp, f0_max)(scores)


class PitchTracker:
    """A causal pitch track through the frames' comb scores (:func:`pitch_scores`), frames
    given in any number of pieces: the same numbers as all at once.

    A per-frame estimate jumps by an octave wherever the comb at half or twice the F0 scores
    a little higher for a frame (the mel's low bands resolve the harmonics only roughly);
    voices do not. Each frame keeps, per candidate, the best score of any path ending there,
    a path paying ``continuity`` per octave of every jump (a Viterbi recursion), and takes
    the best end. No backtracking: a frame's estimate never changes once given, which is
    what a vocoder fed frame by frame (and the training that must match it) needs.

    A track carries a smooth pitch through pauses and breaths too, where a per-frame estimate
    jumps at random; a vocoder reads the smooth one as "voiced" and hums there. With ``ramp``
    a frame pays for a jump only in proportion to its own strength (its best comb's score):
    weak frames take their own best comb, strongly periodic ones keep the voice's track.

    Args:
        recipe: the mel recipe (its candidates, :func:`pitch_candidates`).
        continuity: the cost per octave, >= 0 (0: each frame's best comb alone).
        ramp: ``(lo, hi)``, lo < hi in [-1, 1]: the cost is ``continuity`` times
            ``clip((strength - lo) / (hi - lo), 0, 1)`` of the frame jumped to; None: the
            full cost in every frame.
        f0_max: the candidates' ceiling (Hz), as for :func:`pitch_scores`.

    Example::

        >>> tracker = PitchTracker(recipe, 0.8)
        >>> s = pitch_scores(mel, recipe)                 # (1, F, C)
        >>> f0a, _ = tracker(s[:, :10]); f0b, _ = tracker(s[:, 10:])   # == the whole at once
    """

    def __init__(self, recipe: MelRecipe, continuity: float = 0.0,
                 ramp: tuple[float, float] | None = None, f0_max: float = F0_MAX) -> None:
        c = float(continuity)
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"pitch continuity must be a finite number >= 0, got {continuity!r}")
        self.continuity, self.ramp = c, check_ramp(ramp)
        self.f0 = pitch_candidates(recipe, f0_max)
        lf = torch.log2(self.f0)
        self._jump = c * (lf[:, None] - lf[None, :]).abs()  # (from, to) candidate
        self._best: Tensor | None = None  # (..., C): best path score ending at each candidate

    def __call__(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """(..., frames, C) scores -> F0 (..., frames) Hz float32 and the chosen comb's score
        (..., frames) float32; the leading shape must stay the same from call to call."""
        if scores.dim() < 2 or scores.shape[-1] != len(self.f0):
            raise ValueError(f"scores must be (..., frames, {len(self.f0)}), got "
                             f"{tuple(scores.shape)}")
        scores = scores.double()
        if not self.continuity:
            idx = scores.argmax(-1)
        else:
            lead = scores.shape[:-2]
            if self._best is not None and self._best.shape[:-1] != lead:
                raise ValueError(f"scores' leading shape {tuple(lead)} changed from "
                                 f"{tuple(self._best.shape[:-1])}")
            jump = self._jump.to(scores.device)
            idx = scores.new_empty(scores.shape[:-1], dtype=torch.long)
            d = self._best
            for t in range(scores.shape[-2]):
                s = scores[..., t, :]
                if d is not None:
                    cost = jump
                    if self.ramp is not None:  # (..., 1, 1): this frame's share of the cost
                        lo, hi = self.ramp
                        cost = jump * ((s.amax(-1) - lo) / (hi - lo)).clamp(0, 1)[..., None, None]
                    d = (d[..., :, None] - cost).amax(-2)
                d = s if d is None else d + s
                d = d - d.amax(-1, keepdim=True)  # small numbers; the argmax is unchanged
                idx[..., t] = d.argmax(-1)
            self._best = d
        best = scores.gather(-1, idx[..., None])[..., 0]
        return self.f0.to(scores.device)[idx].float(), best.float()


def check_ramp(ramp) -> tuple[float, float] | None:
    """A continuity ramp ``(lo, hi)`` as floats, -1 <= lo < hi <= 1, or None; a ValueError
    naming the problem otherwise."""
    if ramp is None:
        return None
    ok = isinstance(ramp, list | tuple) and len(ramp) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in ramp)
    if ok:
        lo, hi = float(ramp[0]), float(ramp[1])
        ok = -1.0 <= lo < hi <= 1.0
    if not ok:
        raise ValueError(f"the pitch continuity ramp must be two numbers -1 <= lo < hi <= 1, "
                         f"got {ramp!r}")
    return lo, hi


def pitch_lags(f0: Tensor, sample_rate: int, f0_max: float = F0_MAX) -> Tensor:
    """Pitch periods in whole samples, ``round(sample_rate / f0)``: (...) -> (...) int64.

    F0 is clamped to [F0_MIN, f0_max] first (the estimator's range); NaN or inf is refused."""
    f0 = torch.as_tensor(f0)
    if not bool(torch.isfinite(f0).all()):
        raise ValueError("f0 must be finite (Hz)")
    return torch.round(sample_rate / f0.double().clamp(F0_MIN, check_f0_max(f0_max))).long()


def pitch_taps(x: Tensor, lags: Tensor, hop_length: int, taps: int) -> Tensor:
    """The samples around one pitch period back: ``out[:, j, t] = x[t - L_t + j - taps // 2]``.

    Args:
        x: (B, T) signal; samples before t = 0 count as zeros (silence, as in training).
        lags: (B, frames) pitch periods in samples (:func:`pitch_lags`); sample t uses the
            frame whose centre is nearest (as :func:`dmol.audio.lpc.lp_predict`).
        hop_length: samples per frame.
        taps: how many samples (odd): the period is known to a sample or two.

    Returns:
        (B, taps, T) in x's dtype; every tap reads x strictly before t (lags > taps // 2).
    """
    lag = _lag_per_sample(x, lags, hop_length, taps)
    if lag is None:
        return x.new_zeros(x.shape[0], taps, 0)
    return _lagged(x, lag, -(taps // 2), taps // 2)


def _lag_per_sample(x: Tensor, lags: Tensor, hop_length: int, taps: int) -> Tensor | None:
    """Each sample's lag (B, T), its nearest frame's, after checking the arguments of the two
    tap functions; None for an empty signal."""
    if x.dim() != 2 or lags.dim() != 2 or lags.shape[0] != x.shape[0]:
        raise ValueError(f"x must be (B, T) and lags (B, frames), got {tuple(x.shape)} and "
                         f"{tuple(lags.shape)}")
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f"taps must be a positive odd number, got {taps}")
    if lags.dtype.is_floating_point:
        raise TypeError(f"lags must be integer samples (pitch_lags), got dtype {lags.dtype}")
    T, half = x.shape[1], taps // 2
    if T == 0:
        return None
    lag = lags[:, _frame_of_sample(T, lags.shape[1], hop_length, x.device)]
    if int(lag.min()) <= half:
        raise ValueError(f"pitch lags must exceed taps // 2 = {half}, got {int(lag.min())}")
    return lag


def _lagged(x: Tensor, lag: Tensor, lo: int, hi: int) -> Tensor:
    """``out[:, i, t] = x[t - lag[:, t] + lo + i]`` for ``lo + i`` in ``[lo, hi]``, zeros
    before t = 0: (B, hi - lo + 1, T)."""
    B, T = x.shape
    pad = max(int(lag.max()) - lo, 0)  # x padded with zeros on the left
    xp = F.pad(x, (pad, 0))
    t = torch.arange(T, device=x.device)
    idx = (t + pad - lag)[:, None, :] + torch.arange(lo, hi + 1, device=x.device)[:, None]
    return torch.gather(xp[:, None, :].expand(B, hi - lo + 1, -1), 2, idx)


def pitch_excitation_taps(x: Tensor, lags: Tensor, a: Tensor, hop_length: int,
                          taps: int) -> Tensor:
    """The excitation one pitch period back: the residual of :func:`pitch_taps`' samples
    under each step's own LPC, ``out[:, j, t] = e_t(t - L_t + j - taps // 2)`` with
    ``e_t(s) = x[s] + sum_k a_k(t) x[s - k]`` (``a(t)``: the coefficients of t's frame).

    Speech codecs keep their long-term predictor in the excitation domain (CELP's adaptive
    codebook): there a glottal pulse is a few samples wide, in the signal it rings through the
    formants. Using t's coefficients rather than those of the lagged sample's frame (the
    envelope barely moves in one period) lets synthesis compute the taps from the signal's
    history alone, with no stored excitation.

    Args:
        x: (B, T) signal; samples before t = 0 count as zeros.
        lags: (B, frames) integer pitch periods; a: (B, frames, order) LPC; sample t uses
            the frame whose centre is nearest (as :func:`dmol.audio.lpc.lp_predict`).
        hop_length, taps: as :func:`pitch_taps`.

    Returns:
        (B, taps, T) in x's dtype; reads x[t - L_t - taps // 2 - order .. t - L_t + taps // 2].
    """
    if a.dim() != 3 or a.shape[:2] != lags.shape:
        raise ValueError(f"a must be (B, frames, order) with lags' (B, frames) "
                         f"{tuple(lags.shape)}, got {tuple(a.shape)}")
    lag = _lag_per_sample(x, lags, hop_length, taps)
    if lag is None:
        return x.new_zeros(x.shape[0], taps, 0)
    order, half = a.shape[2], taps // 2
    # wide[:, i] = x[t - L + i - half - order]: the taps and the order samples before them
    wide = _lagged(x, lag, -half - order, half)
    per_sample = a[:, _frame_of_sample(x.shape[1], a.shape[1], hop_length, x.device)]
    per_sample = per_sample.to(x.dtype).transpose(1, 2)  # (B, order, T); a_k at row k - 1
    out = wide[:, order:].clone()
    for k in range(1, order + 1):  # tap j reads wide[order + j - k]
        out += per_sample[:, k - 1 : k] * wide[:, order - k : order - k + taps]
    return out
