"""dmol.audio.metrics on signals whose answers are known: copies, delays, noise, gains, tones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmol.audio.metrics import (
    MAX_TRIM,
    bits_per_sample,
    evaluate_pair,
    evaluate_pairs,
    f0_metrics,
    f0_track,
    log_mel_distance,
    mel_cepstral_distortion,
    metrics_table,
    multi_resolution_stft_distance,
    multi_resolution_stft_parts,
)

SR = 16000
KEYS = {"mcd_db", "log_mel_l1", "mrstft", "f0_rmse_hz", "f0_rmse_cents", "vuv_error",
        "vuv_voiced_to_unvoiced", "vuv_unvoiced_to_voiced"}


def harmonic(f0: float = 220.0, seconds: float = 0.75, sr: int = SR) -> np.ndarray:
    """A voiced-like signal: every harmonic up to Nyquist, amplitudes falling as 1/k.

    20 ms raised-cosine fades at both ends, as an utterance has: a tone cut off mid-cycle makes
    pitch trackers misread the last frames.
    """
    t = np.arange(int(seconds * sr)) / sr
    ks = np.arange(1, int(sr / 2 / f0) + 1)
    x = (np.sin(2 * np.pi * f0 * ks[:, None] * t) / ks[:, None]).sum(0)
    n = sr // 50
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return 0.5 * x / np.abs(x).max()


def with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(len(x))
    n *= math.sqrt(np.mean(x**2) / np.mean(n**2) / 10 ** (snr_db / 10))
    return np.clip(x + n, -1.0, 1.0)


def delayed(x: np.ndarray, ms: float) -> np.ndarray:
    d = int(ms * SR / 1000)
    return np.concatenate([np.zeros(d), x[:-d]])


X = harmonic()
NOISE = 0.1 * np.random.default_rng(1).standard_normal(len(X))

SPECTRAL = {
    "mcd": lambda r, g: mel_cepstral_distortion(r, g, SR, f0_method="dio"),
    "log_mel": lambda r, g: log_mel_distance(r, g, SR),
    "mrstft": multi_resolution_stft_distance,
}


# ---- known values --------------------------------------------------------------------------------
def test_identical_audio_scores_zero_everywhere():
    m = evaluate_pair(X, X.copy(), SR)  # Harvest, the default tracker
    assert set(m) == KEYS
    assert all(type(v) is float for v in m.values())
    assert m == dict.fromkeys(KEYS, 0.0)


def test_float32_input_and_sample_rate_pair():
    x32 = X.astype(np.float32)
    m = evaluate_pair(x32, x32, (SR, SR), f0_method="dio")
    assert m == dict.fromkeys(KEYS, 0.0)


def test_few_extra_samples_are_trimmed_from_the_tail():
    short = X[: len(X) - 100]
    for ref, gen in ((X, short), (short, X)):
        assert evaluate_pair(ref, gen, SR, f0_method="dio") == dict.fromkeys(KEYS, 0.0)


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_delay_and_noise_raise_distance_monotonically(name):
    d = SPECTRAL[name]
    assert d(X, X) == 0.0
    assert d(X, delayed(X, 5.0)) > 0.01
    clean, snr20, snr10 = d(X, with_noise(X, 40)), d(X, with_noise(X, 20)), d(X, with_noise(X, 10))
    assert 0.0 < clean < snr20 < snr10


def test_gain_change_known_values():
    # c0 carries the level and MCD leaves it out; on broadband noise every log-magnitude bin
    # shifts by exactly ln 2 and the spectral convergence ||X - X/2|| / ||X|| is exactly 1/2
    assert mel_cepstral_distortion(X, 0.5 * X, SR, f0_method="dio") < 0.01
    assert log_mel_distance(NOISE, 0.5 * NOISE, SR) == pytest.approx(math.log(2), abs=1e-4)
    sc, logmag = multi_resolution_stft_parts(NOISE, 0.5 * NOISE)
    assert sc == pytest.approx(0.5, abs=1e-6)
    assert logmag == pytest.approx(math.log(2), abs=1e-6)
    assert multi_resolution_stft_distance(NOISE, 0.5 * NOISE) == pytest.approx(0.5 + math.log(2))


def test_harmonic_f0_is_recovered_by_both_trackers():
    for method in ("harvest", "dio"):
        f0, times = f0_track(X, SR, method=method)
        assert f0.shape == times.shape
        assert np.mean(f0 > 0) > 0.9
        assert np.median(f0[f0 > 0]) == pytest.approx(220.0, rel=0.01)
    tone = 0.5 * np.sin(2 * np.pi * 150.0 * np.arange(SR // 2) / SR)
    f0, _ = f0_track(tone, SR, method="dio")
    assert np.median(f0[f0 > 0]) == pytest.approx(150.0, rel=0.01)


def test_detuned_copy_gives_its_pitch_error():
    m = f0_metrics(X, harmonic(220.0 * 1.01), SR)
    assert m["f0_rmse_cents"] == pytest.approx(1200 * math.log2(1.01), abs=0.5)  # 17.2 cents
    assert m["f0_rmse_hz"] == pytest.approx(2.2, abs=0.05)
    assert m["vuv_error"] < 0.02


def test_noise_against_voiced_is_mostly_a_voicing_error():
    for method in ("harvest", "dio"):
        assert f0_metrics(X, NOISE, SR, method=method)["vuv_error"] > 0.5


def test_voicing_error_splits_by_direction():
    """Voiced reference, noise generated: voiced -> unvoiced; swapped: the other direction. The
    two parts sum to the V/UV error."""
    for method in ("harvest", "dio"):
        lost = f0_metrics(X, NOISE, SR, method=method)
        hum = f0_metrics(NOISE, X, SR, method=method)
        assert lost["vuv_voiced_to_unvoiced"] > 0.5 > lost["vuv_unvoiced_to_voiced"]
        assert hum["vuv_unvoiced_to_voiced"] > 0.5 > hum["vuv_voiced_to_unvoiced"]
        for m in (lost, hum):
            parts = m["vuv_voiced_to_unvoiced"] + m["vuv_unvoiced_to_voiced"]
            assert parts == pytest.approx(m["vuv_error"], abs=1e-12)


def test_no_jointly_voiced_frame_gives_nan_pitch_error():
    m = f0_metrics(X, np.zeros_like(X), SR, method="dio")
    assert math.isnan(m["f0_rmse_hz"]) and math.isnan(m["f0_rmse_cents"])
    assert m["vuv_error"] > 0.9


def test_bits_per_sample():
    assert bits_per_sample(math.log(256)) == pytest.approx(8.0)
    np.testing.assert_allclose(bits_per_sample(np.array([math.log(2), 0.0])), [1.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        bits_per_sample(float("nan"))


# ---- the table -----------------------------------------------------------------------------------
def test_metrics_table_layout():
    table = metrics_table(
        {
            "WaveNet": {"mcd_db": 4.2, "f0_rmse_hz": float("nan")},
            "Griffin-Lim": {"mcd_db": 9.876, "f0_rmse_hz": 12.345, "vuv_error": 0.25},
        }
    )
    assert table.splitlines() == [
        "system       MCD [dB]  F0 RMSE [Hz]  V/UV error [frac]",
        "-----------  --------  ------------  -----------------",
        "WaveNet          4.20           n/a                  -",
        "Griffin-Lim      9.88         12.35             0.2500",
        "lower is better in every column",
    ]


def test_metrics_table_of_evaluate_pair_and_unknown_column():
    row = evaluate_pair(X, with_noise(X, 20), SR, f0_method="dio")
    lines = metrics_table({"noisy": row, "other": {"my_score": 1.23456}}).splitlines()
    for unit in ("[dB]", "[Np]", "MR-STFT", "[Hz]", "[cent]", "my_score"):
        assert unit in lines[0]
    assert lines[3].split()[-1] == "1.235"
    assert "lower is better" not in lines[-1]  # my_score's direction is unknown


def test_metrics_table_rejects_bad_rows():
    with pytest.raises(ValueError, match="empty"):
        metrics_table({})
    with pytest.raises(TypeError, match="dict of metric values"):
        metrics_table({"WaveNet": 4.2})


# ---- bad input -----------------------------------------------------------------------------------
BAD = [
    (X.reshape(1, -1), X, ValueError, "1-D mono audio"),
    (X, (X * 32767).astype(np.int16), TypeError, "int16"),
    (np.array([]), np.array([]), ValueError, "empty"),
    (np.where(np.arange(len(X)) == 7, np.nan, X), X, ValueError, "1 NaN/inf"),
    (X, 3.0 * X, ValueError, r"\[-1, 1\]"),
    (X, X[: len(X) - MAX_TRIM - 1], ValueError, "differ by more than MAX_TRIM"),
]


@pytest.mark.parametrize("fn", ["mcd", "log_mel", "mrstft", "f0", "all"])
@pytest.mark.parametrize(("ref", "gen", "exc", "match"), BAD)
def test_bad_audio_is_named(fn, ref, gen, exc, match):
    call = {
        "mcd": lambda: mel_cepstral_distortion(ref, gen, SR),
        "log_mel": lambda: log_mel_distance(ref, gen, SR),
        "mrstft": lambda: multi_resolution_stft_distance(ref, gen),
        "f0": lambda: f0_metrics(ref, gen, SR),
        "all": lambda: evaluate_pair(ref, gen, SR),
    }[fn]
    with pytest.raises(exc, match=match):
        call()


def test_other_sample_rate_is_caught():
    with pytest.raises(ValueError, match="sample rates differ: ref is at 16000 Hz, gen at 22050"):
        evaluate_pair(X, X, (16000, 22050))
    resampled = np.interp(np.arange(0, len(X), 16000 / 22050), np.arange(len(X)), X)
    with pytest.raises(ValueError, match="different sample rate"):
        log_mel_distance(X, resampled, SR)
    for sr in (0, -16000, 16000.0, True, "16000", (16000,)):
        with pytest.raises(ValueError, match="sr must be"):
            f0_metrics(X, X, sr)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown f0 method"):
        f0_metrics(X, X, SR, method="crepe")
    with pytest.raises(ValueError, match="f0_floor < f0_ceil"):
        f0_metrics(X, X, SR, f0_floor=500.0, f0_ceil=100.0)
    with pytest.raises(ValueError, match="alpha"):
        mel_cepstral_distortion(X, X, SR, alpha=1.5)
    with pytest.raises(ValueError, match="order"):
        mel_cepstral_distortion(X, X, SR, order=0)
    with pytest.raises(ValueError, match="win_length 1024 exceeds n_fft 512"):
        multi_resolution_stft_distance(X, X, resolutions=((512, 128, 1024),))
    with pytest.raises(ValueError, match=r"\(n_fft, hop, win_length\)"):
        multi_resolution_stft_distance(X, X, resolutions=((512, 128),))
    with pytest.raises(ValueError, match="resolutions is empty"):
        multi_resolution_stft_distance(X, X, resolutions=())
    with pytest.raises(ValueError, match="fewer than one hop"):
        log_mel_distance(X[:100], X[:100], SR)


@pytest.mark.parametrize("a", [0.2, 0.6])
def test_mcd_absolute_scale_known_answer(a):
    """Noise through H(z) = 1 - a z^-1: log H = -sum_d a^d / d z^-d, so (alpha = 0: plain
    cepstra) every frame differs by c_d = a^d / d and MCD = 10/ln 10 sqrt(2 sum_d c_d^2) dB
    (1.235 dB at a = 0.2, 3.879 at 0.6; measured within 0.3%). A wrong constant (20/ln 10, no
    factor 2, log power instead of log amplitude) is off by 41% or more."""
    from scipy.signal import lfilter

    d = np.arange(1, 25)
    want = 10 / math.log(10) * math.sqrt(2 * np.sum((a**d / d) ** 2))
    got = mel_cepstral_distortion(NOISE, lfilter([1, -a], [1], NOISE), SR, alpha=0.0,
                                  f0_method="dio")
    assert got == pytest.approx(want, rel=0.02)


def test_evaluate_pairs_equals_evaluate_pair_and_analyses_the_reference_once(monkeypatch):
    import dmol.audio.metrics as metrics

    gens = [with_noise(X, 20, seed=1), with_noise(X, 10, seed=2), with_noise(X, 20)[:-300]]
    expect = [evaluate_pair(X, g, SR, f0_method="dio") for g in gens]
    calls = []
    real = metrics._f0
    monkeypatch.setattr(metrics, "_f0", lambda x, *a: calls.append(len(x)) or real(x, *a))
    assert evaluate_pairs(X, gens, SR, f0_method="dio") == expect
    # three signals, and the reference twice: once at full length, once trimmed by 300
    assert sorted(calls) == sorted([len(X)] * 3 + [len(X) - 300] * 2)
    with pytest.raises(TypeError, match="list or tuple of 1-D signals, got ndarray"):
        evaluate_pairs(X, X, SR)
    calls.clear()
    with pytest.raises(ValueError, match=r"gens\[1\]: .*MAX_TRIM"):
        evaluate_pairs(X, [X, X[:-2000]], SR)
    assert calls == []  # every signal is checked before any analysis
