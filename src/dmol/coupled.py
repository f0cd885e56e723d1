"""Channel-coupled discretized logistic mixture (PixelCNN++ RGB pixels), exact and normalized.

A value is a vector x = (x_0, ..., x_{C-1}) in [-1, 1]^C, each channel quantized to K bins of
width 2/(K-1) centred on ``2k/(K-1) - 1`` (edge bins take the tails). Component m draws the
channels in order, channel c from a discretized logistic whose mean depends linearly on the
channels before it:

    mu_c = means[c] + sum_{j<c} coeffs[c(c-1)/2 + j] * x_j

so for RGB (C = 3): G's mean += a*R; B's mean += b*R + c*G, with coefficients (a, b, c). The
joint mass of a pixel is ``sum_m pi_m prod_c P_m(x_c | x_<c)``. Each conditional is a full
K-bin pmf, so the K^C masses sum to one (unlike the classic code, whose thresholds and
``cdf_delta`` fallback leave it unnormalized). Per-channel bin masses use the threshold-free
formula of :mod:`dmol.logistic` (logsigmoid + log1mexp, edge bins by bin index).

Example::

    >>> B, M = 4, 5
    >>> d = CoupledDiscretizedLogisticMixture(
    ...     torch.zeros(B, M), torch.randn(B, 3, M) * 0.5, torch.full((B, 3, M), -3.0),
    ...     torch.tanh(torch.randn(B, 3, M)))
    >>> x = d.sample(generator=torch.Generator().manual_seed(0))   # (B, 3) on the 8-bit grid
    >>> d.log_prob(x).shape
    torch.Size([4])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

from dmol import _validate as V
from dmol import fused
from dmol.logistic import bin_centre, bin_index, component_log_mass

__all__ = [
    "CoupledDiscretizedLogisticMixture",
    "coupled_mix_logistic_loss",
    "bits_per_dim",
]


def _num_coeffs(channels: int) -> int:
    return channels * (channels - 1) // 2


def _coupling_matrix(coeffs: Tensor, channels: int) -> Tensor:
    """(*batch, C(C-1)/2, M) -> (*batch, C, C, M), strictly lower triangular in (c, j).

    ``torch.tril_indices`` lists (1,0), (2,0), (2,1), (3,0), ... : the coefficient order above.
    """
    rows, cols = torch.tril_indices(channels, channels, offset=-1, device=coeffs.device)
    a = coeffs.new_zeros(*coeffs.shape[:-2], channels, channels, coeffs.shape[-1])
    a[..., rows, cols, :] = coeffs
    return a


class CoupledDiscretizedLogisticMixture(Distribution):
    """Mixture of M components over C-channel values, each channel a discretized logistic
    whose mean is shifted linearly by the channels before it (PixelCNN++).

    Args:
        logits: (*batch, M) unnormalized mixture weights.
        means: (*batch, C, M) per-channel means before coupling.
        log_scales: (*batch, C, M) per-channel log-scales.
        coeffs: (*batch, C(C-1)/2, M) coupling coefficients, **used as given** (any real value
            gives a normalized distribution). PixelCNN++ squashes raw network outputs with tanh
            first; :meth:`from_pixelcnn_params` does that for you. ``None`` means no coupling
            (also the only choice for C = 1, where there are no coefficients).
        num_classes: K bins per channel, any K >= 2 (``2**bits``; 256 for 8-bit images).
        log_scale_min: optional lower clamp of the log-scales (PixelCNN++ uses -7).
        validate_args: check parameters for NaN/inf and values for range. Default: torch's
            global setting, which is on unless Python runs with -O, but which the first
            ``torch.compile`` in the process switches off; pass True to be sure.

    Values have shape (*sample, *batch, C), lie in [-1, 1], and are snapped to the nearest bin.

    Example::

        >>> d = CoupledDiscretizedLogisticMixture(torch.zeros(2), torch.zeros(3, 2),
        ...                                       torch.zeros(3, 2), torch.zeros(3, 2))
        >>> d.batch_shape, d.event_shape
        (torch.Size([]), torch.Size([3]))
    """

    arg_constraints = {
        "logits": constraints.real_vector,
        "means": constraints.real,
        "log_scales": constraints.real,
        "coeffs": constraints.real,
    }
    support = constraints.independent(constraints.interval(-1.0, 1.0), 1)
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        means: Tensor,
        log_scales: Tensor,
        coeffs: Tensor | None = None,
        num_classes: int = 256,
        log_scale_min: float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.num_classes = V.check_num_classes(num_classes)
        for name, t in (("logits", logits), ("means", means), ("log_scales", log_scales)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if logits.dim() < 1 or means.dim() < 2:
            raise ValueError(
                f"expected logits (*batch, M) and means (*batch, C, M), got "
                f"{tuple(logits.shape)} and {tuple(means.shape)}"
            )
        c, m = means.shape[-2:]
        batch = logits.shape[:-1]
        if (
            logits.shape[-1] != m
            or means.shape != batch + (c, m)
            or log_scales.shape != means.shape
        ):
            raise ValueError(
                f"shapes disagree: logits {tuple(logits.shape)} = (*batch, M), means "
                f"{tuple(means.shape)} and log_scales {tuple(log_scales.shape)} must both be "
                f"(*batch, C, M) = {tuple(batch + (c, m))}"
            )
        if coeffs is None:
            coeffs = means.new_zeros(*batch, _num_coeffs(c), m)
        if coeffs.shape != batch + (_num_coeffs(c), m):
            raise ValueError(
                f"coeffs has shape {tuple(coeffs.shape)}: expected (*batch, C(C-1)/2, M) = "
                f"{tuple(batch + (_num_coeffs(c), m))} for C = {c} channels"
            )
        dtype = V.compute_dtype(means.dtype)
        self.logits, self.means, self.log_scales, self.coeffs = (
            t.to(dtype) for t in (logits, means, log_scales, coeffs)
        )
        if log_scale_min is not None:
            self.log_scales = self.log_scales.clamp(min=log_scale_min)
        validate = V.resolve_validate_args(validate_args)
        if validate:
            for name in ("logits", "means", "log_scales", "coeffs"):
                V.check_finite(name, getattr(self, name))
        # the checks above give clearer messages than torch's generic constraint check
        super().__init__(batch, torch.Size((c,)), validate_args=False)
        self._validate_values = bool(validate)

    @classmethod
    def from_pixelcnn_params(
        cls,
        l: Tensor,
        num_channels: int = 3,
        *,
        num_classes: int = 256,
        log_scale_min: float | None = -7.0,
        validate_args: bool | None = None,
    ) -> CoupledDiscretizedLogisticMixture:
        """Build from a PixelCNN++ output ``l`` of shape (B, M*(1 + 3C), *spatial), e.g. NCHW.

        Layout (as openai/pixel-cnn): channels ``0..M-1`` are logits; ``l[:, M:]`` holds, per
        colour channel c in turn, ``[means M | log_scales M | coeffs M]``. The C coefficient
        blocks, read in order, are the coupling coefficients (1,0), (2,0), (2,1) of the module
        docstring after a tanh; so C <= 3 (for C < 3 the unused blocks are ignored).

        Returns:
            A distribution with batch shape (B, *spatial) and event shape (C,): pass images
            as ``x.movedim(1, -1)``.
        """
        c = int(num_channels)
        if not 1 <= c <= 3:
            raise ValueError(f"the PixelCNN++ layout holds 1 to 3 channels, got num_channels={c}")
        if not isinstance(l, Tensor) or l.dim() < 2:
            got = tuple(l.shape) if isinstance(l, Tensor) else type(l).__name__
            raise ValueError(f"l must be (B, M*(1 + 3C), *spatial), got {got}")
        per = 1 + 3 * c
        if l.shape[1] == 0 or l.shape[1] % per:
            raise ValueError(
                f"l has {l.shape[1]} channels: expected M*(1 + 3*C) = a multiple of {per} for "
                f"C = {c} (M logits, then per channel [means M | log_scales M | coeffs M])"
            )
        m = l.shape[1] // per
        p = l.movedim(1, -1)  # (B, *spatial, M*(1+3C))
        logits = p[..., :m]
        rest = p[..., m:].unflatten(-1, (c, 3, m))  # (..., C, [means|log_scales|coeffs], M)
        coeffs = torch.tanh(rest[..., 2, :][..., : _num_coeffs(c), :])
        return cls(
            logits,
            rest[..., 0, :],
            rest[..., 1, :],
            coeffs,
            num_classes,
            log_scale_min,
            validate_args,
        )

    @property
    def num_channels(self) -> int:
        return self.event_shape[0]

    @property
    def num_mixtures(self) -> int:
        return self.logits.shape[-1]

    def expand(self, batch_shape, _instance=None):  # noqa: D102 (torch API)
        b = torch.Size(batch_shape)
        return type(self)(
            self.logits.expand(b + self.logits.shape[-1:]),
            self.means.expand(b + self.means.shape[-2:]),
            self.log_scales.expand(b + self.log_scales.shape[-2:]),
            self.coeffs.expand(b + self.coeffs.shape[-2:]),
            self.num_classes,
            validate_args=False,
        )

    def _check_value(self, value: Tensor) -> None:
        if not isinstance(value, Tensor) or value.dim() < 1 or value.shape[-1] != self.num_channels:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"value must be (*sample, *batch, C) with C = {self.num_channels} channels last, "
                f"got {got}"
            )
        if self._validate_values:
            V.check_range(value)

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log-mass of the cell (one bin per channel) nearest to ``value``.

        Args:
            value: (*sample, *batch, C) in [-1, 1].

        Returns:
            (*sample, *batch) log-probabilities (nats).
        """
        self._check_value(value)
        K, dtype = self.num_classes, self.means.dtype
        k = bin_index(value, K)  # (..., C)
        centre = bin_centre(k, K, torch.float64)
        # Coupled means use the snapped values of the earlier channels: (..., C, M).
        a = _coupling_matrix(self.coeffs, self.num_channels)
        mu = self.means + (a * centre.to(dtype)[..., None, :, None]).sum(-2)
        # Offset formed in float64 (as dmol.logistic does): a centre near +-1 carries a float32
        # rounding error that a tiny scale would magnify.
        d = (centre.unsqueeze(-1) - mu.double()).to(dtype)
        k = k.unsqueeze(-1)
        log_mass = component_log_mass(d, self.log_scales, K, k == 0, k == K - 1)
        return torch.logsumexp(F.log_softmax(self.logits, -1) + log_mass.sum(-2), dim=-1)

    def sample(
        self,
        sample_shape: torch.Size = torch.Size(),
        generator: torch.Generator | None = None,
        return_bins: bool = False,
    ) -> Tensor:
        """Draw cells: a component by Gumbel-max, then the channels in order, each from its
        logistic by the inverse CDF and snapped to the bin grid before it shifts later means.

        Returns:
            (*sample, *batch, C) bin centres in [-1, 1], or int64 bin indices if ``return_bins``.
        """
        shape = torch.Size(sample_shape) + self.batch_shape
        K, C, M = self.num_classes, self.num_channels, self.num_mixtures
        with torch.no_grad():
            g = -torch.log(-torch.log(_uniform_open(shape + (M,), self.means, generator)))
            pick = (self.logits + g).argmax(-1)[..., None, None]  # (*shape, 1, 1)

            def chosen(t: Tensor) -> Tensor:
                t = t.expand(shape + t.shape[-2:])
                return t.gather(-1, pick.expand(*shape, t.shape[-2], 1)).squeeze(-1)

            mu, log_s, coeffs = chosen(self.means), chosen(self.log_scales), chosen(self.coeffs)
            u = _uniform_open(shape + (C,), self.means, generator)
            noise = torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))  # logistic quantile
            bins = []
            for c in range(C):
                start = _num_coeffs(c)
                shift = sum(
                    (coeffs[..., start + j] * bin_centre(bins[j], K, mu.dtype) for j in range(c)),
                    torch.zeros_like(mu[..., c]),
                )
                bins.append(bin_index((mu[..., c] + shift + noise[..., c]).clamp(-1.0, 1.0), K))
            k = torch.stack(bins, dim=-1)
            return k if return_bins else bin_centre(k, K, mu.dtype)


def _uniform_open(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) without 0, so the logs of u and of -log(u) stay finite."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return u.clamp_(min=torch.finfo(like.dtype).tiny)


# -- the fused loss: one operator, a C++ kernel on the CPU (src/dmol/csrc/mol_loss.cpp) ------
#
# ``torch.ops.dmol.coupled_nll(l, x, num_classes, log_scale_min, gscale, want_grad)`` takes the
# PixelCNN++ output as l (B, M(1 + 3C), S) and the targets as x (B, C, S) and returns the NLL
# (B, S) and, with ``want_grad``, its gradient w.r.t. l times gscale, laid out like l (else an
# empty tensor): one pass, nothing of size (B, S, C, M) kept. Like dmol::mol_nll (see
# dmol.fused) it has a fake implementation and a registered backward; other devices, and the
# CPU without a compiler, run the exact eager code below instead.


def _coupled_eager(l: Tensor, x: Tensor, num_classes: int, log_scale_min: float,
                   gscale: float, want_grad: bool) -> tuple[Tensor, Tensor]:
    """The operator's eager implementation: the exact distribution's log_prob and autograd."""
    lsm = None if log_scale_min == -math.inf else log_scale_min
    with torch.enable_grad():
        leaf = l.detach().requires_grad_(want_grad)
        d = CoupledDiscretizedLogisticMixture.from_pixelcnn_params(
            leaf, x.shape[1], num_classes=num_classes, log_scale_min=lsm, validate_args=False)
        nll = -d.log_prob(x.movedim(1, -1))
        if not want_grad:
            return nll.detach(), l.new_empty(0)
        (g,) = torch.autograd.grad(nll, leaf, torch.full_like(nll, gscale))
    return nll.detach(), g


def _coupled_cpu(l, x, num_classes, log_scale_min, gscale, want_grad):
    kernel = fused._kernel("dmol_coupled_nll", l.dtype)
    if kernel is None:
        return _coupled_eager(l, x, num_classes, log_scale_min, gscale, want_grad)
    l, x = fused._rows_layout(l), x.contiguous()
    B, R, S = l.shape
    nll = l.new_empty(B, S)
    grad = l.new_empty((B, R, S) if want_grad else (0,))
    kernel(
        l.data_ptr(), l.stride(0), l.stride(1), x.data_ptr(), B, x.shape[1],
        R // (1 + 3 * x.shape[1]), S, float(num_classes - 1), log_scale_min, gscale, nll.data_ptr(),
        grad.data_ptr() if want_grad else None, fused._threads(l))
    return nll, grad


fused._LIB.define("coupled_nll(Tensor l, Tensor x, int num_classes, float log_scale_min, "
                  "float gscale, bool want_grad) -> (Tensor, Tensor)")
fused._LIB.impl("coupled_nll", _coupled_eager, "CompositeExplicitAutograd")
fused._LIB.impl("coupled_nll", _coupled_cpu, "CPU")
_coupled_nll = torch.ops.dmol.coupled_nll.default


@torch.library.register_fake("dmol::coupled_nll", lib=fused._LIB)
def _coupled_fake(l, x, num_classes, log_scale_min, gscale, want_grad):
    B, R, S = l.shape
    return l.new_empty(B, S), l.new_empty((B, R, S) if want_grad else (0,))


def _coupled_setup(ctx, inputs, output) -> None:
    l, x, num_classes, lsm, gscale, want_grad = inputs
    ctx.save_for_backward(l, x)
    ctx.meta = (num_classes, lsm, gscale)
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.grad = output[1].detach() if want_grad else None  # handed out once (see dmol.fused)


def _coupled_backward(ctx, grad_nll: Tensor, _grad: Tensor):
    if grad_nll is None:
        return (None,) * 6
    got, ctx.grad = ctx.grad, None
    if got is None:  # a second backward through a retained graph
        l, x = ctx.saved_tensors
        with torch.no_grad():
            got = _coupled_nll(l, x, *ctx.meta, True)[1]
    (g,) = fused._scale_by_incoming([got], grad_nll, ctx.meta[2])
    return g, None, None, None, None, None


torch.library.register_autograd("dmol::coupled_nll", _coupled_backward,
                                setup_context=_coupled_setup, lib=fused._LIB)


class _CoupledUnderFunc(torch.autograd.Function):
    """The same as an autograd.Function with ``setup_context``, for torch.func transforms."""

    @staticmethod
    def forward(l, x, num_classes, lsm, gscale, want_grad):
        with torch.no_grad():
            return tuple(_coupled_nll(l, x, num_classes, lsm, gscale, want_grad))

    setup_context = staticmethod(_coupled_setup)
    backward = staticmethod(_coupled_backward)


def _fused_nll(x: Tensor, l: Tensor, num_classes: int, log_scale_min: float | None,
               gscale: float) -> Tensor:
    """(B, *spatial) NLL through dmol::coupled_nll (l and x already checked)."""
    B, C = x.shape[:2]
    dtype = V.compute_dtype(torch.promote_types(l.dtype, x.dtype) if x.is_floating_point()
                            else l.dtype)
    lf = l.to(dtype).reshape(B, l.shape[1], -1)  # a view for a contiguous NCHW output
    xf = fused._targets_in(x.detach(), dtype, num_classes).reshape(B, C, -1)
    want = torch.is_grad_enabled() and lf.requires_grad
    lsm = -math.inf if log_scale_min is None else float(log_scale_min)
    if torch.compiler.is_compiling():
        gscale = 1.0  # (see dmol.fused.mixture_nll_packed)
    op = _CoupledUnderFunc.apply if torch._C._are_functorch_transforms_active() else _coupled_nll
    return op(lf, xf, num_classes, lsm, gscale, want)[0].reshape(B, *x.shape[2:])


def coupled_mix_logistic_loss(
    x: Tensor,
    l: Tensor,
    *,
    num_classes: int = 256,
    reduction: str = "mean",
    log_scale_min: float | None = -7.0,
) -> Tensor:
    """Exact negative log-likelihood (nats) of images under a PixelCNN++ output.

    Args:
        x: (B, C, *spatial) values in [-1, 1], e.g. NCHW images with C = 3.
        l: (B, M*(1 + 3C), *spatial) network output in the PixelCNN++ layout
            (see :meth:`CoupledDiscretizedLogisticMixture.from_pixelcnn_params`).
        num_classes: K bins per channel (256 for 8-bit).
        reduction: ``"mean"``: per **dimension** (sub-pixel), i.e. the total over
            ``x.numel()``, so ``loss / log(2)`` is bits per dim; ``"sum"``: the total, the
            number PixelCNN++'s loss reports; ``"none"``: per pixel, shape (B, *spatial), summed
            over the C channels (a mixture does not split into per-channel terms).
        log_scale_min: lower clamp of the log-scales (PixelCNN++: -7; None: no clamp).

    ``x`` outside [-1, 1] (or NaN) raises ``ValueError``; ``l`` is not scanned for NaN (use the
    class with ``validate_args=True`` for that).

    Example::

        >>> x = torch.rand(2, 3, 4, 4) * 2 - 1
        >>> loss = coupled_mix_logistic_loss(x, torch.randn(2, 50, 4, 4))   # nats per dim
    """
    if reduction not in V.REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: expected one of {V.REDUCTIONS}")
    if not isinstance(x, Tensor) or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be (B, C, *spatial), got {got}")
    # Checked here, not through validate_args: torch.compile switches torch.distributions'
    # default validation off process-wide, and a loss must not depend on that. (Not while
    # torch.compile traces: a value-dependent branch would break the caller's graph.)
    if not torch.compiler.is_compiling():
        V.check_range(x)
    c = x.shape[1]
    if (isinstance(l, Tensor) and l.is_floating_point() and 1 <= c <= 3
            and l.shape[:1] + l.shape[2:] == x.shape[:1] + x.shape[2:]
            and l.shape[1] > 0 and l.shape[1] % (1 + 3 * c) == 0):
        # the fused operator: the same numbers as the distribution's log_prob
        V.check_num_classes(num_classes)
        nll = _fused_nll(x, l, num_classes, log_scale_min,
                         1.0 if reduction != "mean" else 1.0 / x.numel())
    else:  # the distribution names what is wrong (or computes what the operator does not)
        d = CoupledDiscretizedLogisticMixture.from_pixelcnn_params(
            l, c, num_classes=num_classes, log_scale_min=log_scale_min, validate_args=False
        )
        if (x.shape[0], *x.shape[2:]) != tuple(d.batch_shape):
            raise ValueError(
                f"x {tuple(x.shape)} and l {tuple(l.shape)} disagree on batch or spatial size"
            )
        nll = -d.log_prob(x.movedim(1, -1))
    if reduction == "none":
        return nll
    return nll.sum() if reduction == "sum" else nll.sum() / x.numel()


def bits_per_dim(
    x: Tensor,
    l: Tensor,
    *,
    num_classes: int = 256,
    log_scale_min: float | None = -7.0,
) -> Tensor:
    """Mean negative log-likelihood in bits per dimension (sub-pixel), the usual image metric.

    Example::

        >>> bits_per_dim(torch.zeros(1, 3, 2, 2), torch.zeros(1, 10, 2, 2)).item() > 0
        True
    """
    nats = coupled_mix_logistic_loss(
        x, l, num_classes=num_classes, reduction="mean", log_scale_min=log_scale_min
    )
    return nats / math.log(2.0)
