"""WaveNet training: real speech end to end, exact resumption after SIGKILL, damaged
checkpoints, 2-process DDP, the NaN guard, batch sampling and the schedule."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dmol.audio.corpus import asterisk_g722_files, load_recipe, preprocess
from dmol.cli.train import main as train_main
from dmol.wavenet import checkpoint as C
from dmol.wavenet import train as T
from dmol.wavenet.checkpoint import (
    CorruptCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
)
from dmol.wavenet.presets import TrainConfig
from helpers import FullDisk, read_only

# small, fast and quiet: no validation/media during the short runs unless a test asks
QUICK = {"segment_length": 1024, "batch_size": 2, "log_interval": 2, "val_interval": 10_000,
         "media_interval": 10_000, "seed": 7}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def one_thread():
    """Same thread count as the subprocesses (OMP_NUM_THREADS=1): identical float reductions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_train(data, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("tensorboard", False)
    with one_thread():
        return T.train(data, out, "tiny", **kw)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A few seconds of real speech (Asterisk prompts) plus one corrupt wav, preprocessed."""
    root = tmp_path_factory.mktemp("speech")
    raw = root / "raw"
    raw.mkdir()
    files = sorted((f for f in asterisk_g722_files() if 12_000 <= f.stat().st_size <= 20_000),
                   key=lambda f: f.name)
    assert len(files) >= 8, "the asterisk-core-sounds-en-g722 prompts are needed (make data)"
    for f in files[:: max(1, len(files) // 8)][:8]:
        shutil.copy(f, raw / f.name)
    (raw / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage, not audio")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        manifest = preprocess(raw, root / "data", "tiny", val_fraction=0.2, progress=False)
    return root / "data", manifest, err.getvalue()


@pytest.fixture(scope="module")
def short_run(speech, tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 2, 4 and 6."""
    data, _, _ = speech
    out = tmp_path_factory.mktemp("short") / "run"
    run_train(data, out, overrides={**QUICK, "max_steps": 6, "ckpt_interval": 2})
    return out


def test_real_speech_with_a_corrupt_file_trains_and_val_loss_decreases(speech, tmp_path, capsys):
    data, manifest, preprocess_log = speech
    # the bad file is named, skipped, and the rest is there
    assert "broken.wav" in preprocess_log
    assert [Path(s["path"]).name for s in manifest["skipped"]] == ["broken.wav"]
    assert len(manifest["train"]) + len(manifest["val"]) == 8 and manifest["val"]
    out = tmp_path / "run"
    metrics = run_train(data, out, tensorboard=True, overrides={
        **QUICK, "max_steps": 200, "ckpt_interval": 100, "val_interval": 100, "media_interval": 100,
        "log_interval": 10, "ema_decay": 0.98,
    })
    log = capsys.readouterr().out
    assert f"{len(manifest['train'])} train / {len(manifest['val'])} val utterances" in log
    val = [v for _, v in metrics["val"]]
    assert [s for s, _ in metrics["val"]] == [0, 100, 200]
    assert val[-1] < val[0] - 0.5, val  # nats per sample, held-out speech
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["finished"] and saved["step"] == 200 and saved["samples_per_sec"] > 0
    assert saved["final_val_loss"] == pytest.approx(val[-1])
    assert len(saved["train"]) == 20 and all(np.isfinite(v) for _, v in saved["train"])
    # TensorBoard holds scalars, the audio clips and the distribution picture
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "audio": 0}).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_sec",
            "val/loss"} <= set(tags["scalars"])
    assert "media/distribution" in tags["images"]
    # ... and their values are the run's: the logged losses and learning rates, step by step
    for tag, key in (("train/loss", "train"), ("val/loss", "val"), ("train/lr", "lr")):
        logged = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in logged] == [s for s, _ in saved[key]], tag
        np.testing.assert_allclose([v for _, v in logged], [v for _, v in saved[key]],
                                   rtol=1e-6, err_msg=tag)  # TensorBoard stores float32
    assert {"media/teacher_forced_sample", "media/target"} <= set(tags["audio"])
    # the run is self-describing
    model, head, recipe, info = load_model(out)
    assert recipe == load_recipe(data) and info["step"] == 200 and head.name == "mol"
    assert model.cfg.mel_std != 1.0  # normalization statistics came from the data


def _steps(run: Path) -> list[int]:
    return [int(p.stem.split("_")[1]) for p in list_checkpoints(run)]


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 900.0) -> None:
    """Poll (every 0.1 s) until ``run`` holds a checkpoint; the generous timeout covers a cold
    compile of the loss on a loaded machine, and a child that died is reported as such."""
    deadline = time.monotonic() + timeout
    while not list_checkpoints(run):
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before its first "
                                 f"checkpoint: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no checkpoint in {run} after {timeout:.0f} s")
        time.sleep(0.1)


def test_sigkill_then_resume_matches_an_uninterrupted_run(speech, tmp_path):
    """Killed at whatever step it had reached (max_steps is out of reach, so no race), then
    resumed to a few steps past the kill: bit for bit the weights, EMA and loss curve of an
    uninterrupted run to that step (the constant schedule does not depend on max_steps)."""
    data, _, _ = speech
    overrides = {**QUICK, "ckpt_interval": 5, "segment_length": 4096,
                 "lr_schedule": "constant", "warmup_steps": 3}
    sets = [f"--set={k}={v}" for k, v in {**overrides, "max_steps": 10**6}.items()]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmol.wavenet.train", str(data), "--preset", "tiny",
         "--out", str(killed), "--no-progress", "--no-tensorboard", *sets],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _wait_for_checkpoint(proc, killed)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    reached = max(_steps(killed))
    assert reached >= 5
    stop = reached + 7  # past the kill, not on a checkpoint boundary
    full = run_train(data, tmp_path / "full", overrides={**overrides, "max_steps": stop})
    resumed = run_train(data, killed, overrides={**overrides, "max_steps": stop}, resume=True)
    assert full["step"] == resumed["step"] == stop and resumed["session_steps"] == 7
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(killed))
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(b[key][name], t), (key, name)
    assert resumed["train"] == full["train"]


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(short_run, speech, tmp_path,
                                                                    capsys):
    data, _, _ = speech
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    assert _steps(run) == [2, 4, 6]
    newest = run / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_checkpoint(newest)
    capsys.readouterr()
    assert latest_checkpoint(run) == run / "ckpt_00000004.pt"
    err = capsys.readouterr().err
    assert "ckpt_00000006.pt" in err and "falling back to" in err and "ckpt_00000004.pt" in err

    # without the checksum file, the damage is still found and named
    (run / "ckpt_00000006.pt.sha256").unlink()
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_checkpoint(newest)
    # a flipped byte keeps the length but not the checksum
    middle = run / "ckpt_00000004.pt"
    raw = bytearray(middle.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    middle.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        load_checkpoint(middle)
    newest.unlink()
    assert latest_checkpoint(run) == run / "ckpt_00000002.pt"

    # training resumes from the newest intact checkpoint
    metrics = run_train(data, run, overrides={**QUICK, "max_steps": 4, "ckpt_interval": 2},
                        resume=True)
    assert "resuming from" in capsys.readouterr().out
    assert metrics["step"] == 4 and metrics["session_steps"] == 2

    for p in list_checkpoints(run):
        p.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="every checkpoint is damaged"):
        latest_checkpoint(run)


def test_resume_on_the_command_line_prunes_old_checkpoints(short_run, speech, tmp_path):
    """`--resume` continues the newest checkpoint; `keep_checkpoints` keeps only the newest
    ones, their checksum files going with them."""
    data, _, _ = speech
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    sets = [f"--set={k}={v}" for k, v in {**QUICK, "ckpt_interval": 2,
                                            "keep_checkpoints": 2}.items()]
    with one_thread():
        rc = train_main([str(data), "--preset", "tiny", "--out", str(run), "--resume",
                     "--max-steps", "10", "--no-progress", "--no-tensorboard", *sets])
    assert rc == 0
    assert _steps(run) == [8, 10]
    assert sorted(p.name for p in run.glob("*.sha256")) == [
        "ckpt_00000008.pt.sha256", "ckpt_00000010.pt.sha256"]
    assert json.loads((run / "metrics.json").read_text())["step"] == 10


def test_workers_and_dropout_resume_exactly(speech, tmp_path):
    """Batches made by DataLoader workers (num_workers=1) are the batches of the main process,
    and a run with dropout stopped at step 3 and resumed reaches the weights of one that never
    stopped (dropout's generator is reseeded from (seed, step, rank) every step)."""
    data, _, _ = speech
    over = {**QUICK, "dropout": 0.2, "lr_schedule": "constant", "warmup_steps": 2}
    full = run_train(data, tmp_path / "full", overrides={**over, "max_steps": 6})
    run_train(data, tmp_path / "cut", overrides={**over, "max_steps": 3, "num_workers": 1})
    resumed = run_train(data, tmp_path / "cut", overrides={**over, "max_steps": 6},
                        resume=True)
    assert resumed["step"] == full["step"] == 6
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(b[key][name], t), (key, name)
    # dropout is on: without it the same steps end elsewhere
    plain = run_train(data, tmp_path / "plain", overrides={**over, "dropout": 0.0,
                                                            "max_steps": 6})
    assert plain["train"] != full["train"]


def test_list_presets_and_head_flag(capsys):
    assert train_main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("tiny", "small-16k", "lp-16k", "r9y9-ljspeech-mol"))
    assert train_main(["--preset", "tiny", "--print-config", "--head", "gaussian"]) == 0
    assert "head: gaussian" in capsys.readouterr().out


def test_resume_rules(short_run, speech, tmp_path):
    data, _, _ = speech
    with pytest.raises(ValueError, match="already has checkpoints"):
        run_train(data, short_run, overrides={**QUICK, "max_steps": 6})
    with pytest.raises(ValueError, match="cannot change model fields \\['layers'\\]"):
        run_train(data, short_run, overrides={"layers": 4, "stacks": 2}, resume=True)
    done = run_train(data, short_run, resume=True)  # already at max_steps: nothing to do
    assert done["step"] == 6 and done["finished"]


def test_resume_takes_a_new_learning_rate(speech, tmp_path, monkeypatch):
    """``--set lr=`` on resume sets the rate from the first resumed update on (the optimizer
    and the scheduler remember the old one): the schedule's factor times the new rate."""
    data, _, _ = speech
    o = {**QUICK, "log_interval": 1, "warmup_steps": 0, "lr": 1e-3}
    run_train(data, tmp_path / "run", overrides={**o, "max_steps": 3})
    used = []  # the rate of every update the resumed run makes, read as AdamW steps
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *a, **kw):
        used.append(self.param_groups[0]["lr"])
        return adamw_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    done = run_train(data, tmp_path / "run", overrides={"max_steps": 5, "lr": 4e-3}, resume=True)
    fields = {k: v for k, v in o.items() if k in T.TrainConfig.__dataclass_fields__}
    old, new = (T.TrainConfig(**{**fields, "max_steps": n, "lr": lr})
                for n, lr in ((3, 1e-3), (5, 4e-3)))
    logged = {int(s): lr for s, lr in done["lr"]}
    # the rate logged at step s is the one the next update uses: lr * lr_factor(s)
    assert logged[2] == pytest.approx(1e-3 * T.lr_factor(2, old), rel=1e-6)
    for step in (4, 5):
        assert logged[step] == pytest.approx(4e-3 * T.lr_factor(step, new), rel=1e-6)
    # updates 3 -> 4 and 4 -> 5, the first at the new rate already
    assert used == pytest.approx([4e-3 * T.lr_factor(s, new) for s in (3, 4)], rel=1e-6)


def test_corrupt_utterance_in_dataset_is_named_and_skipped(speech, tmp_path, capsys):
    data, manifest, _ = speech
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad = copy / "train" / f"{manifest['train'][0]}.npz"
    bad.write_bytes(b"not an npz")
    metrics = run_train(copy, tmp_path / "run", overrides={**QUICK, "max_steps": 2})
    assert metrics["step"] == 2
    assert str(bad) in capsys.readouterr().err


def test_nan_guard_skips_the_update_and_counts_it(speech, tmp_path, monkeypatch):
    data, _, _ = speech
    real_forward = T.WaveNet.forward
    calls = {"n": 0}

    def forward(self, x, mel, speaker=None, **kw):  # the 4th training step (step 3) goes NaN
        calls["n"] += self.training
        y = real_forward(self, x, mel, speaker, **kw)
        return y * float("nan") if calls["n"] == 4 and self.training else y

    monkeypatch.setattr(T.WaveNet, "forward", forward)
    metrics = run_train(data, tmp_path / "run", overrides={**QUICK, "max_steps": 5})
    assert metrics["skipped_steps"] == 1 and metrics["skipped_at"] == [3]
    model, _, _, _ = load_model(tmp_path / "run", ema=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_session_with_every_step_skipped_says_so(speech, tmp_path, monkeypatch, capsys):
    data, _, _ = speech
    real_forward = T.WaveNet.forward

    def forward(self, x, mel, speaker=None, **kw):
        y = real_forward(self, x, mel, speaker, **kw)
        return y * float("nan") if self.training else y

    monkeypatch.setattr(T.WaveNet, "forward", forward)
    metrics = run_train(data, tmp_path / "run", overrides={**QUICK, "max_steps": 3})
    assert metrics["skipped_steps"] == 3
    assert "all 3 step(s) of this session were skipped" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_equals_one_process_on_the_combined_batch(speech, tmp_path, monkeypatch):
    """2-process DDP (gloo on CPU, the compiled loss as in any run) ends with the weights of
    one process that trains on both ranks' batches at once: each rank draws its own batch
    (seed, step, rank) and the gradients are averaged. The replicas agree, with each other
    and with the checkpoint."""
    data, _, _ = speech
    overrides = {**QUICK, "max_steps": 6, "ckpt_interval": 3}
    out = tmp_path / "ddp"
    sets = [f"--set={k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "dmol.wavenet.train", str(data), "--preset", "tiny", "--out", str(out),
         "--no-progress", "--no-tensorboard", *sets],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["step"] == 6
    digests = metrics["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    ddp = load_checkpoint(out / "ckpt_00000006.pt")
    model = T.WaveNet(T.WaveNetConfig.from_dict(ddp["model_config"]))
    model.load_state_dict(ddp["model"])
    assert T._weights_digest(model) == digests[0]

    # the reference: one process whose batch at every step is rank 0's and rank 1's together
    # (full segments only: then the mean over the combined batch is the mean of the ranks')
    real_batch = T.SegmentSampler.batch

    def both_ranks(self, step, rank=0):
        parts = [real_batch(self, step, r) for r in range(2)]
        assert not torch.equal(parts[0][0], parts[1][0])  # the ranks' batches differ
        assert all(p[2].all() for p in parts)
        return tuple(torch.cat(ts) for ts in zip(*parts, strict=True))

    monkeypatch.setattr(T.SegmentSampler, "batch", both_ranks)
    one = run_train(data, tmp_path / "one", overrides=overrides)
    ref = load_checkpoint(latest_checkpoint(tmp_path / "one"))
    assert ref["step"] == 6
    # float32 sums in another order (gloo's all-reduce, then / 2): at most 9e-8 apart here
    for key in ("model", "ema"):
        for name, t in ref[key].items():
            torch.testing.assert_close(ddp[key][name], t, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(torch.tensor(metrics["train"]), torch.tensor(one["train"]),
                               rtol=1e-5, atol=1e-6)


def test_batches_are_aligned_deterministic_and_padded():
    hop, n_mels = 4, 3
    utts = []
    for frames in (30, 5, 50):  # the 5-frame utterance is shorter than a segment
        audio = np.repeat(np.arange(frames, dtype=np.float32) / 100, hop)  # frame index
        mel = np.repeat((np.arange(frames, dtype=np.float32) / 100)[:, None], n_mels, 1)
        utts.append((audio, mel))
    s = T.SegmentSampler(utts, hop, segment_frames=8, batch_size=16, seed=3, pad_value=-9.0)
    x, mel, mask = s.batch(step=11, rank=1)
    assert x.shape == (16, 32) and mel.shape == (16, n_mels, 8) and mask.shape == (16, 32)
    valid = mask.bool()
    # every audio sample sits under the mel frame it belongs to
    torch.testing.assert_close(x[valid], mel[:, 0].repeat_interleave(hop, 1)[valid])
    x2, mel2, _ = T.SegmentSampler(utts, hop, 8, 16, seed=3, pad_value=-9.0).batch(11, 1)
    assert torch.equal(x, x2) and torch.equal(mel, mel2)
    assert not torch.equal(x, s.batch(11, 0)[0]) and not torch.equal(x, s.batch(12, 1)[0])
    # an utterance shorter than the segment is zero-padded, the mel with pad_value, and masked
    x, mel, mask = T.SegmentSampler(utts[1:2], hop, 8, 2, seed=0, pad_value=-9.0).batch(0)
    assert mask[:, : 5 * hop].all() and not mask[:, 5 * hop :].any()
    assert (x[:, 5 * hop :] == 0).all() and (mel[:, :, 5:] == -9.0).all()
    torch.testing.assert_close(x[:, : 5 * hop], torch.from_numpy(utts[1][0])[None].expand(2, -1))


def test_lr_schedule():
    tc = TrainConfig(lr_schedule="cosine", warmup_steps=10, max_steps=110, lr_min_ratio=0.1)
    f = [T.lr_factor(s, tc) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55)
    assert f[110] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    tc = TrainConfig(lr_schedule="exponential", warmup_steps=0, lr_decay_steps=100, lr_gamma=0.5)
    assert T.lr_factor(100, tc) == pytest.approx(0.5) and T.lr_factor(300, tc) == pytest.approx(
        0.125)


def test_print_config(capsys):
    assert train_main(["--preset", "tiny", "--print-config", "--set", "layers=8"]) == 0
    out = capsys.readouterr().out
    assert "layers: 8" in out
    assert f"receptive field: {2 * (1 + 2 + 4 + 8) * 2 + 1} samples" in out
    assert train_main(["--preset", "tiny", "--print-config", "--set", "layer=8"]) == 2
    assert "unknown config field" in capsys.readouterr().err


# ---- safety: damaged checkpoints, the run folder, interrupts, arguments ----------------------
def one_line_error(err: str) -> bool:
    return "Traceback" not in err and err.strip().count("\n") == 0 and err.strip() != ""


def test_disk_full_while_training_is_one_line(speech, tmp_path, monkeypatch, capsys):
    data, _, _ = speech
    out = tmp_path / "run"
    monkeypatch.setattr(C, "open", FullDisk(after=1), raising=False)  # the 2nd save fails
    sets = [f"--set={k}={v}" for k, v in {**QUICK, "max_steps": 6, "ckpt_interval": 2}.items()]
    with one_thread():
        rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--no-progress",
                     "--no-tensorboard", *sets])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and one_line_error(err), err
    assert _steps(out) == [2]
    assert not [p for p in os.listdir(out) if p.endswith((".tmp", ".lock"))
                or (p.endswith(".sha256") and not (out / p[: -len(".sha256")]).exists())]


def test_a_second_training_on_the_same_folder_is_refused(speech, tmp_path, capsys):
    data, _, _ = speech
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in {**QUICK, "max_steps": 10**5, "ckpt_interval": 2}.items()]
    first = subprocess.Popen(
        [sys.executable, "-m", "dmol.wavenet.train", str(data), "--preset", "tiny", "--out",
         str(out), "--no-progress", "--no-tensorboard", *sets],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_for_checkpoint(first, out)
        assert first.poll() is None, "the first run stopped"
        # the second one, resuming the same folder, must not run beside it
        with one_thread():
            rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--resume",
                         "--no-progress", "--no-tensorboard", "--max-steps", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and "in use" in err and str(first.pid) in err and one_line_error(err), err
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, first_err.decode()[-2000:]
    assert not (out / ".lock").exists()  # released on the way out


def test_training_into_a_read_only_run_folder_is_refused_before_work(speech, tmp_path, capsys):
    """--resume into a run folder that became read-only: one line, rc 2, before any step; the
    folder's checkpoints and metrics are untouched."""
    data, _, _ = speech
    out = tmp_path / "run"
    run_train(data, out, overrides={**QUICK, "max_steps": 2, "ckpt_interval": 2})
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with read_only(out), one_thread():
        rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--resume",
                         "--no-progress", "--no-tensorboard", "--max-steps", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and str(out) in err and one_line_error(err), err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_stale_lock_is_taken_over(speech, tmp_path, capsys):
    data, _, _ = speech
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "somewhere"}))
    metrics = run_train(data, out, overrides={**QUICK, "max_steps": 2})
    assert metrics["step"] == 2
    err = capsys.readouterr().err
    assert "stale lock" in err and str(dead.pid) in err
    assert not (out / ".lock").exists()


def test_sigterm_saves_a_checkpoint_and_exits_143(speech, tmp_path):
    data, _, _ = speech
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in {**QUICK, "max_steps": 10**5, "ckpt_interval": 3}.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmol.wavenet.train", str(data), "--preset", "tiny",
         "--out", str(out), "--no-progress", "--no-tensorboard", *sets],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err.strip().splitlines()[-1]
    saved = json.loads((out / "metrics.json").read_text())
    newest = latest_checkpoint(out)
    assert load_checkpoint(newest)["step"] == saved["step"] == max(_steps(out)) >= 3
    assert saved["stop_reason"] == "interrupted" and not (out / ".lock").exists()


def test_ctrl_c_under_ddp_saves_the_step_the_replicas_agree_on(speech, tmp_path):
    """Ctrl-C in a terminal reaches torchrun and both replicas (SIGINT to the process group).
    The ranks learn of it in the next step's all-reduce, finish that step together, rank 0
    saves it (after the regular checkpoint at step 3, none is due), and the run resumes from
    it under DDP."""
    data, _, _ = speech
    out = tmp_path / "ddp"
    sets = [f"--set={k}={v}" for k, v in {**QUICK, "max_steps": 10**5,
                                           "ckpt_interval": 3, "keep_checkpoints": 10}.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "dmol.wavenet.train", str(data), "--preset", "tiny", "--out", str(out),
           "--no-progress", "--no-tensorboard"]
    proc = subprocess.Popen([*cmd, *sets], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for_checkpoint(proc, out)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = err.decode()
    saved = json.loads((out / "metrics.json").read_text())
    steps = _steps(out)
    assert steps[-1] == saved["step"] and saved["stop_reason"] == "interrupted", (
        steps, saved.get("stop_reason"), err[-3000:])
    assert load_checkpoint(out / f"ckpt_{steps[-1]:08d}.pt")["world_size"] == 2
    # rank 0 says it in one line; no traceback from dmol's code (torchrun's own agent prints
    # one for the SIGINT it received: not ours to change)
    assert f"interrupted (SIGINT) at step {steps[-1]}" in err, err[-3000:]
    assert "dmol/wavenet" not in err and "TrainingInterrupted" not in err, err[-3000:]
    assert not (out / ".lock").exists()
    # the saved step resumes under DDP
    more = subprocess.run([*cmd, "--resume", "--max-steps", str(steps[-1] + 2)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["step"] == steps[-1] + 2


@pytest.fixture
def sigint_default():
    """SIGINT raises KeyboardInterrupt, as in a terminal, even when pytest runs as a background
    job (``make test &``), which starts with SIGINT ignored: the trainer keeps an ignored
    signal ignored, so Ctrl-C could not be simulated there."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _interrupt_at(monkeypatch, func: str, call: int) -> None:
    """Send this process SIGINT during the ``call``-th call of ``T.<func>``, as Ctrl-C would."""
    real, calls = getattr(T, func), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == call:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(T, func, wrapped)


def test_ctrl_c_right_after_an_update_never_applies_it_twice(speech, tmp_path, monkeypatch,
                                                            sigint_default):
    data, _, _ = speech
    overrides = {**QUICK, "max_steps": 6}
    full = run_train(data, tmp_path / "full", overrides=overrides)
    # Ctrl-C lands just after the optimizer applied step 3's update (inside the EMA update)
    _interrupt_at(monkeypatch, "_ema_update", 4)
    with pytest.raises(KeyboardInterrupt):
        run_train(data, tmp_path / "cut", overrides=overrides)
    monkeypatch.undo()
    cut = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert cut["step"] == 4  # the step that was applied is counted, and saved with it
    resumed = run_train(data, tmp_path / "cut", overrides=overrides, resume=True)
    assert resumed["step"] == full["step"] == 6
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(b[key][name], t), (key, name)  # bit for bit


def test_ctrl_c_during_the_final_validation_still_saves(speech, tmp_path, monkeypatch,
                                                       sigint_default):
    data, _, _ = speech
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, "_validation_loss", 2)  # 1: the starting point, 2: the final one
    with pytest.raises(KeyboardInterrupt):
        run_train(data, out, overrides={**QUICK, "max_steps": 4})
    assert _steps(out) == [4]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 4 and saved["stop_reason"] == "interrupted"
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "banana"], "device"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "CUDA"),
    (["--set", "log_scale_min=nan"], "log_scale_min"),
    (["--set", "lr=inf"], "lr"),
    (["--set", "betas=0.9"], "betas"),
    (["--set", "betas=(0.9, nan)"], "betas"),
    (["--set", "ema_decay=abc"], "ema_decay"),
    (["--set", "layers=8.5"], "layers"),
    (["--set", "head=7"], "head"),
    (["--set", "self_sample=1.5"], "self_sample"),
    (["--set", "self_sample_passes=0"], "self_sample_passes"),
    (["--lr", "nan"], "lr"),
    (["--threads", "0"], "threads"),
    (["--minutes", "nan"], "minutes"),
])
def test_bad_arguments_are_one_line_and_touch_nothing(speech, tmp_path, capsys, args, message):
    data, _, _ = speech
    out = tmp_path / "run"
    with one_thread():
        rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--no-progress",
                     "--no-tensorboard", "--max-steps", "2", *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and one_line_error(err), err
    assert not out.exists()


def test_run_folder_that_is_a_file_or_someone_elses(speech, tmp_path, capsys):
    data, _, _ = speech
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "config.json").write_text('{"camera": "x"}')
    for out, message in ((f, "not a folder"), (folder, "not a dmol run folder"), (data, "dataset")):
        before = {p: p.read_bytes() for p in Path(out).rglob("*") if p.is_file()} if out.is_dir() \
            else out.read_bytes()
        with one_thread():
            rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--no-progress",
                         "--no-tensorboard", "--max-steps", "2"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and one_line_error(err), (out, err)
        after = {p: p.read_bytes() for p in Path(out).rglob("*") if p.is_file()} if out.is_dir() \
            else out.read_bytes()
        assert after == before


def test_run_lock_without_fcntl(tmp_path, monkeypatch):
    """Where there is no fcntl (Windows), the lock is an O_EXCL file: a live owner is refused
    with its PID, a dead owner on this host is taken over with a warning, one on another host
    is refused (its PID means nothing here), and the file goes when the holder exits."""
    import socket

    monkeypatch.setattr(T, "fcntl", None)
    run = tmp_path / "run"
    said = []
    with T._RunLock(run, said.append):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(T.RunLockedError, match=str(os.getpid())):
            T._RunLock(run, said.append).__enter__()
    assert not (run / ".lock").exists() and not said
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with T._RunLock(run, said.append):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "stale lock" in said[0] and str(dead.pid) in said[0]
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere"}))
    with pytest.raises(T.RunLockedError, match="elsewhere"):
        T._RunLock(run, said.append).__enter__()


def test_a_run_folder_inside_the_dataset_is_refused(speech, tmp_path, capsys):
    """--out inside the dataset (its root or a split) would write checkpoints among the
    utterances: one line, before any work, the dataset unchanged."""
    data, _, _ = speech
    before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    for out in (data / "run", data / "val" / "run"):
        rc = train_main([str(data), "--preset", "tiny", "--out", str(out), "--no-progress",
                         "--no-tensorboard", "--max-steps", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and "inside the dataset" in err and one_line_error(err), err
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
