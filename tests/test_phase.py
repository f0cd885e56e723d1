"""The phase clock (dmol.audio.phase): the clock's known answer, the analysis phase of signals
with a known fundamental, the features, and the model's use of both. The engines' equality
with ``model.forward`` for a clock model runs in tests/test_pitch.py (kind "phase")."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import ltp_model, random_mel

from dmol.audio.phase import TABLE, analysis_phase, clock_phase, frame_phase, phase_features
from dmol.wavenet.presets import get_preset

SR, HOP = 16000, 64


def _cycles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of two phases in cycles, across the wrap."""
    d = torch.remainder(a - b, 1.0)
    return torch.minimum(d, 1.0 - d)


def test_clock_of_a_steady_f0_is_t_f0_over_sr():
    phi = clock_phase(torch.full((2, 50), 123.0), HOP, SR, start=0.25)
    t = torch.arange(50 * HOP, dtype=torch.float64)
    want = torch.remainder(0.25 + t * 123.0 / SR, 1.0)
    assert phi.dtype == torch.float64 and phi.shape == (2, 50 * HOP)
    assert _cycles(phi[0], want).max() < 1e-9 and torch.equal(phi[0], phi[1])
    assert phi.min() >= 0 and phi.max() < 1


def test_clock_changes_frequency_at_the_nearest_frame_centre():
    """Frame f's first hop - hop // 2 samples advance by f's F0, the rest by f + 1's, and the
    frame-by-frame recursion equals the whole utterance bit for bit."""
    from dmol.audio.lpc import _frame_of_sample

    f0 = torch.tensor([[100.0, 200.0, 150.0]])
    hop = 65  # odd: the halves differ (33 samples nearer this frame's centre, 32 the next's)
    phi = clock_phase(f0, hop, SR)
    steps = torch.remainder(phi.diff(), 1.0)[0] * SR  # Hz from sample t to t + 1
    # sample t advances by the F0 of its nearest frame, as the LPC of lp_predict
    nearest = f0[0, _frame_of_sample(3 * hop, 3, hop, torch.device("cpu"))].double()
    assert torch.allclose(steps, nearest[:-1])
    half = hop - hop // 2
    assert steps[half - 1] == pytest.approx(100.0) and steps[half] == pytest.approx(200.0)
    p, start = [], 0.0
    for i, fa in enumerate(f0[0].tolist()):
        piece, start = frame_phase(start, fa, f0[0, min(i + 1, 2)].item(), hop, SR)
        p.append(piece)
    assert torch.equal(torch.cat(p), phi[0])


@pytest.mark.parametrize("true_hz", [95.0, 151.0, 240.0])
def test_analysis_finds_the_fundamental_of_a_harmonic_signal(true_hz):
    """A signal with a known fundamental phase, demodulated at an estimate 3% off: the phase
    found is the fundamental's (away from the ends, where the window is cut)."""
    T = 80 * HOP
    t = torch.arange(T, dtype=torch.float64)
    true = torch.remainder(0.3 + t * true_hz / SR, 1.0)
    x = sum(0.6 ** k * torch.cos(2 * math.pi * k * true + k - 1) for k in range(1, 6))
    x = x + 0.01 * torch.randn(T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = torch.full((1, 80), true_hz * 1.03)
    got = analysis_phase(x[None].float(), est, HOP, SR)[0]
    inner = slice(SR // 30, T - SR // 30)
    assert _cycles(got, true)[inner].max() < 0.01
    # the clock alone drifts: 3% of a cycle per period
    assert _cycles(clock_phase(est, HOP, SR)[0], true)[inner].max() > 0.2


def test_silence_keeps_the_clock():
    est = torch.full((1, 10), 100.0)
    assert torch.equal(analysis_phase(torch.zeros(1, 10 * HOP), est, HOP, SR),
                       clock_phase(est, HOP, SR))


def test_features_are_cos_and_sin_of_each_harmonic():
    phi = torch.rand(2, 300, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f = phase_features(phi, 3)
    assert f.shape == (2, 6, 300) and f.dtype == torch.float32
    for k in range(1, 4):
        a = 2 * math.pi * k * phi
        tol = 2 * math.pi * k / TABLE  # the table's rounding
        assert (f[:, 2 * k - 2] - torch.cos(a)).abs().max() < tol
        assert (f[:, 2 * k - 1] - torch.sin(a)).abs().max() < tol
    # a phase and the same phase a whole cycle on: the same numbers
    assert torch.equal(phase_features(phi + 3.0, 3), f)


def test_phase_functions_refuse_bad_input():
    with pytest.raises(ValueError, match="f0 must"):
        clock_phase(torch.tensor([[100.0, 0.0]]), HOP, SR)
    with pytest.raises(ValueError, match="f0 must"):
        clock_phase(torch.tensor([100.0]), HOP, SR)
    with pytest.raises(ValueError, match="x must be"):
        analysis_phase(torch.zeros(1, 10), torch.full((1, 2), 100.0), HOP, SR)
    with pytest.raises(ValueError, match="harmonics"):
        phase_features(torch.zeros(1, 4), 0)


def test_config_checks_the_clock():
    assert get_preset("lp-16k-ltp", {"phase_harmonics": 3})[0].cond_channels == 86
    with pytest.raises(ValueError, match="needs an LP model"):
        get_preset("small-16k", {"phase_harmonics": 2})
    for bad in (-1, 17, True, 2.0):
        with pytest.raises(ValueError, match="phase_harmonics"):
            get_preset("lp-16k-ltp", {"phase_harmonics": bad})


def test_model_reads_the_clock_or_the_phase_it_is_given():
    """Default: the synthesis clock of the mel; training passes the analysis phase, which
    changes the output; a model without a clock refuses a phase."""
    model = ltp_model(1, phase=2)
    frames = 12
    mel = torch.from_numpy(random_mel(frames, 80, seed=3)).T[None].contiguous()
    x = torch.rand(1, frames * model.hop_length, generator=torch.Generator().manual_seed(0))
    x = 0.5 * (x - 0.5)
    with torch.no_grad():
        ref = model(x, mel)
        assert torch.equal(ref, model(x, mel, phase=model.clock_phase(mel)))
        other = model(x, mel, phase=model.analysis_phase(x, mel))
        assert (other - ref).abs().max() > 1e-3
        c = model.conditioning(mel)
        assert c.shape == (1, 80 + 4, frames * model.hop_length)
    with pytest.raises(ValueError, match="phase must be"):
        model(x, mel, phase=torch.zeros(1, 5))
    plain = ltp_model(1)
    with pytest.raises(ValueError, match="no phase clock"):
        plain(x, mel, phase=model.clock_phase(mel))


def test_validation_reads_the_phase_training_reads():
    """The trainer's validation NLL is the training objective: a clock model is given the
    recording's own (analysis) phase there, not the synthesis clock."""
    from dmol.wavenet.train import _validation_loss

    model = ltp_model(2, phase=2)
    frames = 16
    mel = random_mel(frames, 80, seed=4)  # (frames, n_mels), as a dataset stores it
    g = torch.Generator().manual_seed(1)
    audio = (0.5 * (torch.rand(frames * model.hop_length, generator=g) - 0.5)).numpy()
    got = _validation_loss(model, [("u", audio, mel)], torch.device("cpu"))
    x = model.emphasize(torch.from_numpy(audio)[None])
    c = torch.from_numpy(mel.T.copy())[None]
    with torch.no_grad():
        def nll(phase):
            return float(model.head.nll(model(x, c, phase=phase).float(), x).double().mean())
        want, clock = nll(model.analysis_phase(x, c)), nll(None)
    assert got == pytest.approx(want, rel=1e-6)
    assert abs(want - clock) > 1e-4  # the two phases give different losses: the test can fail
