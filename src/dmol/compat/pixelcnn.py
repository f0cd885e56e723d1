"""Drop-in PixelCNN++ RGB loss and sampler: same numbers as openai/pixel-cnn and
pclucas14/pixel-cnn-pp ``utils.py`` (commit 7cb4436), in PyTorch NCHW layout.

Network output ``l`` has ``10 * M`` channels: channels ``0..M-1`` are the mixture logits, and
``l[:, M:]`` holds, per colour channel c = 0, 1, 2 (R, G, B) in turn, a block of 3M channels
``[means M | log_scales M | coeffs M]`` (coefficients before the tanh). Channel c of component m
has mean ``means[c] + sum_{j<c} tanh(coeff) * x_j`` (G += a*R; B += b*R + c*G).

What this reproduces, on purpose (see ``docs/compat.md``; the exact, normalized version is
:class:`dmol.coupled.CoupledDiscretizedLogisticMixture`):

- the loss is the **SUM** of the negative log-likelihood (nats) over batch, pixels and colour
  channels, not a mean; divide by ``x.numel() * log(2)`` for bits per dimension;
- 8-bit data only (bin half-width 1/255), log-scales clamped at -7;
- edge bins by threshold (``x < -0.999`` / ``x > 0.999``), the ``cdf_delta <= 1e-5`` fallback to
  the log-density at the bin centre, and the ``1e-12`` clamp;
- computation in the input dtype up to the masks' blend, float32 after it (the original's
  ``.float()`` masks promote): float16 gives NaN where the clamp underflows, and a float32 sum.

Example::

    >>> x = torch.rand(2, 3, 4, 4) * 2 - 1
    >>> l = torch.randn(2, 50, 4, 4)                 # M = 5
    >>> discretized_mix_logistic_loss(x, l).shape     # a sum over 2 * 3 * 4 * 4 values
    torch.Size([])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dmol._validate import compute_dtype

__all__ = ["discretized_mix_logistic_loss", "sample_from_discretized_mix_logistic"]


def _split(l_nhwc: Tensor, nr_mix: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B, H, W, 10M) -> logits (B, H, W, M) and means, log_scales, raw coeffs (B, H, W, 3, M)."""
    logits = l_nhwc[..., :nr_mix]
    rest = l_nhwc[..., nr_mix:].reshape(*l_nhwc.shape[:-1], 3, 3 * nr_mix)
    return logits, rest[..., :nr_mix], rest[..., nr_mix : 2 * nr_mix], rest[..., 2 * nr_mix :]


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(1e-5, 1 - 1e-5) in a fresh contiguous float32 tensor shaped like ``like``, as the
    original draws them (so the same seed gives the same numbers in the same places)."""
    u = torch.empty(like.shape, dtype=torch.float32, device=like.device)
    return u.uniform_(1e-5, 1.0 - 1e-5, generator=generator)


def _check_l(l: Tensor) -> int:
    """Validate the network output; return M."""
    if not isinstance(l, Tensor):
        raise TypeError(f"l must be a torch.Tensor, got {type(l).__name__}")
    compute_dtype(l.dtype)  # TypeError for integer tensors
    if l.dim() != 4:
        raise ValueError(f"l must be 4-D (B, 10*M, H, W), got shape {tuple(l.shape)}")
    c = l.shape[1]
    if c == 0 or c % 10:
        raise ValueError(
            f"l has {c} channels: expected 10*M (M logits + 3 colour channels x "
            f"[means | log_scales | coeffs] of M each)"
        )
    return c // 10


def discretized_mix_logistic_loss(x: Tensor, l: Tensor) -> Tensor:
    """Summed negative log-likelihood (nats) of 8-bit RGB images under PixelCNN++'s mixture.

    Args:
        x: (B, 3, H, W) images scaled to [-1, 1].
        l: (B, 10*M, H, W) network output (layout in the module docstring).

    Returns:
        A 0-d tensor: the **SUM** over everything, as the original returns.

    Example::

        >>> loss = discretized_mix_logistic_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 10, 2, 2))
        >>> bits_per_dim = loss / (1 * 3 * 2 * 2 * math.log(2))
    """
    nr_mix = _check_l(l)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be (B, 3, H, W) RGB images, got {shape}")
    if (x.shape[0], *x.shape[2:]) != (l.shape[0], *l.shape[2:]):
        raise ValueError(
            f"x {tuple(x.shape)} and l {tuple(l.shape)} disagree on batch or image size"
        )
    x = x.permute(0, 2, 3, 1).to(l.dtype)
    logits, means, log_scales, coeffs = _split(l.permute(0, 2, 3, 1), nr_mix)
    log_scales = torch.clamp(log_scales, min=-7.0)
    coeffs = torch.tanh(coeffs)

    # Autoregressive means inside a pixel: G depends on R, B on R and G.
    x = x.unsqueeze(-1).expand_as(means)
    m1 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    m2 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    means = torch.stack((means[..., 0, :], m1, m2), dim=-2)

    centered = x - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + 1.0 / 255.0)
    min_in = inv_s * (centered - 1.0 / 255.0)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log-mass of bin 0
    log_one_minus_cdf_min = -F.softplus(min_in)  # log-mass of bin 255
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)

    # 0/1 float masks blended as in the original, so non-finite unused branches propagate;
    # they are float32 as its `.float()` masks are, so half inputs give a float32 loss after
    # the blend (and a long sum does not overflow float16's 65504)
    big = (cdf_delta > 1e-5).float()
    interior = big * torch.log(torch.clamp(cdf_delta, min=1e-12)) + (1.0 - big) * (
        log_pdf_mid - math.log(127.5)
    )
    top = (x > 0.999).float()
    not_bottom = top * log_one_minus_cdf_min + (1.0 - top) * interior
    bottom = (x < -0.999).float()
    log_probs = bottom * log_cdf_plus + (1.0 - bottom) * not_bottom

    # Channels multiply inside a component; components mix with log-softmax weights. The
    # max-shifted forms below round as the original's hand-written log_softmax/log_sum_exp.
    m = logits.max(dim=-1, keepdim=True).values
    log_w = logits - m - torch.log(torch.exp(logits - m).sum(dim=-1, keepdim=True))
    log_probs = log_probs.sum(dim=-2) + log_w
    top_lp = log_probs.max(dim=-1, keepdim=True).values
    lse = top_lp.squeeze(-1) + torch.log(torch.exp(log_probs - top_lp).sum(dim=-1))
    return -lse.sum()


def sample_from_discretized_mix_logistic(
    l: Tensor, nr_mix: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one RGB image per batch element, channel by channel, clipped to [-1, 1].

    Samples are continuous (not snapped to the 256 levels), like the original. The random
    numbers are drawn in the original's order and shapes, so ``generator=None`` with the same
    global seed reproduces its samples.

    Args:
        l: (B, 10*M, H, W) network output.
        nr_mix: M; must match the channel count of ``l``.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        (B, 3, H, W) samples in [-1, 1].

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> sample_from_discretized_mix_logistic(torch.randn(2, 50, 4, 4), 5, generator=g).shape
        torch.Size([2, 3, 4, 4])
    """
    m = _check_l(l)
    if nr_mix != m:
        raise ValueError(f"nr_mix={nr_mix} but l has {l.shape[1]} channels (= 10 * {m})")
    logits, means, log_scales, coeffs = _split(l.permute(0, 2, 3, 1), nr_mix)

    # Component by the Gumbel-max trick; uniforms kept off 0 and 1 so the logs stay finite.
    u = _uniform(logits, generator)
    k = (logits.detach() - torch.log(-torch.log(u))).argmax(dim=-1)
    index = k[..., None, None].expand(*k.shape, 3, 1)
    mean, log_scale, coeff = (
        t.gather(-1, index).squeeze(-1) for t in (means, log_scales, torch.tanh(coeffs))
    )
    log_scale = torch.clamp(log_scale, min=-7.0)

    # Logistic inverse-CDF noise for all three channels, then the channel-coupled means.
    u = _uniform(mean, generator)
    z = mean + torch.exp(log_scale) * (torch.log(u) - torch.log(1.0 - u))
    x0 = torch.clamp(z[..., 0], -1.0, 1.0)
    x1 = torch.clamp(z[..., 1] + coeff[..., 0] * x0, -1.0, 1.0)
    x2 = torch.clamp(z[..., 2] + coeff[..., 1] * x0 + coeff[..., 2] * x1, -1.0, 1.0)
    return torch.stack((x0, x1, x2), dim=1)
