"""The exact discretized logistic mixture: reference values, normalization, sampling, errors."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import dmol
from dmol.logistic import (
    DiscretizedLogisticMixture,
    bin_centre,
    discretized_mix_logistic_loss,
    mixture_nll_reference,
    sample_discretized_mix_logistic,
)
from helpers import chi2_pvalue, enumerated_pmf

DATA = Path(__file__).parent / "data"


def _exact(K):
    d = np.load(DATA / "exact_logp_vectors.npz")
    return {n: torch.from_numpy(d[f"exact_K{K}_{n}"]) for n in
            ("logits", "means", "log_scales", "bin", "logp")}


@pytest.mark.parametrize("K", [256, 65536])
def test_log_prob_matches_60_digit_reference(K):
    r = _exact(K)
    dist = DiscretizedLogisticMixture(r["logits"], r["means"], r["log_scales"], num_classes=K)
    y = bin_centre(r["bin"], K)
    got = dist.log_prob(y).double()
    assert torch.allclose(got, r["logp"], rtol=1e-5, atol=1e-4), (got - r["logp"]).abs().max()
    # the first five cases are bin 0, the next five bin K-1: edge bins are covered
    assert (r["bin"][:5] == 0).all() and (r["bin"][5:10] == K - 1).all()


params = st.tuples(
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
    st.lists(st.floats(-20, 3), min_size=3, max_size=3),
)


@pytest.mark.parametrize("K", [256, 65536])
@settings(max_examples=25, deadline=None)
@given(p=params)
def test_masses_sum_to_one(K, p):
    logits, means, log_scales = (torch.tensor(v, dtype=torch.float32) for v in p)
    dist = DiscretizedLogisticMixture(logits, means, log_scales, num_classes=K)
    total = dist.log_pmf().double().exp().sum()
    assert abs(float(total) - 1.0) < 1e-5


def test_sampled_bins_follow_the_pmf():
    K = 256
    g = torch.Generator().manual_seed(1)
    dist = DiscretizedLogisticMixture(
        torch.tensor([0.3, -0.5, 1.0]), torch.tensor([-0.6, 0.1, 0.95]),
        torch.tensor([-2.5, -3.5, -3.0]), num_classes=K,
    )
    n = 200_000
    bins = dist.sample((n,), generator=g, return_bins=True)
    pmf = dist.log_pmf().double().exp().numpy()
    observed = np.bincount(bins.numpy(), minlength=K)
    expected = pmf * n
    # pool sparse bins so the chi-square approximation holds (expected >= 5 per cell)
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    _, pvalue = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    assert pvalue > 1e-3, pvalue
    # the edge bin near +1 carries the upper tail of the third component
    assert observed[-1] > 0.05 * n


def test_gradcheck_float64():
    torch.manual_seed(0)
    B, T, M = 2, 5, 3
    y_hat = torch.randn(B, 3 * M, T, dtype=torch.float64, requires_grad=True)
    y = torch.rand(B, T, dtype=torch.float64) * 2 - 1
    y[0, 0], y[1, 1] = -1.0, 1.0  # edge bins

    def f(x):
        return discretized_mix_logistic_loss(x, y, num_classes=256, log_scale_min=None)

    assert torch.autograd.gradcheck(f, (y_hat,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_right_down_to_log_scale_minus_16(dtype):
    torch.manual_seed(0)
    B, T, M = 2, 64, 10
    y_hat = torch.randn(B, 3 * M, T)
    y_hat[:, 2 * M:] = torch.linspace(-16, 2, T)  # log-scales sweep to -16
    y_hat = y_hat.to(dtype).requires_grad_()
    y = torch.rand(B, T) * 2 - 1
    y[:, :3] = -1.0
    y[:, 3:6] = 1.0
    loss = discretized_mix_logistic_loss(y_hat, y, log_scale_min=-16.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(y_hat.grad.float()).all()
    # and right: the float64 reference on the same (rounded) parameters; the loss is computed
    # in float32 (measured 5e-10 / 5e-8 relative), the gradient is rounded to the half type
    # (measured within 0.4 / 0.44 of its eps)
    ref_in = y_hat.detach().double().requires_grad_()
    ref = mixture_nll_reference(*ref_in.transpose(1, 2).chunk(3, -1), y.double(), 65536, -16.0)
    ref.mean().backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.mean().item()) <= 1e-6 * abs(ref.mean().item())
    g, rg = y_hat.grad.double(), ref_in.grad
    eps = torch.finfo(dtype).eps
    assert ((g - rg).abs() <= eps * (rg.abs() + 1e-3 * rg.abs().max())).all()


def test_float64_end_to_end():
    y_hat = torch.randn(2, 9, 4, dtype=torch.float64)
    loss = discretized_mix_logistic_loss(y_hat, torch.zeros(2, 4, dtype=torch.float64))
    assert loss.dtype == torch.float64
    d = DiscretizedLogisticMixture.from_params(y_hat, num_classes=256)
    assert d.sample().dtype == torch.float64 and d.mean.dtype == torch.float64


def test_layouts_agree_and_reductions_are_what_they_say():
    torch.manual_seed(0)
    y_hat = torch.randn(3, 30, 7)
    y = torch.rand(3, 7) * 2 - 1
    none = discretized_mix_logistic_loss(y_hat, y, reduction="none")
    assert none.shape == (3, 7)
    btc = discretized_mix_logistic_loss(y_hat.transpose(1, 2), y, layout="BTC", reduction="none")
    torch.testing.assert_close(none, btc)
    torch.testing.assert_close(discretized_mix_logistic_loss(y_hat, y), none.mean())
    torch.testing.assert_close(discretized_mix_logistic_loss(y_hat, y, reduction="sum"), none.sum())
    # r9y9-style (B, T, 1) targets are accepted
    torch.testing.assert_close(discretized_mix_logistic_loss(y_hat, y[..., None]), none.mean())


def test_mask_and_lengths():
    torch.manual_seed(0)
    y_hat = torch.randn(2, 30, 6)
    y = torch.rand(2, 6) * 2 - 1
    lengths = torch.tensor([6, 2])
    none = discretized_mix_logistic_loss(y_hat, y, reduction="none")
    want = (none[0].sum() + none[1, :2].sum()) / 8
    torch.testing.assert_close(discretized_mix_logistic_loss(y_hat, y, mask=lengths), want)
    mask = torch.zeros(2, 6)
    mask[0] = 1
    mask[1, :2] = 1
    torch.testing.assert_close(discretized_mix_logistic_loss(y_hat, y, mask=mask), want)
    masked = discretized_mix_logistic_loss(y_hat, y, mask=mask, reduction="none")
    assert (masked[1, 2:] == 0).all()


def test_cdf_is_the_cumulative_pmf():
    torch.manual_seed(0)
    K = 64
    d = DiscretizedLogisticMixture(torch.randn(3), torch.randn(3) * 0.5, torch.randn(3) - 2, K)
    centres = bin_centre(torch.arange(K), K)
    cdf = torch.stack([d.cdf(c) for c in centres])
    torch.testing.assert_close(cdf, d.log_pmf().exp().cumsum(0), atol=2e-6, rtol=0)
    assert float(cdf[-1]) == 1.0


@pytest.mark.parametrize("K", [256, 8192])
def test_pmf_mean_entropy_variance_match_an_independent_enumeration(K):
    """Against bin masses built from scipy's logistic CDF (not dmol's log_pmf): the pmf, the
    entropy and the variance (both enumerated) to 1e-10, the mean to 1e-10 by enumeration
    (K <= 4096) and, above, the closed form E[clip(X, -1, 1)] within half a bin (1/(K-1))."""
    g = torch.Generator().manual_seed(0)
    shape = (4, 3)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    means = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    log_scales = torch.rand(shape, generator=g, dtype=torch.float64) * 3 - 5
    d = DiscretizedLogisticMixture(logits, means, log_scales, num_classes=K)
    p = torch.from_numpy(enumerated_pmf("logistic", logits, means, log_scales, K))
    c = torch.from_numpy(-1 + 2 * np.arange(K) / (K - 1))
    torch.testing.assert_close(d.log_pmf().exp(), p, rtol=1e-9, atol=1e-12)
    mean = (p * c).sum(-1)
    torch.testing.assert_close(d.variance, (p * (c - mean[:, None]) ** 2).sum(-1), rtol=1e-10,
                               atol=1e-12)
    plogp = torch.where(p > 0, p * p.log(), 0.0)
    torch.testing.assert_close(d.entropy(), -plogp.sum(-1), rtol=1e-10, atol=1e-12)
    if K <= 4096:
        torch.testing.assert_close(d.mean, mean, rtol=0, atol=1e-12)
    else:  # the closed form: E[clip(X, -1, 1)] of the continuous mixture, by quadrature
        from scipy import integrate

        w = torch.softmax(logits, -1).numpy()

        def clipped_mean(mu, s):
            inside = integrate.quad(lambda x: x * stats.logistic.pdf(x, mu, s), -1, 1,
                                    epsabs=1e-14, epsrel=1e-12)[0]
            return -stats.logistic.cdf(-1, mu, s) + stats.logistic.sf(1, mu, s) + inside

        want = torch.tensor([[sum(w[i, m] * clipped_mean(float(means[i, m]),
                                                          float(log_scales[i, m].exp()))
                                  for m in range(shape[1]))] for i in range(shape[0])],
                            dtype=torch.float64)[:, 0]
        torch.testing.assert_close(d.mean, want, rtol=0, atol=1e-10)
        assert (d.mean - mean).abs().max() <= 1.0 / (K - 1)


def test_temperature_and_mode():
    logits = torch.tensor([[0.0, 3.0]])
    means = torch.tensor([[-0.5, 0.25]])
    d = DiscretizedLogisticMixture(logits, means, torch.tensor([[-2.0, -2.0]]), num_classes=256)
    greedy = d.with_temperature(0.0, 0.0).sample((100,))
    assert torch.allclose(greedy, d.mode.expand(100, 1))
    assert abs(float(d.mode) - 0.25) <= 1 / 255
    y_hat = torch.cat([logits, means, torch.tensor([[-2.0, -2.0]])], -1)[:, :, None]
    x = sample_discretized_mix_logistic(y_hat, temperature=0, scale_temperature=0)
    assert torch.allclose(x, torch.tensor([[0.25]]))


def test_seeded_sampling_is_reproducible():
    y_hat = torch.randn(2, 30, 50)
    a = sample_discretized_mix_logistic(y_hat, generator=torch.Generator().manual_seed(3))
    b = sample_discretized_mix_logistic(y_hat, generator=torch.Generator().manual_seed(3))
    c = sample_discretized_mix_logistic(y_hat, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 50) and a.abs().max() <= 1
    snapped = sample_discretized_mix_logistic(y_hat, num_classes=256, snap=True)
    k = (snapped + 1) * 127.5
    assert torch.allclose(k, k.round(), atol=1e-4)


def test_bits_per_dim():
    assert dmol.bits_per_dim(torch.tensor(np.log(2.0) * 3), num_dims=3) == pytest.approx(1.0)


# -- bad input ------------------------------------------------------------------------------


def test_channel_count_not_multiple_of_three():
    with pytest.raises(ValueError, match="31 channels: expected a multiple of 3"):
        discretized_mix_logistic_loss(torch.randn(2, 31, 5), torch.zeros(2, 5))


def test_target_shape_mismatch():
    with pytest.raises(ValueError, match=r"target shape \(2, 6\) does not match y_hat"):
        discretized_mix_logistic_loss(torch.randn(2, 30, 5), torch.zeros(2, 6))


def test_targets_outside_range_error_and_opt_in_clamp():
    y = torch.zeros(2, 5)
    y[0, 0] = 1.5
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\].*max 1.5"):
        discretized_mix_logistic_loss(torch.randn(2, 30, 5), y)
    y_hat = torch.randn(2, 30, 5)
    clamped = discretized_mix_logistic_loss(y_hat, y, clamp_targets=True)
    torch.testing.assert_close(clamped, discretized_mix_logistic_loss(y_hat, y.clamp(-1, 1)))


def test_nan_parameters_are_named_when_validating():
    means = torch.zeros(4, 3)
    means[1, 2] = float("nan")
    with pytest.raises(ValueError, match="means contains 1 NaN/inf"):
        DiscretizedLogisticMixture(torch.zeros(4, 3), means, torch.zeros(4, 3), validate_args=True)
    log_scales = torch.zeros(4, 3)
    log_scales[0, 0] = float("inf")
    with pytest.raises(ValueError, match="log_scales contains 1 NaN/inf"):
        DiscretizedLogisticMixture(torch.zeros(4, 3), torch.zeros(4, 3), log_scales,
                                   validate_args=True)


def test_num_classes_below_two():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        discretized_mix_logistic_loss(torch.randn(1, 3, 2), torch.zeros(1, 2), num_classes=1)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        DiscretizedLogisticMixture(torch.zeros(3), torch.zeros(3), torch.zeros(3), num_classes=1)


def test_unknown_layout_and_reduction():
    with pytest.raises(ValueError, match="unknown layout 'TBC'"):
        discretized_mix_logistic_loss(torch.randn(1, 3, 2), torch.zeros(1, 2), layout="TBC")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        discretized_mix_logistic_loss(torch.randn(1, 3, 2), torch.zeros(1, 2), reduction="avg")


def test_parameter_shapes_must_agree_and_dtype_must_be_float():
    with pytest.raises(ValueError, match="must share one shape"):
        DiscretizedLogisticMixture(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(TypeError, match="floating point"):
        discretized_mix_logistic_loss(torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 2))


def test_k_equals_two_is_a_fair_coin_for_a_centred_component():
    d = DiscretizedLogisticMixture(torch.zeros(1), torch.zeros(1), torch.zeros(1), num_classes=2)
    torch.testing.assert_close(d.log_pmf().exp(), torch.tensor([0.5, 0.5]))


def test_reference_and_distribution_agree_under_broadcasting():
    torch.manual_seed(0)
    d = DiscretizedLogisticMixture(torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4) - 3, 256)
    ys = torch.rand(7, 5) * 2 - 1
    lp = d.log_prob(ys)
    assert lp.shape == (7, 5)
    one = -mixture_nll_reference(d.logits, d.means, d.log_scales, ys[2], 256)
    torch.testing.assert_close(lp[2], one)


def test_validation_survives_torch_compile():
    # torch.compile switches torch's global distribution validation off; dmol's stays on
    torch.compile(lambda x: x + 1, backend="eager")(torch.zeros(1))
    means = torch.tensor([float("nan"), 0.0])
    with pytest.raises(ValueError, match="means contains 1 NaN/inf"):
        DiscretizedLogisticMixture(torch.zeros(2), means, torch.zeros(2))


# -- issue 12 item 8: NaN/inf parameters, temperatures and targets are errors, never numbers --


@pytest.mark.parametrize("channel", [0, 10, 20])  # a logit, a mean, a log-scale
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sampler_rejects_nonfinite_parameters(channel, bad):
    y_hat = torch.zeros(2, 30, 5)
    y_hat[1, channel, 3] = bad
    for snap in (False, True):
        with pytest.raises(ValueError, match="y_hat contains 1 NaN/inf"):
            sample_discretized_mix_logistic(y_hat, snap=snap)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_samplers_reject_nonfinite_temperatures(bad):
    y_hat = torch.zeros(2, 30, 5)
    for kw in ("temperature", "scale_temperature"):
        with pytest.raises(ValueError, match=kw):
            sample_discretized_mix_logistic(y_hat, **{kw: bad})
        d = DiscretizedLogisticMixture.from_params(y_hat, num_classes=256)
        with pytest.raises(ValueError, match=kw):
            d.with_temperature(**{kw: bad})


def test_loss_rejects_nan_parameters():
    y_hat = torch.zeros(2, 30, 5)
    y_hat[0, 12, 1] = float("nan")
    with pytest.raises(ValueError, match="y_hat contains 1 NaN/inf"):
        discretized_mix_logistic_loss(y_hat, torch.zeros(2, 5))


def test_nan_targets_raise_even_with_clamp_targets():
    y = torch.zeros(2, 5)
    y[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        discretized_mix_logistic_loss(torch.zeros(2, 30, 5), y, clamp_targets=True)


# -- issue 12 item 11: empty batches ------------------------------------------------------------


@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)])
def test_empty_batches(B, T):
    """Empty results for "none", 0 for "sum", NaN for "mean" (torch's mean of nothing)."""
    y_hat = torch.zeros(B, 30, T, requires_grad=True)
    y = torch.zeros(B, T)
    assert discretized_mix_logistic_loss(y_hat, y, reduction="none").shape == (B, T)
    total = discretized_mix_logistic_loss(y_hat, y, reduction="sum")
    assert total.item() == 0.0
    total.backward()
    assert y_hat.grad.shape == y_hat.shape
    assert torch.isnan(discretized_mix_logistic_loss(y_hat, y))
    for snap in (False, True):
        assert sample_discretized_mix_logistic(y_hat, snap=snap).shape == (B, T)
    d = DiscretizedLogisticMixture.from_params(y_hat.detach(), num_classes=256)
    assert d.log_prob(y).shape == (B, T)
    assert d.sample((3,)).shape == (3, B, T)


# -- issue 12 item 17: errors that name the right problem ----------------------------------------


def test_integer_targets_are_a_target_dtype_error():
    with pytest.raises(TypeError, match=r"^y must be a floating point tensor.*int64"):
        discretized_mix_logistic_loss(torch.zeros(2, 30, 5), torch.zeros(2, 5, dtype=torch.long))
    d = DiscretizedLogisticMixture.from_params(torch.zeros(2, 30, 5), num_classes=256)
    with pytest.raises(TypeError, match=r"^targets must be a floating point tensor"):
        d.log_prob(torch.zeros(2, 5, dtype=torch.long))


def test_range_error_suggests_clamp_targets_only_where_it_exists():
    y = torch.full((2, 5), 1.5)
    with pytest.raises(ValueError, match="clamp_targets=True"):
        discretized_mix_logistic_loss(torch.zeros(2, 30, 5), y)
    d = DiscretizedLogisticMixture.from_params(torch.zeros(2, 30, 5), num_classes=256)
    for method in (d.log_prob, d.cdf):
        with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]") as e:
            method(y)
        assert "clamp_targets" not in str(e.value)


@pytest.mark.parametrize("bad", ["logits", "means", "log_scales"])
def test_constructor_names_a_non_tensor_argument(bad):
    args = {n: torch.zeros(4, 3) for n in ("logits", "means", "log_scales")}
    args[bad] = 0.0
    with pytest.raises(TypeError, match=f"^{bad} must be a torch.Tensor, got float"):
        DiscretizedLogisticMixture(**args)


def test_misspelled_reduction_is_rejected_before_any_work(monkeypatch):
    from dmol import fused

    def forward(*a, **k):
        raise AssertionError("the forward pass ran")

    monkeypatch.setattr(fused, "mixture_nll_packed", forward)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        discretized_mix_logistic_loss(torch.zeros(2, 30, 5), torch.zeros(2, 5), reduction="avg")


def test_log_scale_min_defaults_are_documented_in_one_table():
    """Issue 12 item 10: the defaults differ by entry point (-7, None, -16); docs/mol.md lists
    every one of them, and this keeps that table true."""
    import inspect
    import re

    from dmol import coupled, fused, gaussian, logistic
    from dmol.compat import r9y9
    from dmol.wavenet import heads

    text = (Path(__file__).parents[1] / "docs" / "mol.md").read_text()
    block = text.split("<!-- log-scale-min-defaults -->")[1].split("<!-- /log-scale-min")[0]
    rows = dict(re.findall(r"^\| (.+?) \| +(\S+) \|$", block, re.M))

    def default(fn):
        p = inspect.signature(fn).parameters["log_scale_min"]
        return "(required)" if p.default is inspect.Parameter.empty else str(p.default)

    want = {"-7": "-7.0", "None": "None", "-16": "-16.0", "(required)": "(required)"}
    checks = {
        "`dmol.logistic.discretized_mix_logistic_loss`": [logistic.discretized_mix_logistic_loss],
        "`dmol.logistic.sample_discretized_mix_logistic`":
            [logistic.sample_discretized_mix_logistic],
        "`dmol.logistic.DiscretizedLogisticMixture` (and `.from_params`)":
            [DiscretizedLogisticMixture, DiscretizedLogisticMixture.from_params],
        "`dmol.logistic.mixture_nll_reference`": [mixture_nll_reference],
        "`dmol.fused.mixture_nll`, `dmol.fused.mixture_nll_packed`":
            [fused.mixture_nll, fused.mixture_nll_packed],
        "`dmol.fused.sample_mixture`": [fused.sample_mixture],
        "`dmol.gaussian.mix_gaussian_loss`": [gaussian.mix_gaussian_loss],
        "`dmol.gaussian.sample_mix_gaussian`": [gaussian.sample_mix_gaussian],
        "`dmol.gaussian.MixtureOfGaussians`, `DiscretizedGaussianMixture` (and `.from_params`)":
            [gaussian.MixtureOfGaussians, gaussian.DiscretizedGaussianMixture,
             gaussian.MixtureOfGaussians.from_params,
             gaussian.DiscretizedGaussianMixture.from_params],
        "`dmol.gaussian.gaussian_mixture_nll`, `discretized_gaussian_mixture_nll`":
            [gaussian.gaussian_mixture_nll, gaussian.discretized_gaussian_mixture_nll],
        "`dmol.coupled.coupled_mix_logistic_loss`": [coupled.coupled_mix_logistic_loss],
        "`dmol.compat.r9y9.*`": [getattr(r9y9, n) for n in r9y9.__all__],
        "`dmol.wavenet` MoL/MoG heads and presets": [heads.MoLHead, heads.MoGHead,
                                                     heads.GaussianHead],
    }
    assert set(rows) == set(checks)
    for row, fns in checks.items():
        for fn in fns:
            assert default(fn) == want[rows[row]], (row, fn)


# -- temperatures other than 0 and 1, against the pmf (issue 15 finding 2) --------------------
@pytest.mark.parametrize("tau, st", [(0.5, 1.0), (2.0, 0.5)])
def test_temperature_draws_follow_the_tempered_pmf(tau, st):
    """with_temperature(tau, st) draws from the mixture with logits / tau and scales * st,
    built here by hand (chi-square over 64 bins); logits * tau is rejected."""
    K, N = 64, 40_000
    logits = torch.tensor([0.0, 1.0, 2.0, -0.5])
    means = torch.tensor([-0.6, -0.1, 0.3, 0.7])
    log_s = torch.tensor([-2.5, -3.0, -2.8, -3.2])
    d = DiscretizedLogisticMixture(logits, means, log_s, num_classes=K)
    k = d.with_temperature(tau, st).sample((N,), generator=torch.Generator().manual_seed(0),
                                           return_bins=True)

    def pmf(lg):
        ref = DiscretizedLogisticMixture(lg, means, log_s + np.log(st), num_classes=K)
        return ref.log_pmf().double().exp()

    assert chi2_pvalue(k, pmf(logits / tau)) > 1e-3
    assert chi2_pvalue(k, pmf(logits * tau)) < 1e-9


# -- property test of the hard cases, against 50-digit arithmetic (issue 15 finding 4) -------
def _exact_nll(logits, means, log_scales, k, K, lsm) -> float:
    """-log P(bin k) of one mixture, in 50-digit arithmetic (edge bins take the tails)."""
    import mpmath

    with mpmath.workdps(50):
        half = mpmath.mpf(1) / (K - 1)
        centre = -1 + 2 * mpmath.mpf(k) / (K - 1)
        w = [mpmath.exp(mpmath.mpf(v)) for v in logits]
        total = mpmath.mpf(0)
        for wm, mu, ls in zip(w, means, log_scales, strict=True):
            ls = max(ls, lsm) if lsm is not None else ls
            inv_s = mpmath.exp(-mpmath.mpf(ls))

            def cdf(x, mu=mu, inv_s=inv_s):
                return 1 / (1 + mpmath.exp(-(x - mpmath.mpf(mu)) * inv_s))

            upper = 1 if k == K - 1 else cdf(centre + half)
            lower = 0 if k == 0 else cdf(centre - half)
            total += wm * (upper - lower)
        return float(-mpmath.log(total / sum(w)))


@st.composite
def hard_cases(draw):
    """Log-scales down to -20 (the -16 clamp binds), every mean inside or next to the target's
    bin (within ``offset`` bins of its centre: the regime where two CDFs near 0 or 1 cancel),
    edge bins; all drawn from a seed hypothesis chooses, so a failure replays exactly."""
    K = draw(st.sampled_from([256, 65536]))
    T = draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    k = torch.randint(0, K, (1, T), generator=g)
    k[0, 0] = draw(st.sampled_from([0, K - 1, int(k[0, 0])]))
    offset = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]))  # in bins
    y = bin_centre(k, K, torch.float64)
    means = y[..., None] + (torch.rand(1, T, 3, generator=g, dtype=torch.float64) * 2 - 1) * (
        offset * 2 / (K - 1))
    log_scales = torch.rand(1, T, 3, generator=g, dtype=torch.float64) * 23 - 20
    logits = torch.randn(1, T, 3, generator=g, dtype=torch.float64) * 2
    lsm = draw(st.sampled_from([None, -16.0, -7.0]))
    return logits, means, log_scales, k, y, K, lsm


# |computed - exact| <= rel |exact| + abs: float64 reaches about 1e-12 (the cancellation of two
# CDFs costs a few digits); float32 is held to the fused loss's acceptance bound
HARD_BOUNDS = {torch.float64: (1e-10, 1e-11), torch.float32: (1e-5, 1e-5)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=40, deadline=None)
@given(case=hard_cases())
def test_hard_cases_match_50_digit_arithmetic(dtype, case):
    """The loss (and, in float64, the reference) against the exact NLL of the same parameters
    (rounded to dtype first), M = 3: the -16 clamp and the edge bins included."""
    logits, means, log_scales, k, y, K, lsm = (t.to(dtype) if torch.is_tensor(t) and
                                               t.is_floating_point() else t for t in case)
    exact = torch.tensor([[_exact_nll(logits[0, t].tolist(), means[0, t].tolist(),
                                      log_scales[0, t].tolist(), int(k[0, t]), K, lsm)
                           for t in range(k.shape[1])]], dtype=torch.float64)
    y_hat = torch.cat([logits, means, log_scales], -1).transpose(1, 2)  # (1, 9, T)
    got = {"loss": discretized_mix_logistic_loss(y_hat, y, num_classes=K, log_scale_min=lsm,
                                                 reduction="none")}
    if dtype == torch.float64:
        got["reference"] = mixture_nll_reference(logits, means, log_scales, y, K, lsm)
    rel, abs_ = HARD_BOUNDS[dtype]
    for name, nll in got.items():
        err = ((nll.double() - exact).abs() - (rel * exact.abs() + abs_)).max().item()
        assert err <= 0, f"{name} off by {err:.3g} beyond the bound"


@pytest.mark.parametrize("K", [256, 65536])
@pytest.mark.parametrize("log_scale", [-13.0, -16.0])
def test_a_narrow_component_on_a_bin_edge_keeps_its_mass(K, log_scale):
    """A mean on the edge between two bins with a scale near float32's resolution: the two
    bins share the edge exactly (formed in float64), so the masses still sum to one and split
    about evenly. (Found by the property test above: the edges formed as (centre - mu) -+ h
    in float32 lost 5e-5 of the mass at e^-13 and 1e-3 at e^-16.)"""
    k = K // 2 + 37
    edge = (2.0 * k + 1.0) / (K - 1) - 1.0  # between bins k and k + 1
    dist = DiscretizedLogisticMixture(torch.zeros(1), torch.tensor([edge]),
                                      torch.tensor([log_scale]), num_classes=K)
    pmf = dist.log_pmf().double().exp()
    assert abs(float(pmf.sum()) - 1.0) < 1e-6
    # the two bins hold all but the tails beyond their outer edges, one bin width away
    x = 2.0 / (K - 1) / math.exp(log_scale)  # a bin width in scales
    outside = 2.0 * math.exp(-x) / (1.0 + math.exp(-x))
    assert abs(float(pmf[k] + pmf[k + 1]) - (1.0 - outside)) < 1e-6
    assert 0.3 < float(pmf[k]) < 0.7
