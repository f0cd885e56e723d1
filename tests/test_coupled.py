"""dmol.coupled: exact, normalized channel-coupled discretized logistic mixture."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmol.compat import pixelcnn
from dmol.coupled import CoupledDiscretizedLogisticMixture as Coupled
from dmol.coupled import bits_per_dim, coupled_mix_logistic_loss
from dmol.logistic import DiscretizedLogisticMixture, bin_centre, mixture_nll_reference

DATA = Path(__file__).parent / "data"
RGB = np.load(DATA / "r9y9_pixelcnn_vectors.npz")
EXACT = np.load(DATA / "exact_logp_vectors.npz")


def _params(batch, c, m, *, seed=0, dtype=torch.float64, coeff_scale=2.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(
        logits=r(*batch, m) * 2,
        means=r(*batch, c, m),
        log_scales=r(*batch, c, m) * 2 - 1,  # scales from ~e^-7 to ~e^4
        coeffs=r(*batch, c * (c - 1) // 2, m) * coeff_scale,  # beyond tanh's range on purpose
    )


def _all_cells(k, c, dtype=torch.float64):
    grid = torch.arange(k, dtype=dtype) * 2 / (k - 1) - 1
    return torch.cartesian_prod(*[grid] * c).reshape(-1, c)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("k", [256, 65536])
def test_single_channel_equals_exact_1d_mixture(k):
    logits, means, log_scales = (
        torch.from_numpy(EXACT[f"exact_K{k}_{n}"]).double()
        for n in ("logits", "means", "log_scales")
    )
    y = torch.from_numpy(EXACT[f"exact_K{k}_bin"]).double() * 2 / (k - 1) - 1
    ref = torch.from_numpy(EXACT[f"exact_K{k}_logp"])
    d = Coupled(logits, means[:, None], log_scales[:, None], None, num_classes=k)
    lp = d.log_prob(y[:, None])
    torch.testing.assert_close(lp, ref, rtol=1e-10, atol=1e-12)  # vs 60-digit arithmetic
    # dmol.logistic's exact 1-D NLL (the unfused reference: no torch.compile warm-up here)
    one_d = -mixture_nll_reference(logits, means, log_scales, y, k)
    torch.testing.assert_close(lp, one_d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_normalized_over_all_cells_c3_k8(dtype, tol):
    # 3 bits per channel: 8^3 = 512 cells; strong couplings and scales from e^-7 to e^4.
    b, k = (2, 3), 8
    d = Coupled(**_params(b, 3, 5, seed=1, dtype=dtype), num_classes=k)
    cells = _all_cells(k, 3, dtype)[:, None, None, :].expand(-1, *b, 3)
    total = d.log_prob(cells).double().exp().sum(0)
    torch.testing.assert_close(total, torch.ones(b, dtype=torch.float64), rtol=0, atol=tol)


def test_normalized_over_all_cells_c2_k256():
    d = Coupled(**_params((2,), 2, 3, seed=2), num_classes=256)
    cells = _all_cells(256, 2)[:, None, :].expand(-1, 2, 2)
    total = d.log_prob(cells).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_channels_factor_when_uncoupled():
    # Without coupling and with M = 1 the joint is the product of 1-D masses.
    p = _params((4,), 3, 1, seed=3)
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    joint = Coupled(p["logits"], p["means"], p["log_scales"], None).log_prob(x)
    parts = sum(
        -mixture_nll_reference(p["logits"], p["means"][:, c], p["log_scales"][:, c], x[:, c], 256)
        for c in range(3)
    )
    torch.testing.assert_close(joint, parts, rtol=1e-12, atol=1e-12)


def test_agrees_with_pixelcnn_compat_on_reference_images():
    # On these 8-bit images every bin mass is > 1e-5 and the scales are >= e^-4.4, so none of
    # the compat approximations applies: the two agree up to float32 rounding in the reference
    # (48 sub-pixel terms of up to ~20 nats each, eps 6e-8 -> ~1e-4 nats) and the float32
    # grid error of x (<= 6e-8, magnified at most e^4.4 times). Observed: ~3.4e-4 nats on
    # totals of ~300 (1.2e-6 relative); asserted to 1e-5 relative.
    x, l = torch.from_numpy(RGB["rgb_M5_x"]), torch.from_numpy(RGB["rgb_M5_l"])
    ref = torch.from_numpy(RGB["rgb_M5_nll_per_image"])
    exact = coupled_mix_logistic_loss(x.double(), l.double(), reduction="none").sum((1, 2))
    diff = (exact - ref).abs()
    print(f"max |exact - PixelCNN++| per image: {diff.max().item():.3g} nats")
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=0)
    # The same in float32, and against the compat port run in float64 (pure rounding apart).
    torch.testing.assert_close(
        coupled_mix_logistic_loss(x, l, reduction="none").sum((1, 2)).double(),
        ref,
        rtol=1e-5,
        atol=0,
    )
    compat64 = torch.stack(
        [
            pixelcnn.discretized_mix_logistic_loss(x[i : i + 1].double(), l[i : i + 1].double())
            for i in range(len(x))
        ]
    )
    torch.testing.assert_close(exact, compat64, rtol=1e-6, atol=0)


def test_exact_differs_from_compat_only_where_the_fallback_bites():
    # One component, no coupling, scale e^-5 ~ 0.0067 (bin width 2/255 ~ 1.2 scales). G and B
    # sit next to their mean. R one bin out: both agree. R 34 bins (~40 scales) out: the bin
    # mass is ~e^-40 < 1e-5 and the compat code scores density * bin width instead.
    l = torch.zeros(1, 10, 1, 1, dtype=torch.float64)
    l[:, [2, 5, 8]] = -5.0  # the log_scale of each colour channel

    def both(r_bin):
        x = bin_centre(torch.tensor([r_bin, 128, 127]), 256, torch.float64).view(1, 3, 1, 1)
        exact = coupled_mix_logistic_loss(x, l, reduction="sum", log_scale_min=None)
        one_d = DiscretizedLogisticMixture(
            torch.zeros(1), torch.zeros(1), torch.full((1,), -5.0), 256
        ).log_prob(x.view(3).float())
        # exact = sum of three 1-D exact masses (1-D code run in float32: 1e-4 tolerance)
        torch.testing.assert_close(exact, -one_d.double().sum(), rtol=1e-5, atol=1e-4)
        return exact.item(), pixelcnn.discretized_mix_logistic_loss(x, l).item()

    exact, compat = both(129)
    assert abs(exact - compat) < 1e-9
    exact, compat = both(128 + 34)
    assert exact > 30 and abs(exact - compat) > 1e-2


# ---------------------------------------------------------------- gradients


def test_gradcheck_float64():
    p = _params((3,), 3, 2, seed=4, coeff_scale=0.7)
    x = torch.tensor([[-1.0, 0.2, 1.0], [0.5, -1.0, -0.3], [1.0, 1.0, 0.0]], dtype=torch.float64)
    args = tuple(
        t.requires_grad_() for t in (p["logits"], p["means"], p["log_scales"], p["coeffs"])
    )

    def f(logits, means, log_scales, coeffs):
        return Coupled(logits, means, log_scales, coeffs, num_classes=16).log_prob(x)

    assert torch.autograd.gradcheck(f, args, fast_mode=True)


def test_loss_gradients_reach_every_parameter_block():
    x, l = torch.from_numpy(RGB["rgb_M5_x"][:2]), torch.from_numpy(RGB["rgb_M5_l"][:2]).clone()
    l.requires_grad_()
    coupled_mix_logistic_loss(x, l).backward()
    assert torch.isfinite(l.grad).all()
    assert (l.grad.abs().sum((0, 2, 3)) > 0).all()  # logits, means, scales and coeffs all train


# ---------------------------------------------------------------- layout and loss


def test_from_pixelcnn_params_layout():
    m = 2
    l = torch.arange(10 * m, dtype=torch.float64).view(1, 10 * m, 1, 1).expand(2, -1, 3, 4) / 10
    d = Coupled.from_pixelcnn_params(l, log_scale_min=None)
    assert d.batch_shape == (2, 3, 4) and d.event_shape == (3,)
    v = torch.arange(10 * m, dtype=torch.float64) / 10
    torch.testing.assert_close(d.logits[0, 0, 0], v[:m])
    for c in range(3):
        block = v[m + 3 * m * c : m + 3 * m * (c + 1)]
        torch.testing.assert_close(d.means[0, 0, 0, c], block[:m])
        torch.testing.assert_close(d.log_scales[0, 0, 0, c], block[m : 2 * m])
        torch.testing.assert_close(d.coeffs[0, 0, 0, c], torch.tanh(block[2 * m :]))


def test_reductions_and_bits_per_dim():
    x, l = torch.from_numpy(RGB["rgb_M5_x"][:3]), torch.from_numpy(RGB["rgb_M5_l"][:3])
    none = coupled_mix_logistic_loss(x, l, reduction="none")
    assert none.shape == (3, 4, 4)
    total = coupled_mix_logistic_loss(x, l, reduction="sum")
    mean = coupled_mix_logistic_loss(x, l)
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, total / x.numel())  # per sub-pixel, not per pixel
    torch.testing.assert_close(bits_per_dim(x, l), mean / math.log(2))


def test_any_bit_depth_through_the_loss():
    # 5-bit images, K = 32: the loss is the class's log_prob on the same cells.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 32, (2, 3, 2, 2), generator=g).float() * 2 / 31 - 1
    l = torch.randn(2, 30, 2, 2, generator=g)
    d = Coupled.from_pixelcnn_params(l, num_classes=32)
    torch.testing.assert_close(
        coupled_mix_logistic_loss(x, l, num_classes=32, reduction="none"),
        -d.log_prob(x.movedim(1, -1)),
    )


def test_half_inputs_are_computed_in_float32():
    p = _params((4,), 3, 2, seed=6, dtype=torch.float32)
    x = torch.zeros(4, 3)
    d16 = Coupled(*(t.half() for t in p.values()))
    assert d16.log_prob(x.half()).dtype == torch.float32
    torch.testing.assert_close(
        d16.log_prob(x), Coupled(*(t.half().float() for t in p.values())).log_prob(x)
    )


# ---------------------------------------------------------------- sampling


def test_sample_shape_grid_and_seed():
    d = Coupled(**_params((2, 3), 3, 4, seed=7, dtype=torch.float32))
    a = d.sample((5,), generator=torch.Generator().manual_seed(0))
    b = d.sample((5,), generator=torch.Generator().manual_seed(0))
    c = d.sample((5,), generator=torch.Generator().manual_seed(1))
    assert a.shape == (5, 2, 3, 3) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    k = d.sample((5,), generator=torch.Generator().manual_seed(0), return_bins=True)
    assert k.dtype == torch.int64 and torch.equal(a, bin_centre(k, 256))


def test_sample_frequencies_match_log_prob():
    # K = 4, C = 2 (16 cells), strong coupling: empirical frequencies of 60000 draws agree with
    # exp(log_prob) within 5 binomial standard deviations for every cell.
    k, n = 4, 60000
    p = _params((), 2, 3, seed=8, coeff_scale=1.5)
    p["log_scales"] = p["log_scales"].clamp(-2.0, 0.0)
    d = Coupled(**p, num_classes=k)
    bins = d.sample((n,), generator=torch.Generator().manual_seed(9), return_bins=True)
    counts = torch.bincount(bins[:, 0] * k + bins[:, 1], minlength=k * k).double() / n
    probs = d.log_prob(_all_cells(k, 2)).exp()
    assert (counts - probs).abs().max() <= 5 * (probs * (1 - probs) / n).sqrt().max()
    assert probs.min() > 1e-3  # every cell is exercised


# ---------------------------------------------------------------- bad input


def test_bad_inputs():
    p = _params((2,), 3, 2, dtype=torch.float32)
    x, l = torch.zeros(1, 3, 4, 4), torch.zeros(1, 50, 4, 4)
    with pytest.raises(ValueError, match="49 channels"):
        coupled_mix_logistic_loss(x, torch.zeros(1, 49, 4, 4))
    with pytest.raises(ValueError, match="must lie in"):
        coupled_mix_logistic_loss(x + 1.5, l)
    with pytest.raises(ValueError, match="disagree"):
        coupled_mix_logistic_loss(x, torch.zeros(2, 50, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        coupled_mix_logistic_loss(x, l, reduction="avg")
    with pytest.raises(ValueError, match="1 to 3 channels"):
        coupled_mix_logistic_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 26, 2, 2))
    with pytest.raises(ValueError, match="num_classes"):
        coupled_mix_logistic_loss(x, l, num_classes=1)
    bad = dict(p, means=p["means"].clone())
    bad["means"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="means contains 1 NaN"):
        Coupled(**bad, validate_args=True)
    assert torch.isnan(Coupled(**bad, validate_args=False).log_prob(torch.zeros(2, 3))[0])
    with pytest.raises(ValueError, match="coeffs has shape"):
        Coupled(p["logits"], p["means"], p["log_scales"], p["coeffs"][:, :2])
    with pytest.raises(ValueError, match="shapes disagree"):
        Coupled(p["logits"], p["means"], p["log_scales"][:, :2], p["coeffs"])
    with pytest.raises(ValueError, match="must lie in"):
        Coupled(**p, validate_args=True).log_prob(torch.full((2, 3), -1.01))
    with pytest.raises(ValueError, match="C = 3 channels last"):
        Coupled(**p).log_prob(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="floating point"):
        Coupled(*(t.long() for t in p.values()))


# ---------------------------------------------------------------- the fused operator


def _reference_loss_and_grad(x, l, k, lsm, w):
    """The distribution's exact log_prob, evaluated in float64 on the same inputs, and its
    autograd gradient for the weights ``w``: the exact values, returned in l's dtype."""
    leaf = l.detach().double().requires_grad_()
    d = Coupled.from_pixelcnn_params(leaf, x.shape[1], num_classes=k, log_scale_min=lsm,
                                     validate_args=False)
    nll = -d.log_prob(x.double().movedim(1, -1))
    (g,) = torch.autograd.grad((nll * w.double()).sum(), leaf)
    return nll.detach().to(l.dtype), g.to(l.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c,k,lsm", [(3, 256, -7.0), (2, 65536, None), (1, 16, -3.0)])
def test_fused_loss_matches_the_exact_distribution(dtype, c, k, lsm):
    """coupled_mix_logistic_loss runs dmol::coupled_nll (C++ on the CPU): NLL to 1e-5 and its
    gradient w.r.t. the raw PixelCNN++ output (coefficients through their tanh) to 1e-4 of the
    float64 reference, with edge bins, clamped log-scales and a weighted incoming gradient."""
    g = torch.Generator().manual_seed(c * 7 + k)
    m, b, h, w_ = 4, 2, 5, 7
    l = torch.randn(b, m * (1 + 3 * c), h, w_, generator=g, dtype=dtype) * 1.5
    kk = torch.randint(0, k, (b, c, h, w_), generator=g)
    kk[0, :, 0, :2], kk[1, :, -1, -2:] = 0, k - 1
    x = bin_centre(kk, k, dtype)
    weights = torch.rand(b, h, w_, generator=g, dtype=dtype) + 0.5
    leaf = l.clone().requires_grad_()
    nll = coupled_mix_logistic_loss(x, leaf, num_classes=k, log_scale_min=lsm, reduction="none")
    (grad,) = torch.autograd.grad((nll * weights).sum(), leaf)
    ref, ref_grad = _reference_loss_and_grad(x, l, k, lsm, weights)
    assert nll.dtype == dtype and nll.shape == (b, h, w_)
    assert bool(((nll.detach() - ref).abs() <= 1e-5 * ref.abs() + 1e-5).all())
    scale = float(ref_grad.abs().max())
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4 * scale)
    # the reductions hand the kernel's pre-scaled gradient through unchanged
    for reduction, n in (("mean", x.numel()), ("sum", 1)):
        leaf = l.clone().requires_grad_()
        coupled_mix_logistic_loss(x, leaf, num_classes=k, log_scale_min=lsm,
                                  reduction=reduction).backward()
        ref_g = _reference_loss_and_grad(x, l, k, lsm, torch.full_like(weights, 1.0 / n))[1]
        torch.testing.assert_close(leaf.grad, ref_g, rtol=1e-4, atol=1e-4 * scale / n)


def test_fused_kernel_and_its_eager_version_agree():
    """The C++ kernel against the operator's eager implementation (what other devices and a
    machine without a compiler run), on a strided view of the output."""
    from dmol import coupled, fused

    assert fused.backend() == "native"
    g = torch.Generator().manual_seed(3)
    big = torch.randn(2, 40, 30, generator=g)
    l = big[:, 10:]  # (2, 30, 30): M = 3, C = 3, rows not contiguous as a whole
    x = bin_centre(torch.randint(0, 256, (2, 3, 30), generator=g), 256)
    got = coupled._coupled_cpu(l, x, 256, -7.0, 0.25, True)
    want = coupled._coupled_eager(l, x, 256, -7.0, 0.25, True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
