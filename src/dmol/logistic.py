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
from torch.distributions import Distribution, constraints

from dmol import _validate as V
from dmol import fused

__all__ = [
    "DiscretizedLogisticMixture",
    "discretized_mix_logistic_loss",
    "sample_discretized_mix_logistic",
    "mixture_nll_reference",
    "bin_index",
    "bin_centre",
]

_LN2 = math.log(2.0)
# Above this K the enumeration-based `mean` would touch K*M values per element; use the
# closed form instead (see `mean`).
_ENUMERATE_MAX = 4096


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


def bin_index(y: Tensor, num_classes: int) -> Tensor:
    """The bin k in [0, K-1] whose centre ``2k/(K-1) - 1`` is nearest to y (int64)."""
    k = torch.round((y.double() + 1.0) * (0.5 * (num_classes - 1)))
    return k.clamp_(0, num_classes - 1).long()


def bin_centre(k: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Centre ``2k/(K-1) - 1`` of bin k, rounded once into ``dtype``."""
    return ((2.0 * k.double()) / (num_classes - 1) - 1.0).to(dtype)


def _offset_and_edges(
    y: Tensor, mu: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """d = centre(bin(y)) - mu and the edge-bin flags, broadcast against mu (..., M).

    The centre is formed in float64 and the subtraction done there too: in float32 a centre
    near +-1 carries an absolute error of ~6e-8, which a scale of e^-16 would magnify into a
    visible error of the standardized edges.
    """
    k = bin_index(y, num_classes).unsqueeze(-1)
    centre = (2.0 * k.double()) / (num_classes - 1) - 1.0
    d = (centre - mu.double()).to(mu.dtype)
    return d, k == 0, k == num_classes - 1


def component_log_mass(
    d: Tensor, log_scales: Tensor, num_classes: int, first: Tensor, last: Tensor
) -> Tensor:
    """log P(bin) under each logistic, given the offset ``d = centre - mu``.

    ``first``/``last`` flag the edge bins, which take the whole lower/upper tail.
    """
    h = 1.0 / (num_classes - 1)
    inv_s = torch.exp(-log_scales)
    a = (d - h) * inv_s  # standardized lower edge
    b = (d + h) * inv_s  # standardized upper edge
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
    d, first, last = _offset_and_edges(y, means, num_classes)
    log_mass = component_log_mass(d, log_scales, num_classes, first, last)
    return -torch.logsumexp(F.log_softmax(logits, dim=-1) + log_mass, dim=-1)


def _apply_temperature(
    logits: Tensor, log_scales: Tensor, temperature: float, scale_temperature: float
) -> tuple[Tensor, Tensor]:
    """Temperature semantics shared by the class and the functional sampler.

    ``temperature`` divides the mixture logits (0: always the most probable component);
    ``scale_temperature`` multiplies every component's scale (0: the component's mean).
    """
    temperature = V.check_temperature("temperature", temperature)
    scale_temperature = V.check_temperature("scale_temperature", scale_temperature)
    if temperature == 0:
        # one-hot on the argmax; ties broken by the first index like torch.argmax
        hot = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        logits = torch.where(hot, 0.0, float("-inf")).to(logits.dtype)
    elif temperature != 1:
        logits = logits / temperature
    if scale_temperature == 0:
        log_scales = torch.full_like(log_scales, float("-inf"))
    elif scale_temperature != 1:
        log_scales = log_scales + math.log(scale_temperature)
    return logits, log_scales


class DiscretizedLogisticMixture(Distribution):
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

    arg_constraints = {
        "logits": constraints.real_vector,
        "means": constraints.real_vector,
        "log_scales": constraints.real_vector,
    }
    support = constraints.interval(-1.0, 1.0)
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        means: Tensor,
        log_scales: Tensor,
        num_classes: int = 65536,
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.num_classes = V.check_num_classes(num_classes)
        for name, t in (("logits", logits), ("means", means), ("log_scales", log_scales)):
            V.check_tensor(name, t)
        if not (logits.shape == means.shape == log_scales.shape) or logits.dim() < 1:
            raise ValueError(
                "logits, means and log_scales must share one shape (*batch, M), got "
                f"{tuple(logits.shape)}, {tuple(means.shape)}, {tuple(log_scales.shape)}"
            )
        dtype = V.compute_dtype(means.dtype)
        self.logits = logits.to(dtype)
        self.means = means.to(dtype)
        self.log_scales = log_scales.to(dtype)
        if log_scale_min is not None:
            self.log_scales = self.log_scales.clamp(min=log_scale_min)
        self.log_scale_min = log_scale_min
        validate = V.resolve_validate_args(validate_args)
        if validate:
            for name in ("logits", "means", "log_scales"):
                V.check_finite(name, getattr(self, name))
        # the checks above replace torch's generic constraint check with clearer messages
        super().__init__(self.logits.shape[:-1], validate_args=False)
        self._validate_values = bool(validate)

    @classmethod
    def from_params(
        cls,
        y_hat: Tensor,
        layout: str = "BCT",
        num_classes: int = 65536,
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
        loc: Tensor | None = None,
    ) -> DiscretizedLogisticMixture:
        """Build from a network output with channels ``[logits M | means M | log_scales M]``.

        Args:
            y_hat: (B, 3M, T) for layout "BCT" or (B, T, 3M) for "BTC".
            loc: optional (B, T) shift added to every mean (e.g. a linear prediction).

        Returns:
            A distribution with batch shape (B, T).
        """
        logits, means, log_scales = V.split_channels(V.to_btc(y_hat, layout), 3)
        return cls(logits, V.shift_means(means, loc), log_scales, num_classes, log_scale_min,
                   validate_args)

    @property
    def num_mixtures(self) -> int:
        return self.logits.shape[-1]

    @property
    def mixture_probs(self) -> Tensor:
        """(*batch, M) component weights."""
        return torch.softmax(self.logits, dim=-1)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 (torch API)
        shape = torch.Size(batch_shape) + (self.num_mixtures,)
        return type(self)(
            self.logits.expand(shape),
            self.means.expand(shape),
            self.log_scales.expand(shape),
            self.num_classes,
            None,
            validate_args=False,
        )

    def with_temperature(
        self, temperature: float = 1.0, scale_temperature: float = 1.0
    ) -> DiscretizedLogisticMixture:
        """A sharpened (< 1) or flattened (> 1) copy.

        ``temperature`` divides the mixture logits (0 picks the most probable component);
        ``scale_temperature`` multiplies each component's scale (0 collapses it to its mean).
        """
        logits, log_scales = _apply_temperature(
            self.logits, self.log_scales, temperature, scale_temperature
        )
        if scale_temperature == 0:
            # a zero scale is a point mass: keep it representable as a very small scale
            log_scales = torch.full_like(self.log_scales, -80.0)
        return type(self)(logits, self.means, log_scales, self.num_classes, validate_args=False)

    # -- probabilities ------------------------------------------------------------------------

    def _check_value(self, value: Tensor) -> None:
        if self._validate_values:
            V.check_range(value)

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

    def cdf(self, value: Tensor) -> Tensor:
        """P(Y <= y): the mass of all bins up to and including y's bin."""
        self._check_value(value)
        k = bin_index(value, self.num_classes).unsqueeze(-1)
        upper = bin_centre(k, self.num_classes, torch.float64) + 1.0 / (self.num_classes - 1)
        z = ((upper - self.means.double()) * torch.exp(-self.log_scales.double())).to(
            self.means.dtype
        )
        c = (self.mixture_probs * torch.sigmoid(z)).sum(-1)
        return torch.where(k.squeeze(-1) == self.num_classes - 1, torch.ones_like(c), c)

    def log_pmf(self, chunk: int = 4096) -> Tensor:
        """(*batch, K) log-masses of every bin, computed in chunks of bins to bound memory."""
        K = self.num_classes
        out = []
        for start in range(0, K, chunk):
            k = torch.arange(start, min(start + chunk, K), device=self.means.device)
            centres = bin_centre(k, K, self.means.dtype)  # (k,)
            y = centres.expand(*self.batch_shape, -1).movedim(-1, 0)  # (k, *batch)
            out.append(-mixture_nll_reference(
                self.logits, self.means, self.log_scales, y, K
            ).movedim(0, -1))
        return torch.cat(out, dim=-1)

    # -- summaries ----------------------------------------------------------------------------

    @property
    def mean(self) -> Tensor:
        """E[Y].

        Exact by enumeration for K <= 4096. Above that, the closed form of E[clip(X, -1, 1)]
        for the continuous mixture X, ``-1 + s * (softplus((mu + 1)/s) - softplus((mu - 1)/s))``
        per component, which differs from the discretized mean by at most half a bin width
        (rounding to a centre moves a value by at most 1/(K-1)).
        """
        if self.num_classes <= _ENUMERATE_MAX:
            centres = bin_centre(
                torch.arange(self.num_classes, device=self.means.device),
                self.num_classes,
                self.means.dtype,
            )
            return (self.log_pmf().exp() * centres).sum(-1)
        s = self.log_scales.exp()
        clipped = -1.0 + s * (F.softplus((self.means + 1) / s) - F.softplus((self.means - 1) / s))
        return (self.mixture_probs * clipped).sum(-1)

    @property
    def mode(self) -> Tensor:
        """The usual deterministic decode: the most probable component's mean, on the bin grid.

        For M = 1 this is the bin holding the mean, the pmf's mode unless an edge bin's tail mass
        outweighs it; use ``log_pmf().argmax(-1)`` for the exact mode when K is small.
        """
        idx = self.logits.argmax(-1, keepdim=True)
        mu = self.means.gather(-1, idx).squeeze(-1).clamp(-1.0, 1.0)
        return bin_centre(bin_index(mu, self.num_classes), self.num_classes, self.means.dtype)

    @property
    def variance(self) -> Tensor:
        """Var[Y] by enumeration (exact); costs K*M per element."""
        centres = bin_centre(
            torch.arange(self.num_classes, device=self.means.device),
            self.num_classes,
            torch.float64,
        )
        p = self.log_pmf().double().exp()
        m = (p * centres).sum(-1, keepdim=True)
        return (p * (centres - m) ** 2).sum(-1).to(self.means.dtype)

    def entropy(self) -> Tensor:
        """Exact Shannon entropy in nats, by enumerating all K bins (chunked; K*M work per
        element, so about 0.7M operations per element at 16 bits with M = 10)."""
        lp = self.log_pmf()
        return -(lp.exp() * lp).sum(-1)

    # -- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        sample_shape: torch.Size = torch.Size(),
        generator: torch.Generator | None = None,
        return_bins: bool = False,
    ) -> Tensor:
        """Draw values on the bin grid (or bin indices with ``return_bins=True``).

        A component is chosen with the Gumbel-max trick, argmax(logits + Gumbel noise), and a
        value drawn from it by the inverse CDF ``mu + s * (log u - log(1 - u))``; values outside
        [-1, 1] land in the edge bins, exactly as their tail mass says.
        """
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            x = _gumbel_inverse_cdf(
                self.logits.expand(shape + (self.num_mixtures,)),
                self.means.expand(shape + (self.num_mixtures,)),
                self.log_scales.expand(shape + (self.num_mixtures,)),
                generator,
            )
            k = bin_index(x, self.num_classes)
            return k if return_bins else bin_centre(k, self.num_classes, self.means.dtype)


def _uniform_open(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) without 0: log(u) and log(-log(u)) must stay finite."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return u.clamp_(min=torch.finfo(like.dtype).tiny)


def _gumbel_inverse_cdf(
    logits: Tensor, means: Tensor, log_scales: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Unfused Gumbel-max component choice + logistic inverse CDF; clamps to [-1, 1]."""
    gumbel = -torch.log(-torch.log(_uniform_open(logits.shape, logits, generator)))
    idx = (logits + gumbel).argmax(-1, keepdim=True)
    mu = means.gather(-1, idx).squeeze(-1)
    log_s = log_scales.gather(-1, idx).squeeze(-1)
    u = _uniform_open(mu.shape, mu, generator)
    # logit(u) = log u - log(1 - u); log1p keeps precision for small u
    x = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    return x.clamp(-1.0, 1.0)


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
