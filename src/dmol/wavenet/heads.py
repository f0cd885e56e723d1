"""Output heads: thin adapters from a WaveNet's (B, C, T) output to a distribution over samples.

Every head has the same interface, so the model, the trainer and synthesis never branch on the
head type; the math lives in :mod:`dmol.logistic`, :mod:`dmol.gaussian` and :mod:`dmol.mulaw`.

===========  ===============================  ====================  ===========================
name         distribution                     ``out_channels``      channels
===========  ===============================  ====================  ===========================
"mol"        discretized mixture of logistics 3 M                   [logits | means | log_scales]
"gaussian"   one discretized Gaussian         2                     [mean | log_scale]
"mog"        discretized mixture of Gaussians 3 M                   [logits | means | log_scales]
"mulaw"      softmax over mu-law classes      Q = mu + 1            logits
===========  ===============================  ====================  ===========================

The continuous heads can be *shifted* (``shifted=True``, an LP-WaveNet): ``y_hat`` then has one
more channel, last, holding ``loc`` (B, T), added to every mean (the linear prediction of the
sample from its past); ``net_channels`` is what the network itself outputs.

The three continuous-family heads are discretized to ``num_classes`` bins on [-1, 1] (65536 by
default: 16-bit audio), so their NLLs are comparable with each other; the mu-law head's NLL is a
cross-entropy over its Q classes.

Example::

    >>> head = make_head("mol", n_mixtures=10)
    >>> y_hat = torch.randn(2, head.out_channels, 100)      # (B, C, T)
    >>> y = torch.rand(2, 100) * 2 - 1                      # (B, T) in [-1, 1]
    >>> head.loss(y_hat, y).shape, head.nll(y_hat, y).shape, head.sample(y_hat).shape
    (torch.Size([]), torch.Size([2, 100]), torch.Size([2, 100]))
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from dmol import _validate as V
from dmol.gaussian import DiscretizedGaussianMixture, mix_gaussian_loss, sample_mix_gaussian
from dmol.logistic import (
    DiscretizedLogisticMixture,
    discretized_mix_logistic_loss,
    sample_discretized_mix_logistic,
)
from dmol.mulaw import MuLawCategorical, mulaw_decode, mulaw_encode, mulaw_loss, sample_mulaw

__all__ = ["HEADS", "LP_HEADS", "GaussianHead", "Head", "MixtureHead", "MoGHead", "MoLHead",
           "MuLawHead", "make_head"]

# Initial log-scale of the continuous heads: about the spread of speech samples around a
# good prediction. The default bias 0 means a scale of 1, wider than all of [-1, 1]; Adam moves
# each parameter by ~lr per step, so shrinking it from there costs hundreds of steps during
# which the means get almost no gradient (a tiny run trains ~1 nat/sample faster with this).
INIT_LOG_SCALE = -3.0
# An LP head's components model the excitation around the prediction: from near silence
# (std ~2e-3) to glottal pulses (~0.2). Equal components at the start leave one of them to win
# every sample (a 10-component mixture of the first lp-16k run put 97% of its weight on one
# component after 10k steps); spreading their log-scales over that range, and their means a
# little, gives each a role from the first step.
INIT_LP_LOG_SCALES = (-7.0, -2.0)
INIT_LP_MEAN_SPREAD = 0.01


@torch.no_grad()
def _init_mixture(conv: nn.Conv1d, M: int, shifted: bool) -> None:
    """Biases of a mixture head's last conv, channels ``[logits | means | log_scales]``."""
    if not shifted or M == 1:
        conv.bias[2 * M : 3 * M].fill_(INIT_LOG_SCALE)
        return
    lo, hi = INIT_LP_LOG_SCALES
    conv.bias[2 * M : 3 * M].copy_(torch.linspace(lo, hi, M))
    conv.bias[M : 2 * M].copy_(torch.linspace(-INIT_LP_MEAN_SPREAD, INIT_LP_MEAN_SPREAD, M))


class Head:
    """Common interface. Subclasses set ``name``, ``net_channels`` and implement the methods.

    ``nll``/``loss`` take ``y_hat`` (B, C, T) and targets ``y`` (B, T) in [-1, 1];
    C = ``out_channels`` = ``net_channels`` (+ 1 for the ``loc`` channel of a shifted head).
    """

    name: str = ""
    net_channels: int = 0
    shifted: bool = False
    #: a linear prediction may shift this head's means (``lpc_order > 0``)
    shiftable: bool = True
    #: the synthesis engine draws this head's samples itself, in its torch step and its C++
    #: kernel, from noise drawn ahead (:meth:`IncrementalWaveNet.draw_noise`) with
    #: ``engine_log_scale_min``; other heads are sampled through :meth:`sample` each step
    engine_samples: bool = False

    @property
    def out_channels(self) -> int:
        """Channels of ``y_hat``: the network's, plus the shift of a shifted head."""
        return self.net_channels + int(self.shifted)

    def split(self, y_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """(distribution parameters (B, net_channels, T), loc (B, T) or None)."""
        self._check(y_hat)
        if not self.shifted:
            return y_hat, None
        return y_hat[:, :-1], y_hat[:, -1]

    def nll(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Per-sample negative log-likelihood in nats, (B, T)."""
        raise NotImplementedError

    def loss(self, y_hat: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean NLL (nats) over the valid samples; ``mask`` is (B, T) 0/1 or (B,) lengths."""
        self._check(y_hat)
        m = V.mask_bt(mask, y_hat.shape[0], y_hat.shape[2], y_hat.device)
        return V.reduce(self.nll(y_hat, y), "mean", m)

    def sample(
        self, y_hat: Tensor, *, generator: torch.Generator | None = None, temperature: float = 1.0,
        scale_temperature: float = 1.0,
    ) -> Tensor:
        """One draw per position, (B, T) in [-1, 1]. ``temperature`` divides the logits
        (0: the most probable component or class), ``scale_temperature`` multiplies the
        components' scales (continuous heads)."""
        raise NotImplementedError

    def distribution(self, y_hat: Tensor) -> Distribution:
        """The predicted distribution, batch shape (B, T)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this head with :func:`make_head`."""
        raise NotImplementedError

    @torch.no_grad()
    def init_output(self, conv: nn.Conv1d) -> None:
        """Initialize the network's last 1x1 conv (its bias) for this head; default: as is."""

    # ---- what pictures of the prediction need (``dist``: :meth:`distribution`, batch (1, T))
    def log_density(self, dist: Distribution, grid: Tensor) -> Tensor:
        """log p(v) per unit amplitude for each value v of ``grid`` (G,) at each step: (G, T).

        A bin's mass divided by its width (``2 / (K - 1)``), so rows compare as a density.
        """
        lp = dist.log_prob(grid[:, None, None].expand(-1, *dist.batch_shape)).squeeze(1)
        return lp + math.log((dist.num_classes - 1) / 2.0)

    def mixture_weights(self, dist: Distribution) -> Tensor | None:
        """(1, T, M) component weights, or None for a head that is no mixture."""
        return None

    def moments(self, dist: Distribution) -> tuple[Tensor, Tensor]:
        """Predicted mean and standard deviation per step (float64)."""
        raise NotImplementedError

    def component_pdfs(self, dist: Distribution, t: int, x: Tensor
                       ) -> tuple[list[Tensor], Tensor]:
        """The weighted density of each component at step ``t`` on ``x``, and the weights."""
        raise NotImplementedError

    def cdf_below(self, dist: Distribution, x0: float) -> float:
        """P(Y < x0) for a one-step distribution (batch (1, 1))."""
        raise NotImplementedError

    def _check(self, y_hat: Tensor) -> None:
        if not isinstance(y_hat, Tensor):
            raise TypeError(f"y_hat must be a torch.Tensor, got {type(y_hat).__name__}")
        if y_hat.dim() != 3 or y_hat.shape[1] != self.out_channels:
            raise ValueError(
                f"{self.name!r} head expects y_hat of shape (B, {self.out_channels}, T), "
                f"got {tuple(y_hat.shape)}"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class MixtureHead(Head):
    """A mixture of ``n_mixtures`` location-scale components discretized to ``num_classes``
    bins on [-1, 1], channels ``[logits | means | log_scales]``.

    The MoL and MoG heads differ only in the component family: the loss, sampler and
    distribution functions, and the standard component's density and variance below.
    """

    # the component family (set by each subclass)
    _nll_fn: Any = None
    _sample_fn: Any = None
    _distribution_cls: Any = None
    #: variance of the standard component (scale 1)
    component_variance: float = 1.0

    def __init__(self, n_mixtures: int = 10, num_classes: int | None = None,
                 log_scale_min: float | None = -16.0, shifted: bool = False) -> None:
        self.n_mixtures = int(n_mixtures)
        self.num_classes = V.check_num_classes(65536 if num_classes is None else num_classes)
        self.log_scale_min = log_scale_min
        self.net_channels = 3 * self.n_mixtures
        self.shifted = bool(shifted)

    @staticmethod
    def component_pdf(z: Tensor, s: Tensor) -> Tensor:
        """Density at ``mu + s z`` of a component of scale ``s``."""
        raise NotImplementedError

    def _kw(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "log_scale_min": self.log_scale_min,
                "layout": "BCT"}

    def nll(self, y_hat: Tensor, y: Tensor) -> Tensor:
        params, loc = self.split(y_hat)
        return type(self)._nll_fn(params, y, reduction="none", loc=loc, **self._kw())

    def sample(self, y_hat, *, generator=None, temperature=1.0, scale_temperature=1.0):
        params, loc = self.split(y_hat)
        return type(self)._sample_fn(
            params, temperature=temperature, scale_temperature=scale_temperature,
            generator=generator, loc=loc, **self._kw()
        )

    def distribution(self, y_hat):
        params, loc = self.split(y_hat)
        return self._distribution_cls.from_params(
            params, layout="BCT", num_classes=self.num_classes, log_scale_min=self.log_scale_min,
            loc=loc,
        )

    def config(self):
        return {"n_mixtures": self.n_mixtures, "num_classes": self.num_classes,
                "log_scale_min": self.log_scale_min, "shifted": self.shifted}

    @torch.no_grad()
    def init_output(self, conv: nn.Conv1d) -> None:
        _init_mixture(conv, self.n_mixtures, self.shifted)

    # ---- what pictures need
    def mixture_weights(self, dist: Distribution) -> Tensor | None:
        return torch.softmax(dist.logits.double(), -1)

    def moments(self, dist: Distribution) -> tuple[Tensor, Tensor]:
        w = self.mixture_weights(dist)
        mu, s = dist.means.double(), dist.log_scales.double().exp()
        var_c = s**2 * self.component_variance
        m = (w * mu).sum(-1)
        return m, ((w * (var_c + mu**2)).sum(-1) - m**2).clamp_min(0).sqrt()

    def component_pdfs(self, dist: Distribution, t: int, x: Tensor
                       ) -> tuple[list[Tensor], Tensor]:
        w = torch.softmax(dist.logits[0, t].double(), -1)
        mu, s = dist.means[0, t].double(), dist.log_scales[0, t].double().exp()
        pdf = self.component_pdf((x[:, None] - mu) / s, s)
        return [w[m] * pdf[:, m] for m in range(w.numel())], w

    def cdf_below(self, dist: Distribution, x0: float) -> float:
        return float(dist.cdf(torch.full((1, 1), x0, dtype=dist.means.dtype)))


class MoLHead(MixtureHead):
    """Discretized mixture of ``n_mixtures`` logistics (PixelCNN++ / r9y9 WaveNet)."""

    name = "mol"
    _nll_fn = staticmethod(discretized_mix_logistic_loss)
    _sample_fn = staticmethod(sample_discretized_mix_logistic)
    _distribution_cls = DiscretizedLogisticMixture
    component_variance = math.pi**2 / 3
    engine_samples = True

    @staticmethod
    def component_pdf(z: Tensor, s: Tensor) -> Tensor:
        return torch.sigmoid(z) * torch.sigmoid(-z) / s

    @property
    def engine_log_scale_min(self) -> float:
        return -math.inf if self.log_scale_min is None else float(self.log_scale_min)


class MoGHead(MixtureHead):
    """Mixture of ``n_mixtures`` Gaussians, discretized to ``num_classes`` bins on [-1, 1]."""

    name = "mog"
    _nll_fn = staticmethod(mix_gaussian_loss)
    _sample_fn = staticmethod(sample_mix_gaussian)
    _distribution_cls = DiscretizedGaussianMixture
    component_variance = 1.0

    @staticmethod
    def component_pdf(z: Tensor, s: Tensor) -> Tensor:
        return torch.exp(-0.5 * z**2) / (s * math.sqrt(2 * math.pi))


class GaussianHead(MoGHead):
    """A single Gaussian (ClariNet-style teacher), channels ``[mean | log_scale]``."""

    name = "gaussian"

    def __init__(self, num_classes: int | None = None, log_scale_min: float | None = -16.0,
                 shifted: bool = False) -> None:
        super().__init__(1, num_classes, log_scale_min, shifted)
        self.net_channels = 2

    def config(self):
        return {"num_classes": self.num_classes, "log_scale_min": self.log_scale_min,
                "shifted": self.shifted}

    @torch.no_grad()
    def init_output(self, conv: nn.Conv1d) -> None:
        conv.bias[1].fill_(INIT_LOG_SCALE)  # channels [mean | log_scale]


class MuLawHead(Head):
    """Softmax over Q = ``num_classes`` = mu + 1 mu-law classes (the original WaveNet).

    Samples are the decoded class values; targets are quantized with ``rounding``.
    """

    name = "mulaw"
    shiftable = False  # its classes are fixed amplitudes: nothing to shift

    def __init__(self, num_classes: int | None = None, rounding: str = "round") -> None:
        self.num_classes = V.check_num_classes(256 if num_classes is None else num_classes)
        self.rounding = rounding
        self.net_channels = self.num_classes

    def nll(self, y_hat, y):
        self._check(y_hat)
        return mulaw_loss(y_hat, y, layout="BCT", reduction="none", rounding=self.rounding)

    def sample(self, y_hat, *, generator=None, temperature=1.0, scale_temperature=1.0):
        self._check(y_hat)
        return sample_mulaw(y_hat, layout="BCT", temperature=temperature, generator=generator,
                            rounding=self.rounding)

    def distribution(self, y_hat):
        self._check(y_hat)
        return MuLawCategorical.from_params(y_hat, layout="BCT", rounding=self.rounding)

    def config(self):
        return {"num_classes": self.num_classes, "rounding": self.rounding}

    def log_density(self, dist, grid):
        lp = dist.log_prob(grid[:, None, None].expand(-1, *dist.batch_shape)).squeeze(1)
        # a class covers a non-uniform interval of amplitude: divide its mass by the local
        # width of one class (2/mu in the companded domain), mapped back through the decoder
        mu = dist.mu
        z = mulaw_encode(grid, mu)
        width = (mulaw_decode((z + 1.0 / mu).clamp(max=1.0), mu)
                 - mulaw_decode((z - 1.0 / mu).clamp(min=-1.0), mu)).clamp_min(1e-12)
        return lp - width.log()[:, None]

    def moments(self, dist):
        return dist.mean.double(), dist.variance.double().clamp_min(0).sqrt()

    def component_pdfs(self, dist, t, x):
        return [], torch.ones(1)

    def cdf_below(self, dist, x0):
        return float((dist.probs[0, 0] * (dist.grid < x0)).sum())


_HEADS: dict[str, type[Head]] = {
    "mol": MoLHead, "gaussian": GaussianHead, "mog": MoGHead, "mulaw": MuLawHead,
}
#: the head names (``--head``, ``WaveNetConfig.head``), and those a linear prediction can shift
HEADS = tuple(_HEADS)
LP_HEADS = tuple(name for name, cls in _HEADS.items() if cls.shiftable)
# every head accepts these; a head ignores the ones it has no use for (e.g. mulaw: n_mixtures)
_COMMON = ("n_mixtures", "num_classes", "log_scale_min", "rounding", "shifted")


def make_head(name: str, **cfg: Any) -> Head:
    """Build a head by name from keyword arguments shared by all heads.

    Accepted keys: ``n_mixtures``, ``num_classes`` (None: the head's default),
    ``log_scale_min``, ``rounding`` (mu-law only), ``shifted`` (continuous heads only: a mu-law
    head cannot be shifted); keys a head does not use are ignored, any other key raises a
    TypeError.

    Example::

        >>> make_head("mulaw").out_channels, make_head("mog", n_mixtures=5).out_channels
        (256, 15)
    """
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}: expected one of {tuple(_HEADS)}")
    unknown = sorted(set(cfg) - set(_COMMON))
    if unknown:
        raise TypeError(f"make_head got unknown argument(s) {unknown}; accepted: {list(_COMMON)}")
    cls = _HEADS[name]
    if cfg.get("shifted") and not cls.shiftable:
        raise ValueError(f"the {name} head cannot be shifted by a linear prediction")
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in cfg.items() if k in accepted})
