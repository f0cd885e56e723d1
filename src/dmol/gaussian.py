"""Gaussian heads: a mixture of Gaussians as a density, and discretized to K bins like the MoL.

Two distributions share the parameters ``logits, means, log_scales`` of shape (*batch, M)
(component axis last; M = 1 is a single Gaussian):

- :class:`MixtureOfGaussians`, a *density* on the real line (ClariNet's and r9y9's
  ``mix_gaussian_loss``). Its NLL is a negative log-density, which is negative whenever the
  density at the target exceeds 1: a Gaussian with scale s peaks at 1/(s sqrt(2 pi)), above 1
  as soon as s < 0.399, and a vocoder's predicted scales are far smaller than that.
- :class:`DiscretizedGaussianMixture`, a *probability* over the same K-bin grid as the MoL
  (bins of width 2/(K-1) centred on 2k/(K-1) - 1, edge bins take the tails). Its masses sum to
  one, so its NLL is >= 0 and comparable in nats (or bits) with the MoL's and the mu-law's.

The mass of an interior bin [a, b] (standardized edges) is Phi(b) - Phi(a). Subtracting two CDF
values cancels in the tails and for narrow bins, so each bin is computed in one of three ways:

- narrow bins, half-width ``delta`` with ``delta * (|c| + 1)`` small (c the standardized centre):
  a midpoint series, Phi(c + delta) - Phi(c - delta) = 2 delta phi(c) (1 + He2(c) delta^2 / 3!
  + He4(c) delta^4 / 5! + He6(c) delta^6 / 7! + ...), He_n the probabilists' Hermite polynomials;
- bins on one side of the mode: mirrored to the left tail (the mass is symmetric under
  c -> -c), where ``log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(-D))`` with
  ``D = log Phi(b) - log Phi(a)`` formed without cancellation from ``Phi(x) = erfcx(-x/sqrt2)
  exp(-x^2/2) / 2``: ``D = (a^2 - b^2)/2 + log erfcx(-b/sqrt2) - log erfcx(-a/sqrt2)``, two
  positive terms, the first equal to ``2 delta |c|`` exactly;
- bins straddling the mode: ``log(1 - Phi(a) - Phi(-b))``, both tails below one half.

The first bin is ``log Phi(b)`` and the last ``log Phi(-a)``. :func:`log_ndtr` is computed
through ``erfcx`` too, because ``torch.special.log_ndtr``'s gradient is wrong far in the left
tail (0 instead of ~1e7 at x = -1e7 in float32), which log-scales down to -16 reach.

Example::

    >>> y_hat = torch.randn(2, 30, 100)                      # (B, 3M, T), M = 10
    >>> y = torch.rand(2, 100) * 2 - 1                       # (B, T) targets in [-1, 1]
    >>> nll = mix_gaussian_loss(y_hat, y)                    # mean negative log-density
    >>> nll16 = mix_gaussian_loss(y_hat, y, num_classes=65536)  # mean NLL in nats, >= 0
    >>> x = sample_mix_gaussian(y_hat, generator=torch.Generator().manual_seed(0))  # (2, 100)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from dmol import _validate as V
from dmol.logistic import log1mexp
from dmol.mixture import (
    DiscretizedMixture,
    LocationScaleMixture,
    _apply_temperature,
    _pick_component,
    bin_centre,
    bin_index,
)

__all__ = [
    "DiscretizedGaussianMixture",
    "MixtureOfGaussians",
    "bin_edges",
    "bin_log_mass",
    "discretized_gaussian_mixture_nll",
    "gaussian_mixture_nll",
    "log_ndtr",
    "ndtr",
    "mix_gaussian_loss",
    "sample_mix_gaussian",
]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# The midpoint series is used while delta * (|c| + 1) < tau. Its first omitted term is at most
# ~105 tau^8 / 9! relative (4e-9 for float32, 1e-14 for float64); above tau, D >= ~tau, so
# the log1mexp branch keeps full relative precision.
_SERIES_TAU = {torch.float32: 0.25, torch.float64: 0.05}


def ndtr(x: Tensor) -> Tensor:
    """Phi(x), the standard normal CDF, to full relative precision in the left tail.

    ``0.5 * erfc(-x / sqrt2)``: ``torch.special.ndtr`` loses relative precision below x ~ -5
    and underflows to 0 from x ~ -9 in float64, where the answer is still ~1e-20.
    """
    return 0.5 * torch.special.erfc(-x * _INV_SQRT2)


def log_ndtr(x: Tensor) -> Tensor:
    """log Phi(x), the log of the standard normal CDF, with exact gradients in both tails.

    For x < 0, ``Phi(x) = erfcx(-x / sqrt2) exp(-x^2 / 2) / 2`` with erfcx = exp(z^2) erfc(z)
    of order 1/|x|, so nothing underflows and the derivative ``-x + d log erfcx`` is exact. For
    x >= 0, ``log1p(-Phi(-x))`` with Phi(-x) <= 1/2. Each branch gets a clamped input so the
    branch ``torch.where`` discards cannot produce inf/NaN gradients.
    """
    left = x.clamp(max=0.0)
    log_left = torch.log(0.5 * torch.special.erfcx(-left * _INV_SQRT2)) - 0.5 * left * left
    log_right = torch.log1p(-ndtr(-x.clamp(min=0.0)))
    return torch.where(x < 0, log_left, log_right)


def _log_erfcx_half(x: Tensor) -> Tensor:
    """log(erfcx(-x / sqrt2) / 2) for x <= 0: log Phi(x) + x^2 / 2."""
    return torch.log(0.5 * torch.special.erfcx(-x * _INV_SQRT2))


def bin_edges(y: Tensor, means: Tensor, num_classes: int) -> tuple[Tensor, ...]:
    """Offsets of y's bin edges from each mean, and the edge-bin flags, broadcast to (..., M).

    Bin k spans [(2k - 1)/(K-1) - 1, (2k + 1)/(K-1) - 1]. Each edge minus the mean is formed in
    float64 from the same expression for both bins that share it, so neighbouring masses
    telescope exactly: a scale of e^-20 magnifies a float32 rounding of the edge to ~0.1
    standard deviations, which would otherwise move mass between the two bins.

    Returns:
        (lower - mean, upper - mean, first, last), the offsets in ``means.dtype``.
    """
    K = num_classes
    k = bin_index(y, K).unsqueeze(-1)
    two_k = 2.0 * k.double()
    mu = means.double()
    lower = ((two_k - 1.0) / (K - 1) - 1.0 - mu).to(means.dtype)
    upper = ((two_k + 1.0) / (K - 1) - 1.0 - mu).to(means.dtype)
    return lower, upper, k == 0, k == K - 1


def bin_log_mass(
    lower: Tensor,
    upper: Tensor,
    log_scales: Tensor,
    num_classes: int,
    first: Tensor,
    last: Tensor,
) -> Tensor:
    """log P(bin) under each Gaussian, given the bin edges' offsets from the mean.

    ``first``/``last`` flag the edge bins, which take the whole lower/upper tail. All shapes
    broadcast. See the module docstring for the three interior regimes.
    """
    inv_s = torch.exp(-log_scales)
    a, b = lower * inv_s, upper * inv_s  # standardized edges
    delta = inv_s / (num_classes - 1)  # standardized half-width, from the width itself
    # the first bin's mass is P(X < upper edge), the last bin's P(X > lower edge)
    tail = log_ndtr(torch.where(first, b, -a))

    c = 0.5 * (a + b)
    tau = _SERIES_TAU.get(c.dtype, _SERIES_TAU[torch.float32])
    narrow = delta * (c.abs() + 1.0) < tau
    straddle = ~narrow & (a < 0) & (b > 0)
    left = ~narrow & ~straddle
    # mirror bins right of the mode to the left: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    flip = c > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)

    # narrow: 2 delta phi(c) (1 + sum_n He_2n(c) delta^2n / (2n+1)!); safe inputs elsewhere
    cs = torch.where(narrow, c, torch.zeros_like(c))
    ds = torch.where(narrow, delta, torch.full_like(delta, 0.5 * tau))
    c2, d2 = cs * cs, ds * ds
    he2, he4 = c2 - 1.0, (c2 - 6.0) * c2 + 3.0
    he6 = ((c2 - 15.0) * c2 + 45.0) * c2 - 15.0
    series = d2 * (he2 / 6.0 + d2 * (he4 / 120.0 + d2 * he6 / 5040.0))
    log_narrow = torch.log(2.0 * ds) - 0.5 * c2 - _LOG_SQRT_2PI + torch.log1p(series)

    # left of the mode (a < b <= 0): log Phi(b) + log1mexp(D) with
    # D = (b - a)(-(a + b))/2 + log erfcx ratio, two non-negative terms (b - a is exact)
    bl = torch.where(left, b, torch.full_like(b, -1.0))
    al = torch.where(left, a, bl - 1.0)
    lb = _log_erfcx_half(bl)
    gap = 0.5 * (bl - al) * -(al + bl) + (lb - _log_erfcx_half(al))
    log_left = lb - 0.5 * bl * bl + log1mexp(torch.where(left, gap, torch.ones_like(gap)))

    # straddling the mode: 1 - Phi(a) - Phi(-b), each tail below 1/2
    tails = ndtr(a) + ndtr(-b)
    log_straddle = torch.log1p(-torch.where(straddle, tails, torch.zeros_like(tails)))

    interior = torch.where(narrow, log_narrow, torch.where(straddle, log_straddle, log_left))
    return torch.where(first | last, tail, interior)


def _prepare(
    logits: Tensor, means: Tensor, log_scales: Tensor, log_scale_min: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    dtype = V.compute_dtype(means.dtype)
    logits, means, log_scales = logits.to(dtype), means.to(dtype), log_scales.to(dtype)
    if log_scale_min is not None:
        log_scales = log_scales.clamp(min=log_scale_min)
    return logits, means, log_scales


def gaussian_mixture_nll(
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    y: Tensor,
    log_scale_min: float | None = None,
) -> Tensor:
    """Per-element negative log-*density* of y under a mixture of Gaussians (can be < 0).

    Args:
        logits, means, log_scales: (*batch, M).
        y: (*batch) or anything broadcasting against (*batch).
        log_scale_min: clamp log-scales from below (None: no clamp).

    Returns:
        NLL in nats, in the compute dtype (float32 for half inputs).
    """
    logits, means, log_scales = _prepare(logits, means, log_scales, log_scale_min)
    z = (y.to(means.dtype).unsqueeze(-1) - means) * torch.exp(-log_scales)
    log_density = -0.5 * z * z - log_scales - _LOG_SQRT_2PI
    return -torch.logsumexp(F.log_softmax(logits, dim=-1) + log_density, dim=-1)


def discretized_gaussian_mixture_nll(
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    y: Tensor,
    num_classes: int,
    log_scale_min: float | None = None,
) -> Tensor:
    """Exact per-element NLL (nats, >= 0) of the bin nearest to y under the discretized mixture.

    Args:
        logits, means, log_scales: (*batch, M).
        y: values in [-1, 1] (snapped to the nearest of K bin centres), broadcasting to (*batch).
        num_classes: K.
        log_scale_min: clamp log-scales from below (None: no clamp).
    """
    logits, means, log_scales = _prepare(logits, means, log_scales, log_scale_min)
    lower, upper, first, last = bin_edges(y, means, num_classes)
    log_mass = bin_log_mass(lower, upper, log_scales, num_classes, first, last)
    return -torch.logsumexp(F.log_softmax(logits, dim=-1) + log_mass, dim=-1)


def _sample_continuous(
    logits: Tensor, means: Tensor, log_scales: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Gumbel-max component choice, then mean + scale * N(0, 1); not clamped."""
    mu, log_s = _pick_component(logits, means, log_scales, generator)
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(log_s) * noise


class MixtureOfGaussians(LocationScaleMixture):
    """A mixture of M Gaussians: a continuous density on the real line.

    Args:
        logits: (*batch, M) unnormalized mixture weights.
        means: (*batch, M) component means.
        log_scales: (*batch, M) natural log of the component standard deviations.
        log_scale_min: optional lower clamp on the log-scales. None keeps them as given.
        validate_args: check parameters for NaN/inf and values for NaN (None: yes, even
            after ``torch.compile`` turns torch's global default off; False skips the checks).

    ``log_prob`` is a log-*density*: it exceeds 0 (the NLL is negative) wherever the density is
    above 1, e.g. at the mean of any Gaussian with scale below 1/sqrt(2 pi) = 0.399. That is not
    a bug: only the discretized mixture (:class:`DiscretizedGaussianMixture`) gives
    probabilities, and NLLs comparable with the MoL's.

    Example::

        >>> d = MixtureOfGaussians(torch.zeros(3), torch.tensor([-0.5, 0.0, 0.5]),
        ...                        torch.full((3,), -4.0))
        >>> float(d.log_prob(torch.tensor(0.0))) > 0     # density e^4/(3 sqrt(2 pi)) > 1
        True
        >>> d.sample((5,)).shape
        torch.Size([5])
    """

    support = constraints.real
    _draw_fn = _sample_continuous

    def __init__(
        self,
        logits: Tensor,
        means: Tensor,
        log_scales: Tensor,
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._init_params(logits, means, log_scales, log_scale_min, validate_args)

    @classmethod
    def from_params(
        cls,
        y_hat: Tensor,
        layout: str = "BCT",
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
    ) -> MixtureOfGaussians:
        """Build from a network output: channels ``[logits M | means M | log_scales M]``, or
        exactly 2 channels ``[mean, log_scale]`` for a single Gaussian.

        Args:
            y_hat: (B, C, T) for layout "BCT" or (B, T, C) for "BTC".

        Returns:
            A distribution with batch shape (B, T).
        """
        logits, means, log_scales = V.split_channels(V.to_btc(y_hat, layout), 3, allow_single=2)
        return cls(logits, means, log_scales, log_scale_min, validate_args)

    def _replace(self, logits, means, log_scales) -> MixtureOfGaussians:
        return MixtureOfGaussians(logits, means, log_scales, validate_args=False)

    def _check_value(self, value: Tensor) -> None:
        if self._validate_values and bool(torch.isnan(value).any()):
            raise ValueError("values contain NaN")

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density at ``value``; shape broadcast(sample, batch)."""
        self._check_value(value)
        return -gaussian_mixture_nll(self.logits, self.means, self.log_scales, value)

    def cdf(self, value: Tensor) -> Tensor:
        """P(X <= x) = sum_m w_m Phi((x - mean_m) / scale_m)."""
        self._check_value(value)
        z = (value.to(self.means.dtype).unsqueeze(-1) - self.means) * torch.exp(-self.log_scales)
        return (self.mixture_probs * ndtr(z)).sum(-1)

    @property
    def mean(self) -> Tensor:
        return (self.mixture_probs * self.means).sum(-1)

    @property
    def variance(self) -> Tensor:
        """Law of total variance: E[s^2 + mu^2] - E[mu]^2, centred on the mean for accuracy."""
        centred = self.means - self.mean.unsqueeze(-1)
        return (self.mixture_probs * (torch.exp(2.0 * self.log_scales) + centred**2)).sum(-1)

    @property
    def mode(self) -> Tensor:
        """The most probable component's mean: the usual decode. It is the density's mode for
        M = 1 and for well separated components, not in general."""
        return self._pick_mean()

    def sample(
        self, sample_shape: torch.Size = torch.Size(), generator: torch.Generator | None = None
    ) -> Tensor:
        """Real-valued draws of shape (*sample_shape, *batch) (not clipped to [-1, 1])."""
        return self._draw(sample_shape, generator)


class DiscretizedGaussianMixture(DiscretizedMixture):
    """Mixture of M Gaussians discretized to K bins on [-1, 1]; the edge bins take the tails.

    The bin grid is the MoL's (:class:`dmol.logistic.DiscretizedLogisticMixture`), so NLLs are
    comparable. Each bin's log-mass is exact to float rounding in both tails and for bins much
    narrower than the scale (see the module docstring).

    Args:
        logits, means, log_scales: (*batch, M) as for :class:`MixtureOfGaussians`.
        num_classes: K >= 2 (65536 for 16-bit audio, 256 for 8-bit).
        log_scale_min: optional lower clamp on the log-scales.
        validate_args: check parameters for NaN/inf and values for range (None: yes).

    Values are floats in [-1, 1] of shape (*sample, *batch); they are snapped to the nearest bin.
    ``from_params`` also takes exactly 2 channels ``[mean, log_scale]``: a single Gaussian.

    Example::

        >>> d = DiscretizedGaussianMixture(torch.zeros(2), torch.tensor([-0.3, 0.4]),
        ...                                torch.full((2,), -3.0), num_classes=256)
        >>> round(float(d.log_pmf().exp().sum()), 6)
        1.0
    """

    # the Gaussian family (the rest is dmol.mixture.DiscretizedMixture's)
    _component_cdf = ndtr
    _bin_nll = discretized_gaussian_mixture_nll
    _draw_fn = _sample_continuous

    @staticmethod
    def _split(btc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return V.split_channels(btc, 3, allow_single=2)

    def _clipped_means(self) -> Tensor:
        """``-Phi(alpha) + Phi(-beta) + mu (Phi(beta) - Phi(alpha)) + s (phi(alpha) - phi(beta))``
        per component, with alpha, beta = (-+1 - mu)/s."""
        s = self.log_scales.exp()
        alpha, beta = (-1.0 - self.means) / s, (1.0 - self.means) / s
        cdf_a, cdf_b = ndtr(alpha), ndtr(beta)
        pdf_a = torch.exp(-0.5 * alpha * alpha - _LOG_SQRT_2PI)
        pdf_b = torch.exp(-0.5 * beta * beta - _LOG_SQRT_2PI)
        return -cdf_a + (1.0 - cdf_b) + self.means * (cdf_b - cdf_a) + s * (pdf_a - pdf_b)


# -- functional API ---------------------------------------------------------------------------


def mix_gaussian_loss(
    y_hat: Tensor,
    y: Tensor,
    *,
    log_scale_min: float | None = -7.0,
    layout: str = "BCT",
    reduction: str = "mean",
    mask: Tensor | None = None,
    num_classes: int | None = None,
    clamp_targets: bool = False,
    loc: Tensor | None = None,
) -> Tensor:
    """Negative log-likelihood of targets under the (mixture of) Gaussians a network predicted.

    Args:
        y_hat: (B, C, T) for layout "BCT" or (B, T, C) for "BTC": C = 3M channels
            ``[logits M | means M | log_scales M]``, or C = 2 ``[mean, log_scale]``.
        y: (B, T) (or (B, T, 1) / (B, 1, T)) targets in [-1, 1].
        log_scale_min: lower clamp on log-scales (None: none). The defaults differ by entry
            point (-7 here, None in the distributions): docs/mol.md section 6 lists them.
        reduction: "mean" (per valid element), "sum", or "none" -> (B, T).
        mask: (B, T) 0/1 weights for padded batches, or (B,) integer lengths.
        num_classes: None -> continuous negative log-*density* (can be negative);
            an int K -> the discretized, normalized NLL in nats over K bins (>= 0).
        clamp_targets: clip targets to [-1, 1] instead of raising.
        loc: (B, T) shift added to every component mean (a linear prediction), or None;
            differentiable.

    Example::

        >>> y_hat = torch.tensor([[[0.0], [-5.0]]])              # one Gaussian, scale e^-5
        >>> float(mix_gaussian_loss(y_hat, torch.zeros(1, 1))) < 0  # density e^5/sqrt(2 pi)
        True
    """
    V.check_reduction(reduction)
    K = None if num_classes is None else V.check_num_classes(num_classes)
    btc = V.to_btc(V.check_tensor("y_hat", y_hat), layout)
    V.compute_dtype(btc.dtype)
    logits, means, log_scales = V.split_channels(btc, 3, allow_single=2)
    batch, steps = btc.shape[:2]
    y = V.check_range(V.target_bt(V.check_target_dtype(y, "y"), batch, steps),
                      clamp=clamp_targets, clamp_hint=True)
    V.check_finite("y_hat", btc)
    m = V.mask_bt(mask, batch, steps, btc.device)
    means = V.shift_means(means, V.loc_bt(loc, batch, steps))
    if K is None:
        nll = gaussian_mixture_nll(logits, means, log_scales, y, log_scale_min)
    else:
        nll = discretized_gaussian_mixture_nll(logits, means, log_scales, y, K, log_scale_min)
    return V.reduce(nll, reduction, m)


def sample_mix_gaussian(
    y_hat: Tensor,
    *,
    log_scale_min: float | None = -7.0,
    layout: str = "BCT",
    temperature: float = 1.0,
    scale_temperature: float = 1.0,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
    loc: Tensor | None = None,
) -> Tensor:
    """Sample one value per (B, T) position from the Gaussian mixture a network predicted.

    Args:
        y_hat: (B, C, T) ("BCT") or (B, T, C) ("BTC"), laid out as for :func:`mix_gaussian_loss`.
        log_scale_min: lower clamp on log-scales (None: none). The defaults differ by entry
            point (-7 here, None in the distributions): docs/mol.md section 6 lists them.
        temperature: divides the mixture logits (0: most probable component).
        scale_temperature: multiplies component scales (0: the component's mean).
        generator: a ``torch.Generator`` for reproducible draws.
        num_classes: snap to the K-bin grid when given (otherwise continuous).
        loc: (B, T) shift added to every component mean, or None.

    Returns:
        (B, T) values clipped to [-1, 1], detached from the graph.
    """
    K = None if num_classes is None else V.check_num_classes(num_classes)
    btc = V.to_btc(V.check_tensor("y_hat", y_hat), layout)
    logits, means, log_scales = V.split_channels(btc, 3, allow_single=2)
    V.check_finite("y_hat", btc)
    means = V.shift_means(means, V.loc_bt(loc, *means.shape[:2]))
    logits, means, log_scales = _prepare(logits, means, log_scales, log_scale_min)
    logits, log_scales = _apply_temperature(logits, log_scales, temperature, scale_temperature)
    with torch.no_grad():
        x = _sample_continuous(logits, means, log_scales, generator).clamp(-1.0, 1.0)
    return x if K is None else bin_centre(bin_index(x, K), K, x.dtype)
