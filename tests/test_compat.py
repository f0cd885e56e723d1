"""dmol.compat reproduces r9y9/wavenet_vocoder and PixelCNN++ numbers (reference vectors)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmol.compat import pixelcnn, r9y9

VECTORS = np.load(Path(__file__).parent / "data" / "r9y9_pixelcnn_vectors.npz")
DMOL_CASES = sorted(
    k[: -len("_loss")] for k in VECTORS.files if k.startswith("dmol_") and k.endswith("_loss")
)
GAUSS_CASES = sorted(
    k[: -len("_loss")] for k in VECTORS.files if k.startswith("gauss_") and k.endswith("_loss")
)


def _arrays(case: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    return (
        torch.from_numpy(VECTORS[f"{case}_y_hat"]),
        torch.from_numpy(VECTORS[f"{case}_y"]),
        VECTORS[f"{case}_loss"],
    )


def _lsm(case: str) -> float:
    return -float(case.split("_lsm")[1].split("_")[0])


def test_vector_set_is_complete():
    assert len(DMOL_CASES) == 12 and len(GAUSS_CASES) == 4


def _float32_error(y_hat: np.ndarray, y: np.ndarray, k: int, lsm: float) -> np.ndarray:
    """Per element, how far the original routine's float32 arithmetic may move its loss.

    It forms the bin mass ``cdf_delta = sigmoid(b) - sigmoid(a)`` in float32: a few last-bit
    differences in the two sigmoids (their vectorized versions differ between CPU instruction
    sets) move ``log(cdf_delta)`` by ``ulps * (sigmoid(a) + sigmoid(b)) / cdf_delta``, and near
    the ``cdf_delta > 1e-5`` branch they can flip the branch, a jump of ``|log(cdf_delta) -
    log_pdf_mid|``. Computed in float64 for 4 ulps per sigmoid and propagated to the loss to
    first order (``d loss / d log p_c`` is minus the component's responsibility)."""
    yh = torch.from_numpy(y_hat).double().transpose(1, 2)  # (B, T, 3M)
    m = yh.shape[-1] // 3
    logits, means = yh[..., :m], yh[..., m:2 * m]
    log_s = yh[..., 2 * m:].clamp(min=lsm)
    yy = torch.from_numpy(y).double().reshape(yh.shape[0], -1, 1)
    c, inv = yy - means, torch.exp(-log_s)
    sp, sm = torch.sigmoid(inv * (c + 1.0 / (k - 1))), torch.sigmoid(inv * (c - 1.0 / (k - 1)))
    mass = sp - sm
    log_pdf = inv * c - log_s - 2.0 * torch.nn.functional.softplus(inv * c) - math.log((k - 1) / 2)
    ulps = 4 * 2.0**-24 * (sp + sm)
    big = mass > 1e-5
    err = torch.where(big, ulps / mass.clamp_min(1e-300), 0.0)
    flips = (mass - 1e-5).abs() <= ulps
    err = torch.where(flips, torch.maximum(err, (mass.clamp_min(1e-12).log() - log_pdf).abs()), err)
    err = torch.where((yy > 0.999) | (yy < -0.999), 0.0, err)  # edge bins: no difference taken
    log_p = torch.where(big, mass.clamp_min(1e-12).log(), log_pdf) + logits.log_softmax(-1)
    return (log_p.softmax(-1) * err).sum(-1).reshape(-1).numpy()


@pytest.mark.parametrize("case", DMOL_CASES)
def test_r9y9_dmol_loss_matches_reference(case):
    y_hat, y, ref = _arrays(case)
    k = int(case.split("_K")[1].split("_")[0])
    out = r9y9.discretized_mix_logistic_loss(
        y_hat, y, num_classes=k, log_scale_min=_lsm(case), reduce=False
    )
    assert out.shape == ref.shape
    out, ref = out.numpy().reshape(-1), ref.reshape(-1)
    # Each element within its own float32 error (at most 0.45 of it on an AVX-512 machine where
    # a fixed rtol of 1e-4 failed), and the well-conditioned elements to 5e-7 relative.
    bound = _float32_error(y_hat.numpy(), y.numpy(), k, _lsm(case))
    diff = np.abs(out - ref)
    assert np.all(diff <= 1e-6 + 2e-6 * np.abs(ref) + bound)
    well = bound <= 5e-7 * np.abs(ref)
    assert well.sum() >= 20
    np.testing.assert_allclose(out[well], ref[well], rtol=5e-7, atol=1e-7)


@pytest.mark.parametrize("case", GAUSS_CASES)
def test_r9y9_gaussian_loss_matches_reference(case):
    y_hat, y, ref = _arrays(case)
    out = r9y9.mix_gaussian_loss(y_hat, y, log_scale_min=_lsm(case), reduce=False)
    assert out.shape == ref.shape
    # measured: at most 9.8e-7 relative, 4.8e-7 absolute (float32 sums in another order)
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-6, atol=1e-6)


def test_reduce_true_is_a_sum_not_a_mean():
    y_hat, y, _ = _arrays("dmol_K256_lsm7_M10")
    per = r9y9.discretized_mix_logistic_loss(y_hat, y, reduce=False)
    total = r9y9.discretized_mix_logistic_loss(y_hat, y, reduce=True)
    assert total.dim() == 0
    torch.testing.assert_close(total, per.sum(), rtol=1e-6, atol=1e-3)
    y_hat, y, _ = _arrays("gauss_C30_lsm7")
    per = r9y9.mix_gaussian_loss(y_hat, y, reduce=False)
    torch.testing.assert_close(r9y9.mix_gaussian_loss(y_hat, y), per.sum(), rtol=1e-6, atol=1e-3)


def test_r9y9_targets_may_be_bt():
    y_hat, y, _ = _arrays("dmol_K1024_lsm7_M10")
    a = r9y9.discretized_mix_logistic_loss(y_hat, y, num_classes=1024, reduce=False)
    b = r9y9.discretized_mix_logistic_loss(y_hat, y[..., 0], num_classes=1024, reduce=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gaussian_c3_uses_channels_1_and_2():
    y_hat = torch.tensor([[[5.0], [0.25], [-1.0]]])  # logit (ignored), mean, log_scale
    y = torch.tensor([[[0.5]]])
    out = r9y9.mix_gaussian_loss(y_hat, y, reduce=False)
    expected = 0.5 * (0.25 / math.exp(-1.0)) ** 2 - 1.0 + 0.5 * math.log(2 * math.pi)
    assert out.shape == (1, 1, 1)
    assert abs(out.item() - expected) < 1e-5


def test_float16_reproduces_the_original_nan():
    # In float16 the 1e-12 clamp underflows to 0: log(0) * 0 gives NaN on an edge bin.
    y_hat = torch.tensor([[[0.0], [0.5], [-3.0]]])
    y = torch.tensor([[[-1.0]]])
    assert torch.isfinite(r9y9.discretized_mix_logistic_loss(y_hat, y, reduce=False)).all()
    assert torch.isnan(
        r9y9.discretized_mix_logistic_loss(y_hat.half(), y.half(), reduce=False)
    ).all()


def test_r9y9_loss_gradients_are_finite():
    y_hat, y, _ = _arrays("dmol_K65536_lsm16_M10")
    y_hat = y_hat.clone().requires_grad_()
    r9y9.discretized_mix_logistic_loss(y_hat, y, num_classes=65536, log_scale_min=-16.0).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


def test_pixelcnn_loss_matches_reference_per_image():
    x, l = torch.from_numpy(VECTORS["rgb_M5_x"]), torch.from_numpy(VECTORS["rgb_M5_l"])
    ref = VECTORS["rgb_M5_nll_per_image"]
    out = np.array(
        [
            pixelcnn.discretized_mix_logistic_loss(x[i : i + 1], l[i : i + 1]).item()
            for i in range(len(x))
        ]
    )
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=0)  # measured: 9.5e-8 relative
    # The batch loss is the sum over images, not a mean.
    np.testing.assert_allclose(
        pixelcnn.discretized_mix_logistic_loss(x, l).item(), ref.sum(), rtol=1e-6
    )


# ---------------------------------------------------------------- samplers


def _mol_params(b: int = 2, m: int = 4, t: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3 * m, t, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "sampler, channels",
    [
        (r9y9.sample_from_discretized_mix_logistic, 12),
        (r9y9.sample_from_mix_gaussian, 12),
        (r9y9.sample_from_mix_gaussian, 2),
    ],
)
def test_r9y9_samplers_shape_range_and_seed(sampler, channels):
    y = torch.randn(3, channels, 50, generator=torch.Generator().manual_seed(1)) * 3
    a = sampler(y, generator=torch.Generator().manual_seed(7))
    b = sampler(y, generator=torch.Generator().manual_seed(7))
    c = sampler(y, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 50)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_r9y9_sampler_global_seed_without_generator():
    y = _mol_params()
    torch.manual_seed(3)
    a = r9y9.sample_from_discretized_mix_logistic(y)
    torch.manual_seed(3)
    assert torch.equal(a, r9y9.sample_from_discretized_mix_logistic(y))


@pytest.mark.parametrize(
    "sampler", [r9y9.sample_from_discretized_mix_logistic, r9y9.sample_from_mix_gaussian]
)
def test_r9y9_samplers_pick_the_dominant_component(sampler):
    # Component 2 has all the weight and a tiny scale: every draw sits on its mean.
    m, t = 3, 40
    logits = torch.full((1, m, t), -30.0)
    logits[:, 2] = 30.0
    means = torch.tensor([-0.8, 0.1, 0.45])[None, :, None].expand(1, m, t)
    log_scales = torch.full((1, m, t), -12.0)
    x = sampler(
        torch.cat([logits, means, log_scales], 1), generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(x, torch.full((1, t), 0.45), rtol=0, atol=1e-3)


def test_r9y9_logistic_sampler_matches_distribution():
    # One component, mean 0.2, scale e^-3: the sample mean and the logistic variance pi^2 s^2 / 3.
    t = 20000
    y = torch.cat(
        [torch.zeros(1, 1, t), torch.full((1, 1, t), 0.2), torch.full((1, 1, t), -3.0)], 1
    )
    x = r9y9.sample_from_discretized_mix_logistic(y, generator=torch.Generator().manual_seed(0))
    s = math.exp(-3.0)
    assert abs(x.mean().item() - 0.2) < 5 * s * math.pi / math.sqrt(3 * t)
    assert abs(x.var().item() / (math.pi**2 * s**2 / 3) - 1) < 0.05


def test_r9y9_logistic_sampler_clamp_log_scale():
    y = torch.cat(
        [torch.zeros(1, 1, 5), torch.full((1, 1, 5), 0.3), torch.full((1, 1, 5), -40.0)], 1
    )
    g = torch.Generator().manual_seed(0)
    unclamped = r9y9.sample_from_discretized_mix_logistic(y, generator=g)
    assert torch.equal(unclamped, torch.full((1, 5), 0.3))
    clamped = r9y9.sample_from_discretized_mix_logistic(
        y, log_scale_min=-2.0, clamp_log_scale=True, generator=g
    )
    assert (clamped - 0.3).abs().max() > 1e-3


def test_pixelcnn_sampler_shape_range_seed():
    l = torch.randn(2, 50, 4, 4, generator=torch.Generator().manual_seed(0)) * 2
    a = pixelcnn.sample_from_discretized_mix_logistic(
        l, 5, generator=torch.Generator().manual_seed(1)
    )
    b = pixelcnn.sample_from_discretized_mix_logistic(
        l, 5, generator=torch.Generator().manual_seed(1)
    )
    c = pixelcnn.sample_from_discretized_mix_logistic(
        l, 5, generator=torch.Generator().manual_seed(2)
    )
    assert a.shape == (2, 3, 4, 4) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pixelcnn_sampler_couples_channels():
    # One dominant component with scale e^-7 (the clamp): G = mG + a*R, B = mB + b*R + c*G.
    m = 2
    l = torch.zeros(1, 10 * m, 3, 3)
    l[:, 0], l[:, 1] = 30.0, -30.0
    mean, coeff = (0.5, 0.1, -0.2), (0.5, -0.4, 0.3)
    for c in range(3):
        base = m + 3 * m * c
        l[:, base] = mean[c]  # means of component 0
        l[:, base + m : base + 2 * m] = -7.0  # log_scales
        l[:, base + 2 * m] = math.atanh(coeff[c])  # coeff of component 0, pre-tanh
    x = pixelcnn.sample_from_discretized_mix_logistic(
        l, m, generator=torch.Generator().manual_seed(0)
    )
    r = 0.5
    g = 0.1 + 0.5 * r
    b = -0.2 - 0.4 * r + 0.3 * g
    expected = torch.tensor([r, g, b])[None, :, None, None].expand(1, 3, 3, 3)
    # Logistic noise with u in [1e-5, 1 - 1e-5] is at most e^-7 * ln(1e5) ~ 0.0105 per channel.
    torch.testing.assert_close(x, expected, rtol=0, atol=0.03)


# ---------------------------------------------------------------- bad input


def test_r9y9_bad_inputs():
    with pytest.raises(ValueError, match="channels"):
        r9y9.discretized_mix_logistic_loss(torch.randn(2, 10, 5), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match="3-D"):
        r9y9.discretized_mix_logistic_loss(torch.randn(2, 9), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match="target shape"):
        r9y9.discretized_mix_logistic_loss(torch.randn(2, 9, 5), torch.zeros(2, 4, 1))
    with pytest.raises(TypeError, match="floating point"):
        r9y9.discretized_mix_logistic_loss(
            torch.zeros(2, 9, 5, dtype=torch.long), torch.zeros(2, 5, 1)
        )
    with pytest.raises(ValueError, match="single component"):
        r9y9.mix_gaussian_loss(torch.randn(2, 4, 5), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match="channels"):
        r9y9.sample_from_discretized_mix_logistic(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="channels"):
        r9y9.sample_from_mix_gaussian(torch.randn(2, 5, 5))


def test_pixelcnn_bad_inputs():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="49 channels"):
        pixelcnn.discretized_mix_logistic_loss(x, torch.zeros(1, 49, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        pixelcnn.discretized_mix_logistic_loss(x, torch.zeros(1, 50, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        pixelcnn.discretized_mix_logistic_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 50, 4, 4))
    with pytest.raises(ValueError, match="disagree"):
        pixelcnn.discretized_mix_logistic_loss(x, torch.zeros(1, 50, 4, 5))
    with pytest.raises(ValueError, match="nr_mix=4"):
        pixelcnn.sample_from_discretized_mix_logistic(torch.zeros(1, 50, 4, 4), 4)


def test_float16_promotes_to_float32_like_the_original():
    """Issue 12 item 9: the original's masks are ``.float()``: a half input gives a float32
    loss, and a sum that overflows float16 (65504) stays finite."""
    B, T = 2, 20000
    y_hat = torch.zeros(B, 3, T)
    y_hat[:, 2] = -3.0  # one logistic at 0 with scale e^-3: about 2.3 nats per element at K=256
    y = torch.zeros(B, T, 1)
    ref = r9y9.discretized_mix_logistic_loss(y_hat, y)
    out = r9y9.discretized_mix_logistic_loss(y_hat.half(), y.half())
    assert out.dtype == torch.float32
    assert torch.isfinite(out) and ref.item() > 65504
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=0)
    per = r9y9.discretized_mix_logistic_loss(y_hat.half(), y.half(), reduce=False)
    assert per.dtype == torch.float32


def test_pixelcnn_float16_promotes_to_float32_like_the_original():
    """pclucas14/pixel-cnn-pp blends with ``.float()`` masks, so a half input gives a float32
    loss; a sum beyond float16's 65504 stays finite (issue 12 item 9's sibling)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randint(0, 256, (4, 3, 32, 32), generator=g).float() / 127.5 - 1.0)
    l = torch.zeros(4, 10, 32, 32)  # M = 1: mean 0, log-scale 0 (~3 nats per value)
    ref = pixelcnn.discretized_mix_logistic_loss(x, l)
    out = pixelcnn.discretized_mix_logistic_loss(x.half(), l.half())
    assert out.dtype == torch.float32 and ref.item() > 65504 and torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=0)
