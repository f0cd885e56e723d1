"""Pitch from the mel and the pitch taps (a long-term predictor): the estimator on signals
with a known F0, the taps' indexing, and every synthesis path reading the same taps as
``model.forward``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.helpers import ltp_model, random_mel

from dmol.audio.features import recipe_for
from dmol.audio.pitch import (
    F0_MAX,
    F0_MIN,
    PitchTracker,
    check_f0_max,
    pitch_candidates,
    pitch_excitation_taps,
    pitch_from_mel,
    pitch_lags,
    pitch_scores,
    pitch_taps,
)
from dmol.wavenet.incremental import IncrementalWaveNet, lpc_per_sample
from dmol.wavenet.presets import get_preset
from dmol.wavenet.synthesis import (
    LPC_BLOCK,
    LpcFrames,
    StreamingVocoder,
    synthesize_folded,
    synthesize_incremental,
)

RECIPE = recipe_for("lp-16k")
# the engine tests run with signal taps alone, with their excitation too, and with both and
# a phase clock (dmol.audio.phase: two harmonics of conditioning); "tracked" adds a tracked
# pitch estimate (pitch_continuity) behind the taps and the clock, "learned" a learned
# estimate (pitch_net, random weights: some frames take it, the others the comb's) on top
KINDS = pytest.mark.parametrize("kind", ["signal", "excitation", "phase"])
TRACKED = pytest.mark.parametrize("kind", ["signal", "excitation", "phase", "tracked",
                                           "learned"])


def _ltp(seed: int, kind: str):
    return ltp_model(seed, excitation=kind != "signal",
                     phase=2 if kind in ("phase", "tracked", "learned") else 0,
                     continuity=0.8 if kind in ("tracked", "learned") else 0.0,
                     pitch_net=16 if kind == "learned" else 0)


def harmonic(f0: np.ndarray, sr: int, tilt: float = 0.7) -> np.ndarray:
    """A voiced-like signal: every harmonic below sr / 2 of a per-sample F0, amplitudes
    falling by ``tilt`` per harmonic."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros_like(f0)
    for h in range(1, int(sr / 2 / f0.min())):
        out += np.where(h * f0 < sr / 2, tilt ** h * np.sin(h * phase), 0.0)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [90.0, 150.0, 230.0, 330.0])
def test_steady_pitch_is_found(f0_hz):
    sr = RECIPE.sample_rate
    x = harmonic(np.full(sr, f0_hz), sr)
    f0, strength = pitch_from_mel(torch.from_numpy(RECIPE.compute(x)), RECIPE)
    inner = slice(3, -3)  # frames whose window lies inside the signal
    assert np.abs(f0[inner].numpy() / f0_hz - 1).max() < 0.02
    assert strength[inner].min().item() > 0.7
    lags = pitch_lags(f0, sr)
    assert lags.dtype == torch.int64 and abs(int(lags[10]) - round(sr / f0_hz)) <= 2


def test_gliding_pitch_is_followed_and_noise_is_weak():
    sr = RECIPE.sample_rate
    track = np.geomspace(110.0, 260.0, 2 * sr)
    x = harmonic(track, sr)
    f0, strength = pitch_from_mel(torch.from_numpy(RECIPE.compute(x)), RECIPE)
    hop = RECIPE.hop_length
    want = track[np.minimum(np.arange(len(f0)) * hop, len(track) - 1)]
    rel = np.abs(f0.numpy() / want - 1)[3:-3]
    assert np.median(rel) < 0.015 and rel.max() < 0.05
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    _, s_noise = pitch_from_mel(torch.from_numpy(RECIPE.compute(noise)), RECIPE)
    assert s_noise.median().item() < strength.median().item() - 0.3
    assert f0.min().item() >= F0_MIN and f0.max().item() <= F0_MAX


def test_estimator_checks_its_inputs():
    with pytest.raises(ValueError, match="too few"):
        pitch_from_mel(torch.zeros(3, 20), recipe_for("tiny"))
    with pytest.raises(ValueError, match="n_mels=80"):
        pitch_from_mel(torch.zeros(3, 20), RECIPE)
    with pytest.raises(TypeError, match="MelRecipe"):
        pitch_from_mel(torch.zeros(3, 80), "lp-16k")


def test_taps_read_one_period_back():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 700, generator=g)
    lags = torch.tensor([[50, 61, 70], [40, 100, 7]])
    hop = 256
    taps = pitch_taps(x, lags, hop, 5)
    assert taps.shape == (2, 5, 700)
    for b in range(2):
        for t in (0, 3, 45, 127, 128, 300, 383, 384, 699):
            lag = int(lags[b, min((t + hop // 2) // hop, 2)])
            for j in range(5):
                i = t - lag + j - 2
                assert taps[b, j, t].item() == (x[b, i].item() if i >= 0 else 0.0)
    with pytest.raises(ValueError, match="exceed"):
        pitch_taps(x, torch.full((2, 3), 2), hop, 5)
    with pytest.raises(ValueError, match="odd"):
        pitch_taps(x, lags, hop, 4)


def test_excitation_taps_are_the_lagged_residual_under_each_steps_lpc():
    """Known answer by the definition, sample by sample: e_t(s) = x[s] + sum_k a_k(t) x[s - k],
    s = t - L_t + j - K // 2, zeros before t = 0; and on an AR(2) signal whose own
    coefficients are given, the taps are its white innovation one period back."""
    g = torch.Generator().manual_seed(0)
    B, T, hop, frames, order, K = 2, 300, 16, 19, 4, 3
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    lags = torch.randint(3, 40, (B, frames), generator=g)
    a = torch.randn(B, frames, order, generator=g, dtype=torch.float64)
    got = pitch_excitation_taps(x, lags, a, hop, K)
    assert got.shape == (B, K, T)

    def at(b, i):
        return float(x[b, i]) if i >= 0 else 0.0

    for b in range(B):
        for t in (0, 5, 7, 8, 40, 151, 299):
            f = min((t + hop // 2) // hop, frames - 1)
            for j in range(K):
                s = t - int(lags[b, f]) + j - K // 2
                want = at(b, s) + sum(float(a[b, f, k - 1]) * at(b, s - k)
                                      for k in range(1, order + 1))
                assert got[b, j, t].item() == pytest.approx(want, abs=1e-12)
    # AR(2): x[t] = 1.3 x[t-1] - 0.6 x[t-2] + w[t]; with a = (-1.3, 0.6) the residual is w
    w = torch.randn(1, 4000, generator=g, dtype=torch.float64)
    ar = torch.zeros_like(w)
    for t in range(4000):
        ar[0, t] = w[0, t] + 1.3 * (ar[0, t - 1] if t else 0) - 0.6 * (ar[0, t - 2] if t > 1 else 0)
    coef = torch.tensor([-1.3, 0.6], dtype=torch.float64).expand(1, 250, 2)
    lag = torch.full((1, 250), 80)
    ex = pitch_excitation_taps(ar, lag, coef, 16, 5)
    t = torch.arange(200, 4000)
    for j in range(5):
        assert torch.allclose(ex[0, j, t], w[0, t - 80 + j - 2], atol=1e-12)
    with pytest.raises(ValueError, match="frames, order"):
        pitch_excitation_taps(x, lags, a[:, :-1], hop, K)
    with pytest.raises(ValueError, match="odd"):
        pitch_excitation_taps(x, lags, a, hop, 4)


def test_config_checks_pitch_taps():
    with pytest.raises(ValueError, match="odd"):
        get_preset("lp-16k", {"pitch_taps": 4})
    with pytest.raises(ValueError, match="LP model"):
        get_preset("tiny", {"pitch_taps": 3})
    cfg, _ = get_preset("lp-16k-ltp")
    assert cfg.pitch_taps == 5 and cfg.in_channels == 8
    assert get_preset("lp-16k-ltp", {"pitch_excitation": True})[0].in_channels == 13
    with pytest.raises(ValueError, match="pitch_excitation needs pitch taps"):
        get_preset("lp-16k", {"pitch_excitation": True})
    with pytest.raises(ValueError, match="True or False"):
        get_preset("lp-16k-ltp", {"pitch_excitation": 1})
    from dmol.wavenet.model import WaveNet

    with pytest.raises(ValueError, match="too few"):  # 20 bands cannot resolve harmonics
        WaveNet(get_preset("tiny", {"lpc_order": 8, "pitch_taps": 3})[0], recipe_for("tiny"))


def _mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.stack([random_mel(frames, 80, seed + s) for s in range(batch)])
                            ).transpose(1, 2).contiguous()


@pytest.mark.parametrize("amortize", [True, False])
@KINDS
def test_teacher_forced_engines_match_forward(backend, amortize, kind):
    """Fed the true samples over uneven chunks, every backend outputs model(x, mel): the taps
    come from the state's history across calls, up to the longest period."""
    model = _ltp(1, kind)
    B, F_ = 2, 14
    hop = model.hop_length
    mel = _mel(F_, B)
    x = torch.rand(B, F_ * hop, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    with torch.no_grad():
        ref, c = model(x, mel), model.conditioning(mel)
        a, lags = model.lpc(mel), model.pitch_lags(mel)
    assert int(lags.max()) > 150 and int(lags.min()) < 100  # long and short periods
    e = IncrementalWaveNet(model, backend=backend, amortize=amortize)
    state = e.new_state(B)
    parts = []
    for lo, hi in [(0, 1), (1, 5), (5, 300), (300, 301), (301, 700), (700, F_ * hop)]:
        _, p = e.run(state, c[..., lo:hi], teacher=x[:, lo:hi], return_params=True,
                     lpc=lpc_per_sample(a, lo, hi, hop, F_),
                     lags=lpc_per_sample(lags, lo, hi, hop, F_))
        parts.append(p)
    assert (torch.cat(parts, -1) - ref).abs().max().item() < 1e-5
    assert torch.equal(state.hist, x[:, -e.history:])


@KINDS
def test_free_running_taps_read_the_generated_past(backend, kind):
    """Free-running, the network saw its own samples: teacher forcing them gives the same
    parameters; and the engine refuses a call without lags or with lags out of range."""
    model = _ltp(2, kind)
    F_, hop = 10, model.hop_length
    mel = _mel(F_, seed=3)
    with torch.no_grad():
        c, a, lags = model.conditioning(mel), model.lpc(mel), model.pitch_lags(mel)
    e = IncrementalWaveNet(model, backend=backend)
    T = F_ * hop
    lpc, lag = lpc_per_sample(a, 0, T, hop, F_), lpc_per_sample(lags, 0, T, hop, F_)
    x, params = e.run(e.new_state(1), c, generator=torch.Generator().manual_seed(0),
                      lpc=lpc, lags=lag, return_params=True)
    assert x.abs().max().item() > 0.05
    with torch.no_grad():
        assert (params - model(x, mel)).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="lags"):
        e.run(e.new_state(1), c, lpc=lpc)
    with pytest.raises(ValueError, match="lags must lie"):
        e.run(e.new_state(1), c, lpc=lpc, lags=torch.full_like(lag, e.history))


@KINDS
def test_cpp_and_torch_draw_the_same_samples(cpp, kind):
    model = _ltp(3, kind)
    m = random_mel(9, 80, seed=4)
    a = synthesize_incremental(model, m, seed=3, backend="torch")
    b = synthesize_incremental(model, m, seed=3, backend="cpp")
    assert np.abs(a - b).max() < 1e-5
    assert np.array_equal(b, synthesize_incremental(model, m, seed=3, backend="cpp", threads=2))


@TRACKED
def test_streaming_equals_offline_and_folded_one_segment(backend, kind):
    model = _ltp(4, kind)
    mel, hop = random_mel(LPC_BLOCK + 7, 80, seed=1), model.hop_length
    offline = synthesize_incremental(model, mel, seed=4, backend=backend)
    stream = StreamingVocoder(model, seed=4, backend=backend)
    got, received = [], 0
    for n in (2, 1, 5, 0, 13, 1, 30, 9, 12, LPC_BLOCK):
        got.append(stream.push(mel[received:received + n]))
        received += n
    got.append(stream.flush())
    assert np.array_equal(np.concatenate(got), offline)
    one = synthesize_folded(model, mel, seed=4, segment_seconds=10.0, backend=backend)
    assert np.abs(one - offline).max() < 1e-5
    assert len(offline) == len(mel) * hop


@pytest.mark.parametrize("continuity,learned", [(0.0, 0), (0.8, 0), (0.0, 16)])
def test_lpc_frames_give_each_sample_the_lag_of_its_nearest_frame(continuity, learned):
    """Frames arriving one by one get the lags (and a tracked or learned estimate the F0) of
    the whole mel at once: the tracker is fed each frame once, in order, across LPC blocks."""
    model = ltp_model(5, continuity=continuity, phase=2, pitch_net=learned)
    F_, hop = 2 * LPC_BLOCK + 5, model.hop_length
    mel = _mel(F_, seed=7)
    with torch.no_grad():
        want = lpc_per_sample(model.pitch_lags(mel), 0, F_ * hop, hop, F_)
        f0 = model.f0(mel)[0]
    per_frame = pitch_lags(pitch_from_mel(mel.transpose(1, 2), model.recipe)[0], 16000)
    if continuity or learned:  # the track (the learned estimate) is not the comb's per frame
        assert (model.pitch_lags(mel) != per_frame).sum() > 5
    lf = LpcFrames(model)
    got, got_f0 = [], []
    for f in range(F_):
        received = min(F_, f + 2)
        got.append(lf.samples(mel[..., :received], 0, received, f,
                              F_ if received == F_ else None)[1])
        got_f0.append(lf.f0(mel[..., :received], 0, received, f))
    assert torch.equal(torch.cat(got, dim=1), want)
    assert torch.equal(torch.tensor(got_f0), f0)


def test_tracker_keeps_the_voice_through_a_one_frame_octave_error():
    """Known answer on scores: a voice at candidate 60 whose comb at twice the F0 scores a
    little higher for two frames. Frame by frame the estimate jumps an octave there; the
    track (0.8 per octave) stays; a lasting change of pitch is followed."""
    C = len(pitch_candidates(RECIPE))
    up = 60 + round(C / np.log2(F0_MAX / F0_MIN))  # one octave up
    s = torch.full((1, 30, C), 0.1, dtype=torch.float64)
    s[0, :, 60] = 0.9
    s[0, 10:12, up] = 0.95  # the octave error
    s[0, 20:, 60], s[0, 20:, up] = 0.3, 0.95  # the voice really jumps at frame 20
    f0 = pitch_candidates(RECIPE)
    alone, _ = PitchTracker(RECIPE, 0.0)(s)
    assert torch.equal(alone[0, 10:12], f0[[up, up]].float())
    tracked, score = PitchTracker(RECIPE, 0.8)(s)
    assert torch.equal(tracked[0, :20], f0[60].float().expand(20))
    assert torch.equal(tracked[0, 22:], f0[up].float().expand(8))  # 0.65 gained per frame
    assert torch.allclose(score[0, 10:12], torch.tensor([0.9, 0.9]).float())


def test_ramp_lets_weak_frames_jump_and_keeps_strong_frames_tracked():
    """Known answer: the voice at candidate 60 with a two-frame octave error (frames 10-11,
    best score 0.95) and a pause (frames 20-24) whose best comb wanders at random, scores
    <= 0.45. With the ramp (0.5, 0.8) the strong frames keep the track as without it, and
    the pause gets each frame's own best comb, where the full cost would carry the voice."""
    C = len(pitch_candidates(RECIPE))
    up = 60 + round(C / np.log2(F0_MAX / F0_MIN))
    s = torch.full((1, 30, C), 0.1, dtype=torch.float64)
    s[0, :, 60] = 0.9
    s[0, 10:12, up] = 0.95
    wander = [5, 150, 30, 190, 90]
    s[0, 20:25, 60] = 0.3
    for i, c in enumerate(wander):
        s[0, 20 + i, c] = 0.45
    f0 = pitch_candidates(RECIPE)
    ramped, _ = PitchTracker(RECIPE, 0.8, (0.5, 0.8))(s)
    full, _ = PitchTracker(RECIPE, 0.8)(s)
    alone, _ = PitchTracker(RECIPE, 0.0)(s)
    assert torch.equal(ramped[0, :20], f0[60].float().expand(20))  # the octave error tracked
    assert torch.equal(ramped[0, 20:25], alone[0, 20:25])  # the pause: per frame
    assert torch.equal(ramped[0, 20:25], f0[wander].float())
    assert torch.equal(full[0, 20:25], f0[60].float().expand(5))  # the full cost: a smooth hum
    assert torch.equal(ramped[0, 25:], f0[60].float().expand(5))
    # in between the cost is linear in the strength: frame 15 (best 0.65 an octave up, the
    # voice's comb 0.3) pays half the cost, 0.4 > 0.35 gained, and stays; a ramp (0.5, 0.95)
    # makes it pay a third, 0.27 < 0.35, and it jumps
    s[0, 15, 60], s[0, 15, up] = 0.3, 0.65
    assert PitchTracker(RECIPE, 0.8, (0.5, 0.8))(s)[0][0, 15] == f0[60].float()
    assert PitchTracker(RECIPE, 0.8, (0.5, 0.95))(s)[0][0, 15] == f0[up].float()
    ramped, _ = PitchTracker(RECIPE, 0.8, (0.5, 0.8))(s)
    # in pieces the same numbers, the strengths read frame by frame
    t = PitchTracker(RECIPE, 0.8, (0.5, 0.8))
    pieces = torch.cat([t(s[:, a:b])[0] for a, b in ((0, 11), (11, 21), (21, 30))], 1)
    assert torch.equal(pieces, ramped)


def test_ramp_is_checked_and_carried_by_the_config():
    for bad in ((0.8, 0.5), (0.5,), (0.5, 0.8, 0.9), (-2.0, 0.5), (0.5, float("nan")),
                (True, 0.8), "ab", 0.5):
        with pytest.raises(ValueError, match="ramp must be two numbers"):
            PitchTracker(RECIPE, 0.8, bad)
        with pytest.raises(ValueError, match="ramp must be two numbers"):
            get_preset("lp-16k-ltp", {"pitch_continuity": 0.8, "pitch_continuity_ramp": bad})
    with pytest.raises(ValueError, match="pitch_continuity_ramp needs a tracked estimate"):
        get_preset("lp-16k-ltp", {"pitch_continuity_ramp": (0.5, 0.8)})
    cfg, _ = get_preset("lp-16k-ltp", {"pitch_continuity": 0.8,
                                       "pitch_continuity_ramp": [0.5, 0.8]})
    assert cfg.pitch_continuity_ramp == (0.5, 0.8)
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # the model's estimate (taps, clock) follows it
    model = ltp_model(5, continuity=0.8, phase=2)
    mel = _mel(40, seed=7)
    plain = model.f0(mel)
    model.cfg.pitch_continuity_ramp = (0.9, 0.99)  # nearly every frame weak: per frame
    assert torch.equal(model.f0(mel), pitch_from_mel(mel.transpose(1, 2), model.recipe,
                                                     0.8, (0.9, 0.99))[0])
    assert not torch.equal(model.f0(mel), plain)


def test_tracker_in_pieces_equals_whole_and_zero_continuity_is_per_frame():
    sr = RECIPE.sample_rate
    rng = np.random.default_rng(3)
    x = harmonic(np.geomspace(120.0, 240.0, sr), sr) + 0.05 * rng.standard_normal(sr
                                                                                ).astype(np.float32)
    mel = torch.from_numpy(RECIPE.compute(x))[None]
    s = pitch_scores(mel, RECIPE)
    whole = pitch_from_mel(mel, RECIPE, 0.8)
    t = PitchTracker(RECIPE, 0.8)
    pieces = [t(s[:, a:b]) for a, b in ((0, 1), (1, 1), (1, 17), (17, s.shape[1]))]
    assert torch.equal(torch.cat([p[0] for p in pieces], 1), whole[0])
    assert torch.equal(torch.cat([p[1] for p in pieces], 1), whole[1])
    assert torch.equal(PitchTracker(RECIPE)(s)[0], pitch_from_mel(mel, RECIPE)[0])
    with pytest.raises(ValueError, match="leading shape"):
        t(s.expand(2, -1, -1))


def test_tracker_and_config_refuse_bad_continuity():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="continuity must be a finite number >= 0"):
            PitchTracker(RECIPE, bad)
        with pytest.raises(ValueError, match="pitch_continuity must be a number >= 0"):
            get_preset("lp-16k-ltp", {"pitch_continuity": bad})
    with pytest.raises(ValueError, match="pitch_continuity must be"):
        get_preset("lp-16k-ltp", {"pitch_continuity": True})
    with pytest.raises(ValueError, match="needs a pitch estimate to track"):
        get_preset("lp-16k", {"pitch_continuity": 0.5})
    with pytest.raises(ValueError, match=r"scores must be \(\.\.\., frames, 200\)"):
        PitchTracker(RECIPE, 0.5)(torch.zeros(3, 7))


@KINDS
def test_extreme_lags_read_the_ends_of_the_history(backend, kind):
    """Periods of taps // 2 + 1 (the shortest a tap may read) and history - taps // 2 (the
    oldest sample the state keeps) alternating frame by frame: the engine still equals
    model.forward, so the history is long enough and no tap reads x[t] itself."""
    model = _ltp(6, kind)
    F_, hop, B = 12, model.hop_length, 2
    e = IncrementalWaveNet(model, backend=backend)
    half = model.cfg.pitch_taps // 2
    lo, hi = half + 1, e.history - half - model.cfg.lpc_order * model.cfg.pitch_excitation
    extreme = torch.tensor([[lo, hi] * (F_ // 2), [hi, lo] * (F_ // 2)])
    model.pitch_lags = lambda mel: extreme  # what forward and the engine both read
    mel = _mel(F_, B, seed=11)
    x = torch.rand(B, F_ * hop, generator=torch.Generator().manual_seed(3)) - 0.5
    with torch.no_grad():
        ref, c, a = model(x, mel), model.conditioning(mel), model.lpc(mel)
    T = F_ * hop
    _, got = e.run(e.new_state(B), c, teacher=x, return_params=True,
                   lpc=lpc_per_sample(a, 0, T, hop, F_),
                   lags=lpc_per_sample(extreme, 0, T, hop, F_))
    assert (got - ref).abs().max().item() < 1e-5


@KINDS
def test_kernel_threads_split_by_streams_give_the_same_numbers(cpp, kind):
    """Folded synthesis runs several segments at once: two kernel threads then split the
    streams between them (each with its own history); the same numbers as one thread."""
    model = _ltp(7, kind)
    m = random_mel(16, 80, seed=8)
    kw = {"seed": 2, "segment_seconds": 0.05, "overlap_seconds": 0.01, "backend": "cpp"}
    one, two = (synthesize_folded(model, m, threads=th, **kw) for th in (1, 2))
    assert np.array_equal(one, two) and np.abs(one).max() > 0.01


def test_a_higher_ceiling_adds_candidates_and_keeps_the_others():
    """Candidates above 420 Hz continue the grid at its ratio; the 200 below are the same
    numbers whatever the ceiling, so a model whose estimate never goes above 420 Hz gets the
    same estimate with a higher ceiling (and older checkpoints, default 420, are unchanged)."""
    base = pitch_candidates(RECIPE)
    assert len(base) == 200 and abs(float(base[0]) - F0_MIN) < 1e-9
    assert abs(float(base[-1]) - F0_MAX) < 1e-9
    ratio = float(base[1] / base[0])
    for ceiling in (300.0, 420.0, 600.0, 1000.0):
        c = pitch_candidates(RECIPE, ceiling)
        n = min(len(c), 200)
        assert torch.equal(c[:n], base[:n]) and float(c[-1]) <= ceiling * (1 + 1e-12)
        assert ceiling / float(c[-1]) < ratio  # up to the ceiling, not one candidate short
        assert torch.allclose(c[1:] / c[:-1], torch.full((len(c) - 1,), ratio, dtype=c.dtype))
    x = harmonic(np.full(RECIPE.sample_rate, 180.0), RECIPE.sample_rate)
    mel = torch.from_numpy(RECIPE.compute(x))
    for continuity in (0.0, 0.8):
        a, sa = pitch_from_mel(mel, RECIPE, continuity)
        b, sb = pitch_from_mel(mel, RECIPE, continuity, f0_max=600.0)
        assert torch.equal(a, b) and torch.equal(sa, sb)


@pytest.mark.parametrize("f0_hz", [480.0, 540.0])
def test_a_voice_above_420_hz_is_found_with_a_higher_ceiling(f0_hz):
    """The built-in voice glides up to ~540 Hz: with the default ceiling the estimate is an
    octave low there (the comb at half the F0 has a tooth on every harmonic); with a ceiling of
    600 Hz it is the voice's F0, and the lags follow it."""
    sr = RECIPE.sample_rate
    x = harmonic(np.full(sr, f0_hz), sr)
    mel = torch.from_numpy(RECIPE.compute(x))
    inner = slice(3, -3)
    low, _ = pitch_from_mel(mel, RECIPE, 0.8)
    assert np.abs(low[inner].numpy() / (f0_hz / 2) - 1).max() < 0.03
    f0, strength = pitch_from_mel(mel, RECIPE, 0.8, f0_max=600.0)
    assert np.abs(f0[inner].numpy() / f0_hz - 1).max() < 0.02
    assert strength[inner].min().item() > 0.5
    assert abs(int(pitch_lags(f0, sr, 600.0)[10]) - round(sr / f0_hz)) <= 1
    assert int(pitch_lags(f0, sr)[10]) == round(sr / F0_MAX)  # the default clamps at 420 Hz


def test_the_ceiling_is_checked_and_carried_by_the_config():
    for bad in (100.0, 1200.0, float("nan"), "600", True):
        with pytest.raises(ValueError, match="pitch ceiling must be a number of Hz"):
            check_f0_max(bad)
        with pytest.raises(ValueError, match="pitch ceiling must be a number of Hz"):
            get_preset("lp-16k-ltp", {"pitch_ceiling": bad})
    with pytest.raises(ValueError, match="pitch_ceiling needs a pitch estimate"):
        get_preset("lp-16k", {"pitch_ceiling": 600.0})
    with pytest.raises(ValueError, match="pitch ceiling"):
        PitchTracker(RECIPE, 0.8, f0_max=2000.0)
    cfg, _ = get_preset("lp-16k-ltp", {"pitch_ceiling": 600})
    assert cfg.pitch_ceiling == 600.0 and type(cfg).from_dict(cfg.to_dict()) == cfg
    assert get_preset("lp-16k-ltp")[0].pitch_ceiling == F0_MAX


def test_every_synthesis_path_reads_the_higher_ceiling(backend):
    """A model with pitch_ceiling 600 on the mel of a 520 Hz voice: its own estimate, the
    frame-by-frame one of synthesis (LpcFrames) and the post-filter's are all above 420 Hz and
    equal; streaming equals offline synthesis, and teacher forcing the output gives the
    engine's parameters (the taps read 31 samples back)."""
    import dataclasses

    model = ltp_model(9, excitation=True, phase=2, continuity=0.8)
    model.cfg = dataclasses.replace(model.cfg, pitch_ceiling=600.0)
    sr, hop = model.cfg.sample_rate, model.hop_length
    x = harmonic(np.full(hop * (LPC_BLOCK + 12), 520.0), sr)
    mel = model.recipe.compute(x)  # (F, n_mels)
    F_ = len(mel)
    m = torch.from_numpy(mel).T[None].contiguous()
    f0 = model.f0(m)[0]
    assert (f0[3:-3] > 500).all() and (f0[3:-3] < 540).all()
    frames = LpcFrames(model)
    per_frame = torch.tensor([frames.f0(m, 0, F_, f) for f in range(F_)])
    assert torch.equal(per_frame, f0.double())
    assert torch.equal(model.pitch_lags(m)[0], pitch_lags(f0, sr, 600.0))
    lags_read = torch.cat([frames.samples(m, 0, F_, f, F_)[1] for f in range(F_)], dim=1)
    assert torch.equal(lags_read, lpc_per_sample(model.pitch_lags(m), 0, F_ * hop, hop, F_))
    from dmol.audio.postfilter import PitchPostfilter
    from dmol.wavenet.synthesis import _FrameF0, _postfilter

    post_f0 = _FrameF0(model)(m)
    assert np.array_equal(post_f0, f0.double().numpy())
    # the post-filter's comb at the voice's own period leaves a periodic signal nearly as it
    # is; clipped at 420 Hz it would search 34-42 samples back, not the period of 31
    audio, inner = x[:F_ * hop], slice(4 * hop, (F_ - 4) * hop)
    err = np.abs(_postfilter(model, 0.5)(audio, post_f0) - audio)[inner].mean()
    err420 = np.abs(PitchPostfilter(sr, hop, gain=0.5)(audio, post_f0) - audio)[inner].mean()
    assert err < 0.5 * err420  # 0.003 against 0.013
    offline = synthesize_incremental(model, mel, seed=5, backend=backend, postfilter=0.5)
    stream = StreamingVocoder(model, seed=5, backend=backend, postfilter=0.5)
    got = [stream.push(mel[i:i + 7]) for i in range(0, F_, 7)] + [stream.flush()]
    assert np.array_equal(np.concatenate(got), offline)
    raw = synthesize_incremental(model, mel, seed=5, backend=backend)
    e = IncrementalWaveNet(model, backend=backend)
    with torch.no_grad():
        c, a, lags = model.conditioning(m), model.lpc(m), model.pitch_lags(m)
    T = F_ * hop
    xt = torch.from_numpy(raw)[None]
    _, params = e.run(e.new_state(1), c, teacher=xt, return_params=True,
                      lpc=lpc_per_sample(a, 0, T, hop, F_),
                      lags=lpc_per_sample(lags, 0, T, hop, F_))
    with torch.no_grad():
        assert (params - model(xt, m)).abs().max().item() < 1e-5
    assert int(lags.min()) == round(sr / float(f0.max()))


def test_pitch_functions_refuse_bad_input():
    with pytest.raises(ValueError, match="finite"):
        pitch_lags(torch.tensor([100.0, float("nan")]), 16000)
    with pytest.raises(TypeError, match="integer"):
        pitch_taps(torch.zeros(1, 10), torch.full((1, 1), 50.0), 256, 3)
    assert pitch_taps(torch.zeros(2, 0), torch.full((2, 1), 50), 256, 3).shape == (2, 3, 0)
