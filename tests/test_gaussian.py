"""dmol.gaussian: the continuous mixture of Gaussians and its exact K-bin discretization."""

from __future__ import annotations

import math
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from torch.distributions import Categorical, MixtureSameFamily, Normal

from dmol.gaussian import (
    DiscretizedGaussianMixture,
    MixtureOfGaussians,
    discretized_gaussian_mixture_nll,
    gaussian_mixture_nll,
    log_ndtr,
    mix_gaussian_loss,
    sample_mix_gaussian,
)
from dmol.logistic import bin_centre
from helpers import chi2_pvalue, enumerated_pmf


def _params(shape, seed, dtype=torch.float64, ls=(-6.0, 1.0)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype) * 2
    means = torch.rand(shape, generator=g, dtype=dtype) * 3 - 1.5
    log_scales = torch.rand(shape, generator=g, dtype=dtype) * (ls[1] - ls[0]) + ls[0]
    return logits, means, log_scales


def _torch_mixture(logits, means, log_scales):
    return MixtureSameFamily(Categorical(logits=logits), Normal(means, log_scales.exp()))


def _scipy_log_mass(logits, means, log_scales, k, K):
    """float64 log-mass of bin k: scipy's log_ndtr on the tail side, log-diff-exp."""
    h = 1.0 / (K - 1)
    c = 2.0 * k / (K - 1) - 1.0
    s = np.exp(log_scales)
    a, b = (c - h - means) / s, (c + h - means) / s
    if k == 0:
        log_mass = special.log_ndtr(b)
    elif k == K - 1:
        log_mass = special.log_ndtr(-a)
    else:  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): take the side where both are below 1/2
        lo, hi = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
        l_hi, l_lo = special.log_ndtr(hi), special.log_ndtr(lo)
        log_mass = l_hi + np.log(-np.expm1(l_lo - l_hi))
    return special.logsumexp(special.log_softmax(logits) + log_mass)


# ----------------------------------------------------------------------------- log_ndtr


def test_log_ndtr_values_and_gradients_in_both_tails():
    x64 = np.concatenate([-np.logspace(7, -3, 60), [0.0], np.logspace(-3, 1.6, 30)])
    # d/dx log Phi(x) = phi(x) / Phi(x) = sqrt(2 / pi) / erfcx(-x / sqrt2) for x < 0 (float64;
    # the plain ratio of exponentials cancels to 0.7% at x = -1e7)
    neg = x64 < 0
    want_grad = np.empty_like(x64)
    want_grad[neg] = np.sqrt(2 / np.pi) / special.erfcx(-x64[neg] / np.sqrt(2))
    want_grad[~neg] = np.exp(-0.5 * x64[~neg] ** 2) / np.sqrt(2 * np.pi) / special.ndtr(x64[~neg])
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        tiny = torch.finfo(dtype).tiny  # below it the right tail is subnormal noise
        x = torch.tensor(x64, dtype=dtype, requires_grad=True)
        y = log_ndtr(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
        x_used = x.detach().double().numpy()  # x64 rounded to dtype
        np.testing.assert_allclose(y.detach().double().numpy(), special.log_ndtr(x_used),
                                   rtol=rtol, atol=tiny)
        np.testing.assert_allclose(grad.double().numpy(), want_grad, rtol=20 * rtol, atol=tiny)


# ----------------------------------------------------------------------------- continuous


def test_continuous_nll_matches_torch_mixture_same_family():
    logits, means, log_scales = _params((5, 7, 4), seed=0)
    y = torch.rand(5, 7, dtype=torch.float64) * 2 - 1
    ref = _torch_mixture(logits, means, log_scales)
    d = MixtureOfGaussians(logits, means, log_scales)
    torch.testing.assert_close(d.log_prob(y), ref.log_prob(y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gaussian_mixture_nll(logits, means, log_scales, y), -ref.log_prob(y), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(d.cdf(y), ref.cdf(y), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d.mean, ref.mean)
    torch.testing.assert_close(d.variance, ref.variance)
    # M = 1 is the plain Gaussian
    single = MixtureOfGaussians(logits[..., :1], means[..., :1], log_scales[..., :1])
    normal = Normal(means[..., 0], log_scales[..., 0].exp())
    torch.testing.assert_close(single.log_prob(y), normal.log_prob(y))
    # a sample axis in front broadcasts against the batch
    torch.testing.assert_close(d.log_prob(y.expand(3, 5, 7)), ref.log_prob(y.expand(3, 5, 7)))


def test_density_above_one_gives_negative_nll():
    """A Gaussian with scale s peaks at 1/(s sqrt(2 pi)): above 1 once s < 0.399."""
    log_s = torch.tensor([-5.0, math.log(0.3), 0.0])
    d = MixtureOfGaussians(torch.zeros(3, 1), torch.zeros(3, 1), log_s[:, None])
    nll = -d.log_prob(torch.zeros(3))
    torch.testing.assert_close(nll, log_s + 0.5 * math.log(2 * math.pi))
    assert nll.tolist()[0] < -4 and nll.tolist()[1] < 0 < nll.tolist()[2]
    # the discretized version of the same Gaussian is a probability: NLL >= 0
    disc = DiscretizedGaussianMixture(torch.zeros(3, 1), torch.zeros(3, 1), log_s[:, None])
    assert (-disc.log_prob(torch.zeros(3)) >= 0).all()


def test_continuous_samples_follow_the_cdf():
    d = MixtureOfGaussians(
        torch.tensor([0.0, 1.0, -0.5]), torch.tensor([-0.4, 0.1, 0.6]),
        torch.tensor([-2.0, -3.0, -1.5]), validate_args=True,
    )
    x = d.sample((20_000,), generator=torch.Generator().manual_seed(0)).double()
    assert x.shape == (20_000,)
    cdf = MixtureOfGaussians(d.logits.double(), d.means.double(), d.log_scales.double()).cdf
    assert stats.kstest(x.numpy(), lambda v: cdf(torch.from_numpy(v)).numpy()).pvalue > 1e-3
    # a Gaussian with the right mean and variance but the wrong shape is rejected
    moment_match = stats.norm(float(d.mean), math.sqrt(float(d.variance)))
    assert stats.kstest(x.numpy(), moment_match.cdf).pvalue < 1e-6


def test_continuous_temperature_and_mode():
    logits = torch.tensor([0.0, 2.0, 1.0])
    means = torch.tensor([-0.5, 0.3, 0.2])
    d = MixtureOfGaussians(logits, means, torch.full((3,), -2.0))
    assert float(d.mode) == pytest.approx(0.3)
    greedy = d.with_temperature(0.0, 0.0).sample((50,))
    torch.testing.assert_close(greedy, torch.full((50,), 0.3))
    hot = d.with_temperature(2.0, 3.0)
    torch.testing.assert_close(hot.logits, logits / 2)
    torch.testing.assert_close(hot.log_scales, torch.full((3,), -2.0 + math.log(3.0)))
    with pytest.raises(ValueError, match="temperatures must be >= 0"):
        d.with_temperature(-1.0)


# ----------------------------------------------------------------------------- discretized


@pytest.mark.parametrize("K", [256, 65536])
def test_discretized_matches_scipy_float64(K):
    """Random mixtures, random bins plus both edges and their neighbours."""
    rng = np.random.default_rng(K)
    n, M = 400, 3
    logits = rng.normal(size=(n, M)) * 2
    means = rng.uniform(-1.5, 1.5, size=(n, M))
    log_scales = rng.uniform(-14, 3, size=(n, M))
    bins = rng.integers(0, K, size=n)
    bins[:8] = [0, 1, 2, K // 2, K - 3, K - 2, K - 1, K - 1]
    want = np.array([_scipy_log_mass(logits[i], means[i], log_scales[i], bins[i], K)
                     for i in range(n)])
    y = bin_centre(torch.from_numpy(bins), K, torch.float64)
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
        d = DiscretizedGaussianMixture(
            *(torch.tensor(v, dtype=dtype) for v in (logits, means, log_scales)), num_classes=K
        )
        got = d.log_prob(y.to(dtype)).double().numpy()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_discretized_deep_tails_and_narrow_bins():
    """The regimes where Phi(b) - Phi(a) cancels: bins 1e7 scales out, bins 1e-6 scales wide."""
    K = 65536
    cases = [  # (mean, log_scale, bin)
        (0.0, -16.0, K - 2), (0.9, -14.0, 3), (-0.2, -10.0, K // 2 + 7),  # far tails
        (0.0, 3.0, K // 2), (0.5, 3.0, 11), (-0.7, 2.0, K - 40),  # bins << scale
        (0.3, -8.0, int(0.3 * 32767.5 + 32767.5)),  # bin on the mean, bins >> scale
    ]
    for mean, ls, k in cases:
        want = _scipy_log_mass(np.zeros(1), np.array([mean]), np.array([ls]), k, K)
        for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 2e-6)):
            d = DiscretizedGaussianMixture(
                torch.zeros(1, dtype=dtype), torch.tensor([mean], dtype=dtype),
                torch.tensor([ls], dtype=dtype), num_classes=K,
            )
            got = float(d.log_prob(bin_centre(torch.tensor(k), K, dtype)))
            assert got == pytest.approx(want, rel=rtol, abs=rtol), (mean, ls, k, dtype)


def test_narrow_bins_approach_density_times_width():
    """For a scale much wider than the bins, mass = density * bin width to O((h/s)^2)."""
    K = 65536
    logits, means, log_scales = _params((6, 3), seed=1, ls=(-2.0, 0.0))
    y = bin_centre(torch.randint(1000, K - 1000, (6,)), K, torch.float64)
    disc = discretized_gaussian_mixture_nll(logits, means, log_scales, y, K)
    cont = gaussian_mixture_nll(logits, means, log_scales, y)
    torch.testing.assert_close(disc, cont - math.log(2.0 / (K - 1)), rtol=0, atol=1e-7)


masses = st.tuples(
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
    st.lists(st.floats(-20, 3), min_size=3, max_size=3),
)


def _total_mass(p, K, dtype):
    d = DiscretizedGaussianMixture(*(torch.tensor(v, dtype=dtype) for v in p), num_classes=K)
    return float(d.log_pmf().double().exp().sum())


@settings(max_examples=25, deadline=None)
@given(p=masses)
def test_masses_sum_to_one_256(p):
    assert abs(_total_mass(p, 256, torch.float64) - 1.0) < 1e-12
    assert abs(_total_mass(p, 256, torch.float32) - 1.0) < 1e-6


@settings(max_examples=4, deadline=None)  # 65536 bins x 3 components per example
@given(p=masses)
def test_masses_sum_to_one_65536(p):
    assert abs(_total_mass(p, 65536, torch.float64) - 1.0) < 1e-10


@pytest.mark.parametrize("log_scale", [-20.0, -9.0, 3.0])
def test_masses_sum_to_one_65536_float32(log_scale):
    p = ([0.0, 1.0, -2.0], [-1.5, 0.1, 1.5], [log_scale, log_scale + 1.0, -4.0])
    assert abs(_total_mass(p, 65536, torch.float32) - 1.0) < 2e-6


def test_sampled_bins_follow_the_pmf_chi_square():
    K = 256
    d = DiscretizedGaussianMixture(
        torch.tensor([0.0, 0.5, -1.0]), torch.tensor([-0.6, 0.1, 0.95]),
        torch.tensor([-1.5, -2.5, -2.0]), num_classes=K,
    )
    n = 200_000
    bins = d.sample((n,), generator=torch.Generator().manual_seed(0), return_bins=True)
    assert bins.dtype == torch.int64 and int(bins.min()) >= 0 and int(bins.max()) < K
    counts = torch.bincount(bins, minlength=K).numpy()
    expected = d.log_pmf().double().exp().numpy() * n
    # pool the sparse bins so every cell expects at least 5 draws
    keep, small = expected >= 5, expected < 5
    obs = np.append(counts[keep], counts[small].sum())
    exp = np.append(expected[keep], expected[small].sum())
    assert exp.min() >= 5 and keep.sum() > 200
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    # the test has power: the same counts against a slightly wider scale are rejected
    wider = DiscretizedGaussianMixture(d.logits, d.means, d.log_scales + 0.05, num_classes=K)
    exp_w = wider.log_pmf().double().exp().numpy() * n
    exp_w = np.append(exp_w[keep], exp_w[small].sum())
    assert stats.chisquare(obs, exp_w * obs.sum() / exp_w.sum()).pvalue < 1e-6
    # values are the centres of the bins the same draws fall in
    x = d.sample((10,), generator=torch.Generator().manual_seed(1))
    k = d.sample((10,), generator=torch.Generator().manual_seed(1), return_bins=True)
    torch.testing.assert_close(x, bin_centre(k, K))


def test_cdf_mode_and_expand():
    K = 64
    logits, means, log_scales = _params((2, 3), seed=2, ls=(-4.0, -1.0))
    d = DiscretizedGaussianMixture(logits, means, log_scales, num_classes=K)
    p = d.log_pmf().exp()  # (2, K)
    centres = bin_centre(torch.arange(K), K, torch.float64)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, dtype=torch.float64))
    cdf = torch.stack([d.cdf(c.expand(2)) for c in centres], -1)
    torch.testing.assert_close(cdf, p.cumsum(-1), rtol=0, atol=1e-12)
    assert (cdf[:, -1] == 1).all()
    best = means.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1).clamp(-1, 1)
    assert ((d.mode - best).abs() <= 1 / (K - 1) + 1e-12).all()
    e = d.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.log_prob(torch.zeros(4, 2)).shape == (4, 2)

@pytest.mark.parametrize("K", [64, 8192])
def test_pmf_mean_entropy_variance_match_an_independent_enumeration(K):
    """Against bin masses built from scipy's normal CDF (not dmol's log_pmf): the pmf, the
    entropy and the variance (both enumerated) to 1e-10, the mean to 1e-12 by enumeration
    (K <= 4096) and, above, the closed form E[clip(X, -1, 1)] (quadrature) to 1e-10, within
    half a bin (1/(K-1)) of the enumerated mean."""
    logits, means, log_scales = _params((2, 3), seed=2, ls=(-4.0, -1.0))
    d = DiscretizedGaussianMixture(logits, means, log_scales, num_classes=K)
    p = torch.from_numpy(enumerated_pmf("gaussian", logits, means, log_scales, K))
    c = torch.from_numpy(-1 + 2 * np.arange(K) / (K - 1))
    torch.testing.assert_close(d.log_pmf().exp(), p, rtol=1e-9, atol=1e-12)
    mean = (p * c).sum(-1)
    torch.testing.assert_close(d.variance, (p * (c - mean[:, None]) ** 2).sum(-1), rtol=1e-10,
                               atol=1e-12)
    plogp = torch.where(p > 0, p * p.log(), 0.0)
    torch.testing.assert_close(d.entropy(), -plogp.sum(-1), rtol=1e-10, atol=1e-12)
    if K <= 4096:
        torch.testing.assert_close(d.mean, mean, rtol=0, atol=1e-12)
        return
    from scipy import integrate

    w = torch.softmax(logits, -1).numpy()

    def clipped_mean(mu, s):
        inside = integrate.quad(lambda x: x * stats.norm.pdf(x, mu, s), -1, 1, epsabs=1e-14,
                                epsrel=1e-12)[0]
        return -stats.norm.cdf(-1, mu, s) + stats.norm.sf(1, mu, s) + inside

    want = torch.tensor([sum(w[i, m] * clipped_mean(float(means[i, m]),
                                                     float(log_scales[i, m].exp()))
                             for m in range(3)) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(d.mean, want, rtol=0, atol=1e-10)
    assert (d.mean - mean).abs().max() <= 1.0 / (K - 1)



def test_discretized_temperature_point_mass():
    d = DiscretizedGaussianMixture(
        torch.tensor([[0.0, 3.0]]), torch.tensor([[-0.5, 0.25]]), torch.full((1, 2), -2.0),
        num_classes=256,
    )
    greedy = d.with_temperature(0.0, 0.0)
    torch.testing.assert_close(greedy.sample((20,)), d.mode.expand(20, 1))
    assert float(greedy.log_prob(d.mode)) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- gradients, dtypes


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    y_hat = torch.randn(1, 9, 5, generator=g, dtype=torch.float64)
    y_hat[:, 6:] -= 1.5  # scales around e^-1.5: every bin regime appears across K
    y_hat.requires_grad_()
    y = torch.rand(1, 5, generator=g, dtype=torch.float64) * 2 - 1
    y[0, 0], y[0, 1] = -1.0, 1.0  # edge bins
    for K in (None, 16, 65536):
        def f(x, K=K):
            return mix_gaussian_loss(x, y, num_classes=K, log_scale_min=None, reduction="sum")

        assert torch.autograd.gradcheck(f, (y_hat,), fast_mode=True), K
    # the bin holding the mean, at a scale near the bin width: the straddling regime
    K = 16
    y = bin_centre(torch.tensor([3, 8, 12]), K, torch.float64)
    params = (
        torch.randn(3, 2, generator=g, dtype=torch.float64),
        y[:, None] + torch.tensor([[0.01, -0.02], [0.0, 0.03], [-0.04, 0.02]], dtype=torch.float64),
        torch.tensor([[-3.0, -2.5], [-2.8, -3.2], [-2.6, -3.0]], dtype=torch.float64),
    )
    params = tuple(p.requires_grad_() for p in params)
    assert torch.autograd.gradcheck(
        lambda *p: discretized_gaussian_mixture_nll(*p, y, K), params, fast_mode=True
    )
    single = torch.randn(1, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 5, generator=g, dtype=torch.float64) * 2 - 1
    assert torch.autograd.gradcheck(
        lambda x: mix_gaussian_loss(x, y, num_classes=256), (single,), fast_mode=True
    )


@pytest.mark.parametrize("K", [None, 256, 65536])
def test_bfloat16_finite_down_to_log_scale_minus_16(K):
    g = torch.Generator().manual_seed(4)
    B, T, M = 2, 64, 10
    y_hat = torch.randn(B, 3 * M, T, generator=g)
    y_hat[:, 2 * M:] = torch.linspace(-16, 2, T)  # log-scales sweep to -16
    y_hat = y_hat.to(torch.bfloat16).requires_grad_()
    y = torch.rand(B, T, generator=g) * 2 - 1
    y[:, :3], y[:, 3:6] = -1.0, 1.0
    loss = mix_gaussian_loss(y_hat, y, num_classes=K, log_scale_min=-16.0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(y_hat.grad.float()).all()
    _matches_float64(y_hat, y, K, loss)


def _matches_float64(y_hat, y, K, loss):
    """The half-precision loss and gradient against float64 on the same rounded parameters:
    the loss is computed in float32, the gradient rounded to the half type (within its eps)."""
    ref_in = y_hat.detach().double().requires_grad_()
    ref = mix_gaussian_loss(ref_in, y.double(), num_classes=K, log_scale_min=-16.0)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item()), (loss.item(), ref.item())
    g, rg = y_hat.grad.double(), ref_in.grad
    bound = torch.finfo(y_hat.dtype).eps * (rg.abs() + 1e-3 * rg.abs().max())
    assert ((g - rg).abs() <= bound).all(), ((g - rg).abs() / bound).max().item()


@pytest.mark.parametrize("K", [None, 256, 65536])
def test_float16_finite_down_to_log_scale_minus_16_near_the_mean(K):
    """float16 holds gradients up to 65504; a Gaussian's d NLL / d mean is z / s, so at s = e^-16
    it fits only for targets within a fraction of a scale of the mean (a trained model)."""
    g = torch.Generator().manual_seed(5)
    B, T = 4, 64
    means = (torch.rand(B, T, generator=g) * 1.6 - 0.8).half().float()  # as the model sees them
    log_scales = torch.linspace(-16, 2, T).expand(B, T)
    z = torch.rand(B, T, generator=g) - 0.5
    y = (means + z * log_scales.exp()).clamp(-1, 1)
    y_hat = torch.stack([means, log_scales], 1).to(torch.float16).requires_grad_()
    loss = mix_gaussian_loss(y_hat, y, num_classes=K, log_scale_min=-16.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(y_hat.grad.float()).all()
    _matches_float64(y_hat, y, K, loss)


def test_float64_end_to_end():
    y_hat = torch.randn(2, 9, 4, dtype=torch.float64)
    assert mix_gaussian_loss(y_hat, torch.zeros(2, 4)).dtype == torch.float64
    d = DiscretizedGaussianMixture.from_params(y_hat, num_classes=256)
    assert d.sample().dtype == torch.float64 and d.mean.dtype == torch.float64
    assert sample_mix_gaussian(y_hat).dtype == torch.float64


# ----------------------------------------------------------------------------- functional


def test_from_params_layouts_and_the_single_gaussian():
    g = torch.Generator().manual_seed(6)
    y_hat = torch.randn(2, 12, 5, generator=g, dtype=torch.float64)
    d = MixtureOfGaussians.from_params(y_hat)
    torch.testing.assert_close(d.logits, y_hat[:, :4].transpose(1, 2))
    torch.testing.assert_close(d.means, y_hat[:, 4:8].transpose(1, 2))
    torch.testing.assert_close(d.log_scales, y_hat[:, 8:].transpose(1, 2))
    btc = MixtureOfGaussians.from_params(y_hat.transpose(1, 2), layout="BTC")
    torch.testing.assert_close(btc.means, d.means)
    two = torch.randn(2, 2, 5, generator=g, dtype=torch.float64)
    y = torch.rand(2, 5, generator=g, dtype=torch.float64) * 2 - 1
    normal = Normal(two[:, 0], two[:, 1].exp())
    got = mix_gaussian_loss(two, y, log_scale_min=None, reduction="none")
    torch.testing.assert_close(got, -normal.log_prob(y))
    single = DiscretizedGaussianMixture.from_params(two, num_classes=256)
    assert single.num_mixtures == 1 and single.batch_shape == (2, 5)


def test_loss_reductions_masks_and_both_modes():
    g = torch.Generator().manual_seed(7)
    logits, means, log_scales = _params((2, 6, 3), seed=7, dtype=torch.float32)
    y_hat = torch.cat([logits, means, log_scales], -1).transpose(1, 2)  # (B, 3M, T)
    y = torch.rand(2, 6, generator=g) * 2 - 1
    cont = mix_gaussian_loss(y_hat, y, log_scale_min=-7.0, reduction="none")
    torch.testing.assert_close(cont, -MixtureOfGaussians(logits, means, log_scales, -7.0)
                               .log_prob(y))
    disc = mix_gaussian_loss(y_hat, y, num_classes=256, reduction="none")
    torch.testing.assert_close(
        disc, -DiscretizedGaussianMixture(logits, means, log_scales, 256, -7.0).log_prob(y)
    )
    assert (disc >= 0).all()
    torch.testing.assert_close(mix_gaussian_loss(y_hat, y), cont.mean())
    torch.testing.assert_close(mix_gaussian_loss(y_hat, y, reduction="sum"), cont.sum())
    btc = mix_gaussian_loss(y_hat.transpose(1, 2), y, layout="BTC", reduction="none")
    torch.testing.assert_close(btc, cont)
    torch.testing.assert_close(mix_gaussian_loss(y_hat, y[..., None]), cont.mean())
    lengths = torch.tensor([6, 2])
    want = torch.cat([disc[0], disc[1, :2]]).mean()
    torch.testing.assert_close(mix_gaussian_loss(y_hat, y, num_classes=256, mask=lengths), want)
    masked = mix_gaussian_loss(y_hat, y, num_classes=256, mask=lengths, reduction="none")
    assert (masked[1, 2:] == 0).all()
    # clamp_targets clips instead of raising
    wild = y.clone()
    wild[0, 0] = 1.5
    clipped = mix_gaussian_loss(y_hat, wild.clamp(-1, 1))
    torch.testing.assert_close(mix_gaussian_loss(y_hat, wild, clamp_targets=True), clipped)


def test_sampler_shapes_seeding_snapping_and_temperature():
    g = torch.Generator().manual_seed(8)
    y_hat = torch.randn(2, 30, 50, generator=g)
    a = sample_mix_gaussian(y_hat, generator=torch.Generator().manual_seed(1))
    b = sample_mix_gaussian(y_hat, generator=torch.Generator().manual_seed(1))
    c = sample_mix_gaussian(y_hat, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 50) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.abs().max()) <= 1.0
    snapped = sample_mix_gaussian(y_hat, num_classes=256, generator=g)
    k = (snapped + 1) * 127.5
    torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-4)
    greedy = sample_mix_gaussian(y_hat, temperature=0, scale_temperature=0)
    want = MixtureOfGaussians.from_params(y_hat).mode.clamp(-1, 1)
    torch.testing.assert_close(greedy, want)
    single = sample_mix_gaussian(y_hat[:, :2], scale_temperature=0)  # 2 channels: the mean
    torch.testing.assert_close(single, y_hat[:, 0].clamp(-1, 1))


def test_sampler_matches_the_distribution():
    """Functional draws at one position follow the discretized pmf (chi-square)."""
    y_hat = torch.tensor([0.0, 1.0, -0.5, 0.3, -2.0, -2.5])[None, :, None]  # M = 2
    n, K = 40_000, 256
    x = sample_mix_gaussian(
        y_hat.expand(n, 6, 1), num_classes=K, generator=torch.Generator().manual_seed(9)
    )[:, 0]
    d = DiscretizedGaussianMixture.from_params(y_hat, num_classes=K, log_scale_min=-7.0)
    p = d.log_pmf()[0, 0].double().exp().numpy()
    counts = np.bincount(torch.round((x + 1) * 127.5).long().numpy(), minlength=K)
    keep = p * n >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(p[keep], p[~keep].sum()) * n
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


# ----------------------------------------------------------------------------- bad input


def test_bad_input_messages():
    y_hat, y = torch.randn(2, 9, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"y_hat has 4 channels: expected a multiple of 3 "
                                         r"\(or exactly 2 for a single component\)"):
        mix_gaussian_loss(torch.randn(2, 4, 4), y)
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\], got min -2"):
        mix_gaussian_loss(y_hat, y - 2)
    with pytest.raises(ValueError, match=r"target shape \(2, 5\) does not match"):
        mix_gaussian_loss(y_hat, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got 1"):
        mix_gaussian_loss(y_hat, y, num_classes=1)
    with pytest.raises(ValueError, match="unknown layout 'CBT'"):
        mix_gaussian_loss(y_hat, y, layout="CBT")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        mix_gaussian_loss(y_hat, y, reduction="avg")
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\)"):
        mix_gaussian_loss(y_hat, y, mask=torch.ones(2, 3))
    bad = y_hat.clone()
    bad[1, 2, 3] = math.inf
    with pytest.raises(ValueError, match=r"y_hat contains 1 NaN/inf value\(s\)"):
        mix_gaussian_loss(bad, y)
    with pytest.raises(TypeError, match="floating point tensor, got dtype torch.int64"):
        mix_gaussian_loss(y_hat.long(), y)
    with pytest.raises(ValueError, match="temperatures must be >= 0"):
        sample_mix_gaussian(y_hat, scale_temperature=-0.5)
    with pytest.raises(ValueError, match=r"y_hat must be 3-D"):
        sample_mix_gaussian(y_hat[0])


def test_distribution_bad_input_messages():
    p = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"share one shape \(\*batch, M\), got \(3, 2\), "
                                         r"\(3, 2\), \(3, 3\)"):
        MixtureOfGaussians(p, p, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        DiscretizedGaussianMixture(p, p, p, num_classes=2.5)
    nan = p.clone()
    nan[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"means contains 1 NaN/inf"):
        DiscretizedGaussianMixture(p, nan, p, validate_args=True)
    with pytest.raises(ValueError, match=r"log_scales contains 1 NaN/inf"):
        MixtureOfGaussians(p, p, nan, validate_args=True)
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\]"):
        DiscretizedGaussianMixture(p, p, p, validate_args=True).log_prob(torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="values contain NaN"):
        MixtureOfGaussians(p, p, p, validate_args=True).log_prob(torch.full((3,), math.nan))
    with pytest.raises(TypeError, match="must be torch tensors"):
        MixtureOfGaussians([0.0], p, p)


# ----------------------------------------------------------------------------- docs


ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "gaussian_mulaw.md"
FIGURES = ["gaussian_density", "gaussian_bin_mass_error", "mulaw_companding", "mulaw_quantization"]


def test_docs_figures_and_numbers_are_current(tmp_path):
    """docs/scripts/gaussian_figures.py draws every figure and writes exactly the committed
    numbers of docs/gaussian_mulaw.md; the doc links every figure and its code runs."""
    import matplotlib.image as mpimg

    doc = tmp_path / "gaussian_mulaw.md"
    # blank every marked block first, so a block the script fails to write cannot survive
    doc.write_text(re.sub(r"(<!-- gaussian_figures:[\w-]+ -->\n).*?(\n<!-- /gaussian_figures -->)",
                          r"\1(stale)\2", DOC.read_text(), flags=re.S))
    script = ROOT / "docs" / "scripts" / "gaussian_figures.py"
    runpy.run_path(str(script))["main"](["--out", str(tmp_path), "--doc", str(doc)])
    assert doc.read_text() == DOC.read_text(), "run python docs/scripts/gaussian_figures.py"
    for name in FIGURES:
        assert f"figures/{name}.png" in DOC.read_text(), name
        assert (ROOT / "docs" / "figures" / f"{name}.png").is_file(), name
        img = mpimg.imread(tmp_path / f"{name}.png")
        assert img.ndim == 3 and img.shape[0] > 150 and img.shape[1] > 300
        rgb = img[..., :3].reshape(-1, 3)
        assert (rgb != rgb[0]).any(axis=1).mean() > 0.02, f"{name}.png is (almost) one colour"
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    exec(compile(code, str(DOC), "exec"), {})


@pytest.mark.parametrize("num_classes", [None, 256])
@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)])
def test_empty_batches(B, T, num_classes):
    """Issue 12 item 11: empty results for "none", 0 for "sum", NaN (as torch) for "mean"."""
    y_hat, y = torch.zeros(B, 30, T), torch.zeros(B, T)
    kw = {"num_classes": num_classes}
    assert mix_gaussian_loss(y_hat, y, reduction="none", **kw).shape == (B, T)
    assert mix_gaussian_loss(y_hat, y, reduction="sum", **kw).item() == 0.0
    assert torch.isnan(mix_gaussian_loss(y_hat, y, **kw))
    assert sample_mix_gaussian(y_hat, **kw).shape == (B, T)


def test_errors_name_the_right_problem(monkeypatch):
    """Issue 12 item 17: integer targets, non-tensor arguments, a misspelled reduction."""
    import dmol.gaussian as G
    from dmol.gaussian import DiscretizedGaussianMixture, MixtureOfGaussians

    with pytest.raises(TypeError, match=r"^y must be a floating point tensor.*int64"):
        mix_gaussian_loss(torch.zeros(2, 30, 5), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="^means must be a torch.Tensor, got float"):
        MixtureOfGaussians(torch.zeros(4, 3), 0.0, torch.zeros(4, 3))
    d = DiscretizedGaussianMixture(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3), 256)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]") as e:
        d.log_prob(torch.full((4,), 2.0))
    assert "clamp_targets" not in str(e.value)

    def forward(*a, **k):
        raise AssertionError("the forward pass ran")

    monkeypatch.setattr(G, "gaussian_mixture_nll", forward)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        mix_gaussian_loss(torch.zeros(2, 30, 5), torch.zeros(2, 5), reduction="avg")


@pytest.mark.parametrize("num_classes", [None, 256])
@pytest.mark.parametrize("channel", [0, 10, 20])
def test_sampler_rejects_nonfinite_parameters(channel, num_classes):
    """Issue 12 item 8's sibling: a NaN parameter gave finite samples instead of an error."""
    y_hat = torch.zeros(2, 30, 5)
    y_hat[0, channel, 1] = float("nan")
    with pytest.raises(ValueError, match="y_hat contains 1 NaN/inf"):
        sample_mix_gaussian(y_hat, num_classes=num_classes)


@pytest.mark.parametrize("tau, st", [(0.5, 1.0), (2.0, 0.5)])
def test_sampler_temperatures_follow_the_tempered_pmf(tau, st):
    """sample_mix_gaussian at (tau, st) draws from the mixture with logits / tau and scales *
    st, built here by hand (chi-square over 64 bins); logits * tau is rejected."""
    K, N = 64, 40_000
    logits = torch.tensor([0.0, 1.0, 2.0, -0.5])
    means = torch.tensor([-0.6, -0.1, 0.3, 0.7])
    log_s = torch.tensor([-2.5, -3.0, -2.8, -3.2])
    y_hat = torch.cat([logits, means, log_s])[None, :, None].expand(N, 12, 1)
    x = sample_mix_gaussian(y_hat, temperature=tau, scale_temperature=st, num_classes=K,
                            generator=torch.Generator().manual_seed(0))[:, 0]
    k = torch.round((x.double() + 1) * (K - 1) / 2).long()

    def pmf(lg):
        ref = DiscretizedGaussianMixture(lg, means, log_s + math.log(st), num_classes=K)
        return ref.log_pmf().double().exp()

    assert chi2_pvalue(k, pmf(logits / tau)) > 1e-3
    assert chi2_pvalue(k, pmf(logits * tau)) < 1e-9
