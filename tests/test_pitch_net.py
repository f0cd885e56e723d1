"""The learned F0 estimate (dmol.audio.pitch_net): fitted on signals with a known F0 it finds
the F0 of new ones; harvest's targets line up with the mel frames; a frame's estimate does not
depend on the frames beside it; a vocoder takes it where it hears a pitch and the comb's
elsewhere; a bundle gets one with ``dmol export --fit-pitch``, a new run fits its own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tests.helpers import ltp_model, random_mel
from tests.test_pitch import harmonic

from dmol.audio.features import recipe_for
from dmol.audio.pitch import F0_MIN, pitch_from_mel
from dmol.audio.pitch_net import (
    N_BINS,
    MelPitchNet,
    fit_mel_pitch_net,
    harvest_f0,
    pitch_examples,
)
from dmol.wavenet.presets import get_preset

RECIPE = recipe_for("lp-16k")


def _tones(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n clips of 0.4 s: a harmonic tone with a random F0 (90-400 Hz, log-uniform), tilt and
    level, or (one in four) white noise, as (log-mel, F0 per frame, 0 for the noise)."""
    rng = np.random.default_rng(seed)
    sr, out = RECIPE.sample_rate, []
    for i in range(n):
        T = int(0.4 * sr)
        if i % 4 == 3:
            x = (0.1 * rng.standard_normal(T)).astype(np.float32)
            f0 = 0.0
        else:
            f0 = float(np.exp(rng.uniform(np.log(90), np.log(400))))
            x = harmonic(np.full(T, f0), sr, tilt=rng.uniform(0.5, 0.85))
        x = (x * rng.uniform(0.2, 1.0)).astype(np.float32)
        mel = RECIPE.compute(x)[2:-2]  # frames whose window lies inside the clip
        out.append((mel, np.full(len(mel), f0)))
    return out


@pytest.fixture(scope="module")
def fitted() -> MelPitchNet:
    return fit_mel_pitch_net(_tones(160, seed=0), RECIPE.n_mels, hidden=64, epochs=30,
                             progress=False)


def test_a_fitted_net_finds_the_f0_of_tones_it_never_heard(fitted):
    test = _tones(40, seed=1)
    mel = torch.from_numpy(np.concatenate([m for m, _ in test]))
    want = np.concatenate([f for _, f in test])
    f0, p_voiced = fitted.estimate(mel)
    voiced = want > 0
    cents = 1200 * np.abs(np.log2(f0.numpy()[voiced] / want[voiced]))
    assert np.median(cents) < 30 and np.mean(cents < 100) > 0.95
    assert np.mean((p_voiced.numpy() > 0.5) == voiced) > 0.95
    assert f0.dtype == torch.float32 and f0.shape == p_voiced.shape == (len(want),)


def test_the_same_seed_gives_the_same_weights_and_another_does_not():
    data = _tones(16, seed=2)
    a, b, c = (fit_mel_pitch_net(data, RECIPE.n_mels, hidden=8, epochs=2, seed=s,
                                 progress=False) for s in (0, 0, 1))
    wa, wb, wc = (n.net[0].weight for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_a_frame_gets_the_same_estimate_alone_as_among_others(fitted):
    mel = torch.from_numpy(random_mel(37, 80, seed=3))
    f0, p = fitted.estimate(mel)
    alone = [fitted.estimate(mel[i:i + 1]) for i in range(len(mel))]
    assert torch.equal(torch.cat([a for a, _ in alone]), f0)
    assert torch.equal(torch.cat([b for _, b in alone]), p)
    batched, _ = fitted.estimate(torch.stack([mel, mel.flip(0)]))
    assert torch.equal(batched[0], f0) and torch.equal(batched[1], f0.flip(0))


def test_new_weights_are_used_at_once():
    """The float64 copy of the weights is remade when they change (in place or loaded)."""
    net = MelPitchNet(80, 8)
    mel = torch.from_numpy(random_mel(5, 80, seed=8))
    before = net.estimate(mel)[1]
    with torch.no_grad():
        net.net[-1].bias[N_BINS] += 3.0  # more voiced everywhere
    assert (net.estimate(mel)[1] > before).all()
    other = MelPitchNet(80, 8)
    net.load_state_dict(other.state_dict())
    assert torch.equal(net.estimate(mel)[1], other.estimate(mel)[1])


def test_estimates_do_not_depend_on_the_level(fitted):
    mel = np.concatenate([m for m, _ in _tones(8, seed=4)])
    f0, p = fitted.estimate(torch.from_numpy(mel))
    f1, p1 = fitted.estimate(torch.from_numpy(mel + 2.0))  # x e^2 louder
    assert torch.allclose(f0, f1, rtol=1e-5) and torch.allclose(p, p1, atol=1e-5)


def test_harvest_targets_line_up_with_the_mel_frames():
    sr = RECIPE.sample_rate
    x = np.concatenate([harmonic(np.full(sr // 2, 180.0), sr), np.zeros(sr // 2, np.float32)])
    x = x[:len(x) // RECIPE.hop_length * RECIPE.hop_length]  # whole frames, as a dataset's
    f0 = harvest_f0(x, RECIPE)
    frames = len(RECIPE.compute(x))
    assert f0.shape == (frames,)
    half = frames // 2
    assert np.abs(f0[3:half - 3] / 180.0 - 1).max() < 0.02  # the tone, frame by frame
    assert (f0[half + 3:] == 0).all()  # silence: unvoiced
    [(mel, got)] = pitch_examples([(x, RECIPE.compute(x))], RECIPE, workers=1,
                                  progress=False)
    assert np.array_equal(got, f0) and mel.shape == (frames, RECIPE.n_mels)


def test_pitch_examples_on_worker_processes_equal_one_process():
    sr = RECIPE.sample_rate
    utts = [(x, RECIPE.compute(x)) for x in
            (harmonic(np.full(sr // 4, f), sr) for f in (120.0, 210.0, 300.0))]
    one = pitch_examples(utts, RECIPE, workers=1, progress=False)
    two = pitch_examples(utts, RECIPE, workers=2, progress=False)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(one, two, strict=True))


def test_bad_examples_and_shapes_are_refused():
    good = _tones(4, seed=5)
    with pytest.raises(ValueError, match="example 1: need log_mel"):
        fit_mel_pitch_net([good[0], (good[1][0][:, :10], good[1][1])], RECIPE.n_mels)
    with pytest.raises(ValueError, match="example 0: log_mel and f0 must be finite"):
        fit_mel_pitch_net([(good[0][0], -good[0][1])], RECIPE.n_mels)
    with pytest.raises(ValueError, match="both voiced"):
        fit_mel_pitch_net([good[0]], RECIPE.n_mels)  # a tone only
    with pytest.raises(ValueError, match="no examples"):
        fit_mel_pitch_net([], RECIPE.n_mels)
    with pytest.raises(ValueError, match=r"log_mel must be \(\.\.\., frames, 80\)"):
        MelPitchNet(80, 8).estimate(torch.zeros(3, 20))
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        MelPitchNet(80, 0)


def test_the_config_checks_pitch_net():
    assert get_preset("lp-16k-ltp", {"pitch_net": 64})[0].pitch_net == 64
    for bad in (-1, True, 2.5, 5000):
        with pytest.raises(ValueError, match="pitch_net must be an integer"):
            get_preset("lp-16k-ltp", {"pitch_net": bad})
    with pytest.raises(ValueError, match="pitch_net > 0 needs a pitch estimate"):
        get_preset("lp-16k", {"pitch_net": 64})
    assert get_preset("lp-16k-ltp", {"pitch_net_voicing": 0.8})[0].pitch_net_voicing == 0.8
    for bad in (1.0, -0.1, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="pitch_net_voicing must be a probability"):
            get_preset("lp-16k-ltp", {"pitch_net_voicing": bad})


def _force(model, voiced: bool | float, bin_: int = 100) -> None:
    """Make the model's learned estimate say ``bin_`` in every frame, voiced (a float: with
    that voicing logit) or unvoiced."""
    last = model.pitch_net.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-30.0)
        last.bias[bin_] = 30.0
        last.bias[N_BINS] = float(voiced) if not isinstance(voiced, bool) else (
            30.0 if voiced else -30.0)


def test_the_vocoder_takes_the_learned_estimate_only_where_it_hears_a_pitch():
    model = ltp_model(6, phase=2, pitch_net=16)
    mel = torch.from_numpy(random_mel(20, 80, seed=6)).T[None].contiguous()
    comb, _ = pitch_from_mel(mel.transpose(1, 2), model.recipe)
    _force(model, voiced=False)
    assert torch.equal(model.f0(mel), comb)
    _force(model, voiced=True, bin_=100)  # 50 Hz * 2^(100 / 48) = 211.9 Hz
    assert torch.allclose(model.f0(mel), torch.full_like(comb, 50.0 * 2 ** (100 / 48)))
    _force(model, voiced=True, bin_=0)  # 50 Hz: below the comb's range, clamped to it
    assert torch.equal(model.f0(mel), torch.full_like(comb, F0_MIN))
    _force(model, voiced=1.0, bin_=0)  # p_voiced = sigmoid(1) = 0.73: the threshold decides
    assert torch.equal(model.f0(mel), torch.full_like(comb, F0_MIN))
    model.cfg = dataclasses.replace(model.cfg, pitch_net_voicing=0.8)
    assert torch.equal(model.f0(mel), comb)
    # random weights: some frames each way, and the lags follow
    model = ltp_model(7, phase=2, pitch_net=16)
    _, p = model.pitch_net.estimate(mel.transpose(1, 2))
    assert 0 < int((p > 0.5).sum()) < p.numel()
    f0 = model.f0(mel)
    assert torch.equal(f0[p <= 0.5], comb[p <= 0.5]) and not torch.equal(f0, comb)


def test_the_learned_net_is_frozen_kept_apart_and_does_not_change_the_network():
    a = ltp_model(8, phase=2)
    b = ltp_model(8, phase=2, pitch_net=16)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())  # same initial network
    assert set(sb) - set(sa) == {f"pitch_net.{k}" for k in b.pitch_net.state_dict()}
    assert not any(p.requires_grad for p in b.pitch_net.parameters())
    assert a.num_parameters == b.num_parameters


TINY = {"max_steps": 1, "batch_size": 1, "segment_length": 1024, "layers": 2, "stacks": 1,
        "residual_channels": 4, "gate_channels": 4, "skip_channels": 4, "val_interval": 1}


@pytest.fixture(scope="module")
def gliding(tmp_path_factory):
    """A dataset of 6 gliding tones (each followed by noise), preprocessed for lp-16k."""
    import soundfile as sf

    from dmol.audio.corpus import preprocess

    root = tmp_path_factory.mktemp("glide")
    sr, rng = RECIPE.sample_rate, np.random.default_rng(0)
    (root / "raw").mkdir()
    for i in range(6):
        f = np.exp(np.linspace(*np.log(rng.uniform(100, 300, 2)), sr // 2))
        noise = 0.05 * rng.standard_normal(sr // 4).astype(np.float32)
        sf.write(root / "raw" / f"u{i}.wav", np.concatenate([harmonic(f, sr), noise]), sr)
    preprocess(root / "raw", root / "data", "lp-16k", min_val=1, trim_db=None, progress=False)
    return root / "data"


def test_a_new_run_fits_its_pitch_net_and_resumes_it(gliding, tmp_path):
    from dmol.audio.corpus import list_split, load_utterance
    from dmol.wavenet.checkpoint import load_checkpoint, load_model
    from dmol.wavenet.train import train

    train(gliding, tmp_path / "run", "lp-16k-ltp", overrides={**TINY, "pitch_net": 32},
          progress=False, tensorboard=False)
    model, *_ = load_model(tmp_path / "run")
    # fitted on this run's training audio: its input statistics are those frames'
    mels = np.concatenate([load_utterance(p)[1] for p in list_split(gliding, "train")])
    shape = mels - mels.max(-1, keepdims=True)
    assert torch.allclose(model.pitch_net.mean, torch.from_numpy(shape.mean(0)), atol=1e-4)
    first = load_checkpoint(tmp_path / "run" / "ckpt_00000001.pt")["model"]
    train(gliding, tmp_path / "run", "lp-16k-ltp", resume=True, max_steps=2, progress=False,
          tensorboard=False)
    second = load_checkpoint(tmp_path / "run" / "ckpt_00000002.pt")["model"]
    assert all(torch.equal(v, second[k]) for k, v in first.items() if "pitch_net" in k)


def test_export_adds_a_fitted_pitch_net_to_a_bundle(gliding, tmp_path):
    from dmol.wavenet import checkpoint as C
    from dmol.wavenet.train import train

    train(gliding, tmp_path / "run", "lp-16k-ltp", overrides=TINY, progress=False,
          tensorboard=False)
    plain = C.export_model(tmp_path / "run", tmp_path / "plain.pt")
    out = C.export_model(plain, tmp_path / "pn.pt", pitch_data=gliding)  # a bundle again
    model, _, _, info = C.load_model(out)
    assert info["model"].pitch_net == 256 and model.pitch_net is not None
    a, b = (torch.load(p, weights_only=True) for p in (plain, out))
    assert (b["step"], b["train_seconds"], b["val"]) == (a["step"], a["train_seconds"], a["val"])
    assert all(torch.equal(v, b["ema"][k]) for k, v in a["ema"].items())
    assert {k for k in b["ema"] if k not in a["ema"]} == {
        f"pitch_net.{k}" for k in model.pitch_net.state_dict()}
    assert model.pitch_net.std.min() > 0.01 and model.pitch_net.mean.abs().max() > 0.1
    # refused before any fitting: a model without pitch taps or a clock, another recipe
    train(gliding, tmp_path / "lp", "lp-16k", overrides=TINY, progress=False,
          tensorboard=False)
    with pytest.raises(ValueError, match="pitch_net > 0 needs a pitch estimate"):
        C.export_model(tmp_path / "lp", tmp_path / "x.pt", pitch_data=gliding)
    other = tmp_path / "other"
    (other / "raw").mkdir(parents=True)
    import soundfile as sf

    sf.write(other / "raw" / "a.wav", harmonic(np.full(8000, 150.0), 8000), 8000)
    sf.write(other / "raw" / "b.wav", harmonic(np.full(8000, 200.0), 8000), 8000)
    from dmol.audio.corpus import preprocess

    preprocess(other / "raw", other / "data", "tiny", min_val=1, trim_db=None, progress=False)
    with pytest.raises(ValueError, match="another mel recipe"):
        C.export_model(plain, tmp_path / "y.pt", pitch_data=other / "data")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_export_cli_fits_and_names_a_bad_dataset(gliding, tmp_path, capsys):
    from dmol.cli.export import main
    from dmol.wavenet.checkpoint import load_model
    from dmol.wavenet.train import train

    train(gliding, tmp_path / "run", "lp-16k-ltp", overrides=TINY, progress=False,
          tensorboard=False)
    assert main([str(tmp_path / "run"), str(tmp_path / "a.pt"), "--fit-pitch",
                 str(tmp_path / "nowhere"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dmol export: error:") and "nowhere" in err and err.count("\n") == 1
    assert not (tmp_path / "a.pt").exists()
    assert main([str(tmp_path / "run"), str(tmp_path / "b.pt"), "--fit-pitch", str(gliding),
                 "--no-progress"]) == 0
    assert load_model(tmp_path / "b.pt")[3]["model"].pitch_net == 256


def test_export_fits_the_pitch_net_on_other_voices_too(gliding, tmp_path, capsys):
    import soundfile as sf

    from dmol.audio.corpus import list_split, load_utterance, prepare_audio
    from dmol.cli.export import main
    from dmol.wavenet import checkpoint as C
    from dmol.wavenet.train import train

    sr = RECIPE.sample_rate
    low = tmp_path / "low voices" / "a"
    low.mkdir(parents=True)
    for i, f0 in enumerate((70.0, 90.0)):  # below every glide of the dataset
        sf.write(low / f"m{i}.wav", harmonic(np.full(sr // 2, f0), sr), sr)
    train(gliding, tmp_path / "run", "lp-16k-ltp", overrides=TINY, progress=False,
          tensorboard=False)
    out = C.export_model(tmp_path / "run", tmp_path / "pn.pt", pitch_data=gliding,
                         pitch_audio=[tmp_path / "low voices"])
    model, *_ = C.load_model(out)
    # its input statistics are those of the dataset's training frames and the other voices'
    mels = [load_utterance(p)[1] for p in list_split(gliding, "train")]
    mels += [prepare_audio(f, RECIPE)[1] for f in sorted(low.glob("*.wav"))]
    shape = np.concatenate(mels)
    shape = shape - shape.max(-1, keepdims=True)
    assert torch.allclose(model.pitch_net.mean, torch.from_numpy(shape.mean(0)), atol=1e-4)
    # refused before any work, in one line each
    for args, said in (([], "needs"), (["--fit-pitch", str(gliding)], "no such file"),
                       (["--fit-pitch", str(gliding)], "holds no audio")):
        target = tmp_path / "x.pt"
        extra = [str(tmp_path / "nowhere")] if said == "no such file" else [str(tmp_path / "run")]
        assert main([str(tmp_path / "run"), str(target), *args, "--fit-pitch-audio", *extra,
                     "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("dmol export: error:") and said in err and err.count("\n") == 1
        assert not target.exists()
