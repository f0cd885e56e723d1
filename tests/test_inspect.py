"""`dmol inspect` renders each head's predicted distribution from a tiny model."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from dmol.audio.features import recipe_for
from dmol.cli.inspection import main
from dmol.wavenet.inspection import predict, render
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset
from helpers import read_only


@pytest.mark.parametrize("head", ["mol", "gaussian", "mog", "mulaw"])
def test_each_head_renders(tmp_path, head):
    recipe = recipe_for("tiny")
    t = np.arange(recipe.hop_length * 24) / recipe.sample_rate
    audio = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    torch.manual_seed(0)
    model = WaveNet(get_preset("tiny", {"head": head})[0])
    pred = predict(model, model.head, audio, recipe.compute(audio),
                   sample_rate=recipe.sample_rate, window=300)
    # every panel has data: a finite density over the window, an NLL for every sample
    assert pred.log_density.shape == (240, 300) and np.isfinite(pred.log_density).all()
    assert pred.nll_bits.shape == audio.shape and np.isfinite(pred.nll_bits).all()
    assert (pred.weights is None) == (head == "mulaw")
    if pred.weights is not None:
        np.testing.assert_allclose(pred.weights.sum(0), 1.0, atol=1e-6)
    assert len(pred.zoom) == 3 and all(np.isfinite(z["pdf"]).all() for z in pred.zoom)
    png = render(pred, tmp_path / f"{head}.png")
    img = imread(png)
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not a blank canvas


# ---- the command line: one readable line for every mistake, inputs never written --------------
def tiny_run(tmp_path):
    """A run folder with one checkpoint of an untrained tiny model, and a short wav."""
    import soundfile as sf

    from dmol.wavenet.checkpoint import save_checkpoint

    recipe = recipe_for("tiny")
    cfg, tc = get_preset("tiny")
    torch.manual_seed(0)
    model = WaveNet(cfg, recipe)
    run = tmp_path / "run"
    save_checkpoint(run, 5, {
        "format": "dmol-wavenet-1", "step": 5, "preset": "tiny",
        "model_config": cfg.to_dict(), "train_config": tc.to_dict(), "recipe": recipe.to_dict(),
        "model": model.state_dict(), "ema": model.state_dict()})
    t = np.arange(recipe.hop_length * 24) / recipe.sample_rate
    wav = tmp_path / "voice.wav"
    sf.write(wav, 0.5 * np.sin(2 * np.pi * 220 * t), recipe.sample_rate)
    return run, wav


def run_cli(argv, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def one_line(err: str) -> bool:
    return "Traceback" not in err and err.strip() != "" and err.strip().count("\n") == 0


def test_cli_draws_into_a_file_or_a_folder(tmp_path, capsys):
    run, wav = tiny_run(tmp_path)
    rc, err = run_cli([run, wav, "--out", tmp_path / "a.png", "--window-ms", "5"], capsys)
    assert rc == 0 and (tmp_path / "a.png").stat().st_size > 1000, err
    (tmp_path / "pics").mkdir()
    rc, err = run_cli([run, wav, "--out", tmp_path / "pics", "--window-ms", "5"], capsys)
    assert rc == 0 and (tmp_path / "pics" / "voice.inspect.png").is_file(), err


@pytest.mark.parametrize("content, problem", [
    (None, "no such checkpoint"),
    (b"", "empty"),
    (b"just some text\n", "not a PyTorch checkpoint"),
    (np.random.default_rng(1).bytes(3000), "not a PyTorch checkpoint"),
])
def test_cli_bad_checkpoint(tmp_path, capsys, content, problem):
    _, wav = tiny_run(tmp_path)
    ckpt = tmp_path / "model.pt"
    if content is not None:
        ckpt.write_bytes(content)
    rc, err = run_cli([ckpt, wav, "--out", tmp_path / "x.png"], capsys)
    assert rc == 1 and one_line(err) and problem in err and str(ckpt) in err, err
    assert "weights_only" not in err and not (tmp_path / "x.png").exists()


def test_cli_bad_audio(tmp_path, capsys):
    run, _ = tiny_run(tmp_path)
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"RIFF....WAVEfmt not really audio")
    rc, err = run_cli([run, fake, "--out", tmp_path / "x.png"], capsys)
    assert rc == 1 and one_line(err) and "fake.wav" in err, err
    rc, err = run_cli([run, tmp_path / "missing.wav", "--out", tmp_path / "x.png"], capsys)
    assert rc == 1 and one_line(err) and "missing.wav" in err, err


@pytest.mark.parametrize("args, message", [
    (["--window-ms", "0"], "--window-ms"),
    (["--window-ms", "nan"], "--window-ms"),
    (["--max-seconds", "0"], "--max-seconds"),
    (["--start", "nan"], "--start"),
    (["--start", "-1"], "--start"),
])
def test_cli_bad_numbers_are_refused_before_any_work(tmp_path, capsys, args, message):
    rc, err = run_cli([tmp_path / "no.pt", tmp_path / "no.wav", "--out", tmp_path / "x.png",
                       *args], capsys)
    assert rc == 2 and one_line(err) and message in err, err


def test_cli_into_a_read_only_folder_is_refused_before_work(tmp_path, capsys, monkeypatch):
    """A read-only --out folder: rc 2 and one line before the model runs; nothing written."""
    import dmol.cli.inspection as cli

    run, wav = tiny_run(tmp_path)
    out = tmp_path / "pictures"
    out.mkdir()
    ran = []
    monkeypatch.setattr(cli, "inspect_checkpoint", lambda *a, **k: ran.append(a))
    with read_only(out):
        rc, err = run_cli([run / "ckpt_00000005.pt", wav, "--out", out, "--window-ms", "5"],
                          capsys)
    assert rc == 2 and one_line(err) and str(out) in err, err
    assert not ran and list(out.iterdir()) == []


def test_cli_never_writes_over_its_inputs(tmp_path, capsys):
    run, wav = tiny_run(tmp_path)
    ckpt = run / "ckpt_00000005.pt"
    before = wav.read_bytes(), ckpt.read_bytes()
    for out in (wav, ckpt, tmp_path / "picture.wav"):
        rc, err = run_cli([ckpt, wav, "--out", out, "--window-ms", "5"], capsys)
        assert rc == 2 and one_line(err) and "--out" in err, (out, err)
    assert (wav.read_bytes(), ckpt.read_bytes()) == before
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    rc, err = run_cli([ckpt, wav, "--out", blocker / "x.png", "--window-ms", "5"], capsys)
    assert rc == 2 and one_line(err) and "blocker" in err, err
    assert blocker.read_text() == "a file where a folder should be"
