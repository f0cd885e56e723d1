"""dmol.mulaw: companding, both quantization conventions, the categorical head and its loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dmol.mulaw import (
    MuLawCategorical,
    inv_mulaw_quantize,
    mulaw_decode,
    mulaw_encode,
    mulaw_loss,
    mulaw_quantize,
    sample_mulaw,
)
from helpers import chi2_pvalue


def _wave(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=dtype) * 2 - 1
    x[:4] = torch.tensor([-1.0, 0.0, 1.0, 1e-6], dtype=dtype)  # the edges and a tiny value
    return x


# ----------------------------------------------------------------------------- companding


def test_encode_matches_formula_and_decode_inverts():
    x = _wave(2000)
    mu = 255
    expected = np.sign(x.numpy()) * np.log(1 + mu * np.abs(x.numpy())) / np.log(1 + mu)
    y = mulaw_encode(x, mu)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert float(y.abs().max()) <= 1.0
    torch.testing.assert_close(mulaw_decode(y, mu), x, rtol=1e-12, atol=1e-15)


def test_numpy_in_numpy_out_and_dtype_kept():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    y = mulaw_encode(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert isinstance(mulaw_decode(y), np.ndarray)
    q = mulaw_quantize(x)
    assert isinstance(q, np.ndarray) and q.dtype == np.int64
    xr = inv_mulaw_quantize(q)
    assert isinstance(xr, np.ndarray) and xr.dtype == np.float64
    # the torch path gives the same numbers
    np.testing.assert_array_equal(q, mulaw_quantize(torch.from_numpy(x)).numpy())
    assert isinstance(mulaw_quantize(torch.from_numpy(x)), torch.Tensor)
    # half precision waveforms are quantized in float32: same classes as their float32 values
    half = torch.linspace(-1, 1, 3001).half()
    q16 = mulaw_quantize(half)
    assert q16.dtype == torch.int64 and torch.equal(q16, mulaw_quantize(half.float()))
    assert mulaw_encode(half).dtype == torch.float16


# ----------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("mu", [255, 1023])
def test_floor_is_nnmnkwii_convention(mu):
    x = _wave(5000, seed=1).numpy()
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    nnmnkwii = ((y + 1) / 2 * mu).astype(int)  # nnmnkwii.preprocessing.mulaw_quantize
    np.testing.assert_array_equal(mulaw_quantize(x, mu, rounding="floor"), nnmnkwii)


@pytest.mark.parametrize("mu", [255, 1023])
def test_round_is_torchaudio_convention(mu):
    x = _wave(5000, seed=2).numpy()
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    torchaudio = ((y + 1) / 2 * mu + 0.5).astype(np.int64)  # mu_law_encoding(x, mu + 1)
    np.testing.assert_array_equal(mulaw_quantize(x, mu, rounding="round"), torchaudio)


def test_edge_classes_and_midpoint():
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert mulaw_quantize(x, rounding="round").tolist() == [0, 128, 255]
    assert mulaw_quantize(x, rounding="floor").tolist() == [0, 127, 255]
    # the two conventions share the decoder: class q -> f^-1(2q/mu - 1)
    q = torch.arange(256)
    expected = mulaw_decode(2 * q.double() / 255 - 1)
    torch.testing.assert_close(inv_mulaw_quantize(q.double()), expected)
    assert inv_mulaw_quantize(torch.tensor([0, 255])).tolist() == [-1.0, 1.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=50))
def test_quantization_error_is_within_one_step(values):
    """round: within half a step of the companded value; floor: within [0, 1) step below it."""
    mu = 255
    x = torch.tensor(values, dtype=torch.float64)
    y = mulaw_encode(x, mu)
    for rounding, lo, hi in (("round", -0.5, 0.5), ("floor", 0.0, 1.0)):
        q = mulaw_quantize(x, mu, rounding=rounding)
        assert q.dtype == torch.int64 and int(q.min()) >= 0 and int(q.max()) <= mu
        step_err = (y + 1) / 2 * mu - q  # in units of one quantization step
        assert float(step_err.min()) >= lo - 1e-9 and float(step_err.max()) <= hi + 1e-9
        if rounding == "round":
            assert torch.equal(mulaw_quantize(inv_mulaw_quantize(q, mu), mu), q)


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"unknown rounding 'nearest'"):
        mulaw_quantize(torch.zeros(3), rounding="nearest")
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\], got min -1.5"):
        mulaw_quantize(torch.tensor([-1.5, 0.0]))
    with pytest.raises(ValueError, match="targets contain NaN"):
        mulaw_quantize(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match=r"floating point waveform .* int16"):
        mulaw_quantize(np.array([1000, -2000], dtype=np.int16))
    with pytest.raises(ValueError, match="mu must be an integer for quantization"):
        mulaw_quantize(torch.zeros(2), mu=255.5)
    with pytest.raises(ValueError, match="mu must be a positive finite number, got 0"):
        mulaw_encode(torch.zeros(2), mu=0)
    with pytest.raises(TypeError, match="mu must be a number, got str"):
        mulaw_decode(torch.zeros(2), mu="255")
    with pytest.raises(ValueError, match=r"mu-law classes must lie in \[0, 255\], got min -1"):
        inv_mulaw_quantize(torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match=r"mu-law classes must lie in \[0, 255\].*max 256"):
        inv_mulaw_quantize(np.array([0, 256]))
    with pytest.raises(TypeError, match="real numpy array, got dtype <U1"):
        mulaw_encode(np.array(["a"]))


# ----------------------------------------------------------------------------- distribution


def test_log_prob_is_log_softmax_at_the_class():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, 256, generator=g, dtype=torch.float64)
    x = torch.rand(4, 6, generator=g, dtype=torch.float64) * 2 - 1
    for rounding in ("round", "floor"):
        d = MuLawCategorical(logits, rounding=rounding)
        q = mulaw_quantize(x, 255, rounding=rounding)
        expected = logits.log_softmax(-1).gather(-1, q[..., None]).squeeze(-1)
        torch.testing.assert_close(d.log_prob(x), expected)
    assert d.batch_shape == (4, 6) and d.num_classes == 256
    # broadcasting a sample axis in front
    assert d.log_prob(x.expand(3, 4, 6)).shape == (3, 4, 6)


def test_moments_mode_entropy():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 256, generator=g, dtype=torch.float64)
    d = MuLawCategorical(logits)
    p = logits.softmax(-1)
    grid = inv_mulaw_quantize(torch.arange(256), 255).double()
    torch.testing.assert_close(d.probs.sum(-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(d.mean, (p * grid).sum(-1))
    torch.testing.assert_close(d.variance, (p * grid**2).sum(-1) - d.mean**2)
    torch.testing.assert_close(d.mode, grid[logits.argmax(-1)])
    torch.testing.assert_close(d.entropy(), -(p * p.log()).sum(-1))
    e = d.expand((2, 5))
    assert e.batch_shape == (2, 5) and e.sample().shape == (2, 5)


def test_sample_frequencies_chi_square():
    """Sampled classes follow the softmax (K = 256 classes, fixed seed)."""
    g = torch.Generator().manual_seed(5)
    logits = 0.7 * torch.randn(256, generator=g, dtype=torch.float64)
    d = MuLawCategorical(logits)
    n = 200_000
    x = d.sample((n,), generator=torch.Generator().manual_seed(6))
    assert x.shape == (n,) and float(x.abs().max()) <= 1.0
    counts = torch.bincount(mulaw_quantize(x), minlength=256).numpy()
    expected = d.probs.numpy() * n
    assert expected.min() > 50
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # and a wrong distribution is rejected by the same test
    assert stats.chisquare(counts, np.full(256, n / 256)).pvalue < 1e-6


def test_sampling_is_reproducible_with_a_generator():
    logits = torch.randn(3, 256, 10)
    a = sample_mulaw(logits, generator=torch.Generator().manual_seed(0))
    b = sample_mulaw(logits, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 10) and torch.equal(a, b)


def test_distribution_rejects_bad_input():
    with pytest.raises(ValueError, match=r"logits have 255 classes .* expected mu \+ 1 = 256"):
        MuLawCategorical(torch.zeros(2, 255), mu=255)
    with pytest.raises(ValueError, match="unknown rounding 'trunc'"):
        MuLawCategorical(torch.zeros(2, 256), rounding="trunc")
    with pytest.raises(TypeError, match="floating point tensor, got dtype torch.int64"):
        MuLawCategorical(torch.zeros(2, 256, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\]"):
        MuLawCategorical(torch.zeros(2, 256)).log_prob(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="at least one dimension"):
        MuLawCategorical(torch.tensor(0.0))
    nan = torch.zeros(2, 256)
    nan[1, 3] = math.nan
    with pytest.raises(ValueError, match=r"logits contains 1 NaN/inf value\(s\)"):
        MuLawCategorical(nan)
    MuLawCategorical(nan, validate_args=False)  # the check can be switched off


# ----------------------------------------------------------------------------- functional


def test_loss_is_cross_entropy_of_the_quantized_target():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 256, 9, generator=g)
    y = torch.rand(2, 9, generator=g) * 2 - 1
    q = mulaw_quantize(y)
    expected = F.cross_entropy(logits, q, reduction="none")
    torch.testing.assert_close(mulaw_loss(logits, y, reduction="none"), expected)
    torch.testing.assert_close(mulaw_loss(logits, y), expected.mean())
    torch.testing.assert_close(mulaw_loss(logits, y, reduction="sum"), expected.sum())
    btc = mulaw_loss(logits.transpose(1, 2).contiguous(), y, layout="BTC", reduction="none")
    torch.testing.assert_close(btc, expected)
    # target shapes (B, T, 1) and (B, 1, T) are accepted too
    torch.testing.assert_close(mulaw_loss(logits, y[..., None]), expected.mean())
    torch.testing.assert_close(mulaw_loss(logits, y[:, None]), expected.mean())
    floor = mulaw_loss(logits, y, rounding="floor", reduction="none")
    torch.testing.assert_close(
        floor, F.cross_entropy(logits, mulaw_quantize(y, rounding="floor"), reduction="none")
    )


def test_loss_mask_mean_is_over_valid_steps():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 16, 6, generator=g)
    y = torch.rand(2, 6, generator=g) * 2 - 1
    full = mulaw_loss(logits, y, reduction="none")
    lengths = torch.tensor([6, 2])
    expected = torch.cat([full[0], full[1, :2]]).mean()
    torch.testing.assert_close(mulaw_loss(logits, y, mask=lengths), expected)
    mask = torch.zeros(2, 6)
    mask[0] = 1
    mask[1, :2] = 1
    torch.testing.assert_close(mulaw_loss(logits, y, mask=mask), expected)


def test_loss_half_precision_and_gradient():
    g = torch.Generator().manual_seed(9)
    logits = (torch.randn(2, 256, 5, generator=g) * 3).to(torch.bfloat16).requires_grad_()
    y = torch.rand(2, 5, generator=g) * 2 - 1
    loss = mulaw_loss(logits, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    ref = mulaw_loss(logits.detach().float(), y)
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_loss_clamp_targets():
    logits = torch.randn(1, 256, 3)
    y = torch.tensor([[-1.2, 0.0, 1.7]])
    clipped = mulaw_loss(logits, y.clamp(-1, 1), reduction="none")
    torch.testing.assert_close(mulaw_loss(logits, y, clamp_targets=True, reduction="none"), clipped)


def test_loss_rejects_bad_input():
    logits = torch.randn(2, 256, 4)
    y = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"logits have 256 channels, expected mu \+ 1 = 512"):
        mulaw_loss(logits, y, mu=511)
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\], got min 0 and max 1.5"):
        mulaw_loss(logits, y + torch.tensor([[0.0, 0, 0, 1.5], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="unknown rounding 'ceil'"):
        mulaw_loss(logits, y, rounding="ceil")
    with pytest.raises(ValueError, match="logits contains 1 NaN/inf"):
        bad = logits.clone()
        bad[0, 0, 0] = math.nan
        mulaw_loss(bad, y)
    with pytest.raises(ValueError, match=r"target shape \(2, 5\) does not match"):
        mulaw_loss(logits, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown layout 'TBC'"):
        mulaw_loss(logits, y, layout="TBC")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        mulaw_loss(logits, y, reduction="avg")
    with pytest.raises(ValueError, match=r"y_hat must be 3-D"):
        mulaw_loss(logits[0], y)
    with pytest.raises(TypeError, match="floating point waveform"):
        mulaw_loss(logits, y.long())


def test_sample_mulaw_temperature():
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 256, 7, generator=g)
    greedy = sample_mulaw(logits, temperature=0)
    torch.testing.assert_close(greedy, inv_mulaw_quantize(logits.argmax(1)))
    # a low temperature concentrates the samples on the mode
    cold = sample_mulaw(logits, temperature=1e-3, generator=g)
    torch.testing.assert_close(cold, greedy)
    btc = sample_mulaw(logits.transpose(1, 2), layout="BTC", temperature=0)
    torch.testing.assert_close(btc, greedy)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0, got -1"):
        sample_mulaw(logits, temperature=-1)
    with pytest.raises(ValueError, match=r"expected mu \+ 1 = 256"):
        sample_mulaw(logits[:, :255], mu=255)


def test_nan_targets_raise_even_with_clamp_targets():
    """Issue 12 item 8: clamp_targets=True must not switch the NaN check off (was IndexError)."""
    y = torch.zeros(2, 5)
    y[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mulaw_loss(torch.zeros(2, 256, 5), y, clamp_targets=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rounding", ["floor", "round"])
def test_grid_values_quantize_to_their_own_class(dtype, rounding):
    """Issue 12 item 7: floor decoded to the cell's lower edge, 62 classes re-quantized down."""
    g = torch.Generator().manual_seed(0)
    d = MuLawCategorical(torch.randn(3, 256, generator=g, dtype=dtype), rounding=rounding)
    assert torch.equal(d.quantize(d.grid), torch.arange(256))
    # the masses of the grid values are the Q class probabilities: they sum to one
    grid = d.grid[:, None].expand(256, 3)
    total = d.log_prob(grid).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=dtype))
    # a draw scored with the same rounding is scored in the class it was drawn from
    logits = torch.randn(2, 256, 50, generator=g, dtype=dtype) * 3
    x = sample_mulaw(logits, generator=torch.Generator().manual_seed(1), rounding=rounding)
    nll = mulaw_loss(logits, x, rounding=rounding, reduction="none")
    classes = MuLawCategorical(logits.transpose(1, 2), rounding=rounding).sample_classes(
        generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(logits, classes, reduction="none")
    torch.testing.assert_close(nll, expected)
    assert float(nll.max()) < 20


def test_floor_grid_is_the_cell_centre():
    d = MuLawCategorical(torch.zeros(256), rounding="floor")
    q = torch.arange(255, dtype=torch.float64)
    torch.testing.assert_close(d.grid[:255].double(), mulaw_decode((2 * q + 1) / 255 - 1),
                               atol=1e-6, rtol=0)
    assert d.grid[255] == 1.0


@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)])
def test_empty_batches(B, T):
    """Issue 12 item 11: empty results for "none", 0 for "sum", NaN (as torch) for "mean"."""
    logits, y = torch.zeros(B, 256, T), torch.zeros(B, T)
    assert mulaw_loss(logits, y, reduction="none").shape == (B, T)
    assert mulaw_loss(logits, y, reduction="sum").item() == 0.0
    assert torch.isnan(mulaw_loss(logits, y))
    assert sample_mulaw(logits).shape == (B, T)
    assert MuLawCategorical(torch.zeros(B, T, 256)).sample((3,)).shape == (3, B, T)


def test_sample_of_no_draws_is_empty():
    d = MuLawCategorical(torch.zeros(4, 256))
    assert d.sample((0,)).shape == (0, 4)
    assert d.sample_classes((2, 0)).shape == (2, 0, 4)


def test_errors_name_the_right_problem(monkeypatch):
    """Issue 12 item 17: no clamp_targets hint where there is none; reduction checked first."""
    d = MuLawCategorical(torch.zeros(4, 256))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]") as e:
        d.log_prob(torch.full((4,), 2.0))
    assert "clamp_targets" not in str(e.value)
    with pytest.raises(ValueError, match="clamp_targets=True"):
        mulaw_loss(torch.zeros(2, 256, 5), torch.full((2, 5), 2.0))
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        mulaw_loss(torch.zeros(2, 256, 5), torch.full((2, 5), 2.0), reduction="avg")


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_sample_mulaw_temperature_follows_the_tempered_softmax(tau):
    """Draws at temperature tau follow softmax(logits / tau) (chi-square over the classes that
    are expected at least 5 times); softmax(logits * tau) is rejected."""
    Q, N = 256, 40_000
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(Q, generator=g) * 2
    x = sample_mulaw(logits[None, :, None].expand(N, Q, 1), temperature=tau, generator=g)[:, 0]
    k = mulaw_quantize(x)
    assert chi2_pvalue(k, torch.softmax(logits / tau, 0)) > 1e-3
    assert chi2_pvalue(k, torch.softmax(logits * tau, 0)) < 1e-9
