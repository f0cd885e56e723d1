"""The mixture written once for any location-scale component family (logistic, Gaussian).

M components, each with a mean and a log-scale, weighted by ``softmax(logits)``:
:class:`LocationScaleMixture` holds what every such mixture shares (the parameters and their
checks, ``expand``, temperatures); :class:`DiscretizedMixture` adds the discretization to K
bins on [-1, 1] whose edge bins take the tails (the CDF, the pmf by enumeration, mean, mode,
variance, entropy and sampling), the way :class:`torch.distributions.MixtureSameFamily` is
written once for any component distribution. A component family supplies its CDF, the exact
NLL of a bin, the mean of a component clipped to [-1, 1] and a sampler
(:class:`dmol.logistic.DiscretizedLogisticMixture`,
:class:`dmol.gaussian.DiscretizedGaussianMixture`).

The bin grid (:func:`bin_index`, :func:`bin_centre`) and the temperature semantics are here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

from dmol import _validate as V

__all__ = ["DiscretizedMixture", "LocationScaleMixture", "bin_centre", "bin_index"]

# Above this K the enumeration-based `mean` would touch K*M values per element; use the
# closed form instead (see `DiscretizedMixture.mean`).
_ENUMERATE_MAX = 4096
# log-scale standing in for a zero scale (scale_temperature=0): a point mass at the mean
_POINT_LOG_SCALE = -80.0


def bin_index(y: Tensor, num_classes: int) -> Tensor:
    """The bin k in [0, K-1] whose centre ``2k/(K-1) - 1`` is nearest to y (int64)."""
    k = torch.round((y.double() + 1.0) * (0.5 * (num_classes - 1)))
    return k.clamp_(0, num_classes - 1).long()


def bin_centre(k: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Centre ``2k/(K-1) - 1`` of bin k, rounded once into ``dtype``."""
    return ((2.0 * k.double()) / (num_classes - 1) - 1.0).to(dtype)


def _uniform_open(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) without 0: log(u) and log(-log(u)) must stay finite."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return u.clamp_(min=torch.finfo(like.dtype).tiny)


def _pick_component(logits: Tensor, means: Tensor, log_scales: Tensor,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Gumbel-max choice of one component per element: its (mean, log-scale), each (*batch,).

    ``argmax(logits + G)`` with G standard Gumbel draws index m with probability softmax_m,
    with no normalization and no cumulative sum to round."""
    gumbel = -torch.log(-torch.log(_uniform_open(logits.shape, logits, generator)))
    idx = (logits + gumbel).argmax(-1, keepdim=True)
    return means.gather(-1, idx).squeeze(-1), log_scales.gather(-1, idx).squeeze(-1)


def _apply_temperature(
    logits: Tensor, log_scales: Tensor, temperature: float, scale_temperature: float
) -> tuple[Tensor, Tensor]:
    """Temperature semantics shared by the classes and the functional samplers.

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


class LocationScaleMixture(Distribution):
    """Parameters ``logits``, ``means``, ``log_scales`` (*batch, M), checked once for every
    mixture; subclasses call :meth:`_init_params` and implement :meth:`_replace`."""

    arg_constraints = {
        "logits": constraints.real_vector,
        "means": constraints.real_vector,
        "log_scales": constraints.real_vector,
    }
    has_rsample = False

    def _init_params(
        self,
        logits: Tensor,
        means: Tensor,
        log_scales: Tensor,
        log_scale_min: float | None,
        validate_args: bool | None,
    ) -> None:
        tensors = (logits, means, log_scales)
        for name, t in zip(("logits", "means", "log_scales"), tensors, strict=True):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__} "
                                "(logits, means and log_scales must be torch tensors)")
        if not (logits.shape == means.shape == log_scales.shape) or logits.dim() < 1:
            raise ValueError(
                "logits, means and log_scales must share one shape (*batch, M), got "
                f"{tuple(logits.shape)}, {tuple(means.shape)}, {tuple(log_scales.shape)}"
            )
        dtype = V.compute_dtype(means.dtype)
        self.logits, self.means = logits.to(dtype), means.to(dtype)
        self.log_scales = log_scales.to(dtype)
        if log_scale_min is not None:
            self.log_scales = self.log_scales.clamp(min=log_scale_min)
        self.log_scale_min = log_scale_min
        validate = V.resolve_validate_args(validate_args)
        if validate:
            for name in ("logits", "means", "log_scales"):
                V.check_finite(name, getattr(self, name))
        # the checks above replace torch's generic constraint check with clearer messages
        Distribution.__init__(self, self.logits.shape[:-1], validate_args=False)
        self._validate_values = bool(validate)

    def _replace(self, logits: Tensor, means: Tensor, log_scales: Tensor):
        """The same kind of distribution with other parameters (unchecked)."""
        raise NotImplementedError

    @property
    def num_mixtures(self) -> int:
        return self.logits.shape[-1]

    @property
    def mixture_probs(self) -> Tensor:
        """(*batch, M) component weights."""
        return torch.softmax(self.logits, dim=-1)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 (torch API)
        shape = torch.Size(batch_shape) + (self.num_mixtures,)
        return self._replace(
            self.logits.expand(shape), self.means.expand(shape), self.log_scales.expand(shape)
        )

    def with_temperature(self, temperature: float = 1.0, scale_temperature: float = 1.0):
        """A sharpened (< 1) or flattened (> 1) copy.

        ``temperature`` divides the mixture logits (0 picks the most probable component);
        ``scale_temperature`` multiplies each component's scale (0 collapses it to its mean).
        """
        logits, log_scales = _apply_temperature(
            self.logits, self.log_scales, temperature, scale_temperature
        )
        if scale_temperature == 0:
            # a zero scale is a point mass: keep it representable as a very small scale
            log_scales = torch.full_like(self.log_scales, _POINT_LOG_SCALE)
        return self._replace(logits, self.means, log_scales)

    def _pick_mean(self) -> Tensor:
        """The most probable component's mean."""
        idx = self.logits.argmax(-1, keepdim=True)
        return self.means.gather(-1, idx).squeeze(-1)

    #: ``draw(logits, means, log_scales, generator)``: one value per row of (..., M)
    #: parameters, a component chosen by Gumbel-max (the family's sampler)
    _draw_fn: Callable[..., Tensor]

    def _draw(self, sample_shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + (self.num_mixtures,)
        with torch.no_grad():
            return type(self)._draw_fn(
                self.logits.expand(shape),
                self.means.expand(shape),
                self.log_scales.expand(shape),
                generator,
            )


class DiscretizedMixture(LocationScaleMixture):
    """A location-scale mixture discretized to K = ``num_classes`` bins on [-1, 1]; the edge
    bins take the tails. Values are floats in [-1, 1] of shape (*sample, *batch), snapped to the
    nearest bin.

    A component family sets ``_component_cdf`` (the standard component's CDF), ``_bin_nll``
    (exact per-element NLL of a value's bin, ``(logits, means, log_scales, y, K)``),
    ``_draw_fn`` (see :class:`LocationScaleMixture`) and implements :meth:`_clipped_means`.
    """

    support = constraints.interval(-1.0, 1.0)
    _component_cdf: Callable[[Tensor], Tensor]
    _bin_nll: Callable[..., Tensor]

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
        self._init_params(logits, means, log_scales, log_scale_min, validate_args)

    @classmethod
    def from_params(
        cls,
        y_hat: Tensor,
        layout: str = "BCT",
        num_classes: int = 65536,
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
        loc: Tensor | None = None,
    ):
        """Build from a network output with channels ``[logits M | means M | log_scales M]``.

        Args:
            y_hat: (B, 3M, T) for layout "BCT" or (B, T, 3M) for "BTC".
            loc: optional (B, T) shift added to every mean (e.g. a linear prediction).

        Returns:
            A distribution with batch shape (B, T).
        """
        logits, means, log_scales = cls._split(V.to_btc(y_hat, layout))
        return cls(logits, V.shift_means(means, loc), log_scales, num_classes, log_scale_min,
                   validate_args)

    @staticmethod
    def _split(btc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return V.split_channels(btc, 3)

    def _replace(self, logits, means, log_scales):
        return type(self)(logits, means, log_scales, self.num_classes, validate_args=False)

    # -- probabilities ------------------------------------------------------------------------

    def _check_value(self, value: Tensor) -> None:
        if self._validate_values:
            V.check_range(value)

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log-mass of the bin nearest to ``value``; shape broadcast(sample, batch)."""
        self._check_value(value)
        return -type(self)._bin_nll(
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
        c = (self.mixture_probs * type(self)._component_cdf(z)).sum(-1)
        return torch.where(k.squeeze(-1) == self.num_classes - 1, torch.ones_like(c), c)

    def log_pmf(self, chunk: int = 4096) -> Tensor:
        """(*batch, K) log-masses of every bin, computed in chunks of bins to bound memory."""
        K = self.num_classes
        out = []
        for start in range(0, K, chunk):
            k = torch.arange(start, min(start + chunk, K), device=self.means.device)
            y = bin_centre(k, K, self.means.dtype).expand(*self.batch_shape, -1).movedim(-1, 0)
            nll = type(self)._bin_nll(self.logits, self.means, self.log_scales, y, K)
            out.append(-nll.movedim(0, -1))
        return torch.cat(out, dim=-1)

    def _centres(self, dtype: torch.dtype) -> Tensor:
        k = torch.arange(self.num_classes, device=self.means.device)
        return bin_centre(k, self.num_classes, dtype)

    # -- summaries ----------------------------------------------------------------------------

    def _clipped_means(self) -> Tensor:
        """(*batch, M) E[clip(X_m, -1, 1)] of each continuous component, in closed form."""
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        """E[Y].

        Exact by enumeration for K <= 4096. Above that, the mixture of the components'
        closed-form E[clip(X, -1, 1)] (:meth:`_clipped_means`), which differs from the
        discretized mean by at most 1/(K-1) (snapping to a centre moves a value that far).
        """
        if self.num_classes <= _ENUMERATE_MAX:
            return (self.log_pmf().exp() * self._centres(self.means.dtype)).sum(-1)
        return (self.mixture_probs * self._clipped_means()).sum(-1)

    @property
    def mode(self) -> Tensor:
        """The usual deterministic decode: the most probable component's mean, on the bin grid.

        For M = 1 this is the bin holding the mean, the pmf's mode unless an edge bin's tail mass
        outweighs it; use ``log_pmf().argmax(-1)`` for the exact mode when K is small.
        """
        mu = self._pick_mean().clamp(-1.0, 1.0)
        return bin_centre(bin_index(mu, self.num_classes), self.num_classes, self.means.dtype)

    @property
    def variance(self) -> Tensor:
        """Var[Y] by enumeration (exact); costs K*M per element."""
        centres = self._centres(torch.float64)
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
        value drawn from it; values outside [-1, 1] land in the edge bins, exactly as their
        tail mass says.
        """
        k = bin_index(self._draw(sample_shape, generator), self.num_classes)
        return k if return_bins else bin_centre(k, self.num_classes, self.means.dtype)
