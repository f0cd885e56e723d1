"""WaveNet synthesis (dmol.wavenet.synthesis): seeds reproduce audio, conditioning windows are
exact, streaming equals offline, folded joins are seamless, vocode() and its command line. The
engine itself: test_incremental.py. Tiny models, random or hand-set weights."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from dmol.audio.features import recipe_for
from dmol.cli.vocode import main as vocode_main
from dmol.logistic import mixture_nll_reference
from dmol.wavenet.incremental import IncrementalWaveNet
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset
from dmol.wavenet.synthesis import (
    Conditioner,
    StreamingVocoder,
    crossfade,
    make_engine,
    segment_plan,
    synthesize_folded,
    synthesize_incremental,
    vocode,
)
from helpers import ar2_model, lp_mel, lp_model, random_mel, read_only, tiny_model

# the `backend` fixture (conftest.py) runs a test on "torch" and on the C++ kernel, built
# natively and portably; `cpp` on the kernel alone. Both skip only when there is no compiler.


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny ops: extra OpenMP threads only add overhead (and stall on a busy 2-core machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_auto_backend_falls_back_without_a_compiler(monkeypatch):
    import dmol.wavenet.synthesis as synthesis

    model = tiny_model()
    monkeypatch.setattr(synthesis, "cpp_problem",
                        lambda: "building wavenet_step.cpp needs a C++ compiler (set CXX)")
    with pytest.warns(RuntimeWarning, match="needs a C\\+\\+ compiler.*'torch' backend"):
        assert make_engine(model).backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        make_engine(model, backend="gpu")
    with pytest.raises(ValueError, match="dtype"):
        make_engine(model, dtype="float16")


def test_same_seed_same_audio(backend):
    model = tiny_model(7)
    mel = random_mel(6)
    a = synthesize_incremental(model, mel, seed=11, backend=backend)
    b = synthesize_incremental(model, mel, seed=11, backend=backend)
    c = synthesize_incremental(model, mel, seed=12, backend=backend)
    assert a.shape == (6 * model.hop_length,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0
    f1 = synthesize_folded(model, mel, seed=5, segment_seconds=0.01, overlap_seconds=0.002)
    f2 = synthesize_folded(model, mel, seed=5, segment_seconds=0.01, overlap_seconds=0.002)
    assert f1.shape == a.shape and np.array_equal(f1, f2)


# ---- conditioning and streaming ---------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "r9y9-ljspeech-mol"])
def test_conditioner_windows_are_exact(preset):
    """Frame-by-frame conditioning equals the whole-utterance upsampling, and the lookahead /
    lookback are tight: frame f changes with frame f + lookahead, not with f + lookahead + 1."""
    cfg, _ = get_preset(preset)
    torch.manual_seed(0)
    model = WaveNet(cfg).eval()
    with torch.no_grad():
        for p in model.upsample_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond, hop, F_ = Conditioner(model), model.hop_length, 24
    mel = torch.from_numpy(random_mel(F_, cfg.n_mels)).T[None]
    with torch.no_grad():
        full = model.upsample(mel)
    per_frame = torch.cat([cond.frames(mel, f, f + 1, F_) for f in range(F_)], dim=-1)
    assert (per_frame - full).abs().max().item() < 1e-5
    assert (cond.chunked(mel, 0, F_, F_) - full).abs().max().item() < 1e-5
    with torch.no_grad():  # weights changed after the Conditioner was made: it follows them
        model.upsample_net.stretch[-1].weight.mul_(2.0)
        doubled = model.upsample(mel)
    assert (cond.frames(mel, 0, F_, F_) - doubled).abs().max().item() < 1e-5
    with torch.no_grad():
        model.upsample_net.stretch[-1].weight.mul_(0.5)
    if preset == "r9y9-ljspeech-mol":
        assert cond.lookahead == 4  # cin_pad 2 + 2 from the four 4x stretch convolutions
    f = 12

    def moved(df: int) -> float:
        m2 = mel.clone()
        m2[..., f + df] += 1.0
        with torch.no_grad():
            return (model.upsample(m2) - full)[..., f * hop:(f + 1) * hop].abs().max().item()

    assert moved(cond.lookahead) > 1e-4 and moved(cond.lookahead + 1) == 0.0
    assert moved(-cond.lookback) > 1e-4 and moved(-cond.lookback - 1) == 0.0


def test_streaming_equals_offline(backend):
    model = tiny_model(8)
    mel, hop = random_mel(30), model.hop_length
    offline = synthesize_incremental(model, mel, seed=4, backend=backend)
    stream = StreamingVocoder(model, seed=4, backend=backend)
    la = stream.lookahead
    assert stream.latency_samples == la * hop
    got, received = [], 0
    for n in (0, 2, 1, 5, 0, 13, 9):
        out = stream.push(mel[received:received + n])
        received += n
        got.append(out)
        # everything whose lookahead has arrived, nothing more
        assert sum(map(len, got)) == max(0, received - la) * hop
    got.append(stream.flush())
    assert np.array_equal(np.concatenate(got), offline)
    with pytest.raises(RuntimeError):
        stream.push(mel[:1])


def test_streaming_checks_frames():
    model = tiny_model()
    stream = StreamingVocoder(model, recipe=recipe_for("tiny"), backend="torch")
    with pytest.raises(ValueError, match="transposed"):
        stream.push(random_mel(30).T)
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.full((2, 20), np.nan, np.float32))
    with pytest.raises(ValueError, match="normalization"):
        stream.push(np.full((2, 20), 40.0, np.float32))


# ---- folded synthesis ----------------------------------------------------------------------
def test_folded_is_seamless_and_as_likely_as_sequential():
    """No jump and no unlikely sample where segments join; same NLL per sample as sequential.

    Tolerance: mean NLL within 0.05 nats/sample of the sequential output's (two sequential
    draws of this length differ by about 0.01). A hard cut at the same boundaries, the
    negative control, jumps 10x more than anywhere else.
    """
    model = ar2_model()
    F_, hop, sr = 125, model.hop_length, model.cfg.sample_rate
    T, segment, overlap = F_ * hop, 2000, 800
    mel = np.zeros((F_, model.cfg.n_mels), np.float32)
    e = make_engine(model)  # the C++ kernel where there is a compiler: this is 8000 steps
    seq = synthesize_incremental(model, mel, seed=0, engine=e)
    fold = synthesize_folded(model, mel, seed=0, segment_seconds=segment / sr,
                             overlap_seconds=overlap / sr)
    plan = segment_plan(T, segment, overlap)
    assert len(plan) == 4 and fold.shape == seq.shape
    assert 0.2 < np.abs(fold).max() < 1.0  # a real signal, not clipped

    near = np.zeros(T - 1, bool)  # the jumps x[t+1] - x[t] touching a crossfade's start or end
    for start, b, _ in plan[1:]:
        for edge in (start, b):
            near[edge - 8:edge + 8] = True
    jump = np.abs(np.diff(fold))
    assert jump[near].max() <= jump[~near].max()

    with torch.no_grad():
        x = torch.from_numpy(np.stack([seq, fold]))
        y = model(x, torch.zeros(2, model.cfg.n_mels, F_)).transpose(1, 2)  # (B, T, 3M)
        nll = mixture_nll_reference(*y.chunk(3, dim=-1), x, 65536, -16.0)  # (B, T) nats
    assert abs(nll[1].mean().item() - nll[0].mean().item()) < 0.05
    at = np.concatenate([[False], near])
    assert nll[1][at].max() <= nll[1][~at].max()

    # negative control: the same segments, cut instead of crossfaded
    pieces = [torch.from_numpy(synthesize_incremental(model, mel, seed=i, engine=e)[b:stop])
              for i, (_, b, stop) in enumerate(plan)]
    cut = crossfade(pieces, [(b, b, stop) for _, b, stop in plan], T).numpy()
    cut_jump = np.abs(np.diff(cut))
    assert cut_jump[near].max() > 3 * cut_jump[~near].max()


def test_segment_plan_and_crossfade():
    plan = segment_plan(1000, 300, 50)
    assert plan == [(0, 0, 300), (250, 300, 600), (550, 600, 900), (850, 900, 1000)]
    with pytest.raises(ValueError, match="overlap"):
        segment_plan(1000, 100, 100)
    # equal-power: crossfading a constant with itself rises to sqrt(2), never dips
    pieces = [torch.full((stop - start,), 0.5) for start, _, stop in plan]
    out = crossfade(pieces, plan, 1000).numpy()
    assert out.min() >= 0.5 - 1e-6 and out.max() <= 0.5 * math.sqrt(2) + 1e-6
    assert np.allclose(out[:250], 0.5) and np.allclose(out[300:550], 0.5)


# ---- vocode() and the command line --------------------------------------------------------------
def test_vocode_checks_its_inputs():
    model = tiny_model()
    recipe = recipe_for("tiny")
    mel = random_mel(5)
    assert vocode(model, model.head, recipe, mel, progress=False, backend="torch").shape == (320,)
    with pytest.raises(ValueError, match="mode"):
        vocode(model, model.head, recipe, mel, mode="fast", progress=False)
    with pytest.raises(ValueError, match="n_mels"):
        vocode(model, model.head, recipe, random_mel(5, 21), progress=False)
    with pytest.raises(ValueError, match="transposed"):
        vocode(model, model.head, recipe, random_mel(5).T.copy(), progress=False)
    with pytest.raises(ValueError, match="normalization"):
        vocode(model, model.head, recipe, mel + 50.0, progress=False)
    with pytest.raises(ValueError, match="head"):
        from dmol.wavenet.heads import make_head

        vocode(model, make_head("mol", n_mixtures=3), recipe, mel, progress=False)
    with pytest.raises(ValueError, match="hop_length"):
        vocode(model, model.head, recipe_for("small-16k"), random_mel(5, 80), progress=False)
    with pytest.raises(TypeError, match="folded"):
        vocode(model, model.head, recipe, mel, progress=False, segment_seconds=0.1)


def _tiny_run(folder, **overrides):
    """A run folder holding one checkpoint of an untrained tiny model; returns (run, recipe)."""
    from dmol.wavenet.checkpoint import save_checkpoint

    model, recipe = tiny_model(9, **overrides), recipe_for("tiny")
    _, tc = get_preset("tiny")
    run = folder / "run"
    save_checkpoint(run, 5, {
        "format": "dmol-wavenet-1", "step": 5, "preset": "tiny",
        "model_config": model.cfg.to_dict(), "train_config": tc.to_dict(),
        "recipe": recipe.to_dict(), "model": model.state_dict(), "ema": model.state_dict()})
    return run, recipe


def test_vocode_command_line(tmp_path, capsys):
    import soundfile as sf

    run, recipe = _tiny_run(tmp_path)
    np.save(tmp_path / "a.npy", random_mel(4))
    t = np.arange(8 * recipe.hop_length) / recipe.sample_rate
    sf.write(tmp_path / "b.wav", 0.3 * np.sin(2 * np.pi * 220 * t), recipe.sample_rate)
    out = tmp_path / "out"
    rc = vocode_main([str(run), str(tmp_path / "a.npy"), str(tmp_path / "b.wav"), "--out",
                      str(out), "--no-progress", "--backend", "torch", "--seed", "1"])
    assert rc == 0
    a, sr = sf.read(out / "a.wav")
    assert sr == recipe.sample_rate and len(a) == 4 * recipe.hop_length
    assert len(sf.read(out / "b.wav")[0]) == 8 * recipe.hop_length
    # a mel made with another recipe: a clear error naming the file, nothing written
    np.save(tmp_path / "bad.npy", random_mel(4, 80))
    rc = vocode_main([str(run), str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o2"),
                      "--no-progress"])
    assert rc == 2 and "bad.npy" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    # int8 weights on a backend without int8 products: one line, before any work
    with pytest.raises(SystemExit):
        vocode_main([str(run), str(tmp_path / "a.npy"), "--out", str(tmp_path / "o3"),
                     "--dtype", "int8", "--backend", "torch"])
    assert "--dtype int8 runs on the C++ kernel only" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


def test_vocode_command_line_options_reach_the_synthesis(tmp_path):
    """--mode folded, --dtype bfloat16, --threads 2 and --speaker give what the Python API
    gives with the same arguments (up to the 16-bit WAV), and each of them matters."""
    import soundfile as sf

    from dmol.wavenet.checkpoint import load_model

    run, recipe = _tiny_run(tmp_path, gin_channels=4, n_speakers=3)
    mel = random_mel(6)
    np.save(tmp_path / "a.npy", mel)
    model, head, _, _ = load_model(run)

    def cli(name, *flags):
        out = tmp_path / name
        argv = [str(run), str(tmp_path / "a.npy"), "--out", str(out), "--no-progress",
                "--seed", "3", "--scale-temperature", "1", "--postfilter", "0",
                "--envelope", "0", *flags]
        assert vocode_main(argv) == 0
        return sf.read(out / "a.wav", dtype="float32")[0]

    kw = {"seed": 3, "progress": False, "scale_temperature": 1.0}
    got = cli("folded", "--mode", "folded", "--dtype", "bfloat16", "--threads", "2",
              "--speaker", "1")
    want = vocode(model, head, recipe, mel, mode="folded", dtype="bfloat16", threads=2,
                  speaker=1, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1 / 32768 + 1e-6)
    f32 = vocode(model, head, recipe, mel, mode="folded", threads=2, speaker=1, **kw)
    assert np.abs(f32 - want).max() > 1e-4  # bfloat16 was used (1e-4: 3 steps of 16 bits)
    inc = cli("inc", "--speaker", "1")
    np.testing.assert_allclose(inc, vocode(model, head, recipe, mel, speaker=1, **kw),
                               rtol=0, atol=1 / 32768 + 1e-6)
    assert np.abs(cli("spk2", "--speaker", "2") - inc).max() > 1e-4  # the speaker matters
    assert np.abs(inc - got).max() > 1e-4  # so does the mode


def test_vocode_never_overwrites_an_input_or_one_output_with_another(tmp_path, capsys):
    import soundfile as sf

    run, recipe = _tiny_run(tmp_path)
    rec = tmp_path / "rec"
    rec.mkdir()
    t = np.arange(8 * recipe.hop_length) / recipe.sample_rate
    sf.write(rec / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), recipe.sample_rate)
    before = (rec / "a.wav").read_bytes()
    # --out is the recording's own folder: a.wav would be replaced by the synthesis
    rc = vocode_main([str(run), str(rec / "a.wav"), "--out", str(rec), "--no-progress"])
    assert rc == 2 and "overwrite the input" in capsys.readouterr().err
    assert (rec / "a.wav").read_bytes() == before
    # two inputs with one stem would collide in --out
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        np.save(tmp_path / d / "utt.npy", random_mel(4))
    rc = vocode_main([str(run), str(tmp_path / "d1" / "utt.npy"), str(tmp_path / "d2" / "utt.npy"),
                      "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "would both be written" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # --out that is a file; a checkpoint that is not one: one line each, nothing written
    (tmp_path / "f").write_text("x")
    rc = vocode_main([str(run), str(tmp_path / "d1" / "utt.npy"), "--out", str(tmp_path / "f")])
    assert rc == 2 and "is a file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    rc = vocode_main([str(tmp_path / "junk.pt"), str(tmp_path / "d1" / "utt.npy"), "--out",
                      str(tmp_path / "o3"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "junk.pt" in err and "weights_only" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o3").exists()


# ---- LP-WaveNet: means shifted by the linear prediction from the generated past ---------------
LP_CASES = [("mol", "torch"), ("gaussian", "torch"), ("mol", "cpp"), ("mol", "cpp-portable")]


@pytest.mark.parametrize(("head", "backend"), LP_CASES, indirect=["backend"])
def test_lp_streaming_equals_offline(head, backend):
    """Pushed in odd pieces (LPC blocks recomputed as frames arrive), bit for bit offline."""
    model = lp_model(8, head)
    mel, hop = random_mel(45, seed=1), model.hop_length
    offline = synthesize_incremental(model, mel, seed=4, backend=backend)
    stream = StreamingVocoder(model, seed=4, backend=backend)
    la = stream.lookahead
    got, received = [], 0
    for n in (0, 2, 1, 5, 0, 13, 1, 1, 1, 9, 12):
        got.append(stream.push(mel[received:received + n]))
        received += n
        assert sum(map(len, got)) == max(0, received - la) * hop
    got.append(stream.flush())
    assert np.array_equal(np.concatenate(got), offline)
    assert np.abs(offline).max() <= 1.0


def test_lp_frames_give_each_sample_its_nearest_frame():
    """Frame by frame, in blocks, with or without the end known: the coefficients of every
    sample are model.lpc's of its nearest frame (clamped to the last one at the end)."""
    from dmol.wavenet.incremental import lpc_per_sample
    from dmol.wavenet.synthesis import LPC_BLOCK, LpcFrames

    model = lp_model(3)
    F_, hop = LPC_BLOCK + 5, model.hop_length
    mel = lp_mel(F_, seed=7)
    with torch.no_grad():
        want = lpc_per_sample(model.lpc(mel), 0, F_ * hop, hop, F_)  # (1, T, order)
    lf = LpcFrames(model)
    got = []
    for f in range(F_):  # frames arrive one by one, one frame of lookahead
        received = min(F_, f + 2)
        total = F_ if received == F_ else None
        got.append(lf.samples(mel[..., :received], 0, received, f, total)[0])
    assert (torch.cat(got, dim=1) - want).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="received"):
        lf.samples(mel[..., :3], 0, 3, 2)  # frame 3 has not arrived


@pytest.mark.parametrize(("head", "backend"), LP_CASES, indirect=["backend"])
def test_lp_same_seed_same_audio_and_folded(head, backend):
    model = lp_model(7, head)
    mel = random_mel(12, seed=2)
    T = 12 * model.hop_length
    a = synthesize_incremental(model, mel, seed=11, backend=backend)
    b = synthesize_incremental(model, mel, seed=11, backend=backend)
    c = synthesize_incremental(model, mel, seed=12, backend=backend)
    assert a.shape == (T,) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    kw = {"segment_seconds": 0.02, "overlap_seconds": 0.004, "backend": backend}
    f1 = synthesize_folded(model, mel, seed=5, **kw)
    f2 = synthesize_folded(model, mel, seed=5, **kw)
    f3 = synthesize_folded(model, mel, seed=6, **kw)
    assert f1.shape == (T,) and f1.dtype == np.float32 and np.abs(f1).max() <= 1.0
    assert np.array_equal(f1, f2) and not np.array_equal(f1, f3)
    if head == "mol":  # one segment: sequential synthesis with the same pre-drawn noise
        one = synthesize_folded(model, mel, seed=11, segment_seconds=1.0, backend=backend)
        assert np.abs(one - a).max() < 1e-5


@pytest.mark.parametrize(("head", "backend"), LP_CASES, indirect=["backend"])
def test_lp_scale_temperature(head, backend):
    """scale_temperature 0: every sample is its component's mean, clipped to [-1, 1], plus p_t
    (with temperature 0, the top component's: the same audio for every seed); 1 draws
    something else."""
    from dmol.wavenet.incremental import lpc_per_sample

    model = lp_model(4, head)
    F_, hop = 6, model.hop_length
    mel = lp_mel(F_, seed=4)
    with torch.no_grad():
        c, a = model.upsample(mel), model.lpc(mel)
    lpc = lpc_per_sample(a, 0, F_ * hop, hop, F_)
    e = IncrementalWaveNet(model, backend=backend)

    def draw(seed, st, temperature=1.0):
        g = torch.Generator().manual_seed(seed)
        return e.run(e.new_state(1), c, generator=g, temperature=temperature,
                     scale_temperature=st, lpc=lpc, return_params=True)

    x, y = draw(0, 0.0)
    M = model.head.net_channels // 3 if head == "mol" else 1
    # (1, M, T): the excitation, each component's mean clipped to the head's range, plus p_t
    # added after the clip (incremental.py, above sample_mol)
    mu = (y[:, M:2 * M] if head == "mol" else y[:, :1]).clamp(-1, 1) + y[:, -1:]
    tol = 1e-6 if head == "mol" else 1.01 / 65535  # the Gaussian head snaps to its bins
    assert (x[:, None] - mu).abs().min(1).values.max().item() < tol
    x1, _ = draw(0, 1.0)
    assert (x1 - x).abs().max().item() > 1e-3
    x0a, ya = draw(1, 0.0, temperature=0.0)
    x0b, _ = draw(2, 0.0, temperature=0.0)
    assert torch.equal(x0a, x0b)
    if head == "mol":  # the most probable component's mean
        top = ya[:, :M].argmax(1, keepdim=True)
        want = (ya[:, M:2 * M].gather(1, top)[:, 0] + ya[:, -1]).clamp(-1, 1)
        assert (x0a - want).abs().max().item() < 1e-6
    # the public entry points take it too
    m = random_mel(4, seed=3)
    kw = {"seed": 1, "backend": backend}
    s0 = synthesize_incremental(model, m, scale_temperature=0.0, **kw)
    assert not np.array_equal(s0, synthesize_incremental(model, m, **kw))
    assert np.array_equal(s0, synthesize_incremental(model, m, scale_temperature=0.0, **kw))
    assert synthesize_folded(model, m, scale_temperature=0.5, segment_seconds=0.01,
                             overlap_seconds=0.002, **kw).shape == (4 * hop,)


def test_scale_temperature_is_validated():
    model = tiny_model()
    e = IncrementalWaveNet(model)
    mel = random_mel(3)
    for bad in (-0.5, math.nan, math.inf):
        for name in ("temperature", "scale_temperature"):
            with pytest.raises(ValueError, match=name):
                e.draw_noise(4, 1, **{name: bad})
            with pytest.raises(ValueError, match=name):
                StreamingVocoder(model, backend="torch", **{name: bad})
            with pytest.raises(ValueError, match=name):
                synthesize_folded(model, mel, backend="torch", **{name: bad})
            with pytest.raises(ValueError, match=name):
                vocode(model, model.head, None, mel, progress=False, backend="torch",
                       **{name: bad})
    # the non-LP fused draw with scale temperature 1 is the draw it always was
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    n1, n2 = e.draw_noise(50, 2, generator=g1), e.draw_noise(50, 2, generator=g2,
                                                             scale_temperature=0.5)
    assert torch.equal(n1.gumbel, n2.gumbel) and torch.equal(n1.logistic * 0.5, n2.logistic)


def test_vocode_command_line_lp_and_scale_temperature(tmp_path, capsys):
    import soundfile as sf

    from dmol.wavenet.checkpoint import save_checkpoint

    # rejected before anything is loaded: the checkpoint does not even exist
    for bad in ("nan", "inf", "-1"):
        rc = vocode_main([str(tmp_path / "none"), str(tmp_path / "a.npy"), "--out",
                          str(tmp_path / "o"), "--scale-temperature", bad])
        err = capsys.readouterr().err
        assert rc == 2 and "--scale-temperature" in err and len(err.strip().splitlines()) == 1
    rc = vocode_main([str(tmp_path / "none"), str(tmp_path / "a.npy"), "--out",
                      str(tmp_path / "o"), "--temperature", "nan"])
    assert rc == 2 and "--temperature" in capsys.readouterr().err
    model, recipe = lp_model(9), recipe_for("tiny")
    _, tc = get_preset("tiny")
    run = tmp_path / "run"
    save_checkpoint(run, 5, {
        "format": "dmol-wavenet-1", "step": 5, "preset": "tiny",
        "model_config": model.cfg.to_dict(), "train_config": tc.to_dict(),
        "recipe": recipe.to_dict(), "model": model.state_dict(), "ema": model.state_dict()})
    np.save(tmp_path / "a.npy", random_mel(5))
    outs = {}
    for mode in ("incremental", "folded"):
        out = tmp_path / mode
        rc = vocode_main([str(run), str(tmp_path / "a.npy"), "--out", str(out), "--mode", mode,
                          "--no-progress", "--seed", "1", "--scale-temperature", "0.5"])
        assert rc == 0
        outs[mode], sr = sf.read(out / "a.wav")
        assert sr == recipe.sample_rate and len(outs[mode]) == 5 * recipe.hop_length
    assert not (tmp_path / "o").exists()


def test_vocode_into_a_read_only_folder(tmp_path, capsys):
    """A read-only --out folder: one line, rc 1, before any synthesis; nothing changes."""
    run, _ = _tiny_run(tmp_path)
    np.save(tmp_path / "a.npy", random_mel(4))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with read_only(out):
        rc = vocode_main([str(run), str(tmp_path / "a.npy"), "--out", str(out), "--no-progress",
                          "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert str(out) in err and "permission denied" in err
    assert sorted(os.listdir(out)) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_vocode_never_writes_over_its_checkpoint(tmp_path, capsys):
    """An output named like the checkpoint file (here a bundle saved as m.wav beside m.npy) is
    refused before loading, and the checkpoint keeps its bytes."""
    import shutil

    from dmol.wavenet.checkpoint import PRETRAINED

    ckpt = tmp_path / "m.wav"
    shutil.copy(PRETRAINED, ckpt)
    np.save(tmp_path / "m.npy", np.zeros((4, 80), np.float32))
    before = ckpt.read_bytes()
    rc = vocode_main([str(ckpt), str(tmp_path / "m.npy"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "would overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert ckpt.read_bytes() == before
