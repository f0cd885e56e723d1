"""Mu-law companding, quantization and the categorical (softmax) head over mu-law classes.

The mu-law compander squashes a waveform x in [-1, 1] to

    f(x) = sign(x) * log(1 + mu |x|) / log(1 + mu)            (also in [-1, 1])

which spends more of the [-1, 1] range on quiet samples (where the ear is most sensitive).
Quantizing f(x) uniformly to Q = mu + 1 levels gives the classes of the original WaveNet's
softmax output: the network emits Q logits per time step and is trained with cross-entropy.

Two rounding conventions are in use; both map v = (f(x) + 1) / 2 * mu in [0, mu] to a class:

- ``"floor"``: ``q = floor(v)``, nnmnkwii's ``mulaw_quantize`` (``((y + 1) / 2 * mu)`` cast to
  int, truncation, which equals the floor since v >= 0) and so r9y9's wavenet_vocoder. Class q
  holds f(x) in [2q/mu - 1, 2(q+1)/mu - 1); the top class mu holds x = 1 alone.
- ``"round"``: ``q = floor(v + 0.5)``, torchaudio's ``mu_law_encoding`` (``+ 0.5`` then cast).
  Class q holds the f(x) nearest to its grid point 2q/mu - 1, so every class has the same width
  and the two end classes half of it.

``inv_mulaw_quantize`` decodes class q to f^-1(2q/mu - 1) under both (nnmnkwii's
``inv_mulaw_quantize`` and torchaudio's ``mu_law_decoding`` agree), so ``"round"`` reconstructs a
sample to the nearest grid point while ``"floor"`` leaves it up to one full step towards -1 in
the companded domain. `MuLawCategorical` (and `sample_mulaw`) with ``rounding="floor"`` stand for
class q by its cell's centre f^-1((2q + 1)/mu - 1) instead: the lower edge re-quantizes one class
down after float rounding, so the distribution would score its own samples in the wrong class.
Note the ``mu`` argument: nnmnkwii defaults to ``mu=256``, torchaudio takes
``quantization_channels = mu + 1``; here ``mu=255`` (Q = 256 classes) as in WaveNet.

Every function accepts a torch tensor or a numpy array (or a Python number, returned as numpy)
and returns the same kind.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

from dmol import _validate as V

ROUNDINGS = ("floor", "round")

__all__ = [
    "ROUNDINGS",
    "MuLawCategorical",
    "inv_mulaw_quantize",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_loss",
    "mulaw_quantize",
    "sample_mulaw",
]


# ----------------------------------------------------------------------------- helpers


def _check_mu(mu: Any, *, integer: bool) -> float:
    """mu must be a positive number; quantization also needs it integral (Q = mu + 1 classes)."""
    if isinstance(mu, bool) or not isinstance(mu, (int, float, np.integer, np.floating)):
        raise TypeError(f"mu must be a number, got {type(mu).__name__}")
    if not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"mu must be a positive finite number, got {mu!r}")
    if integer and int(mu) != mu:
        raise ValueError(f"mu must be an integer for quantization (Q = mu + 1 classes), got {mu!r}")
    return float(mu)


def _check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}: expected one of {ROUNDINGS}")
    return rounding


def _to_tensor(x: Any) -> tuple[Tensor, bool]:
    """(tensor, came_from_numpy). numpy arrays are viewed, not copied."""
    if isinstance(x, Tensor):
        return x, False
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"expected a torch tensor or a real numpy array, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr)), True


def _back(t: Tensor, was_numpy: bool) -> Tensor | np.ndarray:
    return t.numpy() if was_numpy else t


def _float_wave(x: Tensor, what: str) -> Tensor:
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{what} must be a floating point waveform in [-1, 1], got dtype {x.dtype} "
            "(scale integer PCM first, e.g. int16 / 32768)"
        )
    return x


def _wide(x: Tensor) -> Tensor:
    """Half precision is computed in float32: float16 cannot tell 256 classes apart near +-1."""
    return x.to(V.compute_dtype(x.dtype))


def _encode(x: Tensor, mu: float) -> Tensor:
    # log1p keeps quiet samples (mu |x| << 1) accurate
    w = _wide(x)
    return (torch.sign(w) * torch.log1p(mu * w.abs()) / math.log1p(mu)).to(x.dtype)


def _decode(y: Tensor, mu: float) -> Tensor:
    # expm1 is the exact inverse of log1p near 0, so decode(encode(x)) == x to rounding error
    w = _wide(y)
    return (torch.sign(w) * torch.expm1(w.abs() * math.log1p(mu)) / mu).to(y.dtype)


def _quantize(x: Tensor, mu: float, rounding: str) -> Tensor:
    w = _wide(x)
    v = (torch.sign(w) * torch.log1p(mu * w.abs()) / math.log1p(mu) + 1) / 2 * mu
    q = torch.floor(v + 0.5) if rounding == "round" else torch.floor(v)
    return q.clamp(0, mu).to(torch.int64)  # clamp: float error at x = +-1 must not leave [0, mu]


def _dequantize(q: Tensor, mu: float, dtype: torch.dtype) -> Tensor:
    return _decode(2 * q.to(dtype) / mu - 1, mu)


def _class_values(q: Tensor, mu: float, dtype: torch.dtype, rounding: str) -> Tensor:
    """The waveform value that stands for class q under ``rounding``: one that quantizes back
    to q. ``"round"``: the grid point f^-1(2q/mu - 1), the centre of its cell. ``"floor"``: the
    grid point is the *lower edge* of the cell, which float rounding puts in the class below
    about as often as not, so the cell's centre f^-1((2q + 1)/mu - 1) is used instead (the top
    class, which holds x = 1 alone, stays at 1).
    """
    if rounding == "round":
        return _dequantize(q, mu, dtype)
    centre = _decode((2 * q.double() + 1) / mu - 1, mu)
    return torch.where(q == int(mu), 1.0, centre).to(dtype)


# ----------------------------------------------------------------------------- companding


def mulaw_encode(x: Tensor | np.ndarray, mu: float = 255) -> Tensor | np.ndarray:
    """Continuous mu-law companding of a waveform in [-1, 1] (same shape, values in [-1, 1]).

    >>> mulaw_encode(torch.tensor([-1.0, 0.0, 0.01, 1.0]))
    tensor([-1.0000,  0.0000,  0.2285,  1.0000])
    """
    mu = _check_mu(mu, integer=False)
    t, was_numpy = _to_tensor(x)
    return _back(_encode(_float_wave(t, "x"), mu), was_numpy)


def mulaw_decode(y: Tensor | np.ndarray, mu: float = 255) -> Tensor | np.ndarray:
    """Inverse of :func:`mulaw_encode` (mu-law expansion), values in [-1, 1]."""
    mu = _check_mu(mu, integer=False)
    t, was_numpy = _to_tensor(y)
    return _back(_decode(_float_wave(t, "y"), mu), was_numpy)


def mulaw_quantize(
    x: Tensor | np.ndarray, mu: int = 255, rounding: str = "round"
) -> Tensor | np.ndarray:
    """Waveform in [-1, 1] -> int64 mu-law class in [0, mu] (Q = mu + 1 classes).

    ``rounding="floor"`` reproduces nnmnkwii (r9y9's wavenet_vocoder), ``"round"`` torchaudio's
    ``mu_law_encoding(x, mu + 1)``; see the module docstring.

    >>> mulaw_quantize(torch.tensor([-1.0, 0.0, 1.0]))
    tensor([  0, 128, 255])
    """
    mu = _check_mu(mu, integer=True)
    rounding = _check_rounding(rounding)
    t, was_numpy = _to_tensor(x)
    V.check_range(_float_wave(t, "x"))
    return _back(_quantize(t, mu, rounding), was_numpy)


def inv_mulaw_quantize(q: Tensor | np.ndarray, mu: int = 255) -> Tensor | np.ndarray:
    """Class in [0, mu] -> waveform value f^-1(2q/mu - 1) in [-1, 1].

    Integer classes decode to float32 (numpy: float64 like numpy's own promotion); float inputs
    keep their dtype.
    """
    mu = _check_mu(mu, integer=True)
    t, was_numpy = _to_tensor(q)
    if t.dtype == torch.bool:
        raise TypeError("q must hold integer classes, got dtype torch.bool")
    if not t.dtype.is_floating_point:
        dtype = torch.float64 if was_numpy else torch.get_default_dtype()
    else:
        dtype = t.dtype
        V.check_finite("q", t)
    if t.numel() and (int(t.min()) < 0 or float(t.max()) > mu):
        raise ValueError(
            f"mu-law classes must lie in [0, {int(mu)}], got min {t.min().item()} "
            f"and max {t.max().item()}"
        )
    return _back(_dequantize(t, mu, dtype), was_numpy)


# ----------------------------------------------------------------------------- distribution


class MuLawCategorical(Distribution):
    """A softmax over Q = mu + 1 mu-law classes, seen as a distribution over waveform values.

    ``log_prob(x)`` is the log-softmax at the class of x (quantized with ``rounding``), so
    ``-log_prob`` is the WaveNet cross-entropy; samples, ``mean`` and ``mode`` are decoded
    waveform values in [-1, 1].

    Args:
        logits: (*batch, Q) unnormalized log-probabilities, Q = mu + 1.
        mu: compression parameter; ``None`` infers it as Q - 1.
        rounding: ``"round"`` (torchaudio) or ``"floor"`` (nnmnkwii) for mapping values to classes.
        validate_args: check the logits for NaN/inf (None: yes; False skips the check).

    Example:
        >>> d = MuLawCategorical(torch.zeros(4, 256))
        >>> d.log_prob(torch.zeros(4))          # uniform: -log 256
        tensor([-5.5452, -5.5452, -5.5452, -5.5452])
        >>> d.sample((3,)).shape
        torch.Size([3, 4])
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.interval(-1.0, 1.0)
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        mu: int | None = None,
        rounding: str = "round",
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(logits, Tensor):
            raise TypeError(f"logits must be a torch tensor, got {type(logits).__name__}")
        if logits.dim() < 1:
            raise ValueError("logits must have at least one dimension (the class axis, last)")
        dtype = V.compute_dtype(logits.dtype)
        q = logits.shape[-1]
        mu = q - 1 if mu is None else mu
        _check_mu(mu, integer=True)
        if q != int(mu) + 1:
            raise ValueError(
                f"logits have {q} classes on the last axis, expected mu + 1 = {int(mu) + 1} "
                f"(mu = {int(mu)})"
            )
        self.mu = int(mu)
        self.rounding = _check_rounding(rounding)
        self.logits = logits.to(dtype)
        validate = V.resolve_validate_args(validate_args)
        if validate:
            V.check_finite("logits", self.logits)
        # the check above replaces torch's generic constraint check with a clearer message
        super().__init__(logits.shape[:-1], validate_args=False)

    @classmethod
    def from_params(
        cls,
        logits: Tensor,
        layout: str = "BCT",
        mu: int | None = None,
        rounding: str = "round",
        validate_args: bool | None = None,
    ) -> MuLawCategorical:
        """From a network output (B, Q, T) (``layout="BCT"``) or (B, T, Q); batch shape (B, T)."""
        return cls(V.to_btc(logits, layout), mu, rounding, validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MuLawCategorical, _instance)
        new.mu, new.rounding = self.mu, self.rounding
        new.logits = self.logits.expand(*batch_shape, self.mu + 1)
        super(MuLawCategorical, new).__init__(torch.Size(batch_shape), validate_args=False)
        return new

    @property
    def num_classes(self) -> int:
        return self.mu + 1

    @property
    def grid(self) -> Tensor:
        """(Q,) waveform value of each class, one that ``quantize`` maps back to that class.

        ``rounding="round"``: f^-1(2q/mu - 1), as :func:`inv_mulaw_quantize`. ``"floor"``: the
        centre of the class's cell, f^-1((2q + 1)/mu - 1) (1 for the top class), not
        :func:`inv_mulaw_quantize`'s value, which is the cell's lower edge and re-quantizes
        one class down after float rounding.
        """
        q = torch.arange(self.num_classes, device=self.logits.device)
        return _class_values(q, self.mu, self.logits.dtype, self.rounding)

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(-1)

    @property
    def mean(self) -> Tensor:
        return (self.probs * self.grid).sum(-1)

    @property
    def variance(self) -> Tensor:
        return (self.probs * (self.grid - self.mean.unsqueeze(-1)) ** 2).sum(-1)

    @property
    def mode(self) -> Tensor:
        return self.grid[self.logits.argmax(-1)]

    def quantize(self, value: Tensor) -> Tensor:
        """Waveform values -> int64 classes with this distribution's ``mu`` and ``rounding``."""
        V.check_range(_float_wave(value, "value"))
        return _quantize(value, self.mu, self.rounding)

    def log_prob(self, value: Tensor) -> Tensor:
        q = self.quantize(value)
        logp = self.logits.log_softmax(-1)
        q, logp = torch.broadcast_tensors(q.unsqueeze(-1), logp)
        return logp.gather(-1, q[..., :1]).squeeze(-1)

    def entropy(self) -> Tensor:
        return Categorical(logits=self.logits, validate_args=False).entropy()

    def sample_classes(
        self,
        sample_shape: torch.Size = torch.Size(),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """int64 classes of shape (*sample_shape, *batch)."""
        shape = torch.Size(sample_shape)
        if shape.numel() == 0 or self.batch_shape.numel() == 0:  # multinomial needs n >= 1
            return torch.empty(*shape, *self.batch_shape, dtype=torch.int64,
                               device=self.logits.device)
        n = max(1, shape.numel())
        flat = self.probs.reshape(-1, self.num_classes)
        # multinomial takes a generator, unlike Categorical.sample
        idx = torch.multinomial(flat, n, replacement=True, generator=generator)  # (batch, n)
        return idx.T.reshape(*shape, *self.batch_shape)

    def sample(
        self,
        sample_shape: torch.Size = torch.Size(),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Decoded waveform values of shape (*sample_shape, *batch)."""
        with torch.no_grad():
            return self.grid[self.sample_classes(sample_shape, generator)]


# ----------------------------------------------------------------------------- functional


def mulaw_loss(
    logits: Tensor,
    y: Tensor,
    *,
    mu: int | None = None,
    layout: str = "BCT",
    reduction: str = "mean",
    mask: Tensor | None = None,
    rounding: str = "round",
    clamp_targets: bool = False,
) -> Tensor:
    """Cross-entropy (nats) of a waveform under a mu-law softmax.

    Args:
        logits: (B, Q, T) for ``layout="BCT"`` or (B, T, Q); Q = mu + 1.
        y: waveform targets in [-1, 1], (B, T) (or (B, T, 1) / (B, 1, T)).
        mu: compression parameter; ``None`` infers Q - 1.
        reduction: ``"mean"`` (over valid elements), ``"sum"`` or ``"none"`` -> (B, T).
        mask: (B, T) padding mask or (B,) integer lengths.
        rounding: how y is quantized, ``"round"`` (torchaudio) or ``"floor"`` (nnmnkwii).
        clamp_targets: clip y to [-1, 1] instead of raising.

    Example:
        >>> mulaw_loss(torch.zeros(2, 256, 5), torch.zeros(2, 5))   # uniform: log 256
        tensor(5.5452)
    """
    V.check_reduction(reduction)
    _check_rounding(rounding)
    x = V.to_btc(V.check_tensor("logits", logits), layout)
    dtype = V.compute_dtype(x.dtype)
    B, T, Q = x.shape
    mu = Q - 1 if mu is None else mu
    _check_mu(mu, integer=True)
    if Q != int(mu) + 1:
        raise ValueError(
            f"logits have {Q} channels, expected mu + 1 = {int(mu) + 1} classes (mu = {int(mu)})"
        )
    V.check_finite("logits", x)
    y = _float_wave(V.target_bt(y, B, T), "y")
    y = V.check_range(y, clamp=clamp_targets, clamp_hint=True)
    m = V.mask_bt(mask, B, T, x.device)
    q = _quantize(y.to(dtype), float(mu), rounding)
    nll = F.cross_entropy(x.to(dtype).reshape(B * T, Q), q.reshape(-1), reduction="none")
    return V.reduce(nll.reshape(B, T), reduction, m)


def sample_mulaw(
    logits: Tensor,
    *,
    layout: str = "BCT",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    mu: int | None = None,
    rounding: str = "round",
) -> Tensor:
    """Draw one waveform value per step from a mu-law softmax: (B, T) in [-1, 1].

    ``temperature`` divides the logits (< 1 sharper, > 1 flatter); ``temperature=0`` takes the
    most probable class. ``rounding`` is the convention the draws will be scored with (as in
    :func:`mulaw_loss`): each draw is a value of ``MuLawCategorical(..., rounding=rounding)``,
    so it quantizes back to the class it was drawn from.
    """
    _check_rounding(rounding)
    x = V.to_btc(V.check_tensor("logits", logits), layout)
    V.compute_dtype(x.dtype)
    V.check_finite("logits", x)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    d = MuLawCategorical(x, mu, rounding)
    if temperature == 0:
        return d.mode
    if temperature != 1:
        d = MuLawCategorical(d.logits / temperature, mu, rounding)
    return d.sample(generator=generator)
