"""Pre-emphasis: the LP-WaveNet may model ``(x[t] - alpha x[t-1]) / (1 + alpha)``.

Consistent in every place the signal appears: the LPC (from the same mel, tilted), training's
target and past, the teacher-forced pictures, and synthesis, which de-emphasizes what it
generates (streaming piece by piece, bit for bit the offline result).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmol.audio.features import recipe_for
from dmol.audio.lpc import de_emphasis, lp_predict, lpc_from_mel, pre_emphasis, prediction_gain_db
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import WaveNetConfig, get_preset
from dmol.wavenet.synthesis import StreamingVocoder, synthesize_folded, synthesize_incremental

ALPHA = 0.85


def test_pre_and_de_emphasis_invert_each_other_and_stream():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1000, generator=g, dtype=torch.float64) * 2 - 1
    y = pre_emphasis(x, ALPHA)
    assert y.abs().max() <= 1.0  # the 1 / (1 + alpha) keeps [-1, 1] inside [-1, 1]
    assert torch.allclose(y[:, 1:], (x[:, 1:] - ALPHA * x[:, :-1]) / (1 + ALPHA), atol=0)
    assert torch.equal(y[:, 0], x[:, 0] / (1 + ALPHA))  # x[-1] = 0
    assert (de_emphasis(y, ALPHA) - x).abs().max() < 1e-14
    # piece by piece, each piece given the last output of the one before: bit for bit
    parts, prev = [], None
    for lo, hi in [(0, 1), (1, 400), (400, 400), (400, 1000)]:
        parts.append(de_emphasis(y[:, lo:hi], ALPHA, prev))
        prev = parts[-1][:, -1] if hi > lo else prev
    assert torch.equal(torch.cat(parts, 1), de_emphasis(y, ALPHA))
    # a piece that starts mid-signal: pre_emphasis's prev is x[-1]
    assert torch.equal(pre_emphasis(x[:, 10:], ALPHA, prev=x[:, 9]), y[:, 10:])
    assert pre_emphasis(x, 0.0) is x and de_emphasis(y, 0.0) is y


@pytest.mark.parametrize("alpha", [-0.1, 1.0, float("nan"), True, "0.85"])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="preemphasis"):
        pre_emphasis(torch.zeros(4), alpha)
    with pytest.raises(ValueError, match="preemphasis"):
        lpc_from_mel(torch.zeros(1, 3, 20), recipe_for("tiny"), 4, preemphasis=alpha)
    with pytest.raises(ValueError, match="preemphasis"):
        WaveNetConfig(preemphasis=alpha)


AR2 = np.array([-1.7554, 0.9025])  # poles at radius 0.95, 1 kHz at 16 kHz


def test_lpc_of_the_emphasized_signal_known_answer():
    """x is de-emphasized AR(2) noise, so its emphasized form is exactly the AR(2) process:
    the order-2 LPC with ``preemphasis`` finds the AR(2) coefficients from x's mel, the plain
    order-2 LPC (which must also fit the de-emphasis pole at 0 Hz) does not."""
    from scipy import signal

    recipe = recipe_for("small-16k")
    e = np.random.default_rng(0).standard_normal(2 * recipe.sample_rate)
    s = torch.from_numpy(signal.lfilter([1.0], np.r_[1.0, AR2], e))[None]
    x = de_emphasis(s, ALPHA)
    x = 0.5 * x / x.abs().max()
    assert (pre_emphasis(x, ALPHA) - s * 0.5 / de_emphasis(s, ALPHA).abs().max()).abs().max() \
        < 1e-12
    mel = torch.from_numpy(recipe.compute(x[0].float().numpy()))[None]
    est = lpc_from_mel(mel, recipe, 2, preemphasis=ALPHA)[0, 2:-2].double().mean(0).numpy()
    plain = lpc_from_mel(mel, recipe, 2)[0, 2:-2].double().mean(0).numpy()
    print(f"AR(2) {AR2}: from the mel with pre-emphasis {est}, without {plain}")
    assert np.abs(est - AR2).max() < 0.03
    assert np.abs(plain - AR2).max() > 0.07  # measured 0.105
    # order 16: the emphasized prediction explains the emphasized signal about as well as the
    # AR(2) filter itself (ideal gain of this AR(2): 15.6 dB)
    hop = recipe.hop_length
    xe = pre_emphasis(x, ALPHA)
    a16 = lpc_from_mel(mel, recipe, 16, preemphasis=ALPHA).double()
    gain = prediction_gain_db(xe, lp_predict(xe, a16, hop))
    true = prediction_gain_db(xe, lp_predict(xe, torch.from_numpy(
        np.tile(AR2, (1, mel.shape[1], 1))), hop))
    print(f"order-16 gain on the emphasized signal {gain:.2f} dB, true filter {true:.2f} dB")
    assert true - 1.5 < gain < true + 0.5


def pe_model(seed: int = 0, head: str = "mol") -> WaveNet:
    torch.manual_seed(seed)
    cfg, _ = get_preset("tiny", {"lpc_order": 8, "head": head, "preemphasis": ALPHA})
    model = WaveNet(cfg, recipe_for("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _mel(frames: int, seed: int) -> np.ndarray:
    """(frames, n_mels) tiny-recipe log-mel of a little noise-excited resonance."""
    rec = recipe_for("tiny")
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(frames * rec.hop_length), [1.0, 0.9, 0.5], "same")
    return rec.compute((0.1 * x).astype(np.float32))[:frames]


@pytest.mark.parametrize("head", ["mol", "gaussian"])
def test_synthesis_generates_the_emphasized_signal_and_deemphasizes_it(head):
    """With no randomness (temperature and scale temperature 0) every generated sample of the
    emphasized signal is the teacher-forced mode: the audio's emphasis read back through the
    model's own forward reproduces the engine's choices, so synthesis and training agree on
    the signal domain."""
    model = pe_model(1, head)
    mel = _mel(12, seed=2)
    audio = synthesize_incremental(model, mel, temperature=0.0, scale_temperature=0.0,
                                   backend="torch")
    signal = model.emphasize(torch.from_numpy(audio).double()).float()[None]
    with torch.no_grad():
        y_hat = model(signal, torch.from_numpy(mel.T)[None])
    mode = model.head.sample(y_hat, temperature=0.0, scale_temperature=0.0)
    assert float(signal.abs().max()) > 1e-3  # not trivially silent
    assert (mode - signal).abs().max().item() < 1e-4
    # and it is not the plain model's output: the emphasis was undone
    assert np.abs(audio - signal[0].numpy()).max() > 1e-3


def test_streaming_with_preemphasis_equals_offline():
    model = pe_model(3)
    mel, hop = _mel(30, seed=4), model.hop_length
    offline = synthesize_incremental(model, mel, seed=5, backend="torch")
    stream = StreamingVocoder(model, seed=5, backend="torch")
    got, received = [], 0
    for n in (1, 4, 0, 7, 2, 16):
        got.append(stream.push(mel[received:received + n]))
        received += n
    got.append(stream.flush())
    assert sum(map(len, got)) == 30 * hop
    assert np.array_equal(np.concatenate(got), offline)


def test_folded_with_preemphasis_deemphasizes_the_joined_signal():
    """One segment covering the utterance: folded's audio is the de-emphasis of the engine's
    signal, so emphasizing it back gives samples inside the heads' [-1, 1] range."""
    model = pe_model(4)
    mel = _mel(20, seed=6)
    audio = synthesize_folded(model, mel, seed=1, backend="torch", max_batch=4,
                              overlap_seconds=0.002)
    assert audio.shape == (20 * model.hop_length,) and np.isfinite(audio).all()
    signal = model.emphasize(torch.from_numpy(audio).double())
    assert float(signal.abs().max()) <= 1.0 + 1e-6


def test_training_step_reads_the_emphasized_signal():
    """The validation NLL of a pre-emphasis model is the head's NLL of the emphasized audio
    (its sum and mean over samples), not of the audio itself."""
    from dmol.wavenet.train import _validation_loss

    model = pe_model(5)
    rec = recipe_for("tiny")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16 * rec.hop_length)).astype(np.float32)
    mel = rec.compute(audio)[:16]
    got = _validation_loss(model, [("u", audio, mel)], torch.device("cpu"))
    x = torch.from_numpy(audio)[None]
    c = torch.from_numpy(mel.T.copy())[None]
    with torch.no_grad():
        xe = model.emphasize(x)
        want = float(model.head.nll(model(xe, c).float(), xe).double().mean())
        plain = float(model.head.nll(model(x, c).float(), x).double().mean())
    assert got == pytest.approx(want, rel=1e-9)
    assert abs(got - plain) > 1e-3


@pytest.mark.parametrize("head", ["mol", "mog"])
def test_lp_mixture_components_start_with_spread_scales(head):
    """An LP mixture head's components start from different log-scales (near silence to
    pulses) and slightly different means; without LP they start equal (INIT_LOG_SCALE)."""
    from dmol.wavenet.heads import INIT_LOG_SCALE, INIT_LP_LOG_SCALES

    M = 5
    lp = WaveNet(get_preset("tiny", {"lpc_order": 4, "head": head, "n_mixtures": M})[0],
                 recipe_for("tiny"))
    bias = lp.post[-1].bias.detach()
    assert torch.allclose(bias[2 * M:], torch.linspace(*INIT_LP_LOG_SCALES, M))
    means = bias[M:2 * M]
    assert torch.all(means[1:] > means[:-1]) and float(means.abs().max()) <= 0.01 + 1e-7
    plain = WaveNet(get_preset("tiny", {"head": head, "n_mixtures": M})[0]).post[-1].bias
    assert torch.all(plain[2 * M:] == INIT_LOG_SCALE)


def test_deemphasized_audio_is_clipped_to_the_unit_range():
    """An emphasized signal stuck at +1 (all means far above) de-emphasizes towards
    (1 + alpha) / (1 - alpha) = 12.3; the audio returned stays in [-1, 1], streaming and
    folded alike, and streaming still equals offline."""
    model = pe_model(6)
    M = model.cfg.n_mixtures
    with torch.no_grad():
        model.post_convs[-1].bias[M:2 * M].fill_(5.0)
        model.post_convs[-1].weight.zero_()
    mel = _mel(10, seed=7)
    offline = synthesize_incremental(model, mel, seed=0, backend="torch")
    assert offline.max() == 1.0 and offline.min() >= -1.0
    stream = StreamingVocoder(model, seed=0, backend="torch")
    got = [stream.push(mel[:3]), stream.push(mel[3:]), stream.flush()]
    assert np.array_equal(np.concatenate(got), offline)
    folded = synthesize_folded(model, mel, seed=0, backend="torch", max_batch=2,
                               overlap_seconds=0.002)
    assert folded.max() == 1.0 and folded.min() >= -1.0


def test_evaluate_reports_the_audio_nll_of_a_preemphasis_model():
    """dmol evaluate's NLL column is of the audio: for a pre-emphasis model, the NLL of the
    emphasized signal plus log(1 + alpha) (the Jacobian), not the model scored on raw audio."""
    from dmol.wavenet.evaluate import teacher_forced_bits

    model = pe_model(7)
    rec = recipe_for("tiny")
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(16 * rec.hop_length)).astype(np.float32)
    mel = rec.compute(audio)[:16]
    got = teacher_forced_bits(model, model.head, audio, mel)
    x = torch.from_numpy(audio)[None]
    with torch.no_grad():
        s = model.emphasize(x)
        nats = model.head.nll(model(s, torch.from_numpy(mel.T.copy())[None]), s).double().mean()
    want = (float(nats) + math.log1p(ALPHA)) / math.log(2)
    assert got == pytest.approx(want, rel=1e-12)
