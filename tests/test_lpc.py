"""dmol.audio.lpc: known answers for Levinson, LPC from the log-mel, the prediction itself.

* ``levinson`` on the exact autocorrelation of AR(2) and AR(4) processes (from the
  Yule-Walker equations, solved in float64) returns their coefficients and innovation power;
  an ill-conditioned or invalid r still gives a minimum-phase A(z) (reflection clamp).
* ``lpc_from_mel`` on a synthetic AR(2) process (scipy.signal.lfilter) recovers its
  coefficients from the mel alone, and the order-16 prediction gets close to the ideal gain.
* ``lp_predict`` is the per-sample formula with the nearest-centre frame, and causal.
* On real speech (the Asterisk prompts, when installed) the mel-derived prediction removes
  most of the signal's power, nearly as much as LPC computed from the audio itself.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg, signal

from dmol.audio.features import load_audio, recipe_for
from dmol.audio.lpc import levinson, lp_predict, lpc_from_mel, prediction_gain_db

RECIPE = recipe_for("small-16k")
ASTERISK = Path("/usr/share/asterisk/sounds/en")


def ar_coefficients(poles):
    """A(z) = prod (1 - p z^-1) = 1 + sum_k a_k z^-k for poles given as (radius, angle) pairs
    (each with its conjugate): returns a (order,), float64."""
    roots = []
    for radius, angle in poles:
        roots += [radius * np.exp(1j * angle), radius * np.exp(-1j * angle)]
    return np.real(np.poly(roots))[1:]


def ar_autocorrelation(a, sigma2, lags):
    """Exact autocorrelation r[0..lags] of x_t = -sum_k a_k x[t-k] + e_t, Var e = sigma2.

    Yule-Walker: r[k] + sum_j a_j r[|k - j|] = sigma2 [k == 0] for k = 0..p, a linear system
    in r[0..p]; beyond p the recursion r[k] = -sum_j a_j r[k - j]."""
    p = len(a)
    c = np.r_[1.0, a]
    system = np.zeros((p + 1, p + 1))
    for k in range(p + 1):
        for j in range(p + 1):
            system[k, abs(k - j)] += c[j]
    r = list(np.linalg.solve(system, np.r_[sigma2, np.zeros(p)]))
    for k in range(p + 1, lags + 1):
        r.append(-sum(a[j - 1] * r[k - j] for j in range(1, p + 1)))
    return np.array(r[: lags + 1])


AR2 = ar_coefficients([(0.95, 2 * math.pi * 1000 / 16000)])  # one formant at 1 kHz
AR4 = ar_coefficients([(0.9, 2 * math.pi * 0.05), (0.7, 2 * math.pi * 0.3)])


def _roots(a):
    """Roots of z^p A(z) = z^p + a_1 z^(p-1) + ... + a_p."""
    return np.roots(np.r_[1.0, np.asarray(a, dtype=np.float64)])


# -- levinson ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_true, sigma2", [(AR2, 1.0), (AR4, 0.37)])
def test_levinson_recovers_ar_coefficients(a_true, sigma2):
    p = len(a_true)
    r = torch.from_numpy(ar_autocorrelation(a_true, sigma2, p))
    a, err = levinson(r)
    assert a.shape == (p,) and a.dtype == torch.float64
    np.testing.assert_allclose(a.numpy(), a_true, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(err), sigma2, rtol=1e-10)
    # a higher order on the same process: the extra coefficients are 0, the error the same
    r12 = torch.from_numpy(ar_autocorrelation(a_true, sigma2, 12))
    a12, err12 = levinson(r12)
    np.testing.assert_allclose(a12.numpy(), np.r_[a_true, np.zeros(12 - p)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(err12), sigma2, rtol=1e-10)
    # and the same solution as a Toeplitz solve of the normal equations R a = -r[1:]
    rn = r12.numpy()
    np.testing.assert_allclose(a12.numpy(), linalg.solve_toeplitz(rn[:-1], -rn[1:]),
                               rtol=0, atol=1e-10)


def test_levinson_batched_shapes():
    """(..., order + 1) -> (..., order) and (...): every row its own recursion."""
    rows = [(AR2, 1.0), (AR2, 3.0), (AR4, 0.5), (AR4, 2.0), (np.r_[AR2, 0.0, 0.0], 0.1),
            (np.r_[-0.5, 0.0, 0.0, 0.0], 1.0)]
    r = torch.from_numpy(np.stack([ar_autocorrelation(a, s, 4) for a, s in rows]))
    r = r.reshape(2, 3, 5)
    a, err = levinson(r)
    assert a.shape == (2, 3, 4) and err.shape == (2, 3)
    for i, (a_true, s) in enumerate(rows):
        np.testing.assert_allclose(a.reshape(6, 4)[i].numpy(), np.r_[a_true, [0.0] * 4][:4],
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(float(err.reshape(6)[i]), s, rtol=1e-10)
        single, _ = levinson(r.reshape(6, 5)[i])
        torch.testing.assert_close(a.reshape(6, 4)[i], single, rtol=1e-14, atol=1e-14)


def _regularized(r):
    """r as lpc_from_mel prepares it: Gaussian lag window (40 Hz at 16 kHz), r[0] * (1 + 1e-4)."""
    k = np.arange(len(r))
    r = r * np.exp(-0.5 * (2 * math.pi * 40.0 * k / 16000) ** 2)
    r[0] *= 1 + 1e-4
    return r


def test_levinson_reflection_clamp_known_answer():
    """r = [1, 1] is a constant signal: the unclamped answer k = -1 leaves no error at all
    and A(z) = 1 - z^-1 a root on the unit circle; clamped, k = -0.9999 and the error
    1 - k^2 (in float32 to 2e-3: 1 - k^2 cancels, eps32 / 2e-4 = 6e-4)."""
    for dtype, rel in ((torch.float64, 1e-10), (torch.float32, 2e-3)):
        a, err = levinson(torch.tensor([1.0, 1.0], dtype=dtype))
        assert float(a[0]) == pytest.approx(-0.9999, abs=1e-7)
        assert float(err) == pytest.approx(1 - 0.9999**2, rel=rel)
        a, err = levinson(torch.tensor([1.0, -1.0], dtype=dtype))
        assert float(a[0]) == pytest.approx(0.9999, abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_levinson_stays_minimum_phase_on_ill_conditioned_r(dtype):
    """Near-singular autocorrelations at order 16: a constant (singular: the clamp binds at
    the first step), AR processes with poles at radius 0.999 and 0.9999 (Toeplitz condition
    numbers ~1e6..1e8), and singular sums of sinusoids once regularized as lpc_from_mel does.
    Finite coefficients, a non-negative error, A(z)'s roots strictly inside the unit circle
    (a stable synthesis filter). Measured largest root: 0.99999926 (constant), 0.9999
    (poles at 0.9999), 0.99834 (sinusoids, regularized)."""
    k = np.arange(17)
    cases = {
        "constant": np.ones(17),
        "AR(2), pole radius 0.999": ar_autocorrelation(ar_coefficients([(0.999, 0.4)]), 1.0, 16),
        "AR(2), pole radius 0.9999": ar_autocorrelation(ar_coefficients([(0.9999, 0.4)]), 1.0,
                                                        16),
        "AR(4), pole radii 0.999, 0.995": ar_autocorrelation(
            ar_coefficients([(0.999, 0.4), (0.995, 2.0)]), 1.0, 16),
        "sinusoid, regularized": _regularized(np.cos(0.3 * k)),
        "two sinusoids, regularized": _regularized(np.cos(0.3 * k) + np.cos(1.9 * k)),
        "constant, regularized": _regularized(np.ones(17)),
    }
    for name, r in cases.items():
        a, err = levinson(torch.tensor(r, dtype=dtype))
        assert bool(torch.isfinite(a).all()) and math.isfinite(float(err)), name
        assert float(err) >= 0, name
        assert np.abs(_roots(a.double().numpy())).max() < 1.0, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_levinson_stays_finite_on_singular_or_invalid_r(dtype):
    """What the docstring promises for r that is not positive definite: finite coefficients
    and a non-negative error power (not a minimum-phase A(z): a pure sinusoid's r gives a
    largest root of 1.07 in float64 once the clamp saturates, see levinson's docstring)."""
    k = np.arange(17)
    cases = {
        "sinusoid": np.cos(0.3 * k),
        "r1 > r0": np.r_[1.0, 1.5, 0.5, np.zeros(14)],
        "alternating": np.r_[1.0, np.tile([0.9, -0.9], 8)],
    }
    for name, r in cases.items():
        a, err = levinson(torch.tensor(r, dtype=dtype))
        assert bool(torch.isfinite(a).all()) and float(err) >= 0, name


# -- lpc_from_mel on a synthetic AR(2) process ---------------------------------------------------


@pytest.fixture(scope="module")
def ar2_signal():
    """2 s at 16 kHz of the AR(2) process, peak 0.5, its log-mel and the innovation power."""
    e = np.random.default_rng(0).standard_normal(32000)
    x = signal.lfilter([1.0], np.r_[1.0, AR2], e)
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)
    return x, RECIPE.compute(x)


def test_lpc_from_mel_recovers_ar2_coefficients(ar2_signal):
    """Measured (mean over frames 2..-2): a = [-1.7654, 0.9154] for the true
    [-1.7554, 0.9025], abs error 0.010 and 0.013 (0.6% and 1.4%); asserted < 0.03."""
    x, mel = ar2_signal
    a = lpc_from_mel(torch.from_numpy(mel)[None], RECIPE, order=2)
    assert a.shape == (1, mel.shape[0], 2) and a.dtype == torch.float32
    est = a[0, 2:-2].double().mean(0).numpy()
    print(f"AR(2) from the mel: {est}, true {AR2}, abs error {np.abs(est - AR2)}")
    assert np.abs(est - AR2).max() < 0.03
    # frame by frame too (the periodogram of one frame is noisy): 90% of frames within 0.06
    per_frame = np.abs(a[0, 2:-2].double().numpy() - AR2).max(1)
    assert np.quantile(per_frame, 0.9) < 0.06  # measured 0.033


def test_order16_prediction_gain_on_ar2_is_near_ideal(ar2_signal):
    """The ideal gain is r[0] / sigma2 (the innovation is all an optimal predictor leaves):
    15.59 dB. Measured: the order-16 prediction from the mel 14.92 dB (0.68 dB short: the mel
    carries nothing below fmin = 80 Hz or above fmax = 7.6 kHz), the true filter on this sample
    15.73 dB. Asserted: within 1 dB of ideal, and not above what the true filter achieves
    (plus 0.5 dB): more would mean the prediction peeks at the sample it predicts."""
    x, mel = ar2_signal
    r = ar_autocorrelation(AR2, 1.0, 2)
    ideal = 10 * math.log10(r[0])
    xt = torch.from_numpy(x).double()[None]
    a16 = lpc_from_mel(torch.from_numpy(mel)[None], RECIPE, order=16)
    gain = prediction_gain_db(xt, lp_predict(xt, a16, RECIPE.hop_length))
    true_a = torch.from_numpy(np.tile(AR2, (1, mel.shape[0], 1)))
    true_gain = prediction_gain_db(xt, lp_predict(xt, true_a, RECIPE.hop_length))
    print(f"AR(2): ideal {ideal:.2f} dB, true filter {true_gain:.2f} dB, "
          f"order-16 from the mel {gain:.2f} dB")
    assert abs(true_gain - ideal) < 0.5  # the sample is long enough for the theory to hold
    assert ideal - 1.0 < gain < true_gain + 0.5


# -- lp_predict ----------------------------------------------------------------------------------


def _predict_loop(x, a, hop):
    """p_t = -sum_k a[f(t), k-1] x[t-k], f(t) = min((t + hop//2) // hop, frames - 1), zeros
    before t = 0: one sample at a time."""
    B, T = x.shape
    frames, order = a.shape[1:]
    p = torch.zeros_like(x)
    for b in range(B):
        for t in range(T):
            f = min((t + hop // 2) // hop, frames - 1)
            acc = 0.0
            for k in range(1, order + 1):
                if t - k >= 0:
                    acc += float(a[b, f, k - 1]) * float(x[b, t - k])
            p[b, t] = -acc
    return p


@pytest.mark.parametrize("frames", [300 // 16, 7])  # T // hop (as recipe.compute), fewer
def test_lp_predict_equals_the_per_sample_formula(frames):
    g = torch.Generator().manual_seed(0)
    B, T, hop, order = 2, 300, 16, 5
    # dyadic values: every product and partial sum is exact in float64, so any summation
    # order gives the same bits and the comparison can be exact
    x = torch.randint(-1024, 1025, (B, T), generator=g).double() / 1024
    a = torch.randint(-64, 65, (B, frames, order), generator=g).double() / 64
    p = lp_predict(x, a, hop)
    assert p.shape == (B, T) and p.dtype == torch.float64
    assert torch.equal(p, _predict_loop(x, a, hop))
    # general float64 data: the same to rounding
    x = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1
    a = torch.randn(B, frames, order, generator=g, dtype=torch.float64)
    torch.testing.assert_close(lp_predict(x, a, hop), _predict_loop(x, a, hop), rtol=1e-13,
                               atol=1e-13)


def test_lp_predict_is_causal_with_finite_memory():
    g = torch.Generator().manual_seed(1)
    B, T, hop, order = 2, 200, 16, 8
    x = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1
    a = torch.randn(B, T // hop, order, generator=g, dtype=torch.float64)
    p = lp_predict(x, a, hop)
    for t0 in (0, 57, 150, T - 1):
        x2 = x.clone()
        x2[:, t0] += 0.5
        p2 = lp_predict(x2, a, hop)
        assert torch.equal(p2[:, : t0 + 1], p[:, : t0 + 1]), t0  # the past does not see x[t0]
        assert torch.equal(p2[:, t0 + order + 1:], p[:, t0 + order + 1:]), t0  # order samples
        if t0 + 1 < T:
            assert bool((p2[:, t0 + 1] != p[:, t0 + 1]).all()), t0  # the next one does


def test_lp_predict_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x must be \(B, T\) and a \(B, frames, order\)"):
        lp_predict(torch.zeros(10), torch.zeros(1, 2, 3), 4)
    with pytest.raises(ValueError, match=r"x must be \(B, T\)"):
        lp_predict(torch.zeros(2, 10), torch.zeros(1, 2, 3), 4)


def test_prediction_gain_known_answers():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)[None]
    assert prediction_gain_db(x, torch.zeros_like(x)) == 0.0
    assert prediction_gain_db(x, x / 2) == pytest.approx(20 * math.log10(2), abs=1e-12)
    assert prediction_gain_db(x, -x) == pytest.approx(-20 * math.log10(2), abs=1e-12)
    assert math.isfinite(prediction_gain_db(x, x))  # a perfect prediction: large, finite


# -- real speech ---------------------------------------------------------------------------------

#: A fixed spread of Asterisk's English prompts (G.722, 16 kHz), 0.8 to 6.9 s each.
PROMPTS = ["activated", "conf-locked", "confbridge-lock-extended", "dir-multi1",
           "pm-invalid-option", "spy-nbs", "vm-forward-multiple", "vm-password"]


def _lpc_from_audio(x, order=16):
    """Reference: per-frame LPC from the audio itself, framed like the mel (Hann window of
    n_fft samples centred on i * hop, zero padded), with the same lag window and white-noise
    correction as lpc_from_mel."""
    n, hop = RECIPE.n_fft, RECIPE.hop_length
    padded = np.pad(x.astype(np.float64), n // 2)
    window = np.hanning(n + 1)[:-1]
    frames = np.stack([padded[i * hop:i * hop + n] * window for i in range(len(x) // hop)])
    r = np.fft.irfft(np.abs(np.fft.rfft(frames, axis=1)) ** 2, n=n, axis=1)[:, : order + 1]
    k = np.arange(order + 1)
    r = r * np.exp(-0.5 * (2 * math.pi * 40.0 * k / RECIPE.sample_rate) ** 2)
    r[:, 0] *= 1 + 1e-4
    return levinson(torch.from_numpy(r))[0][None]


@pytest.mark.skipif(not ASTERISK.is_dir(), reason=f"no Asterisk prompts at {ASTERISK}")
def test_prediction_gain_on_real_speech():
    """Measured (order 16, small-16k): 16.6 to 23.4 dB per prompt, 20.9 dB over all eight;
    LPC from the audio itself 0.2 to 0.75 dB more (0.32 dB overall). Asserted with margins
    of ~4 dB on the gains and ~2x on the gap to audio LPC."""
    power = err_mel = err_audio = 0.0
    for name in PROMPTS:
        path = ASTERISK / f"{name}.g722"
        assert path.is_file(), f"{path} is missing from the Asterisk prompts"
        x = load_audio(path, RECIPE.sample_rate)
        xt = torch.from_numpy(x).double()[None]
        a = lpc_from_mel(torch.from_numpy(RECIPE.compute(x))[None], RECIPE, order=16)
        p_mel = lp_predict(xt, a, RECIPE.hop_length)
        p_audio = lp_predict(xt, _lpc_from_audio(x), RECIPE.hop_length)
        g_mel, g_audio = prediction_gain_db(xt, p_mel), prediction_gain_db(xt, p_audio)
        print(f"{name}: {len(x) / RECIPE.sample_rate:.2f} s, prediction gain from the mel "
              f"{g_mel:.2f} dB, from the audio {g_audio:.2f} dB")
        assert g_mel > 12.0, name
        assert g_mel > g_audio - 1.5, name
        power += float(xt.pow(2).sum())
        err_mel += float((xt - p_mel).pow(2).sum())
        err_audio += float((xt - p_audio).pow(2).sum())
    overall = 10 * math.log10(power / err_mel)
    overall_audio = 10 * math.log10(power / err_audio)
    print(f"all {len(PROMPTS)} prompts: from the mel {overall:.2f} dB, from the audio "
          f"{overall_audio:.2f} dB")
    assert overall > 17.0
    assert overall > overall_audio - 0.75


# -- input validation ----------------------------------------------------------------------------


def test_lpc_from_mel_shapes_and_inputs():
    g = torch.Generator().manual_seed(2)
    mel = torch.rand(2, 3, 10, RECIPE.n_mels, generator=g) * 4 - 6  # (..., frames, n_mels)
    a = lpc_from_mel(mel, RECIPE, order=6)
    assert a.shape == (2, 3, 10, 6) and a.dtype == torch.float32
    assert torch.equal(lpc_from_mel(mel[1, 2], RECIPE, order=6), a[1, 2])
    assert torch.equal(lpc_from_mel(mel[1, 2].numpy(), RECIPE, order=6), a[1, 2])  # numpy in
    for row in a.reshape(-1, 6).double().numpy():
        assert np.abs(_roots(row)).max() < 1.0  # every frame's filter is stable


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(log_mel=torch.zeros(10, 79)), ValueError, r"n_mels=80.*\(10, 79\)"),
        (dict(log_mel=torch.zeros(80)), ValueError, r"log_mel must be \(\.\.\., frames, n_mels"),
        (dict(log_mel=torch.zeros(10, 80, dtype=torch.long)), TypeError, "floating point"),
        (dict(order=0), ValueError, r"order must be an integer in \[1, 512\), got 0"),
        (dict(order=-3), ValueError, r"order must be an integer in \[1, 512\), got -3"),
        (dict(order=512), ValueError, r"order must be an integer in \[1, 512\), got 512"),
        (dict(order=2.5), ValueError, r"order must be an integer .* got 2\.5"),
        (dict(order=True), ValueError, r"order must be an integer .* got True"),
        (dict(recipe="small-16k"), TypeError, "recipe must be a MelRecipe, got str"),
    ],
)
def test_lpc_from_mel_rejects_bad_input(kwargs, exc, match):
    args = dict(log_mel=torch.zeros(10, 80), recipe=RECIPE, order=16)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        lpc_from_mel(args["log_mel"], args["recipe"], args["order"])


# -- the synthesis filter and training noise ------------------------------------------------------


def test_lp_synthesize_inverts_the_residual():
    from dmol.audio.lpc import lp_synthesize

    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 7, 16, generator=g, dtype=torch.float64) * 0.05
    e = torch.randn(3, 7 * 64 - 5, generator=g, dtype=torch.float64)
    y = lp_synthesize(e, a, 64)
    # e -> 1/A(z) -> A(z) gives e back, frame by frame, with the state carried across frames
    torch.testing.assert_close(y - lp_predict(y, a, 64), e, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="must be"):
        lp_synthesize(e[0], a, 64)


def test_excitation_noise_follows_the_excitation_level_and_is_seeded():
    from dmol.audio.lpc import excitation_noise

    recipe = recipe_for("small-16k")
    rng = np.random.default_rng(1)
    x = np.zeros(16000, np.float32)
    x[8000:] = rng.standard_normal(8000).astype(np.float32) * 0.2  # silence, then noise
    mel = torch.from_numpy(recipe.compute(x))[None]
    a = lpc_from_mel(mel, recipe, 16)
    xt = torch.from_numpy(x)[None]
    n1 = excitation_noise(xt, a, 256, 0.3, torch.Generator().manual_seed(0))
    n2 = excitation_noise(xt, a, 256, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(n1, n2)
    e_noise = n1 - lp_predict(n1, a, 256)  # back in the excitation domain
    e_true = xt - lp_predict(xt, a, 256)
    loud = slice(9000, 15000)
    ratio = float(e_noise[:, loud].std() / e_true[:, loud].std())
    assert 0.25 < ratio < 0.35, ratio  # level 0.3 of the excitation's rms
    assert float(n1[:, :7000].abs().max()) == 0.0  # silence: no excitation, no noise
    assert torch.equal(excitation_noise(xt, a, 256, 0.0), torch.zeros_like(xt))
