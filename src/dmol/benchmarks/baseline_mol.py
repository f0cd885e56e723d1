"""The usual unfused MoL loss and sampler, written out as plain tensor ops: the baseline.

This is the PixelCNN++ / WaveNet-vocoder formulation that most code bases carry: a chain of
about twenty (B, T, M) tensor ops, differentiated by autograd (which keeps most of the
intermediates alive for the backward pass). It includes the formula's usual approximations
(edge bins by the thresholds ``y < -0.999`` / ``y > 0.999``; the log-density fallback where the
bin mass is below 1e-5), so its numbers differ slightly from the exact loss; it is here only to
be timed against :mod:`dmol.fused`. Written for this project from the published formulas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _bin_log_prob(x: Tensor, means: Tensor, log_scales: Tensor, num_classes: int) -> Tensor:
    """The usual per-component log-mass of x's bin (same shape as means), with its
    approximations: edge bins by threshold, a density fallback for tiny masses."""
    half_bin = 1.0 / (num_classes - 1)
    centered = x - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + half_bin)
    min_in = inv_s * (centered - half_bin)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # first bin: log CDF at the upper edge
    log_one_minus_cdf_min = -F.softplus(min_in)  # last bin: log survival at the lower edge
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    inner = torch.where(
        cdf_delta > 1e-5,
        torch.log(torch.clamp(cdf_delta, min=1e-12)),
        log_pdf_mid - math.log((num_classes - 1) / 2),
    )
    inner = torch.where(x > 0.999, log_one_minus_cdf_min, inner)
    return torch.where(x < -0.999, log_cdf_plus, inner)


def mol_nll_baseline(y_hat: Tensor, y: Tensor, num_classes: int = 65536,
                     log_scale_min: float = -7.0) -> Tensor:
    """Per-element NLL (B, T) of y (B, T) under y_hat (B, 3M, T) = [logits | means | log_scales]."""
    y_hat = y_hat.transpose(1, 2)  # (B, T, 3M)
    m = y_hat.shape[-1] // 3
    logits = y_hat[..., :m]
    means = y_hat[..., m : 2 * m]
    log_scales = torch.clamp(y_hat[..., 2 * m :], min=log_scale_min)
    y = y.unsqueeze(-1).expand_as(means)
    log_probs = _bin_log_prob(y, means, log_scales, num_classes)
    log_probs = log_probs + F.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_probs, dim=-1)


def mol_sample_baseline(y_hat: Tensor, log_scale_min: float = -7.0,
                        generator: torch.Generator | None = None) -> Tensor:
    """One draw per (B, T) from y_hat (B, 3M, T): Gumbel-max component, logistic inverse CDF."""
    y_hat = y_hat.transpose(1, 2)
    m = y_hat.shape[-1] // 3
    logits = y_hat[..., :m]
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    u = u * (1 - 2e-5) + 1e-5  # keep log(-log(u)) finite
    idx = torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)
    one_hot = F.one_hot(idx, m).to(logits.dtype)
    means = (y_hat[..., m : 2 * m] * one_hot).sum(-1)
    log_scales = torch.clamp((y_hat[..., 2 * m :] * one_hot).sum(-1), min=log_scale_min)
    v = torch.rand(means.shape, generator=generator, dtype=means.dtype, device=means.device)
    v = v * (1 - 2e-5) + 1e-5
    x = means + torch.exp(log_scales) * (torch.log(v) - torch.log(1.0 - v))
    return torch.clamp(x, -1.0, 1.0)


def coupled_nll_baseline(x: Tensor, l: Tensor, num_classes: int = 256,
                         log_scale_min: float = -7.0) -> Tensor:
    """PixelCNN++ channel-coupled RGB loss, per image summed NLL (B,), unfused.

    x: (B, 3, H, W) in [-1, 1]; l: (B, 10M, H, W) = [logits M | 3 x (means M | log_scales M |
    coeffs M)], the layout of the original code.
    """
    x = x.permute(0, 2, 3, 1)  # (B, H, W, 3)
    l = l.permute(0, 2, 3, 1)  # (B, H, W, 10M)
    m = l.shape[-1] // 10
    logits = l[..., :m]
    rest = l[..., m:].reshape(*l.shape[:-1], 3, 3 * m)
    means = rest[..., :m]
    log_scales = torch.clamp(rest[..., m : 2 * m], min=log_scale_min)
    coeffs = torch.tanh(rest[..., 2 * m :])
    x = x.unsqueeze(-1).expand(*x.shape, m)  # (B, H, W, 3, M)
    m1 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    m2 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    means = torch.stack([means[..., 0, :], m1, m2], dim=-2)
    log_probs = _bin_log_prob(x, means, log_scales, num_classes)
    log_probs = log_probs.sum(-2) + F.log_softmax(logits, dim=-1)  # (B, H, W, M)
    return -torch.logsumexp(log_probs, dim=-1).sum((1, 2))
