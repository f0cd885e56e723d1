"""Drop-in replacements for r9y9/wavenet_vocoder ``wavenet_vocoder/mixture.py`` (commit a35fff7).

Same signatures, same tensor layouts and the same numbers as the original, approximations
included, so a checkpoint trained with the original keeps its loss curve when switched over:

- ``discretized_mix_logistic_loss(..., reduce=True)`` returns the **SUM** over batch and time,
  not a mean (the argument name suggests otherwise). Divide by ``B * T`` yourself, or use
  :func:`dmol.logistic.discretized_mix_logistic_loss` whose ``reduction="mean"`` is a true mean.
- Edge bins are picked by the thresholds ``y < -0.999`` / ``y > 0.999``, not by bin index: at
  ``num_classes=65536`` about 33 bins at each end are scored as if they held the whole tail.
- Where the bin mass ``cdf_delta`` is ``<= 1e-5`` the log-density at the bin centre times the bin
  width is used instead of the mass, and ``cdf_delta`` is clamped at ``1e-12`` before the log.
- The bin masses are computed in the input dtype, the rest as the original does: its 0/1
  masks are float32 (``.float()``), so half inputs come out as float32 (a long float16 sum stays
  finite). In float16 the ``1e-12`` clamp underflows to 0 and the masked blend ``0 * log(0)``
  turns the loss into NaN wherever a bin's mass underflows (exactly as the original does).
- Targets are not range-checked: values outside [-1, 1] are scored the way the original scores
  them. Shapes and channel counts are checked and raise ``ValueError``.

The exact, normalized distribution lives in :mod:`dmol.logistic`; ``docs/compat.md`` tabulates
the differences. Each sampler takes an optional ``generator`` and draws its random numbers in
the same order and shapes as the original, so with ``generator=None`` and the same global seed
it reproduces the original's samples.

Example::

    >>> y_hat = torch.randn(2, 30, 100)            # (B, 3M, T): [logits | means | log_scales]
    >>> y = torch.rand(2, 100, 1) * 2 - 1          # (B, T, 1) in [-1, 1]
    >>> discretized_mix_logistic_loss(y_hat, y, reduce=False).shape
    torch.Size([2, 100, 1])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dmol._validate import compute_dtype, split_channels, target_bt, to_btc

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

__all__ = [
    "discretized_mix_logistic_loss",
    "sample_from_discretized_mix_logistic",
    "mix_gaussian_loss",
    "sample_from_mix_gaussian",
]


def _log_sum_exp(x: Tensor) -> Tensor:
    """Log-sum-exp over the last axis, shifted by the max, rounded like the original."""
    m = x.max(dim=-1).values
    return m + torch.log(torch.exp(x - m.unsqueeze(-1)).sum(dim=-1))


def _check_params(y_hat: Tensor, name: str = "y_hat") -> None:
    if not isinstance(y_hat, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y_hat).__name__}")
    compute_dtype(y_hat.dtype)  # raises TypeError for integer tensors


def _targets(y: Tensor, y_hat_btc: Tensor) -> Tensor:
    """Targets as (B, T, 1), accepting (B, T), (B, T, 1) or (B, 1, T)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    return target_bt(y, y_hat_btc.shape[0], y_hat_btc.shape[1]).unsqueeze(-1)


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(1e-5, 1 - 1e-5) shaped like ``like`` but in a fresh contiguous tensor, as the original
    draws them: the same seed then gives the same numbers in the same places."""
    u = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    return u.uniform_(1e-5, 1.0 - 1e-5, generator=generator)


def _gumbel_argmax(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """Index of argmax(logits + Gumbel noise): a draw from softmax(logits).

    The uniforms are kept in [1e-5, 1 - 1e-5] as in the original so ``-log(-log(u))`` is finite.
    """
    u = _uniform(logits, generator)
    return (logits.detach() - torch.log(-torch.log(u))).argmax(dim=-1)


def _pick(params: Tensor, index: Tensor) -> Tensor:
    """params (B, T, M), index (B, T) -> (B, T): the selected component's parameter."""
    return params.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def discretized_mix_logistic_loss(
    y_hat: Tensor,
    y: Tensor,
    num_classes: int = 256,
    log_scale_min: float = -7.0,
    reduce: bool = True,
) -> Tensor:
    """Negative log-likelihood (nats) of ``y`` under a discretized mixture of logistics.

    Args:
        y_hat: (B, 3M, T) network output, channels ``[logits M | means M | log_scales M]``.
        y: (B, T, 1) targets in [-1, 1] ((B, T) and (B, 1, T) are accepted too).
        num_classes: number of quantization bins K (bin width 2 / (K - 1)).
        log_scale_min: log-scales are clamped below at this value.
        reduce: if True return the **SUM** over all B * T elements (a 0-d tensor), as the
            original does; if False the per-element loss, shape (B, T, 1).

    Example::

        >>> loss = discretized_mix_logistic_loss(torch.randn(2, 30, 8), torch.zeros(2, 8, 1))
        >>> loss.shape                                   # a sum over 16 elements
        torch.Size([])
    """
    _check_params(y_hat)
    y_hat = to_btc(y_hat, "BCT")
    logits, means, log_scales = split_channels(y_hat, 3)
    log_scales = torch.clamp(log_scales, min=log_scale_min)
    y = _targets(y, y_hat).expand_as(means)

    centered = y - means
    inv_s = torch.exp(-log_scales)
    half_bin = 1.0 / (num_classes - 1)
    plus_in = inv_s * (centered + half_bin)
    min_in = inv_s * (centered - half_bin)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): first-bin mass
    log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)): last-bin mass
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)  # logistic log-density

    # The original blends the branches with 0/1 float masks instead of selecting them; kept so
    # that a non-finite unused branch (float16) poisons the result exactly as it does there.
    # The masks are float32 (``.float()``) as there: half inputs are promoted from here on.
    big = (cdf_delta > 1e-5).float()
    interior = big * torch.log(torch.clamp(cdf_delta, min=1e-12)) + (1.0 - big) * (
        log_pdf_mid - math.log((num_classes - 1) / 2)
    )
    top = (y > 0.999).float()
    not_bottom = top * log_one_minus_cdf_min + (1.0 - top) * interior
    bottom = (y < -0.999).float()
    log_probs = bottom * log_cdf_plus + (1.0 - bottom) * not_bottom

    log_probs = log_probs + F.log_softmax(logits, dim=-1)
    nll = -_log_sum_exp(log_probs)
    return nll.sum() if reduce else nll.unsqueeze(-1)


def sample_from_discretized_mix_logistic(
    y: Tensor,
    log_scale_min: float = -7.0,
    clamp_log_scale: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one continuous sample per time step, clipped to [-1, 1] (not snapped to a bin).

    Args:
        y: (B, 3M, T) network output, channels ``[logits M | means M | log_scales M]``.
        log_scale_min: lower clamp for the chosen log-scale, used only if ``clamp_log_scale``
            (the original's default is not to clamp when sampling).
        clamp_log_scale: clamp the log-scale as the loss does.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        (B, T) samples in [-1, 1].

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> sample_from_discretized_mix_logistic(torch.randn(2, 30, 8), generator=g).shape
        torch.Size([2, 8])
    """
    _check_params(y, "y")
    y = to_btc(y, "BCT")
    logits, means, log_scales = split_channels(y, 3)
    k = _gumbel_argmax(logits, generator)
    mean, log_scale = _pick(means, k), _pick(log_scales, k)
    if clamp_log_scale:
        log_scale = torch.clamp(log_scale, min=log_scale_min)
    # Inverse-CDF draw from the logistic; u kept away from 0 and 1 so the logit is finite.
    u = _uniform(mean, generator)
    x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log(1.0 - u))
    return torch.clamp(x, min=-1.0, max=1.0)


def _gaussian_params(y_hat: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
    """(logits or None, means, log_scales), each (B, T, M), from (B, C, T) as the original."""
    y_hat = to_btc(y_hat, "BCT")
    c = y_hat.shape[-1]
    if c == 2:  # a single Gaussian laid out as [mean, log_scale]
        return None, y_hat[..., 0:1], y_hat[..., 1:2]
    logits, means, log_scales = split_channels(y_hat, 3, allow_single=2)
    # With C == 3 the original has one component and ignores its logit.
    return (logits if c > 3 else None), means, log_scales


def mix_gaussian_loss(
    y_hat: Tensor, y: Tensor, log_scale_min: float = -7.0, reduce: bool = True
) -> Tensor:
    """Negative log-density (nats) of ``y`` under a mixture of continuous Gaussians.

    A density, not a mass: the loss can be negative.

    Args:
        y_hat: (B, C, T). C == 2: one Gaussian ``[mean, log_scale]``; otherwise C == 3M with
            channels ``[logits M | means M | log_scales M]`` (for C == 3 the logit is ignored).
        y: (B, T, 1) targets ((B, T) and (B, 1, T) are accepted too).
        log_scale_min: log-scales are clamped below at this value.
        reduce: if True return the **SUM** over all elements (as the original); else (B, T, 1).

    Example::

        >>> mix_gaussian_loss(torch.zeros(1, 2, 4), torch.zeros(1, 4, 1), reduce=False).shape
        torch.Size([1, 4, 1])
    """
    _check_params(y_hat)
    logits, means, log_scales = _gaussian_params(y_hat)
    log_scales = torch.clamp(log_scales, min=log_scale_min)
    y = _targets(y, means).expand_as(means)
    # Normal(0, exp(ls)).log_prob(y - mu), spelled as torch.distributions.Normal computes it.
    scale = torch.exp(log_scales)
    log_probs = -((y - means) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI
    if logits is None:
        return log_probs.neg().sum() if reduce else -log_probs
    nll = -_log_sum_exp(log_probs + F.log_softmax(logits, dim=-1))
    return nll.sum() if reduce else nll.unsqueeze(-1)


def sample_from_mix_gaussian(
    y: Tensor, log_scale_min: float = -7.0, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one sample per time step from a mixture of Gaussians, clipped to [-1, 1].

    Args:
        y: (B, C, T) laid out as for :func:`mix_gaussian_loss`.
        log_scale_min: accepted for signature compatibility; like the original, the log-scale
            is **not** clamped when sampling.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        (B, T) samples in [-1, 1], detached from the graph.

    Example::

        >>> sample_from_mix_gaussian(torch.zeros(2, 2, 8)).shape
        torch.Size([2, 8])
    """
    _check_params(y, "y")
    logits, means, log_scales = _gaussian_params(y)
    with torch.no_grad():
        if logits is None:
            mean, log_scale = means[..., 0], log_scales[..., 0]
        else:
            k = _gumbel_argmax(logits, generator)
            mean, log_scale = _pick(means, k), _pick(log_scales, k)
        x = torch.normal(mean, torch.exp(log_scale), generator=generator)
    return torch.clamp(x, min=-1.0, max=1.0)
