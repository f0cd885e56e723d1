"""Discretized mixture of logistics (MoL): exact, threshold-free, numerically safe.

A value y in [-1, 1] is quantized to K = ``num_classes`` bins of width 2/(K-1) centred on
``c_k = 2k/(K-1) - 1``; the first bin takes all mass below its upper edge and the last bin all
mass above its lower edge, so the K masses sum to one. Each of the M components is a logistic
with mean ``mu`` and scale ``s = exp(log_scale)``; the mixture weights are ``softmax(logits)``.

The mass of an interior bin [c - h, c + h] (h = 1/(K-1)) under one logistic is
``sigmoid(b) - sigmoid(a)`` with ``a = (c - h - mu)/s`` and ``b = (c + h - mu)/s``. Subtracting two
sigmoids cancels catastrophically in the tails and for narrow bins, which is why the classic
PixelCNN++ code needs a ``cdf_delta < 1e-5`` fallback. Instead we use the identity

    sigmoid(b) - sigmoid(a) = sigmoid(b) * sigmoid(-a) * (1 - exp(-(b - a)))

whose three factors are each computed to full relative precision in log space, and where
``b - a = 2h/s`` is formed directly from the bin width, never as a difference. Edge bins are
chosen by the bin *index*, so any K from 2 to 2**16 and beyond is handled exactly.

Example::

    >>> y_hat = torch.randn(2, 30, 100)                      # (B, 3M, T) network output
    >>> y = torch.rand(2, 100) * 2 - 1                       # (B, T) targets in [-1, 1]
    >>> loss = discretized_mix_logistic_loss(y_hat, y)       # mean NLL in nats
    >>> d = DiscretizedLogisticMixture.from_params(y_hat)    # batch shape (2, 100)
    >>> x = d.sample(generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dmol import _validate as V
from dmol import fused
from dmol.mixture import (
    DiscretizedMixture,
    _pick_component,
    _uniform_open,
    bin_centre,
    bin_index,
)

__all__ = [
    "DiscretizedLogisticMixture",
    "discretized_mix_logistic_loss",
    "sample_discretized_mix_logistic",
    "mixture_nll_reference",
    "bin_index",
    "bin_centre",
]

_LN2 = math.log(2.0)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(-x)) for x > 0, accurate for all x (Maechler, 2012).

    For small x, ``1 - exp(-x)`` loses digits, so use ``-expm1(-x)``; for large x, ``exp(-x)``
    is tiny and ``log1p`` keeps it. Each branch is fed a clamped input so that the branch
    ``torch.where`` discards cannot produce inf/NaN gradients.
    """
    small = x < _LN2
    return torch.where(
        small,
        torch.log(-torch.expm1(-x.clamp(max=_LN2))),
        torch.log1p(-torch.exp(-x.clamp(min=_LN2))),
    )


def _edges(y: Tensor, mu: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The lower and upper edge of bin(y) less mu, and the edge-bin flags, broadcast against
    mu (..., M).

    Both edges are formed in float64, each from the bin index, and the subtraction done there
    too (as the C++ kernel does): in float32 a centre near +-1 carries an absolute error of
    ~6e-8, and ``(centre - mu) -+ h`` cancels when mu sits near an edge; a scale of e^-13
    magnifies either into a visible mass error, and two neighbouring bins would disagree about
    their shared edge (their masses then no longer sum to one).
    """
    k = bin_index(y, num_classes).unsqueeze(-1)
    kd, m = k.double(), mu.double()
    lower = ((2.0 * kd - 1.0) / (num_classes - 1) - 1.0 - m).to(mu.dtype)
    upper = ((2.0 * kd + 1.0) / (num_classes - 1) - 1.0 - m).to(mu.dtype)
    return lower, upper, k == 0, k == num_classes - 1


def component_log_mass(
    d: Tensor, log_scales: Tensor, num_classes: int, first: Tensor, last: Tensor
) -> Tensor:
    """log P(bin) under each logistic, given the offset ``d = centre - mu``.

    ``first``/``last`` flag the edge bins, which take the whole lower/upper tail.
    """
    h = 1.0 / (num_classes - 1)
    return edge_log_mass(d - h, d + h, log_scales, num_classes, first, last)


def edge_log_mass(
    lower: Tensor, upper: Tensor, log_scales: Tensor, num_classes: int, first: Tensor,
    last: Tensor,
) -> Tensor:
    """log P(bin) under each logistic, given the bin's edges less the mean."""
    h = 1.0 / (num_classes - 1)
    inv_s = torch.exp(-log_scales)
    a = lower * inv_s  # standardized lower edge
    b = upper * inv_s  # standardized upper edge
    lower_tail = F.logsigmoid(b)  # log P(X < upper edge): the first bin's mass
    upper_tail = F.logsigmoid(-a)  # log P(X > lower edge): the last bin's mass
    interior = lower_tail + upper_tail + log1mexp((2.0 * h) * inv_s)
    return torch.where(first, lower_tail, torch.where(last, upper_tail, interior))


def mixture_nll_reference(
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    y: Tensor,
    num_classes: int,
    log_scale_min: float | None = None,
) -> Tensor:
    """Exact per-element negative log-likelihood, plain tensor ops with autograd.

    The ground truth that the fused implementation (`dmol.fused`) is tested against.

    Args:
        logits, means, log_scales: (*batch, M) mixture parameters.
        y: (*batch) values in [-1, 1] (snapped to the nearest bin centre).
        num_classes: K, the number of bins.
        log_scale_min: clamp log-scales from below (None: no clamp).

    Returns:
        (*batch) NLL in nats, in the compute dtype (float32 for half inputs).
    """
    dtype = V.compute_dtype(means.dtype)
    logits, means, log_scales = logits.to(dtype), means.to(dtype), log_scales.to(dtype)
    if log_scale_min is not None:
        log_scales = log_scales.clamp(min=log_scale_min)
    lower, upper, first, last = _edges(y, means, num_classes)
    log_mass = edge_log_mass(lower, upper, log_scales, num_classes, first, last)
    return -torch.logsumexp(F.log_softmax(logits, dim=-1) + log_mass, dim=-1)


def _gumbel_inverse_cdf(
    logits: Tensor, means: Tensor, log_scales: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Unfused Gumbel-max component choice + logistic inverse CDF; clamps to [-1, 1]."""
    mu, log_s = _pick_component(logits, means, log_scales, generator)
    u = _uniform_open(mu.shape, mu, generator)
    # logit(u) = log u - log(1 - u); log1p keeps precision for small u
    x = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    return x.clamp(-1.0, 1.0)


class DiscretizedLogisticMixture(DiscretizedMixture):
    """Mixture of M logistics discretized to K bins on [-1, 1]; the edge bins take the tails.

    Args:
        logits: (*batch, M) unnormalized mixture weights.
        means: (*batch, M) component means (any real; the edge bins absorb mass outside [-1, 1]).
        log_scales: (*batch, M) natural log of the component scales.
        num_classes: K >= 2 (65536 for 16-bit audio, 256 for 8-bit).
        log_scale_min: optional lower clamp on the log-scales (training-time regularizer, as in
            PixelCNN++ / WaveNet recipes). None (the default) keeps the parameters as given,
            unlike :func:`discretized_mix_logistic_loss`'s -7: docs/mol.md section 6 lists
            every entry point's default.

    Values are floats in [-1, 1] of shape (*sample, *batch); they are snapped to the nearest bin.

    Example::

        >>> d = DiscretizedLogisticMixture(torch.zeros(4, 3), torch.randn(4, 3) * 0.3,
        ...                                torch.full((4, 3), -3.0), num_classes=256)
        >>> d.log_prob(torch.zeros(4)).shape
        torch.Size([4])
    """

    # the logistic family (the rest is dmol.mixture.DiscretizedMixture's)
    _component_cdf = torch.sigmoid
    _bin_nll = mixture_nll_reference
    _draw_fn = _gumbel_inverse_cdf

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log-mass of the bin nearest to ``value``; shape broadcast(sample, batch)."""
        self._check_value(value)
        if value.shape == self.batch_shape:  # the fast path, when shapes line up one to one
            return -fused.mixture_nll(
                self.logits, self.means, self.log_scales, value, self.num_classes, None
            )
        return -mixture_nll_reference(
            self.logits, self.means, self.log_scales, value, self.num_classes
        )

    def _clipped_means(self) -> Tensor:
        """``-1 + s * (softplus((mu + 1)/s) - softplus((mu - 1)/s))`` per component."""
        s = self.log_scales.exp()
        return -1.0 + s * (F.softplus((self.means + 1) / s) - F.softplus((self.means - 1) / s))


# -- functional API ---------------------------------------------------------------------------


def discretized_mix_logistic_loss(
    y_hat: Tensor,
    y: Tensor,
    *,
    num_classes: int = 65536,
    log_scale_min: float | None = -7.0,
    layout: str = "BCT",
    reduction: str = "mean",
    mask: Tensor | None = None,
    clamp_targets: bool = False,
    loc: Tensor | None = None,
) -> Tensor:
    """Negative log-likelihood (nats) of targets under the MoL a network predicted.

    Args:
        y_hat: (B, 3M, T) for layout "BCT" or (B, T, 3M) for "BTC", channels
            ``[logits M | means M | log_scales M]``.
        y: (B, T) (or (B, T, 1) / (B, 1, T)) targets in [-1, 1].
        num_classes: K bins (65536 = 16-bit audio).
        log_scale_min: lower clamp on log-scales (None: none). The defaults differ by entry
            point (-7 here, None in the distributions): docs/mol.md section 6 lists them.
        reduction: "mean" (per valid element), "sum", or "none" -> (B, T).
        mask: (B, T) 0/1 weights for padded batches, or (B,) integer lengths.
        clamp_targets: clip targets to [-1, 1] instead of raising.
        loc: (B, T) shift added to every component mean (LP-WaveNet: the linear prediction
            from the past samples), or None. Differentiable: ``loc.grad`` is the sum of the
            means' gradients. Same numbers as shifting the means by hand.

    Uses the fused implementation (`dmol.fused`), exact to float rounding.

    Example::

        >>> loss = discretized_mix_logistic_loss(torch.randn(2, 30, 8), torch.zeros(2, 8))
    """
    V.check_reduction(reduction)
    K = V.check_num_classes(num_classes)
    btc = V.to_btc(V.check_tensor("y_hat", y_hat), layout)
    V.split_channels(btc, 3)  # validates the channel count
    batch, steps = btc.shape[:2]
    V.check_finite("y_hat", btc)
    y = V.check_range(V.target_bt(V.check_target_dtype(y, "y"), batch, steps),
                      clamp=clamp_targets, clamp_hint=True)
    m = V.mask_bt(mask, batch, steps, btc.device)
    loc = V.loc_bt(loc, batch, steps)
    # the packed entry point hands back one gradient laid out like y_hat; splitting into
    # logits/means/log-scales first would make autograd build three y_hat-sized gradients
    expected = {"mean": 1.0 / max(batch * steps, 1), "sum": 1.0}.get(reduction, 1.0)
    nll = fused.mixture_nll_packed(btc, y, K, log_scale_min, loc=loc,
                                   grad_scale=expected if m is None else 1.0)
    return V.reduce(nll, reduction, m)


def sample_discretized_mix_logistic(
    y_hat: Tensor,
    *,
    num_classes: int = 65536,
    log_scale_min: float | None = -7.0,
    layout: str = "BCT",
    temperature: float = 1.0,
    scale_temperature: float = 1.0,
    generator: torch.Generator | None = None,
    snap: bool = False,
    loc: Tensor | None = None,
) -> Tensor:
    """Sample one value per (B, T) position from the MoL a network predicted.

    Args:
        y_hat: (B, 3M, T) ("BCT") or (B, T, 3M) ("BTC").
        temperature: divides the mixture logits (0: most probable component).
        scale_temperature: multiplies component scales (0: the component's mean).
        generator: a ``torch.Generator`` for reproducible draws.
        snap: round to the K-bin grid (otherwise continuous in [-1, 1]).
        loc: (B, T) shift added to every component mean, or None.

    Returns:
        (B, T) values in [-1, 1].
    """
    K = V.check_num_classes(num_classes)
    btc = V.to_btc(y_hat, layout)
    logits, means, log_scales = V.split_channels(btc, 3)
    V.check_finite("y_hat", btc)
    dtype = V.compute_dtype(means.dtype)
    logits, means, log_scales = logits.to(dtype), means.to(dtype), log_scales.to(dtype)
    loc = V.loc_bt(loc, *means.shape[:2])
    x = fused.sample_mixture(
        logits,
        means,
        log_scales,
        temperature=temperature,
        scale_temperature=scale_temperature,
        log_scale_min=log_scale_min,
        generator=generator,
        loc=loc,
    )
    return bin_centre(bin_index(x, K), K, dtype) if snap else x
