"""dmol.audio.features: the mel recipe, audio loading and the Griffin-Lim baseline."""

from __future__ import annotations

import json
import warnings

import G722
import librosa
import numpy as np
import pytest
import soundfile as sf
from threadpoolctl import threadpool_limits

from dmol.audio.features import (
    MEL_RECIPES,
    AudioInputWarning,
    CorruptAudioError,
    MelRecipe,
    griffin_lim,
    load_audio,
    recipe_for,
)

TINY = recipe_for("tiny")


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic(seconds: float, sr: int, f0: float = 220.0) -> np.ndarray:
    """A vowel-ish signal: five decaying harmonics under a Hann envelope."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.2 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6))
    return (x * np.hanning(len(t))).astype(np.float32)


# ---- the recipe ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MEL_RECIPES))
def test_recipe_round_trips_through_json(name):
    r = recipe_for(name)
    d = json.loads(json.dumps(r.to_dict()))
    assert MelRecipe.from_dict(d) == r
    assert isinstance(d["n_fft"], int) and isinstance(d["fmin"], float)


def test_presets_have_the_agreed_values():
    r = recipe_for("r9y9-ljspeech-mol")
    assert (r.sample_rate, r.n_fft, r.hop_length, r.win_length, r.n_mels) == (
        22050,
        1024,
        256,
        1024,
        80,
    )
    assert (r.fmin, r.fmax, r.log_floor) == (125.0, 7600.0, 1e-5)
    assert TINY.frame_rate == 16000 / 64


def test_from_dict_names_unknown_and_missing_keys():
    d = TINY.to_dict()
    with pytest.raises(ValueError, match="unknown keys \\['hop_size'\\]"):
        MelRecipe.from_dict({**d, "hop_size": 64})
    del d["n_mels"]
    with pytest.raises(ValueError, match="missing keys \\['n_mels'\\]"):
        MelRecipe.from_dict(d)
    # log_floor has a default, so older dicts without it still load
    d = TINY.to_dict()
    del d["log_floor"]
    assert MelRecipe.from_dict(d) == TINY


def test_recipe_rejects_nonsense_fields():
    with pytest.raises(ValueError, match="hop_length"):
        MelRecipe(16000, 512, 0, 512, 20, 0.0, 8000.0)
    with pytest.raises(ValueError, match="fmax"):
        MelRecipe(16000, 512, 64, 512, 20, 0.0, 9000.0)
    with pytest.raises(ValueError, match="win_length"):
        MelRecipe(16000, 512, 64, 1024, 20, 0.0, 8000.0)


def test_recipe_for_lists_known_names():
    with pytest.raises(ValueError, match="small-16k"):
        recipe_for("big")


@pytest.mark.parametrize("n", [64 * 3, 64 * 3 + 1, 64 * 4 - 1, 1000, 16000])
def test_frame_count_is_len_over_hop(n):
    x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    mel = TINY.compute(x)
    assert mel.shape == (n // 64, 20)
    assert mel.dtype == np.float32


def test_compute_matches_librosa_melspectrogram():
    r = recipe_for("small-16k")
    x = harmonic(0.5, r.sample_rate)
    ref = librosa.feature.melspectrogram(
        y=x,
        sr=r.sample_rate,
        n_fft=r.n_fft,
        hop_length=r.hop_length,
        win_length=r.win_length,
        center=True,
        pad_mode="constant",
        power=1.0,
        n_mels=r.n_mels,
        fmin=r.fmin,
        fmax=r.fmax,
    )
    ref = np.log(np.maximum(ref, r.log_floor)).T[: len(x) // r.hop_length]
    np.testing.assert_allclose(r.compute(x), ref, atol=1e-4)


def test_compute_gives_the_same_bits_under_any_blas_thread_count():
    # a threaded sgemm splits its sums by thread count: before the mel's matmul ran on one
    # BLAS thread, 2 threads changed ~0.2% of a speech mel's values by up to ~1e-6
    r = recipe_for("lp-16k-ltp")
    noise = np.random.default_rng(0).standard_normal(3 * r.sample_rate)
    x = harmonic(3.0, r.sample_rate) + 0.05 * np.tanh(noise).astype(np.float32)
    mels = []
    for threads in (1, 2, 4):
        with threadpool_limits(threads, user_api="blas"):
            mels.append(r.compute(x))
    for mel in mels[1:]:
        np.testing.assert_array_equal(mel, mels[0])


def test_tone_lands_in_its_mel_band_and_silence_at_the_floor():
    r = recipe_for("small-16k")
    mel = r.compute(tone(1000.0, 0.5, r.sample_rate))
    centres = librosa.mel_frequencies(r.n_mels + 2, fmin=r.fmin, fmax=r.fmax)[1:-1]
    peak_band = int(np.argmax(mel[5:-5].mean(0)))
    assert abs(centres[peak_band] - 1000.0) < 100.0
    silent = r.compute(np.zeros(4096, np.float32))
    np.testing.assert_array_equal(silent, np.full_like(silent, r.log_min))


def test_loud_signals_stay_below_log_max():
    rng = np.random.default_rng(0)
    for r in MEL_RECIPES.values():
        square = np.sign(tone(300.0, 0.3, r.sample_rate)).astype(np.float32)
        clicks = rng.choice([-1.0, 1.0], 8192).astype(np.float32)
        for x in (square, clicks, tone(1000.0, 0.3, r.sample_rate, amp=1.0)):
            assert r.compute(x).max() <= r.log_max


@pytest.mark.parametrize(
    ("audio", "err", "match"),
    [
        (np.zeros((2, 640), np.float32), ValueError, "1-D"),
        (np.zeros(640, np.int16), TypeError, "floating point"),
        (np.zeros(10, np.float32), ValueError, "fewer than one hop"),
        (np.full(640, np.nan, np.float32), ValueError, "NaN"),
        (np.full(640, 1.5, np.float32), ValueError, "peak magnitude 1.5"),
    ],
)
def test_compute_rejects_bad_audio(audio, err, match):
    with pytest.raises(err, match=match):
        TINY.compute(audio)


# ---- validate_mel --------------------------------------------------------------------------
def test_validate_mel_accepts_computed_mels_as_float32():
    mel = TINY.compute(harmonic(0.2, 16000)).astype(np.float64)
    out = TINY.validate_mel(mel)
    assert out.dtype == np.float32 and out.shape == mel.shape


@pytest.mark.parametrize(
    ("mel", "match"),
    [
        (np.zeros(20, np.float32), "2-D"),
        (np.zeros((10, 80), np.float32), "n_mels=20"),
        (np.zeros((20, 10), np.float32), "transposed"),
        (np.zeros((0, 20), np.float32), "0 frames"),
        (np.full((10, 20), np.nan, np.float32), "NaN"),
        (np.full((10, 20), -100.0, np.float32), "wrong normalization"),  # a dB mel
        (np.full((10, 20), 20.0, np.float32), "wrong normalization"),
    ],
)
def test_validate_mel_errors(mel, match):
    with pytest.raises(ValueError, match=match):
        TINY.validate_mel(mel)


# ---- load_audio ----------------------------------------------------------------------------
def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    x = tone(440.0, 1.0, 22050)
    sf.write(tmp_path / "a.wav", np.stack([x, x], axis=1), 22050)
    y = load_audio(tmp_path / "a.wav", 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440.0) < 2.0
    assert abs(np.abs(y).max() - 0.5) < 0.02


def test_load_audio_reads_flac_at_native_rate(tmp_path):
    x = tone(300.0, 0.25, 16000)
    sf.write(tmp_path / "a.flac", x, 16000)
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac", 16000), x, atol=1e-4)


def test_load_audio_decodes_g722(tmp_path):
    x = tone(440.0, 1.0, 16000)
    (tmp_path / "a.g722").write_bytes(G722.G722(16000, 64000).encode((x * 32767).astype(np.int16)))
    y = load_audio(tmp_path / "a.g722", 16000)
    assert len(y) == len(x)
    assert abs(np.argmax(np.abs(np.fft.rfft(y))) - 440) <= 1
    assert abs(np.sqrt(np.mean(y[1000:] ** 2)) - 0.5 / np.sqrt(2)) < 0.05


def test_load_audio_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CorruptAudioError, match="x.wav") as info:
        load_audio(bad, 16000)
    assert info.value.path == str(bad) and info.value.reason
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(CorruptAudioError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 16000)
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav", 16000)


def test_load_audio_scales_hot_float_files_instead_of_clipping(tmp_path):
    # a float WAV peaking at 4.0: its shape survives, only the gain changes
    x = tone(200.0, 0.5, 16000, amp=4.0)
    sf.write(tmp_path / "hot.wav", x, 16000, subtype="FLOAT")
    raw = load_audio(tmp_path / "hot.wav", 16000, peak=None)
    np.testing.assert_allclose(raw, x, atol=1e-6)  # kept as is
    y = load_audio(tmp_path / "hot.wav", 16000)  # default: fit into [-1, 1] by scaling
    assert np.abs(y).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1e-6)
    top = np.abs(y) > 0.999
    assert not (top[1:] & top[:-1]).any()  # single peak samples, no flat clipped plateau
    TINY.compute(y)  # usable as is
    # a file inside [-1, 1] is returned untouched
    sf.write(tmp_path / "ok.wav", x / 8, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "ok.wav", 16000), x / 8, atol=1e-6)


def test_load_audio_warns_when_integer_input_was_clipped_at_source(tmp_path):
    x = np.clip(tone(100.0, 0.5, 16000, amp=3.0), -1, 1)  # flat tops: clipped when recorded
    sf.write(tmp_path / "clipped.wav", x, 16000, subtype="PCM_16")
    with pytest.warns(AudioInputWarning, match="clipped.wav.*clipped") as rec:
        load_audio(tmp_path / "clipped.wav", 16000)
    assert rec[0].message.path == str(tmp_path / "clipped.wav")
    # a full-scale sine touches the rails now and then, but is not clipped
    sf.write(tmp_path / "full.wav", tone(440.0, 0.5, 16000, amp=1.0), 16000, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioInputWarning)
        load_audio(tmp_path / "full.wav", 16000)


def test_load_audio_reports_upsampling(tmp_path):
    sf.write(tmp_path / "phone.wav", tone(300.0, 0.5, 8000), 8000)
    with pytest.warns(AudioInputWarning, match="upsampled from 8000 Hz to 16000 Hz"):
        y = load_audio(tmp_path / "phone.wav", 16000)
    assert abs(len(y) - 8000) <= 1
    sf.write(tmp_path / "cd.wav", tone(300.0, 0.5, 44100), 44100)
    with warnings.catch_warnings():  # downsampling loses nothing the model could use
        warnings.simplefilter("error", AudioInputWarning)
        load_audio(tmp_path / "cd.wav", 16000)


# ---- Griffin-Lim ---------------------------------------------------------------------------
def test_griffin_lim_reproduces_the_mel():
    x = harmonic(0.5, 16000)
    mel = TINY.compute(x)
    y = griffin_lim(mel, TINY, n_iter=30)
    assert y.shape == (mel.shape[0] * TINY.hop_length,) and y.dtype == np.float32
    assert np.abs(y).max() <= 1.0
    loud = mel > TINY.log_min + 3  # bins the floor does not decide
    assert np.abs(TINY.compute(y) - mel)[loud].mean() < 0.4
    with pytest.raises(ValueError, match="n_mels"):
        griffin_lim(mel.T, TINY)
