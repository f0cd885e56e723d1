"""The pitch post-filter (dmol.audio.postfilter) and its place in synthesis."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from tests.helpers import ltp_model, random_mel

from dmol.audio.features import recipe_for
from dmol.audio.pitch import pitch_from_mel
from dmol.audio.postfilter import (
    EnvelopePostfilter,
    PitchPostfilter,
    envelope_postfilter,
    pitch_postfilter,
)
from dmol.wavenet import synthesis
from dmol.wavenet.synthesis import (
    ENVELOPE_PASSES,
    StreamingVocoder,
    synthesize_folded,
    vocode,
)

SR, HOP = 16000, 256


def pushed(stream: StreamingVocoder, mel: np.ndarray, sizes=(3, 10, 1, 31)) -> np.ndarray:
    """The stream's audio with the mel pushed in pieces of ``sizes`` frames (then the rest)."""
    out, i = [], 0
    for n in sizes:
        out.append(stream.push(mel[i:i + n]))
        i += n
    return np.concatenate([*out, stream.push(mel[i:]), stream.flush()])


def periodic(period: int, frames: int, seed: int = 0) -> np.ndarray:
    """Exactly periodic audio: one random cycle of ``period`` samples repeated."""
    cycle = np.random.default_rng(seed).uniform(-0.4, 0.4, period)
    return np.tile(cycle, frames * HOP // period + 1)[:frames * HOP]


def test_a_periodic_signal_passes_unchanged():
    # y = (x + g x[t - T]) / (1 + g) is x itself when x[t - T] = x[t]: once the history holds
    # a whole period, every frame is the input (the estimate 5% off: the lag is found anyway)
    x = periodic(80, 40)
    y = pitch_postfilter(x, np.full(40, SR / 80 * 1.05), SR, HOP, gain=0.5)
    assert np.abs(y[3 * HOP:] - x[3 * HOP:]).max() < 1e-6
    assert np.abs(y - x).max() > 1e-3  # the first frames: the lag reads the silence before


def test_noise_between_the_harmonics_is_attenuated_by_the_theory():
    # a periodic part plus white noise: the comb keeps the periodic part and passes the noise
    # with power (1 + g^2) / (1 + g)^2 (g = gain * correlation of that frame)
    rng = np.random.default_rng(1)
    s = periodic(100, 200, seed=2)
    n = 0.05 * rng.standard_normal(s.size)
    post = PitchPostfilter(SR, HOP, gain=0.5)
    y = post(s + n, np.full(200, SR / 100))
    lags, gains = [], []
    for i in range(200):  # the filter each frame chose, recomputed with a fresh filter
        p = PitchPostfilter(SR, HOP, gain=0.5)
        p._past[-(p._past.size):] = np.concatenate([np.zeros(p._past.size), s + n])[
            i * HOP:i * HOP + p._past.size]
        lag, g = p._choose(np.concatenate([p._past, (s + n)[i * HOP:(i + 1) * HOP]]),
                           p._past.size, 100.0)
        lags.append(lag)
        gains.append(g)
    assert set(lags[4:]) == {100}
    g = np.mean(gains[4:])
    assert 0.4 < g < 0.5  # correlation ~0.9 at this signal-to-noise ratio
    # the filter is linear: its output's noise is the filter applied to the noise alone
    err = y[8 * HOP:] - s[8 * HOP:]
    assert np.var(err) / np.var(n[8 * HOP:]) == pytest.approx((1 + g * g) / (1 + g) ** 2,
                                                              rel=0.05)


def test_without_an_estimate_every_period_is_searched():
    # f0=None (a mel too coarse for the estimator): the lag is found in the whole range
    for period in (40, 100, 260):
        x = periodic(period, 30, seed=period)
        y = pitch_postfilter(x, None, SR, HOP)
        assert np.abs(y[3 * HOP:] - x[3 * HOP:]).max() < 1e-6, period


def test_noise_alone_passes_unchanged():
    # white noise correlates with itself at no lag: below the threshold, g = 0
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 30 * HOP)
    y = pitch_postfilter(x, np.full(30, 120.0), SR, HOP)
    assert np.array_equal(y, x.astype(np.float32))


def test_gain_zero_is_the_identity_and_output_stays_in_range():
    x = periodic(123, 20) * 2.4  # peaks near +-1
    x = np.clip(x + np.random.default_rng(4).normal(0, 0.3, x.size), -1, 1)
    assert np.array_equal(pitch_postfilter(x, np.full(20, 130.0), SR, HOP, gain=0.0),
                          x.astype(np.float32))
    y = pitch_postfilter(x, np.full(20, 130.0), SR, HOP, gain=1.0)
    assert np.abs(y).max() <= 1.0 and np.abs(y - x).max() > 0.01


def test_pieces_give_the_same_numbers_as_the_whole():
    rng = np.random.default_rng(5)
    x = periodic(97, 37) + 0.02 * rng.standard_normal(37 * HOP)
    f0 = SR / 97 * rng.uniform(0.95, 1.05, 37)
    whole = pitch_postfilter(x, f0, SR, HOP)
    post, got, i = PitchPostfilter(SR, HOP), [], 0
    for n in (1, 0, 5, 2, 17, 12):
        got.append(post(x[i * HOP:(i + n) * HOP], f0[i:i + n]))
        i += n
    assert np.array_equal(np.concatenate(got), whole)


def test_a_lag_change_makes_no_click():
    # a smooth voiced-like signal whose period steps from 100 to 80 samples (phase
    # continuous): where the chosen lag changes, the first half of the frame crossfades from
    # the old filter to the new, so no step between samples grows beyond the signal's own
    f0 = np.r_[np.full(10 * HOP, 160.0), np.full(10 * HOP, 200.0)]
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = 0.3 * np.sin(phase) + 0.2 * np.sin(2 * phase + 1) + 0.1 * np.sin(3 * phase + 2)
    y = pitch_postfilter(x, np.r_[np.full(10, 160.0), np.full(10, 200.0)], SR, HOP)
    assert np.abs(np.diff(y)).max() < 1.2 * np.abs(np.diff(x)).max()


def test_bad_input_is_refused_with_a_clear_message():
    post = PitchPostfilter(SR, HOP)
    with pytest.raises(ValueError, match="audio has 3 frames .* f0 has shape"):
        post(np.zeros(3 * HOP), np.full(2, 100.0))
    with pytest.raises(ValueError, match="audio must be finite"):
        post(np.full(HOP, np.nan), np.full(1, 100.0))
    with pytest.raises(ValueError, match="f0 must be finite"):
        post(np.zeros(HOP), np.full(1, np.inf))
    with pytest.raises(ValueError, match="whole frames"):
        post(np.zeros((1, HOP)), np.full(1, 100.0))
    with pytest.raises(ValueError, match="whole frames"):
        post(np.zeros(HOP + 1), None)
    for kw, msg in (({"gain": 1.5}, "gain"), ({"threshold": 1.0}, "threshold"),
                    ({"search": 0.0}, "search"), ({"history": -1}, "history")):
        with pytest.raises(ValueError, match=msg):
            PitchPostfilter(SR, HOP, **kw)


@pytest.mark.parametrize("continuity", [0.0, 0.8])
def test_synthesis_applies_it_the_same_way_in_every_mode(monkeypatch, continuity):
    # a random tiny model's output is not periodic: with threshold 0 every frame is filtered
    monkeypatch.setattr(synthesis, "PitchPostfilter", functools.partial(PitchPostfilter,
                                                                        threshold=0.0))
    model = ltp_model(3, excitation=True, phase=2, continuity=continuity)
    mel = random_mel(45, 80, seed=9)
    raw = vocode(model, None, None, mel, seed=2, progress=False)
    post = vocode(model, None, None, mel, seed=2, progress=False, postfilter=0.5)
    assert post.shape == raw.shape and np.abs(post - raw).max() > 1e-3
    # the post-filter of the model's samples, with the model's F0 estimate of each frame
    f0 = model.f0(torch.from_numpy(mel).T[None]).numpy()[0]
    if continuity:  # tracked: not the per-frame estimate
        per_frame = pitch_from_mel(torch.from_numpy(mel)[None], model.recipe)[0][0].numpy()
        assert (f0 != per_frame).sum() > 5
    want = pitch_postfilter(raw, f0, model.cfg.sample_rate, model.hop_length, gain=0.5,
                            threshold=0.0)
    assert np.abs(post - want).max() < 1e-6
    # streaming, in pieces: the same numbers
    assert np.array_equal(pushed(StreamingVocoder(model, seed=2, postfilter=0.5), mel), post)
    # folded: the filter runs on the joined segments
    one = synthesize_folded(model, mel, seed=2, segment_seconds=10.0)
    one_post = synthesize_folded(model, mel, seed=2, segment_seconds=10.0, postfilter=0.5)
    want = pitch_postfilter(one, f0, model.cfg.sample_rate, model.hop_length, gain=0.5,
                            threshold=0.0)
    assert np.abs(one_post - want).max() < 1e-6
    for bad in (-0.1, 1.5, float("nan"), "x", "0.5", True, np.True_):
        with pytest.raises(ValueError, match="postfilter must be a gain"):
            vocode(model, None, None, mel, progress=False, postfilter=bad)


def test_the_command_lines_pass_the_gain_on(tmp_path, monkeypatch, capsys):
    import soundfile as sf
    from tests.test_synthesis import _tiny_run

    from dmol.cli.evaluate import main as evaluate_main
    from dmol.cli.vocode import main as vocode_main
    from dmol.wavenet.checkpoint import load_model

    monkeypatch.setattr(synthesis, "PitchPostfilter", functools.partial(PitchPostfilter,
                                                                        threshold=0.0))
    run, recipe = _tiny_run(tmp_path)
    mel = random_mel(30)
    np.save(tmp_path / "a.npy", mel)
    model, head, _, _ = load_model(run)

    def cli(gain, envelope="0"):
        out = tmp_path / f"g{gain}_{envelope}"
        assert vocode_main([str(run), str(tmp_path / "a.npy"), "--out", str(out), "--seed", "1",
                            "--no-progress", "--postfilter", gain, "--envelope", envelope]) == 0
        return sf.read(out / "a.wav", dtype="float32")[0]

    got, raw = cli("0.7"), cli("0")
    want = vocode(model, head, recipe, mel, seed=1, progress=False, postfilter=0.7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1 / 32768 + 1e-6)
    assert np.abs(got - raw).max() > 1e-3
    got = cli("0", "6")
    want = vocode(model, head, recipe, mel, seed=1, progress=False, envelope=6.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1 / 32768 + 1e-6)
    assert np.abs(got - raw).max() > 1e-3
    for flag, bads, msg in (("--envelope", ("-1", "nan", "inf"), "a finite gain in dB >= 0"),
                            ("--postfilter", ("1.5", "nan", "-1"), "a gain in [0, 1]")):
        for bad in bads:
            assert vocode_main([str(run), str(tmp_path / "a.npy"), "--out",
                                str(tmp_path / "x"), flag, bad]) == 2
            assert f"{flag} must be {msg}" in capsys.readouterr().err
            with pytest.raises(SystemExit):
                evaluate_main([str(run), str(tmp_path / "a.wav"), flag, bad])
            assert f"{flag} must be {msg}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---- the envelope post-filter ----------------------------------------------------------------
RECIPE = recipe_for("small-16k")


def speechlike(frames: int, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: harmonics of a gliding F0 under a moving envelope, quiet."""
    t = np.arange(frames * HOP) / SR
    f0 = 160 + 30 * np.sin(2 * np.pi * 1.3 * t)  # inside the filterbank (80 Hz up)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(h * phase + h) / h for h in range(1, 30))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed) ** 2
    x += 0.01 * np.random.default_rng(seed).standard_normal(x.size)
    return 0.05 * x / np.abs(x).max()


def test_audio_that_already_has_the_mel_passes_unchanged():
    x = speechlike(40)
    y = envelope_postfilter(x, RECIPE.compute(x), RECIPE)
    assert y.shape == x.shape and np.abs(y - x).max() < 1e-6


def test_the_output_takes_the_given_level_up_to_the_limit():
    # every band asked 6 dB (x2) louder: the output is twice the input; asked 20 dB with a
    # 6 dB limit: the same
    x = speechlike(40, seed=1)
    mel = RECIPE.compute(x)
    for ask, limit in ((np.log(2.0), 12.0), (np.log(10.0), 20 * np.log10(2.0))):
        y = envelope_postfilter(x, mel + ask, RECIPE, max_gain_db=limit)
        mid = slice(4 * HOP, -4 * HOP)
        assert np.abs(y[mid] - 2 * x[mid]).max() < 0.02 * np.abs(x).max()


def test_the_output_mel_moves_toward_the_given_one():
    # a flat-spectrum noise given a speech mel: one pass brings its mel closer, two closer still
    x = speechlike(60, seed=2)
    noise = 0.05 * np.random.default_rng(3).standard_normal(x.size)
    mel = RECIPE.compute(x)
    one = envelope_postfilter(noise, mel, RECIPE, max_gain_db=6)
    two = envelope_postfilter(one, mel, RECIPE, max_gain_db=6)
    err = [np.abs(RECIPE.compute(np.clip(s, -1, 1)) - mel).mean() for s in (noise, one, two)]
    assert err[0] > err[1] > err[2]


def test_envelope_pieces_give_the_same_numbers_as_the_whole():
    x = speechlike(37, seed=4)
    mel = RECIPE.compute(x) + np.random.default_rng(5).normal(0, 0.5, (37, RECIPE.n_mels))
    whole = envelope_postfilter(x, mel, RECIPE, max_gain_db=6)
    post, got, i, j = EnvelopePostfilter(RECIPE, max_gain_db=6), [], 0, 0
    # audio and mel in pieces that do not keep pace with each other
    for n_audio, n_mel in ((100, 1), (0, 3), (3 * HOP + 7, 0), (2000, 10), (5, 30)):
        got.append(post(x[i:i + n_audio], mel[j:j + n_mel]))
        i, j = i + n_audio, j + n_mel
    got.append(post(x[i:], mel[j:]))
    got.append(post.flush())
    assert np.array_equal(np.concatenate(got), whole)
    with pytest.raises(RuntimeError, match="flushed"):
        post(x[:HOP], mel[:1])


def test_envelope_bad_input_is_refused():
    post = EnvelopePostfilter(RECIPE)
    with pytest.raises(ValueError, match=r"mel must be \(frames, 80\)"):
        post(np.zeros(HOP), np.zeros((1, 20)))
    with pytest.raises(ValueError, match="finite"):
        post(np.zeros(HOP), np.full((1, 80), np.nan))
    with pytest.raises(ValueError, match="1-D"):
        post(np.zeros((2, HOP)), np.zeros((1, 80)))
    for bad in (0.0, -3.0, float("inf")):
        with pytest.raises(ValueError, match="max_gain_db"):
            EnvelopePostfilter(RECIPE, max_gain_db=bad)
    with pytest.raises(TypeError, match="MelRecipe"):
        EnvelopePostfilter("small-16k")


def test_synthesis_applies_the_envelope_the_same_way_in_every_mode():
    model = ltp_model(3, excitation=True, phase=2)
    recipe = model.recipe
    mel = random_mel(45, 80, seed=9)
    raw = vocode(model, None, None, mel, seed=2, progress=False)
    got = vocode(model, None, None, mel, seed=2, progress=False, envelope=6.0)
    want = raw
    for _ in range(ENVELOPE_PASSES):
        want = envelope_postfilter(want, mel, recipe, max_gain_db=6.0)
    assert got.shape == raw.shape and np.abs(got - raw).max() > 1e-3
    assert np.abs(got - want).max() < 1e-6
    stream = StreamingVocoder(model, seed=2, envelope=6.0)
    assert np.array_equal(pushed(stream, mel), got)
    assert stream.latency_samples == (stream.lookahead * model.hop_length
                                      + ENVELOPE_PASSES * (recipe.n_fft - model.hop_length))
    one = synthesize_folded(model, mel, seed=2, segment_seconds=10.0)
    one_env = synthesize_folded(model, mel, seed=2, segment_seconds=10.0, envelope=6.0)
    want = one
    for _ in range(ENVELOPE_PASSES):
        want = envelope_postfilter(want, mel, recipe, max_gain_db=6.0)
    assert np.abs(one_env - want).max() < 1e-6
    for bad in (-1.0, float("nan"), "x", "6", True, np.True_):
        with pytest.raises(ValueError, match="envelope must be"):
            vocode(model, None, None, mel, progress=False, envelope=bad)


def test_envelope_edges_neither_crash_nor_spike():
    # a mel longer than the audio (frames past the end are silence), audio longer than the
    # mel covers, and an odd n_fft: the output has the input's length and no sample grows
    # beyond what the gains allow (the overlap-add never divides by a vanishing window sum)
    from dmol.audio.features import MelRecipe

    x = speechlike(20, seed=6)
    for recipe, audio, frames in ((RECIPE, x, 22), (RECIPE, np.r_[x, x[:250]], 20),
                                  (MelRecipe(16000, 1023, 256, 1023, 80, 80.0, 7600.0), x, 20)):
        mel = recipe.compute(audio)[:frames] + 0.5
        mel = np.r_[mel, np.full((frames - len(mel), recipe.n_mels), -3.0)]
        y = envelope_postfilter(audio, mel, recipe, max_gain_db=6)
        assert y.shape == audio.shape
        assert np.abs(y).max() < 2.0 * np.abs(audio).max() + 1e-3


@pytest.mark.parametrize("hop", [200, 256, 300])
def test_envelope_latency_is_what_streaming_shows(hop):
    from dmol.audio.features import MelRecipe

    recipe = MelRecipe(16000, 1024, hop, 1024, 80, 80.0, 7600.0)
    post = EnvelopePostfilter(recipe)
    x = speechlike(48, seed=7)[:40 * hop]  # 48 frames of 256 samples: enough for hop 300
    mel = recipe.compute(x)
    got = [post(x[i * hop:(i + 1) * hop], mel[i:i + 1]).size for i in range(40)]
    # after the start, each frame in releases one frame out, ``latency`` samples behind
    assert 40 * hop - sum(got) == post.latency


def test_filters_refuse_bools_strings_and_fractions():
    for kw in ({"gain": True}, {"gain": "0.5"}, {"gain": None}, {"history": 1.5},
               {"threshold": np.True_}):
        with pytest.raises(ValueError):
            PitchPostfilter(SR, HOP, **kw)
    with pytest.raises(ValueError, match="whole number"):
        PitchPostfilter(16000.7, HOP)
    for bad in (True, "6", None):
        with pytest.raises(ValueError, match="max_gain_db"):
            EnvelopePostfilter(RECIPE, max_gain_db=bad)
    with pytest.raises(ValueError, match="real"):
        EnvelopePostfilter(RECIPE)(np.zeros(HOP, complex), np.zeros((1, 80)))
