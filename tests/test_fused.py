"""dmol.fused: same numbers as the unfused exact reference, analytic gradients, sampling, fallback.

References are `dmol.logistic.mixture_nll_reference` evaluated in float64 on the same inputs
(so a float32 result is checked against the exact value, not the reference's own rounding).

The CPU kernels are C++ (src/dmol/csrc/mol_loss.cpp) behind the ``dmol::mol_nll`` and
``dmol::mol_sample`` operators: one build serves every dtype, M and shape.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from dmol import _validate as V
from dmol import fused
from dmol.logistic import (
    bin_centre,
    discretized_mix_logistic_loss,
    mixture_nll_reference,
    sample_discretized_mix_logistic,
)

DATA = Path(__file__).parent / "data"


def assert_nll_close(got, ref):
    """The acceptance bound: |fused - reference| <= 1e-5 |reference| + 1e-5, everywhere."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    err = (got - ref).abs() - (1e-5 * ref.abs() + 1e-5)
    assert bool((err <= 0).all()), f"worst excess {err.max().item():.3g} at {int(err.argmax())}"


def assert_grad_close(got, ref):
    """Gradients to 1e-4 relative (elementwise, with a floor of 1e-4 of the largest entry)."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * scale + 1e-12)


def reference_and_grads(params, y, K, lsm, weights=None):
    """Reference NLL and its gradients w.r.t. each parameter tensor (autograd), evaluated in
    float64 on the same inputs and returned in their dtype: the exact values for those
    inputs, not the reference's own float32 rounding."""
    dtype = params[0].dtype
    leaves = [p.detach().double().requires_grad_() for p in params]
    nll = mixture_nll_reference(*leaves, y.double(), K, lsm)
    w = torch.ones_like(nll) if weights is None else weights.double()
    grads = torch.autograd.grad((nll * w).sum(), leaves)
    return nll.detach().to(dtype), [g.to(dtype) for g in grads]


def fused_and_grads(params, y, K, lsm, weights=None, **kw):
    leaves = [p.detach().clone().requires_grad_() for p in params]
    nll = fused.mixture_nll(*leaves, y, K, lsm, **kw)
    w = torch.ones_like(nll) if weights is None else weights
    return nll.detach(), torch.autograd.grad((nll * w).sum(), leaves)


# -- reference vectors --------------------------------------------------------------------------


def _exact(K, dtype):
    d = np.load(DATA / "exact_logp_vectors.npz")
    p = [torch.from_numpy(d[f"exact_K{K}_{n}"]).to(dtype) for n in ("logits", "means",
                                                                       "log_scales")]
    y = bin_centre(torch.from_numpy(d[f"exact_K{K}_bin"]), K, dtype)
    return p, y, torch.from_numpy(d[f"exact_K{K}_logp"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [256, 65536])
def test_exact_vectors(K, dtype):
    params, y, logp = _exact(K, dtype)
    w = torch.linspace(0.5, 1.5, len(y), dtype=dtype)  # a non-uniform upstream gradient
    nll, grads = fused_and_grads(params, y, K, None, w)
    ref, ref_grads = reference_and_grads(params, y, K, None, w)
    assert_nll_close(nll, ref)
    assert_nll_close(nll.double(), -logp)  # and against 60-digit arithmetic
    for g, r in zip(grads, ref_grads, strict=True):
        assert_grad_close(g, r)


@pytest.mark.parametrize("K,lsm", [(256, 7), (65536, 16)])
def test_r9y9_vectors_through_the_loss(K, lsm):
    """Realistic network outputs (B, 3M, T), M = 10, targets on and off the grid, edges."""
    d = np.load(DATA / "r9y9_pixelcnn_vectors.npz")
    y_hat = torch.from_numpy(d[f"dmol_K{K}_lsm{lsm}_M10_y_hat"]).requires_grad_()
    y = torch.from_numpy(d[f"dmol_K{K}_lsm{lsm}_M10_y"])
    loss = discretized_mix_logistic_loss(y_hat, y, num_classes=K, log_scale_min=-lsm,
                                         reduction="none")
    (g,) = torch.autograd.grad(loss.sum(), y_hat)
    ref_leaf = y_hat.detach().double().requires_grad_()
    ref = mixture_nll_reference(*V.split_channels(ref_leaf.transpose(1, 2), 3),
                                y.squeeze(-1).double(), K, -lsm)
    (ref_g,) = torch.autograd.grad(ref.sum(), ref_leaf)
    assert_nll_close(loss.detach(), ref.detach().float())
    assert_grad_close(g, ref_g.float())


def test_packed_gradient_is_laid_out_like_the_network_output():
    g = torch.Generator().manual_seed(2)
    y_hat = torch.randn(2, 30, 50, generator=g, requires_grad=True)
    y = torch.rand(2, 50, generator=g) * 2 - 1
    nll = fused.mixture_nll_packed(y_hat.transpose(1, 2), y, 65536, -7.0)
    nll.mean().backward()
    assert y_hat.grad.is_contiguous()  # (B, 3M, T) as is: no copy on the way back
    ref_leaf = y_hat.detach().double().requires_grad_()
    ref = mixture_nll_reference(*ref_leaf.transpose(1, 2).chunk(3, -1), y.double(), 65536, -7.0)
    ref.mean().backward()
    assert_nll_close(nll.detach(), ref.detach().float())
    assert_grad_close(y_hat.grad, ref_leaf.grad.float())


# -- property tests -----------------------------------------------------------------------------

M_FOR = {torch.float32: 10, torch.float64: 3}


@st.composite
def cases(draw, dtype):
    """Parameters and targets, with the hard regimes drawn on purpose: log-scales down to -20
    (below the -16 clamp, and tiny unclamped scales when there is no clamp) and, by choice,
    components whose mean lies inside the target's bin or one of its neighbours (the bin mass
    is then a difference of two nearly equal CDFs for a wide component) or within a few scales
    of one of the bin's edges (where a narrow component's mass hangs on the edge's rounding)."""
    M = M_FOR[dtype]
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 24))
    K = draw(st.sampled_from([2, 3, 256, 1024, 65536]))
    lsm = draw(st.sampled_from([None, -7.0, -16.0]))
    scales = draw(st.sampled_from(["uniform", "normal", "tiny"]))
    near = draw(st.sampled_from(["no", "bin", "edge"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(B, T, M, generator=g, dtype=dtype) * draw(st.sampled_from([0.1, 3.0]))
    means = torch.randn(B, T, M, generator=g, dtype=dtype) * draw(st.sampled_from([0.01, 0.7]))
    log_scales = {  # [-20, 2]; N(-3, 1); [-20, -14]: below -16 the clamp binds
        "uniform": lambda: torch.rand(B, T, M, generator=g, dtype=dtype) * 22 - 20,
        "normal": lambda: torch.randn(B, T, M, generator=g, dtype=dtype) - 3,
        "tiny": lambda: torch.rand(B, T, M, generator=g, dtype=dtype) * 6 - 20,
    }[scales]()
    k = torch.randint(0, K, (B, T), generator=g)
    k[..., 0], k[..., -1] = 0, K - 1  # both edge bins in every case
    y = bin_centre(k, K, dtype)
    if near != "no":  # about half the components (at least the first) moved near the target
        h = 1.0 / (K - 1)  # half a bin width: the target's bin is centre -+ h
        if near == "bin":  # anywhere in the target's bin or its neighbours
            offset = (torch.rand(B, T, M, generator=g, dtype=torch.float64) * 6 - 3) * h
        else:  # within a few (clamped) scales of one of the bin's edges
            s = log_scales.double().clamp(min=-math.inf if lsm is None else lsm).exp()
            side = torch.randint(0, 2, (B, T, M), generator=g) * 2 - 1
            offset = side * h + torch.randn(B, T, M, generator=g, dtype=torch.float64) * 3 * s
        pick = torch.rand(B, T, M, generator=g) < 0.5
        pick[..., 0] = True
        means = torch.where(pick, (y.double()[..., None] + offset).to(dtype), means)
    if draw(st.booleans()):  # off-grid targets are scored at their bin's centre
        y = (y + (torch.rand(B, T, generator=g, dtype=dtype) - 0.5) / (K - 1)).clamp(-1, 1)
    w = torch.rand(B, T, generator=g, dtype=dtype) + 0.5  # a non-uniform upstream gradient
    return [logits, means, log_scales], y, K, lsm, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_matches_reference(dtype, data):
    params, y, K, lsm, w = data.draw(cases(dtype))
    nll, grads = fused_and_grads(params, y, K, lsm, w)
    ref, ref_grads = reference_and_grads(params, y, K, lsm, w)
    assert_nll_close(nll, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        assert_grad_close(g, r)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("layout", ["BCT", "BTC"])
@settings(max_examples=8, deadline=None)
@given(data=st.data(), masked=st.sampled_from(["none", "mask", "lengths"]))
def test_loss_reductions_and_masks(reduction, layout, data, masked):
    params, y, K, lsm, _ = data.draw(cases(torch.float32))
    B, T, M = params[0].shape
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="mask seed"))
    btc = torch.cat(params, -1)
    y_hat = (btc.transpose(1, 2) if layout == "BCT" else btc).contiguous().requires_grad_()
    mask = None
    if masked == "mask":
        mask = (torch.rand(B, T, generator=g) > 0.3).float()
    elif masked == "lengths":
        mask = torch.randint(0, T + 1, (B,), generator=g)
    loss = discretized_mix_logistic_loss(y_hat, y, num_classes=K, log_scale_min=lsm,
                                         layout=layout, reduction=reduction, mask=mask)
    g = torch.autograd.grad(loss.sum(), y_hat)[0]
    ref_leaf = y_hat.detach().double().requires_grad_()
    ref_btc = ref_leaf.transpose(1, 2) if layout == "BCT" else ref_leaf
    ref_nll = mixture_nll_reference(*ref_btc.chunk(3, -1), y.double(), K, lsm)
    m = V.mask_bt(mask, B, T, y.device)
    ref = V.reduce(ref_nll, reduction, None if m is None else m.double())
    assert_nll_close(loss.detach(), ref.detach().float())
    assert_grad_close(g, torch.autograd.grad(ref.sum(), ref_leaf)[0].float())


# -- autograd plumbing ---------------------------------------------------------------------------


def _small(dtype=torch.float32, M=3):
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(2, 7, M, generator=g, dtype=dtype) for _ in range(3)]
    params[2] = params[2] - 3
    return params, torch.rand(2, 7, generator=g, dtype=dtype) * 2 - 1


def test_recompute_and_retained_graph_give_the_same_gradient():
    params, y = _small()
    _, g_fwd = fused_and_grads(params, y, 256, -7.0)
    _, g_rec = fused_and_grads(params, y, 256, -7.0, recompute=True)
    for a, b in zip(g_fwd, g_rec, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a second backward through a retained graph must not reuse the scaled buffer
    leaves = [p.clone().requires_grad_() for p in params]
    loss = fused.mixture_nll(*leaves, y, 256, -7.0).sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in leaves]
    loss.backward()
    for p, f in zip(leaves, first, strict=True):
        torch.testing.assert_close(p.grad, 2 * f)


def test_prescaled_gradient_with_any_incoming_gradient():
    """The loss forms its gradient pre-scaled by 1/N (mean) or 1 (sum); an incoming gradient
    other than that constant (a weighted loss, a second backward) must still come out exact."""
    params, y = _small()
    y_hat = torch.cat(params, -1).transpose(1, 2).contiguous()  # (B, 3M, T)
    for reduction, factor in [("mean", 2.5), ("sum", -0.75), ("mean", 1.0)]:
        leaf = y_hat.clone().requires_grad_()
        loss = discretized_mix_logistic_loss(leaf, y, num_classes=256, log_scale_min=-7.0,
                                             reduction=reduction)
        (factor * loss).backward(retain_graph=True)
        first = leaf.grad.clone()
        loss.backward()  # recomputed: a second backward through the retained graph
        ref_leaf = y_hat.clone().requires_grad_()
        lg, mu, ls = ref_leaf.transpose(1, 2).chunk(3, -1)
        ref = mixture_nll_reference(lg, mu, ls, y, 256, -7.0)
        ref = ref.mean() if reduction == "mean" else ref.sum()
        (factor * ref).backward()
        assert_grad_close(first, ref_leaf.grad)
        assert_grad_close(leaf.grad - first, ref_leaf.grad / factor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mean_inside_a_bin_and_far_components(dtype):
    """The kernel takes both edges' e^-|x| from one exp (e^-|a| e^-|b| = e^-c when the mean is
    inside the bin); with a tiny scale the nearer one underflows. Also: a component hundreds
    of scales away (its e^-dist underflows), and edge bins."""
    K, lsm = 65536, -16.0
    y = bin_centre(torch.tensor([0, 1, 30000, 30000, 65534, 65535]), K, dtype)
    h = 1.0 / (K - 1)
    means = torch.stack([y + 0.3 * h, y - 0.9 * h, y + 500 * h], -1).to(dtype)  # (6, 3)
    log_scales = torch.tensor([-16.0, -12.0, -14.0], dtype=dtype).expand(6, 3)
    logits = torch.tensor([0.0, -1.0, 2.0], dtype=dtype).expand(6, 3)
    params = [logits.contiguous(), means, log_scales.contiguous()]
    got, g_got = fused_and_grads(params, y, K, lsm)
    ref, g_ref = reference_and_grads(params, y, K, lsm)
    assert bool(torch.isfinite(got).all())
    assert_nll_close(got, ref)
    for a, b in zip(g_got, g_ref, strict=True):
        assert_grad_close(a, b)


def test_half_inputs_compute_in_float32():
    params, y = _small()
    half = [p.half().requires_grad_() for p in params]
    nll = fused.mixture_nll(*half, y.half(), 256, -7.0)
    assert nll.dtype == torch.float32
    nll.sum().backward()
    assert all(p.grad.dtype == torch.float16 for p in half)
    ref = mixture_nll_reference(*(p.detach().double() for p in half), y.half().double(), 256,
                                -7.0)
    assert_nll_close(nll.detach(), ref.float())


def nll_scipy(logits, means, log_scales, y, K):
    """The NLL computed independently of dmol, in float64: scipy's logistic CDF at the edges of
    y's bin (survival functions when the bin lies above the mean, so that no mass is a
    difference of two numbers near 1), scipy's logsumexp for the mixture."""
    lg, mu, ls, yv = (t.detach().double().numpy() for t in (logits, means, log_scales, y))
    k = np.clip(np.round((yv[..., None] + 1) * (K - 1) / 2), 0, K - 1)
    za = np.where(k == 0, -np.inf, (2 * k - 1) / (K - 1) - 1 - mu) / np.exp(ls)
    zb = np.where(k == K - 1, np.inf, (2 * k + 1) / (K - 1) - 1 - mu) / np.exp(ls)
    L = stats.logistic
    mass = np.where(za > 0, L.sf(za) - L.sf(zb), L.cdf(zb) - L.cdf(za))
    log_w = lg - special.logsumexp(lg, axis=-1, keepdims=True)
    return torch.from_numpy(np.asarray(-special.logsumexp(log_w + np.log(mass), axis=-1)))


def test_no_grad_forward_and_odd_shapes():
    params, y = _small()
    with torch.no_grad():
        nll = fused.mixture_nll(*params, y, 256, -7.0)
    assert_nll_close(nll, reference_and_grads(params, y, 256, -7.0)[0])
    # batch shapes other than (B, T): (N,), (), (2, 2, 3), against scipy (no dmol code)
    g = torch.Generator().manual_seed(4)
    for shape in [(5,), (), (2, 2, 3)]:
        p = [torch.randn(*shape, 3, generator=g) for _ in range(3)]
        yy = torch.rand(shape, generator=g) * 2 - 1
        got = fused.mixture_nll(*p, yy, 256, None)
        assert got.shape == shape
        assert_nll_close(got, nll_scipy(*p, yy, 256).float())


def _non_contiguous(g):
    """(name, [logits, means, log_scales] (B, T, M) = (2, 7, 3), y (B, T)): views that are not
    contiguous, leaves of autograd through their base tensors."""
    B, T, M = 2, 7, 3
    block = torch.randn(3, M, T, B, generator=g)  # each parameter a permuted view of it
    block[2] -= 3
    yield ("permuted", [t.permute(2, 1, 0) for t in block.requires_grad_().unbind(0)],
           (torch.rand(T, B, generator=g) * 2 - 1).t())
    wide = torch.randn(3, B, 2 * T, 2 * M, generator=g)  # every other sample and component
    wide[2] -= 3
    yield ("strided", [t[:, ::2, ::2] for t in wide.requires_grad_().unbind(0)],
           (torch.rand(B, 2 * T, generator=g) * 2 - 1)[:, ::2])


def test_non_contiguous_inputs():
    """Parameters and targets as transposed and strided views, through mixture_nll and
    mixture_nll_packed (with and without grad), against the float64 reference on contiguous
    copies."""
    g = torch.Generator().manual_seed(5)
    w = torch.rand(2, 7, generator=g) + 0.5
    for name, params, y in _non_contiguous(g):
        assert not any(t.is_contiguous() for t in [*params, y]), name
        ref, ref_grads = reference_and_grads([t.contiguous() for t in params], y.contiguous(),
                                             256, -7.0, w)
        nll = fused.mixture_nll(*params, y, 256, -7.0)
        assert_nll_close(nll.detach(), ref)
        for got, want in zip(torch.autograd.grad((nll * w).sum(), params), ref_grads,
                             strict=True):
            assert_grad_close(got, want)
        with torch.no_grad():
            assert_nll_close(fused.mixture_nll(*params, y, 256, -7.0), ref)
    # packed (B, T, 3M) views other than the (B, 3M, T) network output's transpose: a
    # (T, B, 3M) tensor transposed, and every other sample of a (B, 3M, 2T) output
    for packed in [torch.randn(7, 2, 9, generator=g).transpose(0, 1),
                   torch.randn(2, 9, 14, generator=g)[..., ::2].transpose(1, 2)]:
        assert not packed.is_contiguous()
        packed[..., 6:] -= 3
        leaf = packed.detach().requires_grad_()  # same strides: a non-contiguous leaf
        assert not leaf.is_contiguous()
        y = (torch.rand(7, 2, generator=g) * 2 - 1).t()
        nll = fused.mixture_nll_packed(leaf, y, 256, -7.0)
        (got,) = torch.autograd.grad((nll * w).sum(), leaf)
        ref, ref_grads = reference_and_grads(list(packed.contiguous().chunk(3, -1)),
                                             y.contiguous(), 256, -7.0, w)
        assert_nll_close(nll.detach(), ref)
        assert_grad_close(got, torch.cat(ref_grads, -1))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(y=torch.zeros(2, 6)), "batch shape"),
        (dict(means=torch.zeros(2, 7, 4)), "one shape"),
        (dict(logits=torch.zeros(2, 7, 3, dtype=torch.long)), "floating point"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_bad_input_names_the_problem(bad, match):
    params, y = _small()
    kw = dict(logits=params[0], means=params[1], log_scales=params[2], y=y, num_classes=256)
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        fused.mixture_nll(kw["logits"], kw["means"], kw["log_scales"], kw["y"],
                          kw["num_classes"], -7.0)
    with pytest.raises(ValueError, match="3M"):
        fused.mixture_nll_packed(torch.zeros(2, 7, 10), y, 256, -7.0)


# -- the default path and the fallback -----------------------------------------------------------


def test_loss_goes_through_the_native_kernel():
    assert fused.backend() == "native"
    before = fused.calls["mixture_nll"] + fused.calls["mixture_nll_packed"]
    y_hat = torch.randn(2, 30, 16, generator=torch.Generator().manual_seed(6), requires_grad=True)
    discretized_mix_logistic_loss(y_hat, torch.zeros(2, 16)).backward()
    assert fused.calls["mixture_nll"] + fused.calls["mixture_nll_packed"] == before + 1
    assert fused._state["libs"] and fused._state["reason"] == ""  # no failure, no fallback


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_kernels_match_the_eager_math(dtype):
    """The C++ kernels against the eager math they replace (which CUDA tensors and machines
    without a compiler run), on one (A, 3M, T) block with a shift, both edge bins and
    clamped log-scales, including a strided (non-contiguous) parameter block."""
    g = torch.Generator().manual_seed(1)
    A, M, T, K = 3, 5, 203, 65536
    big = torch.randn(A, 4 * M, T, generator=g, dtype=dtype)
    p = big[:, M:]  # rows of T samples, but not a contiguous (A, 3M, T) tensor
    p[:, 2 * M:] = p[:, 2 * M:] * 4 - 10
    k = torch.randint(0, K, (A, T), generator=g)
    k[:, :3], k[:, -3:] = 0, K - 1
    y = bin_centre(k, K, dtype)
    loc = torch.randn(A, T, generator=g, dtype=dtype) * 1e-3
    got = fused._mol_nll(p, y, loc, K, -12.0, 0.25, True)
    want = fused._nll_eager(p, y, loc, K, -12.0, 0.25, True)
    assert_nll_close(got[0], want[0])
    for a, b in zip(got[1:], want[1:], strict=True):
        assert_grad_close(a, b)
    nll_only = fused._mol_nll(p, y, loc, K, -12.0, 0.25, False)
    assert torch.equal(nll_only[0], got[0]) and nll_only[1].numel() == 0
    u = torch.rand(2, A, T, generator=g, dtype=dtype)
    for args in [(1.0, 0.0, -12.0), (2.0, -1.0, float("-inf")), (1.0, float("-inf"), -7.0)]:
        a = fused._mol_sample(p, u, loc, *args)
        b = fused._sample_eager(p, u, loc, *args)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14)


def test_fallback_when_there_is_no_compiler(monkeypatch):
    from dmol import _native

    monkeypatch.setattr(fused, "_state", {"libs": {}, "reason": None})
    monkeypatch.setattr(_native, "_LOADED", {})
    monkeypatch.setattr(_native, "compiler", lambda: None)
    params, y = _small()
    with pytest.warns(RuntimeWarning, match="C.. kernels are not used .building mol_loss.cpp "
                                            "needs a C.. compiler"):
        nll = fused.mixture_nll(*params, y, 256, -7.0)
    assert fused.backend().startswith("eager-fallback: building mol_loss.cpp needs")
    assert_nll_close(nll, reference_and_grads(params, y, 256, -7.0)[0])


def test_env_var_forces_the_eager_path_with_one_message():
    code = (
        "import torch, warnings; from dmol import fused\n"
        "g = torch.Generator().manual_seed(0)\n"
        "p = [torch.randn(2, 5, 3, generator=g) for _ in range(3)]; y = torch.zeros(2, 5)\n"
        "a = fused.mixture_nll(*p, y, 256, -7.0); b = fused.mixture_nll(*p, y, 256, -7.0)\n"
        "x = fused.sample_mixture(*p)\n"
        "print(fused.backend())\n"
    )
    env = {**os.environ, "DMOL_DISABLE_COMPILE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "eager-fallback: DMOL_DISABLE_COMPILE is set" in res.stdout
    assert res.stderr.count("C++ kernels are not used (DMOL_DISABLE_COMPILE is set)") == 1


# -- sampling -------------------------------------------------------------------------------------


def test_sampler_follows_the_pmf_chi_square():
    K, n = 256, 200_000
    logits = torch.tensor([0.3, -0.5, 1.0])
    means = torch.tensor([-0.6, 0.1, 0.95])
    log_scales = torch.tensor([-2.5, -3.5, -3.0])
    expand = [t.expand(n, 3) for t in (logits, means, log_scales)]
    x = fused.sample_mixture(*expand, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n,) and float(x.min()) >= -1 and float(x.max()) <= 1
    observed = np.bincount(torch.round((x.double() + 1) * (K - 1) / 2).long().numpy(),
                           minlength=K)
    centres = bin_centre(torch.arange(K), K)
    pmf = torch.exp(-mixture_nll_reference(*(t.expand(K, 3) for t in (logits, means,
                                                                       log_scales)),
                                           centres, K)).double().numpy()
    expected = pmf * n
    keep = expected >= 5  # pool sparse cells so the chi-square approximation holds
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    _, pvalue = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    assert pvalue > 1e-3, pvalue
    assert observed[-1] > 0.05 * n  # the upper edge bin holds the third component's tail


def test_sampler_temperatures_and_generator():
    g = torch.Generator().manual_seed(5)
    logits = torch.tensor([[0.0, 2.0, 2.0]]).expand(64, 3)  # a tie: argmax takes the first
    means = torch.tensor([[-0.5, 0.25, 0.75]]).expand(64, 3)
    log_scales = torch.full((64, 3), -2.0)
    x = fused.sample_mixture(logits, means, log_scales, temperature=0, scale_temperature=0)
    assert bool((x == 0.25).all())
    a = fused.sample_mixture(logits, means, log_scales, generator=g.manual_seed(1))
    b = fused.sample_mixture(logits, means, log_scales, generator=g.manual_seed(1))
    assert torch.equal(a, b) and not bool((a == a[0]).all())
    # the functional sampler of dmol.logistic goes through it too
    before = fused.calls["sample_mixture"]
    y_hat = torch.randn(2, 9, 40, generator=g)
    out = sample_discretized_mix_logistic(y_hat, num_classes=256, snap=True, generator=g)
    assert out.shape == (2, 40) and fused.calls["sample_mixture"] == before + 1
    with pytest.raises(ValueError, match="temperature"):
        fused.sample_mixture(logits, means, log_scales, temperature=-1.0)


@pytest.mark.parametrize("name", ["logits", "means", "log_scales"])
def test_sample_mixture_rejects_nonfinite_parameters(name):
    """Issue 12 item 8: a NaN parameter is named, not turned into a finite sample."""
    params = {n: torch.zeros(3, 4) for n in ("logits", "means", "log_scales")}
    params[name][2, 1] = float("nan")
    with pytest.raises(ValueError, match=f"{name} contains 1 NaN/inf"):
        fused.sample_mixture(**params)


@pytest.mark.parametrize("batch", [(0,), (2, 0)])
def test_empty_batch(batch):
    """Issue 12 item 11: an empty batch gives an empty NLL (and empty gradients), no crash."""
    lg, mu, ls = (torch.zeros(*batch, 4, requires_grad=True) for _ in range(3))
    y = torch.zeros(batch)
    nll = fused.mixture_nll(lg, mu, ls, y, 256, -7.0)
    assert nll.shape == batch
    nll.sum().backward()
    assert lg.grad.shape == lg.shape
    packed = torch.zeros(*batch, 12)
    assert fused.mixture_nll_packed(packed, y, 256, None).shape == batch
    assert fused.sample_mixture(lg, mu, ls).shape == batch


def test_integer_targets_are_a_target_dtype_error():
    """Issue 12 item 17: was reported as "parameters must be a floating point tensor"."""
    p = torch.zeros(3, 4)
    with pytest.raises(TypeError, match=r"^y must be a floating point tensor.*int64"):
        fused.mixture_nll(p, p, p, torch.zeros(3, dtype=torch.long), 256, None)


def test_float64_targets_bin_as_in_the_reference():
    """Issue 12 item 12: float64 targets with float32 parameters were cast to float32 before
    binning in the fused path (so a value just above a bin edge fell in the bin below), but
    binned in float64 by the reference: -169.305 vs -169.552 at K = 65536."""
    K = 65536
    k = torch.arange(100, 65000, 650, dtype=torch.float64)
    edge = (2 * k + 1) / (K - 1) - 1  # between bins k and k + 1
    y = edge + 1e-11  # bin k + 1 in float64
    assert bool((_bin(y.float(), K) != _bin(y, K)).any())  # float32 rounding crosses edges
    n = y.shape[0]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 3, generator=g)
    means = y.float()[:, None] + 1e-4 * torch.randn(n, 3, generator=g)
    log_scales = torch.full((n, 3), -12.0)
    ref = mixture_nll_reference(logits, means, log_scales, y, K)
    out = fused.mixture_nll(logits, means, log_scales, y, K, None)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _bin(y, K):
    from dmol.logistic import bin_index

    return bin_index(y, K)
