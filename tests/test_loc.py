"""``loc=``: one shift added to every component mean (LP-WaveNet's linear prediction).

What must hold, for the fused MoL loss and sampler, the Gaussian loss and sampler and the
distributions' ``from_params``:

* the same numbers as shifting the means by hand. The shift is added in the compute dtype
  before anything else, which is exactly what shifting by hand does, so values, parameter
  gradients and draws are compared *bit for bit* (``torch.equal``). The one exception is the
  gradient w.r.t. ``loc``: the kernel sums the M means' gradients and then applies the
  incoming gradient (``(sum_j g_j) * w``) where autograd of the by-hand shift applies it first
  (``sum_j (g_j * w)``), so the two differ by rounding; they are held to the floating-point
  error bound of an M-term sum (see `assert_sum_of_means_grad`);
* the exact value: against the float64 reference ``mixture_nll_reference`` evaluated at the
  shifted means (hypothesis, including the log-scale clamp at -16, edge bins, means inside the
  target's bin and shifts that push the means out of [-1, 1]);
* ``torch.autograd.gradcheck`` of the analytic loc gradient;
* bad ``loc`` fails at the entry point with a message naming ``loc``.

The fused kernels serve every (dtype, M); these tests keep to float32 with M = 3 and 10 and
float64 with M = 3, as test_fused.py does.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dmol import _validate as V
from dmol import fused
from dmol.gaussian import DiscretizedGaussianMixture, mix_gaussian_loss, sample_mix_gaussian
from dmol.logistic import (
    DiscretizedLogisticMixture,
    bin_centre,
    discretized_mix_logistic_loss,
    mixture_nll_reference,
    sample_discretized_mix_logistic,
)

M_FOR = {torch.float32: 10, torch.float64: 3}


def _case(dtype, M, B=2, T=9, seed=0):
    """A (B, 3M, T) network output with varied log-scales, targets (B, T), a shift (B, T)."""
    g = torch.Generator().manual_seed(seed)
    y_hat = torch.randn(B, 3 * M, T, generator=g, dtype=dtype)
    y_hat[:, 2 * M:] = torch.rand(B, M, T, generator=g, dtype=dtype) * 6 - 8  # e^-8 .. e^-2
    y = torch.rand(B, T, generator=g, dtype=dtype) * 2 - 1
    y[0, 0], y[-1, -1] = -1.0, 1.0  # both edge bins
    loc = torch.randn(B, T, generator=g, dtype=dtype) * 0.8
    return y_hat, y, loc


def _shift_by_hand(y_hat, loc, layout="BCT"):
    """y_hat with ``loc`` added to its M means (channels M .. 2M - 1), autograd-connected."""
    c = 1 if layout == "BCT" else 2
    lg, mu, ls = y_hat.chunk(3, dim=c)
    return torch.cat([lg, mu + loc.unsqueeze(c), ls], dim=c)


def _means_grad(g, layout="BCT"):
    """The (B, T, M) means' block of a gradient laid out like y_hat."""
    mu = g.chunk(3, dim=1 if layout == "BCT" else 2)[1]
    return mu.transpose(1, 2) if layout == "BCT" else mu


def assert_sum_of_means_grad(g_loc, g_means, *, factor=4):
    """``g_loc`` is the sum over components of ``g_means`` (*batch, M), to the rounding of an
    M-term sum followed by one product: |error| <= factor * M * eps * sum_j |g_j| (the
    textbook bound is (M + 1) eps; ``factor`` leaves room for the different association)."""
    M = g_means.shape[-1]
    want = g_means.double().sum(-1)
    eps = torch.finfo(g_loc.dtype).eps
    bound = factor * M * eps * g_means.double().abs().sum(-1) + torch.finfo(g_loc.dtype).tiny
    excess = (g_loc.double() - want).abs() - bound
    assert bool((excess <= 0).all()), f"loc gradient off by {excess.max().item():.3g} over bound"


def _seq_sum(g_means):
    """sum_j g_j in the order the kernel adds them: ((g_0 + g_1) + g_2) + ..."""
    total = g_means[..., 0]
    for j in range(1, g_means.shape[-1]):
        total = total + g_means[..., j]
    return total


# -- the fused MoL loss: the same numbers as the means shifted by hand -------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["BCT", "BTC"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("masked", ["none", "mask", "lengths"])
def test_loss_with_loc_equals_means_shifted_by_hand(dtype, layout, reduction, masked):
    M = M_FOR[dtype]
    y_hat, y, loc = _case(dtype, M, B=3, T=11)
    if layout == "BTC":
        y_hat = y_hat.transpose(1, 2).contiguous()
    mask = {"none": None, "mask": (torch.rand(3, 11, generator=torch.Generator().manual_seed(1))
                                   > 0.3).float(),
            "lengths": torch.tensor([11, 4, 0])}[masked]
    kw = dict(num_classes=256, log_scale_min=-7.0, layout=layout, reduction=reduction,
              mask=mask)
    w = 1.0  # upstream gradient: non-uniform for "none"
    if reduction == "none":
        w = torch.rand(3, 11, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.5

    a, la = y_hat.clone().requires_grad_(), loc.clone().requires_grad_()
    got = discretized_mix_logistic_loss(a, y, loc=la, **kw)
    g_a, g_la = torch.autograd.grad((got * w).sum(), [a, la])

    b, lb = y_hat.clone().requires_grad_(), loc.clone().requires_grad_()
    want = discretized_mix_logistic_loss(_shift_by_hand(b, lb, layout), y, **kw)
    g_b, g_lb = torch.autograd.grad((want * w).sum(), [b, lb])

    assert got.dtype == dtype and g_la.dtype == dtype and g_la.shape == loc.shape
    assert torch.equal(got, want)  # bit for bit: the shift is the same float addition
    assert torch.equal(g_a, g_b)
    g_mu = _means_grad(g_a, layout)
    assert_sum_of_means_grad(g_la, g_mu)
    assert_sum_of_means_grad(g_lb, g_mu)
    if reduction != "none" and masked == "none":
        # the incoming gradient equals the pre-scale (1 for sum, 1/N for mean): no product
        # after the sum, so the loc gradient *is* the kernel-order sum of the means'
        # gradients, bit for bit
        assert torch.equal(g_la, _seq_sum(g_mu))
    # and the shift matters (a loss that ignored loc would pass the checks above only if
    # the by-hand path ignored it too)
    plain = discretized_mix_logistic_loss(y_hat, y, **kw)
    assert not torch.equal(plain, got.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_entry_points_with_loc(dtype):
    """mixture_nll (three tensors) and mixture_nll_packed: loc == means + loc by hand."""
    M = M_FOR[dtype]
    y_hat, y, loc = _case(dtype, M, B=2, T=13, seed=4)
    params = list(y_hat.transpose(1, 2).chunk(3, -1))  # (B, T, M) views
    w = torch.rand(2, 13, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.5

    leaves = [p.detach().clone().requires_grad_() for p in params]
    lloc = loc.clone().requires_grad_()
    got = fused.mixture_nll(*leaves, y, 256, -7.0, loc=lloc)
    grads = torch.autograd.grad((got * w).sum(), [*leaves, lloc])
    ref_leaves = [p.detach().clone().requires_grad_() for p in params]
    want = fused.mixture_nll(ref_leaves[0], ref_leaves[1] + loc[..., None], ref_leaves[2], y, 256,
                             -7.0)
    ref_grads = torch.autograd.grad((want * w).sum(), ref_leaves)
    assert torch.equal(got, want)
    for g, r in zip(grads[:3], ref_grads, strict=True):
        assert torch.equal(g, r)
    assert_sum_of_means_grad(grads[3], grads[1])

    packed = y_hat.transpose(1, 2).detach().clone().requires_grad_()
    lp = loc.clone().requires_grad_()
    got_p = fused.mixture_nll_packed(packed, y, 256, -7.0, loc=lp)
    g_p, g_lp = torch.autograd.grad((got_p * w).sum(), [packed, lp])
    assert torch.equal(got_p, want)
    assert torch.equal(g_p, torch.cat(ref_grads, -1))
    assert torch.equal(g_lp, grads[3])  # same kernel, same order: the same loc gradient


def test_loc_gradient_plumbing():
    """loc alone requiring grad; recompute=True; a second backward through a retained graph."""
    y_hat, y, loc = _case(torch.float32, 3, B=2, T=7, seed=5)
    params = list(y_hat.transpose(1, 2).chunk(3, -1))

    def grads(*, leaves_grad, recompute=False):
        leaves = [p.detach().clone().requires_grad_(leaves_grad) for p in params]
        lloc = loc.clone().requires_grad_()
        nll = fused.mixture_nll(*leaves, y, 256, -7.0, loc=lloc, recompute=recompute)
        return torch.autograd.grad(nll.sum(), lloc)[0]

    both = grads(leaves_grad=True)
    assert torch.equal(grads(leaves_grad=False), both)
    assert torch.equal(grads(leaves_grad=True, recompute=True), both)
    lloc = loc.clone().requires_grad_()
    loss = fused.mixture_nll(*params, y, 256, -7.0, loc=lloc).sum()
    loss.backward(retain_graph=True)
    first = lloc.grad.clone()
    loss.backward()  # the gradient buffer was handed out once: this one is recomputed
    assert torch.equal(first, both)
    torch.testing.assert_close(lloc.grad, 2 * first, rtol=0, atol=0)


def test_loc_batch_shapes_and_mixed_dtypes():
    """Any batch shape (loc has it); a float64 loc on float32 parameters computes in float64."""
    g = torch.Generator().manual_seed(6)
    for shape in [(5,), (), (2, 2, 3)]:
        p = [torch.randn(*shape, 3, generator=g) for _ in range(3)]
        y = torch.rand(shape, generator=g) * 2 - 1
        loc = torch.randn(shape, generator=g)
        got, grads = _fused_with_loc(p, loc, y, 256, -7.0, "mixture_nll", torch.ones(shape))
        assert got.shape == shape
        assert torch.equal(got, fused.mixture_nll(p[0], p[1] + loc[..., None], p[2], y, 256,
                                                  -7.0))
        # and the exact value, from the float64 reference (no fused code) at the shifted means
        ref, ref_grads = _reference_at_shifted_means(p, loc, y, 256, -7.0, torch.ones(shape))
        _assert_matches_reference(got, grads, ref, ref_grads, torch.float32)
    p = [torch.randn(2, 6, 3, generator=g).requires_grad_() for _ in range(3)]
    y = torch.rand(2, 6, generator=g) * 2 - 1
    loc = torch.randn(2, 6, generator=g, dtype=torch.float64).requires_grad_()
    got = fused.mixture_nll(*p, y, 256, -7.0, loc=loc)
    assert got.dtype == torch.float64
    got.sum().backward()
    assert p[1].grad.dtype == torch.float32 and loc.grad.dtype == torch.float64
    ref = [t.detach().double().requires_grad_() for t in p]
    want = fused.mixture_nll(ref[0], ref[1] + loc.detach()[..., None], ref[2], y, 256, -7.0)
    want.sum().backward()
    assert torch.equal(got.detach(), want.detach())
    assert torch.equal(p[1].grad, ref[1].grad.float())
    assert_sum_of_means_grad(loc.grad, ref[1].grad)


# -- against the exact float64 reference --------------------------------------------------------


@st.composite
def shifted_cases(draw, dtype):
    """Parameters, a shift and targets. The shifted means ``means + loc`` (formed in ``dtype``,
    as the kernel forms them) are, by choice: spread around, inside the target's bin (within
    one bin width of its centre), or pushed beyond [-1, 1] by a large shift."""
    M = M_FOR[dtype]
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 24))
    K = draw(st.sampled_from([2, 3, 256, 1024, 65536]))
    lsm = draw(st.sampled_from([None, -7.0, -16.0]))
    regime = draw(st.sampled_from(["spread", "in_bin", "outside"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(B, T, M, generator=g, dtype=dtype) * draw(st.sampled_from([0.1, 3.0]))
    # log-scales in [-18, 1]: below -16 the -16 clamp binds
    log_scales = torch.rand(B, T, M, generator=g, dtype=dtype) * 19 - 18
    k = torch.randint(0, K, (B, T), generator=g)
    k[..., 0], k[..., -1] = 0, K - 1  # both edge bins in every case: y = -1 and +1 exactly
    y = bin_centre(k, K, dtype)
    loc_scale = {"spread": 0.5, "in_bin": 1.0, "outside": 3.0}[regime]
    loc = torch.randn(B, T, generator=g, dtype=dtype) * loc_scale
    h = 1.0 / (K - 1)
    if regime == "in_bin":  # shifted mean within a bin width of the target's centre
        offset = (torch.rand(B, T, M, generator=g, dtype=torch.float64) * 2 - 1) * h
        means = (y.double()[..., None] + offset - loc.double()[..., None]).to(dtype)
    elif regime == "outside":  # |means + loc| mostly > 1
        means = torch.randn(B, T, M, generator=g, dtype=dtype) * 0.3
        loc = loc + torch.sign(loc) * 1.5
    else:
        means = torch.randn(B, T, M, generator=g, dtype=dtype) * 0.7
    if draw(st.booleans()):  # off-grid targets are scored at their bin's centre
        y = (y + (torch.rand(B, T, generator=g, dtype=dtype) - 0.5) / (K - 1)).clamp(-1, 1)
    w = torch.rand(B, T, generator=g, dtype=dtype) + 0.5  # a non-uniform upstream gradient
    entry = draw(st.sampled_from(["mixture_nll", "packed"]))
    return [logits, means, log_scales], loc, y, w, K, lsm, entry


#: Acceptance bounds against the float64 reference, as (NLL bound, gradient bound, gradient
#: floor): |NLL - ref| <= b (|ref| + 1); each gradient within b of its largest entry plus the
#: floor. The floor is for cases whose whole gradient is ~0 (every component far beyond an edge:
#: NLL ~ 0, softmax(logits) - r ~ 1e-16 formed from O(1) terms, so its *absolute* rounding
#: error is what counts): ~10 float32 ulps of 1, or 50 float64 ulps.
#: float32: as test_fused.py (worst measured over 1200 examples: NLL 9.5e-7, gradients 9.7e-6).
#: float64: worst measured over 1200 examples NLL 3.6e-13, gradients 1.2e-11. Both are
#: rounding amplified by the conditioning (one ulp of the distance from a mean near +-1 to a
#: bin edge is ~2e-16 / s standard units: 2e-9 at s = e^-16), so the bounds leave ~10-30x:
#: 1e-11 and 1e-10, still ~1e3 below what a float32 step anywhere in the path would give.
BOUNDS = {torch.float32: (1e-5, 1e-4, 1e-6), torch.float64: (1e-11, 1e-10, 1e-14)}


def _fused_with_loc(params, loc, y, K, lsm, entry, w):
    leaves = [p.detach().clone().requires_grad_() for p in params]
    lloc = loc.detach().clone().requires_grad_()
    if entry == "packed":
        nll = fused.mixture_nll_packed(torch.cat(leaves, -1), y, K, lsm, loc=lloc)
    else:
        nll = fused.mixture_nll(*leaves, y, K, lsm, loc=lloc)
    return nll.detach(), torch.autograd.grad((nll * w).sum(), [*leaves, lloc])


def _reference_at_shifted_means(params, loc, y, K, lsm, w):
    """The exact NLL and gradients at the shifted means as the kernel rounds them (means + loc
    in the compute dtype), in float64: d/dloc = sum_j d/dmu_j (chain rule, exactly)."""
    shifted = V.shift_means(params[1], loc)  # the compute dtype's rounding of means + loc
    leaves = [params[0].double(), shifted.double(), params[2].double()]
    leaves = [t.detach().requires_grad_() for t in leaves]
    nll = mixture_nll_reference(*leaves, y.double(), K, lsm)
    grads = torch.autograd.grad((nll * w.double()).sum(), leaves)
    return nll.detach(), [*grads, grads[1].sum(-1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_loc_matches_the_exact_reference(dtype, data):
    params, loc, y, w, K, lsm, entry = data.draw(shifted_cases(dtype))
    nll, grads = _fused_with_loc(params, loc, y, K, lsm, entry, w)
    ref, ref_grads = _reference_at_shifted_means(params, loc, y, K, lsm, w)
    _assert_matches_reference(nll, grads, ref, ref_grads, dtype)


def _assert_matches_reference(nll, grads, ref, ref_grads, dtype):
    bound, grad_bound, floor = BOUNDS[dtype]
    assert nll.dtype == dtype and bool(torch.isfinite(nll).all())
    excess = (nll.double() - ref).abs() - bound * (ref.abs() + 1)
    assert bool((excess <= 0).all()), f"NLL off by {excess.max().item():.3g} over the bound"
    for name, g, r in zip(["logits", "means", "log_scales", "loc"], grads, ref_grads,
                          strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        err = float((g.double() - r).abs().max())
        allowed = grad_bound * float(r.abs().max()) + floor
        assert err <= allowed, f"{name} gradient off by {err:.3g} (allowed {allowed:.3g})"


def test_loc_reference_regimes_by_hand():
    """The regimes the property test draws, pinned down once at K = 65536 with the clamp:
    a mean inside the target's bin with a clamped scale e^-16, targets -1 and +1, and shifts
    that put the mean far outside [-1, 1] (the edge bins then hold almost all the mass)."""
    K, lsm, dtype = 65536, -16.0, torch.float64
    y = bin_centre(torch.tensor([0, 1, 30000, 65535, 65535, 0]), K, dtype)
    h = 1.0 / (K - 1)
    loc = torch.tensor([0.25, -0.5, 1e-3, 2.5, -2.0, -3.0], dtype=dtype)
    want_mu = torch.stack([y + 0.3 * h, y - 0.9 * h, y + 40 * h], -1)
    want_mu[3:, 2] = torch.tensor([1.0 + 0.5, -1.0 - 0.5, -1.0 - 2.0], dtype=dtype)
    means = want_mu - loc[:, None]
    log_scales = torch.tensor([-20.0, -12.0, -3.0], dtype=dtype).expand(6, 3).contiguous()
    logits = torch.tensor([0.0, -1.0, 2.0], dtype=dtype).expand(6, 3).contiguous()
    w = torch.ones(6, dtype=dtype)
    nll, grads = _fused_with_loc([logits, means, log_scales], loc, y, K, lsm, "mixture_nll", w)
    ref, ref_grads = _reference_at_shifted_means([logits, means, log_scales], loc, y, K, lsm, w)
    _assert_matches_reference(nll, grads, ref, ref_grads, dtype)
    assert bool((grads[2][:, 0] == 0).all())  # the clamped log-scale gets no gradient
    # the mean (shifted to 1.5) of the upper-edge target makes it likely: a small NLL there
    assert float(nll[3]) < float(nll[2])


def test_non_contiguous_loc_targets_and_parameters():
    """loc, y and the parameters as transposed views, through both entry points: the exact
    value, from the float64 reference on contiguous copies."""
    g = torch.Generator().manual_seed(14)
    B, T, M = 2, 7, 3
    block = torch.randn(3, M, T, B, generator=g)
    block[2] = block[2] * 2 - 4
    p = [t.permute(2, 1, 0) for t in block.unbind(0)]  # (B, T, M) views
    y = (torch.rand(T, B, generator=g) * 2 - 1).t()
    loc = (torch.randn(T, B, generator=g) * 0.5).t()
    w = torch.rand(B, T, generator=g) + 0.5
    assert not any(t.is_contiguous() for t in [*p, y, loc])
    ref, ref_grads = _reference_at_shifted_means([t.contiguous() for t in p], loc.contiguous(),
                                                 y.contiguous(), 256, -7.0, w)
    for entry in ["mixture_nll", "packed"]:
        got, grads = _fused_with_loc(p, loc, y, 256, -7.0, entry, w)
        _assert_matches_reference(got, grads, ref, ref_grads, torch.float32)

def test_gradcheck_loc():
    """Finite differences agree with the analytic gradients w.r.t. loc (and the parameters),
    float64, through mixture_nll and the public loss (packed path), K = 256 and 65536."""
    g = torch.Generator().manual_seed(7)
    B, T, M = 2, 4, 3
    logits = torch.randn(B, T, M, generator=g, dtype=torch.float64)
    means = torch.randn(B, T, M, generator=g, dtype=torch.float64) * 0.3
    log_scales = torch.rand(B, T, M, generator=g, dtype=torch.float64) * 2 - 4  # clear of -7
    y = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1
    y[0, 0], y[1, -1] = -1.0, 1.0
    loc = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.5
    for K in (256, 65536):
        inputs = tuple(t.clone().requires_grad_() for t in (logits, means, log_scales, loc))
        assert torch.autograd.gradcheck(
            lambda lg, mu, ls, lc, K=K: fused.mixture_nll(lg, mu, ls, y, K, -7.0, loc=lc),
            inputs)
        y_hat = torch.cat([logits, means, log_scales], -1).transpose(1, 2).contiguous()
        assert torch.autograd.gradcheck(
            lambda yh, lc, K=K: discretized_mix_logistic_loss(yh, y, loc=lc, num_classes=K,
                                                               reduction="none"),
            (y_hat.requires_grad_(), loc.clone().requires_grad_()))
    # only loc requiring grad
    assert torch.autograd.gradcheck(
        lambda lc: fused.mixture_nll(logits, means, log_scales, y, 256, -7.0, loc=lc),
        (loc.clone().requires_grad_(),))
    gy_hat = torch.cat([logits, means, log_scales], -1).transpose(1, 2).contiguous()
    assert torch.autograd.gradcheck(
        lambda yh, lc: mix_gaussian_loss(yh, y, loc=lc, num_classes=256, reduction="none"),
        (gy_hat.requires_grad_(), loc.clone().requires_grad_()))


# -- sampling ------------------------------------------------------------------------------------


def test_sampler_with_loc_equals_shifted_means_draw_for_draw():
    y_hat, _, loc = _case(torch.float32, 3, B=3, T=40, seed=8)
    shifted = _shift_by_hand(y_hat, loc)
    for kw in [{}, dict(temperature=0.7, scale_temperature=0.5), dict(temperature=0),
               dict(snap=True, num_classes=256)]:
        a = sample_discretized_mix_logistic(y_hat, loc=loc, **kw,
                                            generator=torch.Generator().manual_seed(3))
        b = sample_discretized_mix_logistic(shifted, **kw,
                                            generator=torch.Generator().manual_seed(3))
        c = sample_discretized_mix_logistic(y_hat, **kw,
                                            generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b), kw
        assert not torch.equal(a, c)  # the shift moved the draws
        assert float(a.abs().max()) <= 1.0
    params = list(y_hat.transpose(1, 2).chunk(3, -1))
    a = fused.sample_mixture(*params, loc=loc, generator=torch.Generator().manual_seed(4))
    b = fused.sample_mixture(params[0], params[1] + loc[..., None], params[2],
                             generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    # BTC layout
    a = sample_discretized_mix_logistic(y_hat.transpose(1, 2), layout="BTC", loc=loc,
                                        generator=torch.Generator().manual_seed(5))
    b = sample_discretized_mix_logistic(shifted, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def _chi_square_pvalue(x, pmf, K):
    n = x.numel()
    observed = np.bincount(torch.round((x.double() + 1) * (K - 1) / 2).long().numpy(),
                           minlength=K)
    expected = pmf * n
    keep = expected >= 5  # pool sparse cells so the chi-square approximation holds
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue, observed


def test_sampler_with_loc_follows_the_shifted_pmf_chi_square():
    """Half the draws shifted by -0.4 (the first component lands on -1: half its mass in the
    lower edge bin), half by +0.5 (the third is pushed to 1.45: its mass in the upper edge
    bin). Each half follows the pmf of its shifted means and rejects the unshifted one."""
    K, n = 256, 100_000
    logits = torch.tensor([0.3, -0.5, 1.0])
    means = torch.tensor([-0.6, 0.1, 0.95])
    log_scales = torch.tensor([-2.5, -3.5, -3.0])
    shifts = (-0.4, 0.5)
    loc = torch.tensor(shifts).repeat_interleave(n)  # (2n,)
    expand = [t.expand(2 * n, 3) for t in (logits, means, log_scales)]
    x = fused.sample_mixture(*expand, loc=loc, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2 * n,) and float(x.abs().max()) <= 1
    centres = bin_centre(torch.arange(K), K, torch.float64)

    def pmf(shift):
        p = [t.double().expand(K, 3) for t in (logits, means + shift, log_scales)]
        return torch.exp(-mixture_nll_reference(*p, centres, K)).numpy()

    for half, shift in enumerate(shifts):
        xs = x[half * n:(half + 1) * n]
        pvalue, observed = _chi_square_pvalue(xs, pmf(shift), K)
        assert pvalue > 1e-3, (shift, pvalue)
        assert _chi_square_pvalue(xs, pmf(0.0), K)[0] < 1e-6  # the test has power
        edge = observed[0] if shift < 0 else observed[-1]
        assert edge > 0.05 * n  # the shifted component's tail sits in the edge bin


# -- Gaussian ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, 256])
@pytest.mark.parametrize("channels", [9, 2])  # M = 3, and the single Gaussian [mean, log_scale]
@pytest.mark.parametrize("layout", ["BCT", "BTC"])
def test_gaussian_loss_with_loc_equals_means_shifted_by_hand(num_classes, channels, layout):
    g = torch.Generator().manual_seed(9)
    B, T = 2, 10
    y_hat = torch.randn(B, channels, T, generator=g, dtype=torch.float64)
    y_hat[:, -(channels // 3 or 1):] -= 3  # log-scales
    y = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1
    loc = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.tensor([T, 3])
    m_lo = channels // 3 if channels > 2 else 0  # where the means start
    m_hi = 2 * m_lo if channels > 2 else 1

    def by_hand(yh, lc):
        parts = [yh[:, :m_lo], yh[:, m_lo:m_hi] + lc[:, None], yh[:, m_hi:]]
        return torch.cat(parts, 1)

    if layout == "BTC":
        y_hat = y_hat.transpose(1, 2).contiguous()
    kw = dict(num_classes=num_classes, layout=layout, reduction="none", mask=mask)
    w = torch.rand(B, T, generator=g, dtype=torch.float64) + 0.5
    a, la = y_hat.clone().requires_grad_(), loc.clone().requires_grad_()
    got = mix_gaussian_loss(a, y, loc=la, **kw)
    g_a, g_la = torch.autograd.grad((got * w).sum(), [a, la])
    b, lb = y_hat.clone().requires_grad_(), loc.clone().requires_grad_()
    bh = b if layout == "BCT" else b.transpose(1, 2)
    shifted = by_hand(bh, lb)
    want = mix_gaussian_loss(shifted if layout == "BCT" else shifted.transpose(1, 2), y, **kw)
    g_b, g_lb = torch.autograd.grad((want * w).sum(), [b, lb])
    assert torch.equal(got, want) and torch.equal(g_a, g_b)
    assert torch.equal(g_la, g_lb)  # the same autograd graph as the shift by hand
    assert bool((g_la[1, 3:] == 0).all()) and bool((g_la[0] != 0).all())  # masked: no gradient
    assert not torch.equal(got, mix_gaussian_loss(y_hat, y, **kw))


def test_gaussian_sampler_with_loc_equals_shifted_means_draw_for_draw():
    g = torch.Generator().manual_seed(10)
    y_hat = torch.randn(2, 9, 30, generator=g)
    y_hat[:, 6:] -= 3
    loc = torch.randn(2, 30, generator=g)
    shifted = torch.cat([y_hat[:, :3], y_hat[:, 3:6] + loc[:, None], y_hat[:, 6:]], 1)
    for kw in [{}, dict(temperature=0.5, scale_temperature=0.7), dict(num_classes=256)]:
        a = sample_mix_gaussian(y_hat, loc=loc, **kw, generator=torch.Generator().manual_seed(1))
        b = sample_mix_gaussian(shifted, **kw, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b), kw
        assert not torch.equal(a, sample_mix_gaussian(y_hat, **kw,
                                                      generator=torch.Generator().manual_seed(1)))
    single = y_hat[:, :2].clone()  # [mean, log_scale]
    a = sample_mix_gaussian(single, loc=loc, scale_temperature=0)
    torch.testing.assert_close(a, (single[:, 0] + loc).clamp(-1, 1), rtol=0, atol=0)


# -- the distributions ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["BCT", "BTC"])
def test_from_params_loc_log_prob_equals_the_functional_loss(layout):
    y_hat, y, loc = _case(torch.float32, 3, B=2, T=12, seed=11)
    y_hat[:, 6:] -= 5  # some log-scales below the clamp
    if layout == "BTC":
        y_hat = y_hat.transpose(1, 2).contiguous()
    K, lsm = 256, -7.0
    d = DiscretizedLogisticMixture.from_params(y_hat, layout, K, lsm, loc=loc)
    assert d.batch_shape == (2, 12)
    nll = discretized_mix_logistic_loss(y_hat, y, num_classes=K, log_scale_min=lsm,
                                        layout=layout, reduction="none", loc=loc)
    assert torch.equal(d.log_prob(y), -nll)
    btc = y_hat.transpose(1, 2) if layout == "BCT" else y_hat
    torch.testing.assert_close(d.means, btc[..., 3:6] + loc[..., None], rtol=0, atol=0)
    # the most probable component's shifted mean, on the grid
    mode = d.mode
    plain = DiscretizedLogisticMixture.from_params(y_hat, layout, K, lsm)
    assert not torch.equal(mode, plain.mode)

    g = torch.Generator().manual_seed(12)
    gy_hat = torch.randn(2, 9, 12, generator=g, dtype=torch.float64)
    gy_hat[:, 6:] -= 3
    gloc = torch.randn(2, 12, generator=g, dtype=torch.float64)
    if layout == "BTC":
        gy_hat = gy_hat.transpose(1, 2).contiguous()
    dg = DiscretizedGaussianMixture.from_params(gy_hat, layout, K, lsm, loc=gloc)
    gnll = mix_gaussian_loss(gy_hat, y.double(), num_classes=K, log_scale_min=lsm,
                             layout=layout, reduction="none", loc=gloc)
    assert torch.equal(dg.log_prob(y.double()), -gnll)


# -- bad loc -------------------------------------------------------------------------------------

_B, _T, _M = 2, 5, 3
_Y_HAT = torch.randn(_B, 3 * _M, _T, generator=torch.Generator().manual_seed(13))
_Y = torch.zeros(_B, _T)
_P = list(_Y_HAT.transpose(1, 2).chunk(3, -1))

ENTRY_POINTS = {
    "loss": lambda lc: discretized_mix_logistic_loss(_Y_HAT, _Y, num_classes=256, loc=lc),
    "sample": lambda lc: sample_discretized_mix_logistic(_Y_HAT, num_classes=256, loc=lc),
    "fused.mixture_nll": lambda lc: fused.mixture_nll(*_P, _Y, 256, -7.0, loc=lc),
    "fused.mixture_nll_packed": lambda lc: fused.mixture_nll_packed(
        _Y_HAT.transpose(1, 2), _Y, 256, -7.0, loc=lc),
    "fused.sample_mixture": lambda lc: fused.sample_mixture(*_P, loc=lc),
    "mix_gaussian_loss": lambda lc: mix_gaussian_loss(_Y_HAT, _Y, loc=lc),
    "sample_mix_gaussian": lambda lc: sample_mix_gaussian(_Y_HAT, loc=lc),
    "DiscretizedLogisticMixture": lambda lc: DiscretizedLogisticMixture.from_params(
        _Y_HAT, num_classes=256, loc=lc),
    "DiscretizedGaussianMixture": lambda lc: DiscretizedGaussianMixture.from_params(
        _Y_HAT, num_classes=256, loc=lc),
}

BAD_LOCS = {
    # (value, the exception, a pattern the message must match)
    "wrong shape": (torch.zeros(_B, _T + 1), ValueError, r"loc .*shape.*\(2, 6\)"),
    "transposed": (torch.zeros(_T, _B), ValueError, r"loc .*shape"),
    "NaN": (torch.zeros(_B, _T).index_fill(1, torch.tensor([2]), float("nan")), ValueError,
            r"loc contains 2 NaN/inf"),
    "inf": (torch.full((_B, _T), float("inf")), ValueError, r"loc contains 10 NaN/inf"),
    "integer": (torch.zeros(_B, _T, dtype=torch.long), TypeError,
                r"loc must be floating point.*int64"),
    "not a tensor": ([[0.0] * _T] * _B, (TypeError, ValueError), r"loc must"),
}


@pytest.mark.parametrize("bad", list(BAD_LOCS))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_bad_loc_names_loc(entry, bad):
    value, exc, pattern = BAD_LOCS[bad]
    with pytest.raises(exc, match=pattern):
        ENTRY_POINTS[entry](value)


def test_good_loc_is_accepted_everywhere():
    """The counterpart of the bad-loc test: every entry point takes a valid (B, T) loc."""
    for name, call in ENTRY_POINTS.items():
        assert call(torch.zeros(_B, _T)) is not None, name
