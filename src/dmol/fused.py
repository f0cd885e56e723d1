"""Fused, low-memory discretized-logistic-mixture NLL and sampler.

The loss the usual code computes is a chain of about twenty tensor ops, each writing a
(*batch, M) temporary that autograd keeps for the backward pass: 10-20 copies of the parameter
tensor in memory and as many passes over it. Here the forward pass computes, per (sample,
component), the log-mass of the target's bin *and* its derivatives w.r.t. the mean and log-scale
(closed forms, derived in ``docs/speed.md``), and the mixture's gradient follows from the
responsibilities ``r = softmax(log pi + log P)``:

    dL/dlogit_m = softmax(logits)_m - r_m
    dL/dmu_m    = -r_m * dlogP_m/dmu
    dL/dls_m    = -r_m * dlogP_m/dls       (0 where the log_scale_min clamp is active)

So the only (*batch, M)-sized memory is the gradient itself, written straight into one buffer
laid out like the parameters. The loss and the sampler are PyTorch operators
(``torch.ops.dmol.mol_nll`` with a registered backward, ``torch.ops.dmol.mol_sample``), so they
work inside ``torch.compile`` and under ``torch.func``; on the CPU their kernel is C++
(``csrc/mol_loss.cpp``, built once per machine with the system compiler: seconds), elsewhere
the same math runs as torch ops on the device. Without a C++ compiler, or with
``DMOL_DISABLE_COMPILE=1``, CPU tensors take the eager math too, after one warning.

Example::

    >>> logits, means, log_scales = torch.randn(3, 4, 100, 10).unbind(0)   # (B, T, M) each
    >>> y = torch.rand(4, 100) * 2 - 1
    >>> nll = mixture_nll(logits, means, log_scales, y, 65536, -7.0)       # (4, 100) nats
    >>> x = sample_mixture(logits, means, log_scales, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import warnings

import torch
from torch import Tensor

from dmol import _native
from dmol import _validate as V

__all__ = ["mixture_nll", "mixture_nll_packed", "sample_mixture", "backend", "calls"]

_LN2 = math.log(2.0)
_BIG = 1e30  # "infinite" standardized distance: e^-BIG is 0 in float32 and float64

#: How many times each public entry point ran eagerly (tests use it to prove the fused path
#: was taken).
calls: collections.Counter[str] = collections.Counter()


# -- the math as torch ops (the eager implementation; mol_loss.cpp follows it step by step) -----
#
# Parameters arrive packed as (A, 3M, T): T samples in contiguous rows, the component axis
# just before them (for a WaveNet's (B, 3M, T) output: the output itself).


def _split(x: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A float64 value as hi + lo in ``dtype``: hi rounded, lo its rounding error."""
    hi = x.to(dtype)
    return hi, (x - hi.double()).to(dtype)


def _bins(y: Tensor, k_max: Tensor, dtype: torch.dtype):
    """The edges of y's bin, each as ``hi + lo`` in ``dtype``, and the edge-bin flags.

    ``k_max`` = K - 1 (float64). The bin index is taken in float64 (exact ties). Each edge
    ``(2k -+ 1)/(K - 1) - 1`` is formed in float64 and split into its rounded value and the
    rounding error, so that ``(hi - mu) + lo`` is the distance from the mean to the edge to
    the precision of that distance itself: a float32 edge near +-1 is off by up to 6e-8,
    which a scale of e^-16 would magnify to half a standard unit.
    """
    k = torch.round((y.double() + 1.0) * (0.5 * k_max)).clamp(min=0.0).minimum(k_max)
    lower = _split((2.0 * k - 1.0) / k_max - 1.0, dtype)
    upper = _split((2.0 * k + 1.0) / k_max - 1.0, dtype)
    return lower, upper, k == 0, k == k_max


def _one_minus_exp(c: Tensor, ec: Tensor) -> Tensor:
    """1 - e^-c to full relative precision, given ec = e^-c.

    ``1 - ec`` loses up to all digits for small c (wide components, fine bins: c = 3e-5 at
    16 bits and unit scale), and a vectorized ``expm1`` is often ``exp(x) - 1``. Below ln 2
    the Taylor series c (1 - c/2! + c^2/3! - ...) converges fast: 9 terms reach float32's
    precision, 17 float64's, a few FMAs where Kahan's (1 - u) c / -log(u) costs a log and a
    division. Above ln 2, ``1 - ec`` is already exact to rounding.
    """
    terms = 17 if c.dtype == torch.float64 else 9
    poly = 1.0 / math.factorial(terms + 1)
    for n in range(terms, 0, -1):
        poly = 1.0 / math.factorial(n) - c * poly
    return torch.where(c < _LN2, c * poly, 1.0 - ec)


def _log_mass(mu, ls, lower, upper, first, last, h, lsm):
    """The mass of the target's bin under one logistic as ``P = e^-dist * q``, and the
    derivatives of log P w.r.t. mu and the log-scale (elementwise).

    With the bin's edges centre -+ h, a = (centre - h - mu)/s, b = (centre + h - mu)/s and
    c = b - a = 2h/s:
        interior  P = sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^-c)
        first bin P = sigmoid(b),   last bin P = sigmoid(-a)
    split as ``dist = max(a, 0) + max(-b, 0)`` (how many scales the bin lies from the mean;
    e^-dist may underflow, so it stays in log form for the mixture's logsumexp) and
    ``q = (1 - e^-c) / ((1 + e^-|a|)(1 + e^-|b|))`` in (0, 1] (does not underflow): no log
    per component at all. Derivatives: docs/speed.md.
    """
    inv_s = torch.exp(-torch.maximum(ls, lsm))
    # an edge bin's outer edge sits at -+infinity: a huge finite value makes every term it
    # feeds vanish exactly (e^-BIG = 0, sigmoid = 0 or 1) without a NaN from inf * 0
    a = torch.where(first, -_BIG, ((lower[0] - mu) + lower[1]) * inv_s)  # lower edge
    b = torch.where(last, _BIG, ((upper[0] - mu) + upper[1]) * inv_s)  # upper edge
    c = torch.where(first | last, _BIG, (2.0 * h) * inv_s)  # b - a, never as a difference
    ec = torch.exp(-c)
    # one exp serves both edges: with both on one side of the mean the far one is the near
    # one times e^-c; with the mean inside the bin, e^-|a| e^-|b| = e^-c
    a_near = a.abs() <= b.abs()
    e_near = torch.exp(-torch.minimum(a.abs(), b.abs()))
    inside = (a < 0) & (b > 0)
    e_far = torch.where(inside, ec / e_near.clamp_min(torch.finfo(ec.dtype).tiny), e_near * ec)
    ea, eb = torch.where(a_near, e_near, e_far), torch.where(a_near, e_far, e_near)
    one_m_ec = _one_minus_exp(c, ec)
    # one division for sigmoid(|a|), sigmoid(|b|) and 1 / (1 - e^-c)
    da, db = 1.0 + ea, 1.0 + eb
    inv = 1.0 / (da * db * one_m_ec)
    iab = one_m_ec * inv  # sigmoid(|a|) sigmoid(|b|)
    q = one_m_ec * iab
    neg_dist = torch.clamp_max(b, 0.0) - torch.clamp_min(a, 0.0)
    # d log sigmoid(b)/db = sigmoid(-b), d log sigmoid(-a)/da = -sigmoid(a)
    ta = torch.where(a >= 0, 1.0, ea) * (db * iab)  # sigmoid(a)
    tb = torch.where(b >= 0, eb, 1.0) * (da * iab)  # sigmoid(-b)
    # c * d log(1 - e^-c)/dc = c e^-c / (1 - e^-c), -> 1 as c -> 0
    tc = torch.where(one_m_ec > 0, c * ec * (da * db * inv), 1.0)
    dlogp_dmu = inv_s * (ta - tb)
    dlogp_dls = torch.where(ls >= lsm, a * ta - b * tb - tc, 0.0)  # 0 where clamped
    return neg_dist, q, dlogp_dmu, dlogp_dls


def _logsumexp(xs: list[Tensor], weights: list[Tensor] | None = None):
    """log sum_j w_j e^{x_j} over lists of tensors (w_j in (0, 1], default 1), and the
    shifted terms w_j e^{x_j - top} and their sum."""
    top = xs[0]
    for x in xs[1:]:
        top = torch.maximum(top, x)
    # all -inf (or a +inf): no shift, no NaN. (|x| == inf is one vector compare, isinf a loop)
    top = torch.where(top.abs() == math.inf, 0.0, top)
    e = [torch.exp(x - top) for x in xs]
    if weights is not None:
        e = [x * w for x, w in zip(e, weights, strict=True)]
    total = e[0]
    for x in e[1:]:
        total = total + x
    return top + torch.log(total), e, total


def _rows(p: Tensor) -> list[list[Tensor]]:
    """(..., 3M, c) -> [logits rows, means rows, log-scale rows], each M tensors (..., c)."""
    m = p.shape[-2] // 3
    return [[p[..., k * m + j, :] for j in range(m)] for k in range(3)]


def _nll_kernel(p, y, loc, k_max, lsm, gscale):
    """NLL (..., T) and its gradient (..., 3M, T) w.r.t. p = [logits | means | log_scales]
    (..., 3M, T), times ``gscale``, and the gradient w.r.t. ``loc`` (..., T); y holds the
    (..., T) targets and ``loc`` a shift added to every mean (both any shape with that many
    elements).

    NLL = logsumexp(logits) - logsumexp(logits + log P); the two softmaxes are the mixture
    weights and the responsibilities r, so dNLL/dlogits = softmax(logits) - r and
    dNLL/dtheta = -r dlogP/dtheta. (mol_loss.cpp runs the same steps in one pass over each
    block of samples.)
    """
    lg, mu, ls = _rows(p)
    bins = _bins(y.view(p.shape[:-2] + p.shape[-1:]), k_max, p.dtype)
    # the shift is added in the compute dtype before anything else: the same rounding as
    # means shifted by hand, and dL/dloc is the sum of the means' gradients
    loc = loc.view(p.shape[:-2] + p.shape[-1:])
    mu = [m + loc for m in mu]
    h = 1.0 / k_max.to(p.dtype)
    cols = [_log_mass(mu[j], ls[j], *bins, h, lsm) for j in range(len(lg))]
    lse_l, el, zl = _logsumexp(lg)
    # log sum_j pi_j P_j with P_j = e^-dist_j q_j: shifted by the largest logit - dist, the
    # largest term is q >= (1 - e^-c)/4, so the sum cannot underflow
    lse_j, ej, zj = _logsumexp([x + col[0] for x, col in zip(lg, cols, strict=True)],
                               [col[1] for col in cols])
    izl, izj = gscale / zl, gscale / zj  # (the gradient's scale rides on the two softmaxes)
    r = [e * izj for e in ej]  # responsibilities (times gscale)
    g = [e * izl - rj for e, rj in zip(el, r, strict=True)]
    g_mu = [-rj * col[2] for rj, col in zip(r, cols, strict=True)]
    g_loc = g_mu[0]
    for x in g_mu[1:]:
        g_loc = g_loc + x
    g += g_mu + [-rj * col[3] for rj, col in zip(r, cols, strict=True)]
    return lse_l - lse_j, torch.stack(g, -2), g_loc


def _sample_kernel(p, u, loc, inv_temp, log_st, lsm):
    """Draws (..., T) from p = [logits | means | log_scales] (..., 3M, T) shifted by ``loc``
    and 2 * (..., T) uniforms u (u and loc: any shape with that many elements; the first half
    of u picks the component).

    The component: the first whose cumulative weight in softmax(logits * inv_temp) exceeds
    u[0] * total (inverse CDF of the categorical; zero weights never win). The value: the
    logistic inverse CDF ``mu + s logit(u[1])``. Unrolled over M like `_nll_kernel`: one
    pass, no (M, c) temporaries.
    """
    lg, mu, ls = _rows(p)
    u = u.view((2,) + p.shape[:-2] + p.shape[-1:])  # flat, like y in `_nll_kernel`
    top = lg[0]
    for x in lg[1:]:
        top = torch.maximum(top, x)
    w = [torch.exp((x - top) * inv_temp) for x in lg]
    total = w[0]
    for x in w[1:]:
        total = total + x
    target = u[0] * total
    pick_mu, pick_ls, cum = mu[0], ls[0], w[0]
    for j in range(1, len(lg)):  # component j when target >= w_0 + ... + w_{j-1}
        later = target >= cum
        pick_mu = torch.where(later, mu[j], pick_mu)
        pick_ls = torch.where(later, ls[j], pick_ls)
        cum = cum + w[j]
    v = u[1].clamp_min(torch.finfo(u.dtype).tiny)  # log(v) must stay finite
    scale = torch.exp(torch.maximum(pick_ls, lsm) + log_st)
    pick_mu = pick_mu + loc.view(p.shape[:-2] + p.shape[-1:])  # = the shifted mean's rounding
    return (pick_mu + scale * (torch.log(v) - torch.log1p(-v))).clamp(-1.0, 1.0)


# -- the kernels: C++ on the CPU, the eager math elsewhere --------------------------------------
#
# ``src/dmol/csrc/mol_loss.cpp`` holds the same math as `_nll_kernel` and `_sample_kernel`,
# vectorized by hand-written exp/log polynomials. It is built by `dmol._native` with the
# system compiler (seconds, once per machine: no PyTorch headers) and called through ctypes.
# Both kernels are `torch.library` custom operators (``dmol::mol_nll``, ``dmol::mol_sample``):
# torch.compile sees each as one opaque node (a fake implementation gives its output shapes,
# so one compiled graph serves every size), and the loss has a registered backward, so autograd
# and torch.func differentiate it. On any device but the CPU the eager math runs on that
# device; on the CPU too when there is no compiler (or with ``DMOL_DISABLE_COMPILE=1``), after
# a one-line warning.

_state: dict = {"libs": {}, "reason": None}  # reason: None untried, "" built, else the fallback
_SIGNATURES = {  # (argument ctypes) per C entry point: pointers, then sizes, then constants
    "dmol_mol_nll": ["p", "i", "i", "p", "p", "i", "i", "i", "d", "d", "d", "p", "p", "p", "c"],
    "dmol_mol_sample": ["p", "i", "i", "p", "p", "i", "i", "i", "d", "d", "d", "p", "c"],
    "dmol_coupled_nll": ["p", "i", "i", "p", "i", "i", "i", "i", "d", "d", "d", "p", "p", "c"],
}
# -fno-trapping-math lets the vectorizer compute both sides of a select (no FP trap is ever
# enabled here); -ffp-contract=fast lets it use FMAs (one rounding instead of two)
_FLAGS = (*_native.NATIVE_FLAGS, "-fno-trapping-math", "-ffp-contract=fast")
#: below this many (sample, component) pairs a call runs on one thread: starting threads costs
#: more than the work
_MIN_PARALLEL = 1 << 15


def _fallback(reason: str) -> None:
    _state.update(libs={}, reason=reason)
    warnings.warn(
        f"dmol.fused: the C++ kernels are not used ({reason}); running the eager version of "
        "the same analytic math: same numbers, several times slower",
        RuntimeWarning,
        stacklevel=3,
    )


def _kernel(name: str, dtype: torch.dtype):
    """The C entry point ``<name>_f32`` or ``_f64`` (a ctypes function), or None (eager math)
    after one warning saying why. Each (part, dtype) of mol_loss.cpp is built on first use."""
    if _state["reason"]:  # the fallback was announced
        return None
    suffix = _suffix(dtype)
    part = "COUPLED" if name.startswith("dmol_coupled") else "MOL"
    lib = _state["libs"].get((part, suffix))
    if lib is None:
        if os.environ.get("DMOL_DISABLE_COMPILE", "") not in ("", "0"):
            return _fallback("DMOL_DISABLE_COMPILE is set")
        try:
            lib = _native.load("mol_loss.cpp", _FLAGS, (f"DMOL_PART_{part}",
                                                        f"DMOL_{suffix.upper()}"))
        except _native.CompilerMissing as e:
            return _fallback(str(e))
        except _native.BuildFailed as e:  # a bug: loud, but the user's run goes on
            return _fallback(str(e).splitlines()[0] + " (see dmol._native.load for the message)")
        kinds = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "d": ctypes.c_double,
                 "c": ctypes.c_int}
        for entry, sig in _SIGNATURES.items():
            if entry.startswith("dmol_coupled") == (part == "COUPLED"):
                fn = getattr(lib, f"{entry}_{suffix}")
                fn.argtypes, fn.restype = [kinds[k] for k in sig], ctypes.c_int
        _state["libs"][(part, suffix)] = lib
        _state["reason"] = ""
    return getattr(lib, f"{name}_{suffix}")


def backend() -> str:
    """``"native"`` when the C++ kernels serve CPU tensors, else ``"eager-fallback: <reason>"``
    (other devices always run the eager math on the device)."""
    native = _kernel("dmol_mol_nll", torch.float32) is not None
    return "native" if native else f"eager-fallback: {_state['reason']}"


def _rows_layout(p: Tensor) -> Tensor:
    """p (A, C, T) with unit stride along T (what the C++ kernels index)."""
    return p if p.shape[2] <= 1 or p.stride(2) == 1 else p.contiguous()


def _threads(p: Tensor) -> int:
    return torch.get_num_threads() if p.numel() // 3 >= _MIN_PARALLEL else 1


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


def _nll_eager(p: Tensor, y: Tensor, loc: Tensor, num_classes: int, log_scale_min: float,
             gscale: float, want_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """NLL (A, T) of targets y (A, T) under p = [logits | means | log_scales] (A, 3M, T) with
    every mean shifted by loc (A, T); with ``want_grad`` also the gradients (A, 3M, T) and
    (A, T) of the NLL w.r.t. p and loc, times ``gscale`` (else two empty tensors).
    The eager math: every device but the CPU, and the CPU without a compiler."""
    k_max = torch.tensor(num_classes - 1, dtype=torch.float64, device=p.device)
    lsm = torch.tensor(log_scale_min, dtype=p.dtype, device=p.device)
    gs = torch.tensor(gscale, dtype=p.dtype, device=p.device)
    nll, grad, gloc = _nll_kernel(p, y, loc, k_max, lsm, gs)
    if not want_grad:
        grad, gloc = p.new_empty(0), p.new_empty(0)
    return nll, grad, gloc


# Defined with torch.library's low-level API: `torch.library.custom_op` wraps every call in
# dynamo's "disable" guard, whose first use imports torch._dynamo (seconds of start-up)
_LIB = torch.library.Library("dmol", "DEF")
_LIB.define("mol_nll(Tensor p, Tensor y, Tensor loc, int num_classes, float log_scale_min, "
            "float gscale, bool want_grad) -> (Tensor, Tensor, Tensor)")
_LIB.define("mol_sample(Tensor p, Tensor u, Tensor loc, float inv_temp, float log_st, "
            "float log_scale_min) -> Tensor")
# the eager math serves every device; the CPU has its own kernel
_LIB.impl("mol_nll", _nll_eager, "CompositeExplicitAutograd")
_mol_nll = torch.ops.dmol.mol_nll.default


def _mol_nll_cpu(p, y, loc, num_classes, log_scale_min, gscale, want_grad):
    kernel = _kernel("dmol_mol_nll", p.dtype)
    if kernel is None:
        return _nll_eager(p, y, loc, num_classes, log_scale_min, gscale, want_grad)
    p, y, loc = _rows_layout(p), y.contiguous(), loc.contiguous()
    A, C, T = p.shape
    nll = p.new_empty(A, T)
    grad = p.new_empty((A, C, T) if want_grad else (0,))
    gloc = p.new_empty((A, T) if want_grad else (0,))
    kernel(
        p.data_ptr(), p.stride(0), p.stride(1), y.data_ptr(), loc.data_ptr(), A, C // 3, T,
        float(num_classes - 1), log_scale_min, gscale, nll.data_ptr(),
        grad.data_ptr() if want_grad else None, gloc.data_ptr() if want_grad else None,
        _threads(p))
    return nll, grad, gloc


_LIB.impl("mol_nll", _mol_nll_cpu, "CPU")


@torch.library.register_fake("dmol::mol_nll", lib=_LIB)
def _mol_nll_fake(p, y, loc, num_classes, log_scale_min, gscale, want_grad):
    A, C, T = p.shape
    if want_grad:
        return p.new_empty(A, T), p.new_empty(A, C, T), p.new_empty(A, T)
    return p.new_empty(A, T), p.new_empty(0), p.new_empty(0)


def _traced(t: Tensor) -> bool:
    """Whether t belongs to torch.compile's or torch.func's tracing (no .item(), no in-place
    update of a saved result there)."""
    return (torch.compiler.is_compiling()
            or torch._C._functorch.is_functorch_wrapped_tensor(t)
            or type(t) is not Tensor)


def _nll_setup(ctx, inputs, output) -> None:
    p, y, loc, num_classes, lsm, gscale, want_grad = inputs
    ctx.save_for_backward(p, y, loc)
    ctx.meta = (num_classes, lsm, gscale)
    # the gradient made by the forward, handed out once (then freed by autograd, not copied);
    # an attribute rather than a saved tensor, so that nothing else holds on to it
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)  # no zero-filled (A, 3M, T) "gradient" for output[1]
    ctx.grad = tuple(g.detach() for g in output[1:]) if want_grad else None


def _scale_by_incoming(grads: list[Tensor], grad_nll: Tensor, gscale: float) -> list[Tensor]:
    """Gradients (each (A, ..., T), the first dim and the last matching grad_nll's (A, T))
    that a kernel formed pre-multiplied by ``gscale``, the expected dL/dNLL (1/N under a mean),
    times the incoming ``grad_nll / gscale``: when the incoming gradient is that constant they
    are handed out as they are, else scaled in place (no second buffer)."""
    g0 = grads[0]
    pre = torch.tensor(gscale, dtype=g0.dtype)  # the scale as the kernel rounded it
    if _traced(grad_nll) or _traced(g0):
        w = grad_nll.to(g0.dtype) / pre.to(g0.device)
        return [g * w.reshape(w.shape[:1] + (1,) * (g.dim() - 2) + w.shape[1:]) for g in grads]
    if grad_nll.dim() and not any(grad_nll.stride()):  # an expanded scalar (sum, mean)
        v = grad_nll.reshape(-1)[0].to(g0.dtype)
        pre = pre.to(v.device)
        # (on the CPU reading the value costs nothing; on a GPU it would be a sync)
        if g0.device.type != "cpu" or v.item() != pre.item():
            for g in grads:
                g.mul_(v / pre)
    # (a mean's backward hands a materialized constant: one look at the (A, T) values spares
    # a pass over the gradient)
    elif g0.device.type != "cpu" or not bool((grad_nll == pre).all()):
        w = grad_nll.to(g0.dtype) / pre.to(g0.device)
        for g in grads:
            g.mul_(w.reshape(w.shape[:1] + (1,) * (g.dim() - 2) + w.shape[1:]))
    return grads


def _nll_backward(ctx, grad_nll: Tensor, _grad: Tensor, _gloc: Tensor):
    if grad_nll is None:  # the NLL itself was not used
        return (None,) * 7
    p, y, loc = ctx.saved_tensors
    num_classes, lsm, gscale = ctx.meta
    got, ctx.grad = ctx.grad, None
    if got is None:  # recompute=True, or a second backward through a retained graph
        with torch.no_grad():  # (no double backward: the gradient is not differentiated)
            got = _mol_nll(p, y, loc, num_classes, lsm, gscale, True)[1:]
    g, gloc = _scale_by_incoming(list(got), grad_nll, gscale)
    return g, None, gloc, None, None, None, None


torch.library.register_autograd("dmol::mol_nll", _nll_backward, setup_context=_nll_setup,
                                lib=_LIB)


class _NLLUnderFunc(torch.autograd.Function):
    """The same forward and backward as an autograd.Function with ``setup_context``: the
    form torch.func's transforms accept (the operator's own autograd wrapper is refused
    there in torch 2.13). Used only while a torch.func transform is active."""

    @staticmethod
    def forward(p, y, loc, num_classes, lsm, gscale, want_grad):
        with torch.no_grad():  # (the op's own autograd wrapper is not wanted here)
            return tuple(_mol_nll(p, y, loc, num_classes, lsm, gscale, want_grad))

    setup_context = staticmethod(_nll_setup)
    backward = staticmethod(_nll_backward)


def _sample_eager(p: Tensor, u: Tensor, loc: Tensor, inv_temp: float, log_st: float,
                log_scale_min: float) -> Tensor:
    """(A, T) draws from p = [logits | means | log_scales] (A, 3M, T) shifted by loc (A, T),
    given uniforms u (2, A, T): the eager math (every device but the CPU, and the fallback)."""
    consts = (torch.tensor(v, dtype=p.dtype, device=p.device)
              for v in (inv_temp, log_st, log_scale_min))
    return _sample_kernel(p, u, loc, *consts)


_LIB.impl("mol_sample", _sample_eager, "CompositeExplicitAutograd")
_mol_sample = torch.ops.dmol.mol_sample.default


def _mol_sample_cpu(p, u, loc, inv_temp, log_st, log_scale_min):
    kernel = _kernel("dmol_mol_sample", p.dtype)
    if kernel is None:
        return _sample_eager(p, u, loc, inv_temp, log_st, log_scale_min)
    p, u, loc = _rows_layout(p), u.contiguous(), loc.contiguous()
    A, C, T = p.shape
    out = p.new_empty(A, T)
    kernel(
        p.data_ptr(), p.stride(0), p.stride(1), u.data_ptr(), loc.data_ptr(), A, C // 3, T,
        inv_temp, log_st, log_scale_min, out.data_ptr(), _threads(p))
    return out


_LIB.impl("mol_sample", _mol_sample_cpu, "CPU")


@torch.library.register_fake("dmol::mol_sample", lib=_LIB)
def _mol_sample_fake(p, u, loc, inv_temp, log_st, log_scale_min):
    return p.new_empty(p.shape[0], p.shape[2])


# -- layout ------------------------------------------------------------------------------------


def _canon(t: Tensor) -> Tensor:
    """(*batch, C) -> an (A, C, T) tensor with contiguous rows, T the last batch dim.

    A view when it can be: for the (B, T, 3M) view of a (B, 3M, T) network output it is that
    output itself. Other layouts are copied.
    """
    x = t.reshape(1, -1) if t.dim() == 1 else t
    x = x.movedim(-1, -2)
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        x = x.contiguous()
    return x.reshape(-1, *x.shape[-2:])


def _pack(parts: list[Tensor]) -> Tensor:
    """Stack (A, C, T) blocks along dim 1; a view, not a copy, when they are consecutive
    slices of one tensor (for the sampler only: autograd through the view would be slow)."""
    if len(parts) == 1:
        return parts[0]
    x = parts[0]
    if not torch.compiler.is_compiling():
        step = x.shape[1] * x.stride(1)
        if all(
            t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
            and t.shape == x.shape
            and t.stride() == x.stride()
            and t.storage_offset() == x.storage_offset() + k * step
            for k, t in enumerate(parts)
        ):
            return x.as_strided((x.shape[0], x.shape[1] * len(parts), x.shape[2]), x.stride())
    return torch.cat(parts, 1)


# -- autograd ---------------------------------------------------------------------------------


def _compute_dtype(*ts: Tensor) -> torch.dtype:
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return V.compute_dtype(dtype)


def _lsm(log_scale_min: float | None) -> float:
    return float("-inf") if log_scale_min is None else float(log_scale_min)


def _targets_in(y: Tensor, dtype: torch.dtype, num_classes: int) -> Tensor:
    """Targets in the compute dtype, binned as the reference bins them (in float64, from y).

    A target more precise than the compute dtype (float64 y, float32 parameters) is first
    snapped to its bin centre in its own precision: cast as it is, a value just above a bin
    edge can round below it and be scored in the bin below. A centre cast to float32 is off by
    at most 6e-8, far less than half a bin at any K up to 2**24, so it bins back to its bin.
    """
    if torch.finfo(y.dtype).bits <= torch.finfo(dtype).bits:
        return y.to(dtype)  # exact: the kernel's float64 binning sees y itself
    k = torch.round((y.double() + 1.0) * (0.5 * (num_classes - 1))).clamp_(0, num_classes - 1)
    return ((2.0 * k) / (num_classes - 1) - 1.0).to(dtype)


def _apply(params: list[Tensor], y: Tensor, loc: Tensor | None, num_classes: int,
           log_scale_min: float | None, recompute: bool, gscale: float = 1.0) -> Tensor:
    """The (*batch) NLL of y under ``params`` (one packed (*batch, 3M) tensor or the three
    (*batch, M) ones) through ``dmol::mol_nll``; differentiable w.r.t. params and loc.

    Only views (and a dtype cast where one is needed) lie between the caller's tensors and the
    op, so the op's gradient reaches a (B, 3M, T) network output without a copy."""
    dtype = _compute_dtype(*params) if loc is None else _compute_dtype(*params, loc)
    parts = [_canon(t.to(dtype)) for t in params]
    p = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    A, T = p.shape[0], p.shape[2]
    yc = _targets_in(y.detach(), dtype, num_classes).reshape(A, T)
    shift = (torch.zeros(A, T, dtype=dtype, device=p.device) if loc is None
             else loc.to(dtype).reshape(A, T))
    grad_on = torch.is_grad_enabled() and (p.requires_grad or shift.requires_grad)
    op = _NLLUnderFunc.apply if torch._C._are_functorch_transforms_active() else _mol_nll
    nll = op(p, yc, shift, num_classes, _lsm(log_scale_min), gscale, grad_on and not recompute)[0]
    return nll.reshape(y.shape)


def _count(name: str) -> None:
    # not while torch.compile traces: the counter's value would become a guard (a recompile
    # per call)
    if not torch.compiler.is_compiling():
        calls[name] += 1


def _check_values(name: str, t: Tensor) -> None:
    """NaN/inf check, left out inside torch.compile: a value-dependent branch would break the
    caller's graph (shapes and dtypes are still checked there)."""
    if not torch.compiler.is_compiling():
        V.check_finite(name, t)


def _check_loc(loc: Tensor | None, y: Tensor) -> None:
    if loc is None:
        return
    if not isinstance(loc, Tensor):
        raise TypeError(f"loc must be a torch.Tensor or None, got {type(loc).__name__}")
    if not loc.is_floating_point():
        raise TypeError(f"loc must be floating point, got dtype {loc.dtype}")
    if loc.shape != y.shape:
        raise ValueError(f"loc has shape {tuple(loc.shape)}, expected the batch shape "
                         f"{tuple(y.shape)}")
    _check_values("loc", loc)


def _check_params(params: list[tuple[str, Tensor]]) -> tuple[int, ...]:
    for name, t in params:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        V.compute_dtype(t.dtype)
    shape = params[0][1].shape  # (compared, not hashed: a set would pin traced sizes)
    if any(t.shape != shape for _, t in params[1:]):
        got = ", ".join(f"{n} {tuple(t.shape)}" for n, t in params)
        raise ValueError(f"logits, means and log_scales must have one shape (*batch, M), got {got}")
    if len(shape) == 0 or shape[-1] == 0:
        raise ValueError(f"parameters must be (*batch, M) with M >= 1, got shape {shape}")
    return shape


def _check(params: list[tuple[str, Tensor]], y: Tensor, num_classes: int) -> int:
    shape = _check_params(params)
    V.check_target_dtype(y, "y")
    if tuple(y.shape) != shape[:-1]:
        raise ValueError(f"y has shape {tuple(y.shape)}, expected the batch shape {shape[:-1]}")
    return V.check_num_classes(num_classes)


def _empty_nll(batch_like: Tensor, loc: Tensor | None) -> Tensor:
    """The NLL of an empty batch: empty, in the compute dtype, connected to the inputs (so a
    backward pass gives them empty gradients instead of failing)."""
    out = batch_like * 0
    if loc is not None:
        out = out + loc * 0
    return out.to(V.compute_dtype(out.dtype))


def mixture_nll(
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    y: Tensor,
    num_classes: int,
    log_scale_min: float | None,
    *,
    loc: Tensor | None = None,
    recompute: bool = False,
) -> Tensor:
    """Exact per-element NLL (nats) of y's bin under the mixture, with an analytic backward.

    Args:
        logits, means, log_scales: (*batch, M), any float dtype (half is computed in float32).
        y: (*batch) values in [-1, 1], scored at the centre of their bin.
        num_classes: K bins on [-1, 1]; the first and last take the tails.
        log_scale_min: lower clamp of the log-scales (None: no clamp).
        loc: (*batch) shift added to every component's mean (e.g. a linear prediction), or
            None. Differentiable; the same numbers as ``means + loc[..., None]``.
        recompute: compute the gradient in the backward pass instead of the forward (saves
            holding it between the two; costs a second pass of the math).

    Returns:
        (*batch) NLL in the compute dtype. The same numbers as
        :func:`dmol.logistic.mixture_nll_reference`, at a fraction of its time and memory.

    Example::

        >>> nll = mixture_nll(*torch.randn(3, 8, 10).unbind(0), torch.zeros(8), 256, -7.0)
    """
    _count("mixture_nll")
    K = _check([("logits", logits), ("means", means), ("log_scales", log_scales)], y, num_classes)
    _check_loc(loc, y)
    if y.numel() == 0:  # nothing to score: an empty NLL, still part of the graph
        return _empty_nll(logits[..., 0] + means[..., 0] + log_scales[..., 0], loc)
    return _apply([logits, means, log_scales], y, loc, K, log_scale_min, recompute)


def mixture_nll_packed(
    params: Tensor,
    y: Tensor,
    num_classes: int,
    log_scale_min: float | None,
    *,
    loc: Tensor | None = None,
    recompute: bool = False,
    grad_scale: float = 1.0,
) -> Tensor:
    """:func:`mixture_nll` for parameters packed as (*batch, 3M): ``[logits | means | log_scales]``.

    The gradient is one tensor laid out in memory like ``params`` (e.g. the (B, T, 3M) view
    of a (B, 3M, T) network output), so no copy is needed to hand it back: the peak extra
    memory of forward + backward is the gradient itself plus (*batch)-sized buffers.
    ``loc`` (*batch) shifts every mean, as in :func:`mixture_nll`.
    ``grad_scale`` is the dL/dNLL the caller expects to back-propagate (``1 / N`` when the
    loss is the mean of N elements): the gradient is formed already scaled, and when the
    incoming gradient is that constant the backward pass has nothing left to do. Any other
    incoming gradient is still applied exactly.

    Example::

        >>> y_hat = torch.randn(2, 30, 100, requires_grad=True)         # (B, 3M, T)
        >>> nll = mixture_nll_packed(y_hat.transpose(1, 2), torch.zeros(2, 100), 65536, -7.0)
        >>> nll.mean().backward()
    """
    _count("mixture_nll_packed")
    if not isinstance(params, Tensor):
        raise TypeError(f"params must be a torch.Tensor, got {type(params).__name__}")
    if params.dim() == 0 or params.shape[-1] == 0 or params.shape[-1] % 3:
        raise ValueError(
            f"params must be (*batch, 3M) = [logits | means | log_scales], got shape "
            f"{tuple(params.shape)}"
        )
    K = _check([("params[..., :M]", params[..., : params.shape[-1] // 3])], y, num_classes)
    _check_loc(loc, y)
    if torch.compiler.is_compiling():
        # a traced 1/N is symbolic: handing it to the op would specialize the graph to N; the
        # compiled backward applies the incoming gradient in any case
        grad_scale = 1.0
    elif not math.isfinite(grad_scale) or grad_scale == 0:
        raise ValueError(f"grad_scale must be finite and nonzero, got {grad_scale!r}")
    if y.numel() == 0:
        return _empty_nll(params[..., 0], loc)
    return _apply([params], y, loc, K, log_scale_min, recompute, float(grad_scale))


def sample_mixture(
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    *,
    temperature: float = 1.0,
    scale_temperature: float = 1.0,
    log_scale_min: float | None = None,
    generator: torch.Generator | None = None,
    loc: Tensor | None = None,
) -> Tensor:
    """One continuous draw per element, clamped to [-1, 1], in one fused pass.

    The component is chosen by the inverse CDF of the categorical (one uniform compared with
    the cumulative softmax(logits / temperature)): the same distribution as Gumbel-max with one
    random number per element instead of M. The value is then ``mu + s * logit(u')``.

    Args:
        logits, means, log_scales: (*batch, M).
        temperature: divides the logits (0: the most probable component, first on ties).
        scale_temperature: multiplies the component scales (0: the component's mean).
        log_scale_min: lower clamp of the log-scales before ``scale_temperature``.
        generator: for reproducible draws; 2 * prod(batch) uniforms are drawn as one
            (2, *batch) ``torch.rand`` call.
        loc: (*batch) shift added to every mean before the draw is clamped, or None.

    Returns:
        (*batch) values in [-1, 1], in the compute dtype.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> x = sample_mixture(*torch.randn(3, 5, 10).unbind(0), generator=g)   # (5,)
    """
    _count("sample_mixture")
    shape = _check_params([("logits", logits), ("means", means), ("log_scales", log_scales)])
    temperature = V.check_temperature("temperature", temperature)
    scale_temperature = V.check_temperature("scale_temperature", scale_temperature)
    for name, t in (("logits", logits), ("means", means), ("log_scales", log_scales)):
        _check_values(name, t)
    batch = torch.Size(shape[:-1])
    if loc is not None:
        if not isinstance(loc, Tensor) or loc.shape != batch:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"loc must be a tensor of the batch shape {tuple(batch)}, got {got}")
        if not loc.is_floating_point():
            raise TypeError(f"loc must be floating point, got dtype {loc.dtype}")
        _check_values("loc", loc)
    dtype = _compute_dtype(logits, means, log_scales, *(() if loc is None else (loc,)))
    dev = means.device
    if batch.numel() == 0:
        return torch.empty(batch, dtype=dtype, device=dev)
    with torch.no_grad():
        lg, mu, ls = (_canon(t.to(dtype)) for t in (logits, means, log_scales))
        if temperature == 0:  # deterministic choice: argmax, first index on ties
            top = lg == lg.amax(1, keepdim=True)
            lg = torch.where(top & (top.cumsum(1) == 1), 0.0, float("-inf")).to(dtype)
            temperature = 1.0
        u = torch.rand((2, *batch), generator=generator, dtype=dtype, device=dev)
        log_st = math.log(scale_temperature) if scale_temperature > 0 else -math.inf
        p, u = _pack([lg, mu, ls]), u.reshape(2, lg.shape[0], lg.shape[2])
        shift = (torch.zeros_like(u[0]) if loc is None
                 else loc.to(dtype).reshape(u.shape[1:]))
        return _mol_sample(p, u, shift, 1.0 / temperature, log_st,
                           _lsm(log_scale_min)).reshape(batch)
