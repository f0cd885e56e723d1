"""Linear prediction from the log-mel: the spectral envelope a vocoder gets for free.

A log-mel frame says how loud each band is; that is enough to recover an all-pole model of
the frame's spectral envelope (LPCNet, LP-WaveNet, GlotNet). Per frame::

    |X(f)|  ~ max(pinv(mel_basis) @ exp(log_mel), floor)    linear magnitude, (n_fft/2 + 1,)
    r[k]    = irfft(|X(f)|^2)[k],  k = 0..order               autocorrelation (Wiener-Khinchin)
    r[0]   *= 1 + white_noise                                 white-noise correction (-40 dB)
    r[k]   *= exp(-(2 pi f_lag k / sr)^2 / 2)                 Gaussian lag window
    a       = levinson(r)                                     A(z) = 1 + sum_k a_k z^-k

and the prediction of sample t from its past is ``p_t = -sum_k a_k x[t-k]`` with the
coefficients of the frame whose centre is nearest to t (frame i is centred on sample
``i * hop``, as in :class:`dmol.audio.features.MelRecipe`). The features are the same in
training and synthesis, so the prediction is too; only the past it is computed from differs
(true or generated samples).

Pre-emphasis (``preemphasis=alpha``, LPCNet uses 0.85): the model may work on the emphasized
signal ``(x[t] - alpha x[t-1]) / (1 + alpha)`` (:func:`pre_emphasis`; the 1 / (1 + alpha) keeps
it inside [-1, 1]) and undo it on its output (:func:`de_emphasis`). Its envelope is the mel's
times ``|1 - alpha e^{-jw}|^2``, so the LPC of the emphasized signal comes from the same mel:
the spectrum's steep low-frequency tilt, and with it most of 1/A(z)'s gain at low
frequencies, is removed before the all-pole fit. The mel itself is always the analysis of the
original signal.

On held-out speech of the built-in corpus (small-16k recipe, order 16) the prediction from the
mel removes 22.5 dB of the signal's power; LPC from the audio itself removes 22.9 dB.

Example::

    >>> recipe = recipe_for("small-16k")
    >>> a = lpc_from_mel(torch.from_numpy(recipe.compute(audio))[None], recipe)  # (1, F, 16)
    >>> p = lp_predict(torch.from_numpy(audio)[None], a, recipe.hop_length)      # (1, T)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from dmol.audio.features import MelRecipe, _mel_basis

__all__ = ["check_log_mel", "de_emphasis", "excitation_noise", "levinson", "lp_predict",
           "lp_synthesize", "lpc_from_mel", "pre_emphasis", "prediction_gain_db"]


def levinson(r: Tensor) -> tuple[Tensor, Tensor]:
    """Levinson-Durbin recursion on autocorrelations r (..., order + 1), batched.

    Returns ``(a, err)``: a (..., order) with A(z) = 1 + sum_k a_k z^-k (the prediction is
    ``-sum_k a_k x[t-k]``) and the final prediction-error power err (...). For a valid
    (positive definite) autocorrelation, such as :func:`lpc_from_mel`'s regularized one, every
    reflection coefficient has |k| < 1 and A(z) is minimum phase (a stable synthesis filter).
    Reflection coefficients are clamped to |k| <= 0.9999 so that a singular or invalid r still
    gives finite coefficients and err >= 0; A(z) is then *not* guaranteed minimum phase (once
    several coefficients saturate, rounding can push roots outside the unit circle).

    Example::

        >>> a, err = levinson(torch.tensor([1.0, 0.5, 0.25]))   # AR(1) with pole 0.5
        >>> a
        tensor([-0.5000, 0.0000])
    """
    order = r.shape[-1] - 1
    a = r.new_zeros(*r.shape[:-1], order)
    err = r[..., 0].clone()
    tiny = torch.finfo(r.dtype).tiny
    for i in range(order):
        acc = r[..., i + 1] + (a[..., :i] * r[..., 1 : i + 1].flip(-1)).sum(-1)
        k = (-acc / err.clamp_min(tiny)).clamp(-0.9999, 0.9999)
        prev = a[..., :i].clone()
        a[..., :i] = prev + k[..., None] * prev.flip(-1)
        a[..., i] = k
        err = err * (1.0 - k * k)
    return a, err


def check_log_mel(log_mel, recipe: MelRecipe) -> Tensor:
    """A (..., frames, n_mels) floating-point log-mel of ``recipe`` as a tensor, else a one-line
    error (the shared input check of the functions that analyse a mel)."""
    if not isinstance(recipe, MelRecipe):
        raise TypeError(f"recipe must be a MelRecipe, got {type(recipe).__name__}")
    m = torch.as_tensor(log_mel)
    if m.dim() < 2 or m.shape[-1] != recipe.n_mels:
        raise ValueError(f"log_mel must be (..., frames, n_mels={recipe.n_mels}), "
                         f"got shape {tuple(m.shape)}")
    if not m.is_floating_point():
        raise TypeError(f"log_mel must be floating point, got dtype {m.dtype}")
    return m


@functools.lru_cache(maxsize=8)
def _pinv_basis(recipe: MelRecipe) -> np.ndarray:
    """(n_mels, 1 + n_fft/2) -> its pseudo-inverse (1 + n_fft/2, n_mels), float64."""
    return np.linalg.pinv(_mel_basis(recipe).astype(np.float64))


def lpc_from_mel(log_mel: Tensor, recipe: MelRecipe, order: int = 16, *,
                 lag_window_hz: float = 40.0, white_noise: float = 1e-4,
                 floor: float = 1e-6, preemphasis: float = 0.0) -> Tensor:
    """Per-frame LPC coefficients from a natural-log magnitude mel (see the module docstring).

    Args:
        log_mel: (..., frames, n_mels) as :meth:`MelRecipe.compute` returns it (a tensor or
            array).
        recipe: the mel recipe the features were made with.
        order: prediction order (16 at 16 kHz, as LPCNet).
        lag_window_hz: width of the Gaussian lag window (smooths the envelope's peaks).
        white_noise: r[0] is multiplied by 1 + this (a noise floor 40 dB down at 1e-4).
        floor: lower bound of the recovered linear magnitude (the pseudo-inverse can go
            negative between filters).
        preemphasis: alpha in [0, 1): the coefficients of the emphasized signal
            (:func:`pre_emphasis`); 0 = the signal itself.

    Returns:
        (..., frames, order) float32 coefficients a_k (A(z) = 1 + sum a_k z^-k).
    """
    m = check_log_mel(log_mel, recipe)
    if isinstance(order, bool) or int(order) != order or not 1 <= order < recipe.n_fft // 2:
        raise ValueError(f"order must be an integer in [1, {recipe.n_fft // 2}), got {order!r}")
    _check_alpha(preemphasis)
    # float64 throughout: the autocorrelation of a 60 dB-range spectrum is ill-conditioned
    pinv = torch.from_numpy(_pinv_basis(recipe)).to(m.device)
    mag = (m.double().exp() @ pinv.T).clamp_min(floor)  # (..., frames, 1 + n_fft/2)
    power = mag * mag
    if preemphasis:  # |1 - alpha e^{-jw}|^2 on the rfft grid (the scale 1/(1+alpha) cancels)
        w = torch.linspace(0.0, math.pi, power.shape[-1], dtype=torch.float64, device=m.device)
        power = power * (1.0 + preemphasis**2 - 2.0 * preemphasis * torch.cos(w))
    r = torch.fft.irfft(power, n=recipe.n_fft, dim=-1)[..., : order + 1]
    k = torch.arange(order + 1, dtype=torch.float64, device=m.device)
    lag = torch.exp(-0.5 * (2.0 * math.pi * lag_window_hz * k / recipe.sample_rate) ** 2)
    r = r * lag
    r[..., 0] = r[..., 0] * (1.0 + white_noise)
    a, _ = levinson(r)
    return a.float()


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and 0.0 <= alpha < 1.0):
        raise ValueError(f"preemphasis must be a number in [0, 1), got {alpha!r}")
    return float(alpha)


def pre_emphasis(x: Tensor, alpha: float, prev: Tensor | None = None) -> Tensor:
    """``(x[t] - alpha x[t-1]) / (1 + alpha)`` along the last axis; x[-1] = ``prev`` or 0.

    Dividing by 1 + alpha keeps a signal in [-1, 1] inside it, where the discretized heads
    put their bins. ``alpha = 0`` returns x unchanged. :func:`de_emphasis` inverts it.
    """
    alpha = _check_alpha(alpha)
    if not alpha:
        return x
    before = torch.zeros_like(x[..., :1]) if prev is None else prev.reshape(x[..., :1].shape)
    shifted = torch.cat([before.to(x.dtype), x[..., :-1]], dim=-1)
    return (x - alpha * shifted) / (1.0 + alpha)


def de_emphasis(e: Tensor, alpha: float, prev: Tensor | None = None) -> Tensor:
    """The inverse of :func:`pre_emphasis`: ``x[t] = (1 + alpha) e[t] + alpha x[t-1]``.

    ``prev`` (..., ) is x[-1] (the last output of the previous call, so that a stream
    de-emphasized piece by piece equals the whole; default 0). Computed in float64 by
    ``scipy.signal.lfilter``; returns e's dtype and device.
    """
    from scipy.signal import lfilter

    alpha = _check_alpha(alpha)
    if not alpha or e.shape[-1] == 0:
        return e
    ee = e.detach().double().cpu().numpy()
    zi = np.zeros((*ee.shape[:-1], 1))
    if prev is not None:  # state of y[t] = b e[t] + alpha y[t-1]: zi = alpha y[-1]
        zi[..., 0] = alpha * prev.detach().double().cpu().numpy().reshape(ee.shape[:-1])
    y, _ = lfilter([1.0 + alpha], [1.0, -alpha], ee, axis=-1, zi=zi)
    return torch.from_numpy(y).to(device=e.device, dtype=e.dtype)


def _frame_of_sample(T: int, frames: int, hop: int, device: torch.device) -> Tensor:
    """Index of the frame whose centre (``i * hop``) is nearest to each sample 0..T-1."""
    t = torch.arange(T, device=device)
    return ((t + hop // 2) // hop).clamp_(max=frames - 1)


def lp_predict(x: Tensor, a: Tensor, hop_length: int) -> Tensor:
    """The linear prediction of every sample from its past: ``p_t = -sum_k a_k x[t-k]``.

    Args:
        x: (B, T) signal; samples before t = 0 count as zeros (silence, as in training).
        a: (B, frames, order) per-frame coefficients (:func:`lpc_from_mel`); sample t uses the
            frame whose centre is nearest.
        hop_length: samples per frame.

    Returns:
        (B, T) predictions, in x's dtype. ``p_t`` depends on x[t - order .. t - 1] only.
    """
    if x.dim() != 2 or a.dim() != 3 or a.shape[0] != x.shape[0]:
        raise ValueError(f"x must be (B, T) and a (B, frames, order), got {tuple(x.shape)} "
                         f"and {tuple(a.shape)}")
    B, T = x.shape
    order = a.shape[2]
    per_sample = a[:, _frame_of_sample(T, a.shape[1], hop_length, x.device)]  # (B, T, order)
    # windows[:, t] = x[t - order .. t - 1] in time order; a_k multiplies x[t - k]
    past = torch.nn.functional.pad(x, (order, 0)).unfold(1, order, 1)[:, :T].flip(-1)
    return -(past * per_sample.to(x.dtype)).sum(-1)


def prediction_gain_db(x: Tensor, p: Tensor) -> float:
    """10 log10(power of x / power of x - p): how much of the signal the prediction explains."""
    e = (x - p).double()
    return 10.0 * math.log10(float(x.double().pow(2).sum()) / max(float(e.pow(2).sum()), 1e-300))


def lp_synthesize(e: Tensor, a: Tensor, hop_length: int) -> Tensor:
    """The all-pole synthesis filter 1/A(z): ``y_t = e_t - sum_k a_k y[t-k]``, batched.

    The inverse of :func:`lp_predict`'s residual (``y - lp_predict(y) == e``), with the same
    nearest-centre frame per sample and zeros before t = 0. Computed in float64 by
    ``scipy.signal.lfilter`` one run of equal coefficients at a time, the filter state carried
    across frames through the output history.

    Args:
        e: (B, T) excitation.
        a: (B, frames, order) per-frame coefficients.

    Returns:
        (B, T) in e's dtype and device.
    """
    from scipy.signal import lfilter, lfiltic

    if e.dim() != 2 or a.dim() != 3 or a.shape[0] != e.shape[0]:
        raise ValueError(f"e must be (B, T) and a (B, frames, order), got {tuple(e.shape)} "
                         f"and {tuple(a.shape)}")
    B, T = e.shape
    order = a.shape[2]
    f = _frame_of_sample(T, a.shape[1], hop_length, torch.device("cpu")).numpy()
    cuts = np.flatnonzero(np.diff(f)) + 1
    starts, stops = np.r_[0, cuts], np.r_[cuts, T]
    ee = e.detach().double().cpu().numpy()
    aa = a.detach().double().cpu().numpy()
    y = np.zeros((B, T + order))  # order zeros of history, then the output
    for b in range(B):
        for s0, s1 in zip(starts, stops, strict=True):
            den = np.r_[1.0, aa[b, f[s0]]]
            past = y[b, s0 : s0 + order][::-1]  # y[t-1], y[t-2], ... as lfiltic wants
            zi = lfiltic([1.0], den, past)
            y[b, order + s0 : order + s1], _ = lfilter([1.0], den, ee[b, s0:s1], zi=zi)
    return torch.from_numpy(y[:, order:]).to(device=e.device, dtype=e.dtype)


def excitation_noise(x: Tensor, a: Tensor, hop_length: int, level: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """Noise like an autoregressive model's own errors, for training on an imperfect past.

    White noise at ``level`` times the frame's excitation rms (the residual of ``x`` under
    its LPC, :func:`lp_predict`), passed through the synthesis filter 1/A(z): an error in the
    excitation reaches the signal coloured by the spectral envelope, which is how a sampled
    excitation's mistakes accumulate in synthesis (mostly low-frequency, where speech's A(z)
    has its gain). Returns (B, T) noise to add to ``x``.
    """
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"level must be finite and >= 0, got {level!r}")
    B, T = x.shape
    frames = a.shape[1]
    f = _frame_of_sample(T, frames, hop_length, x.device)
    e = x - lp_predict(x, a, hop_length)
    power = torch.zeros(B, frames, dtype=torch.float64, device=x.device)
    count = torch.zeros(frames, dtype=torch.float64, device=x.device)
    power.index_add_(1, f, e.double() ** 2)
    count.index_add_(0, f, torch.ones(T, dtype=torch.float64, device=x.device))
    rms = (power / count.clamp_min(1)).sqrt()[:, f]  # (B, T): the sample's frame
    white = torch.randn(B, T, generator=generator, dtype=torch.float64, device=x.device)
    return lp_synthesize((level * rms * white).to(x.dtype), a, hop_length)
