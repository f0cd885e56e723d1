"""Checkpoints (dmol.wavenet.checkpoint): damage is found and named (checksum, zip CRC,
truncation), the newest intact one is used, unknown pickles are refused, a full disk leaves no
debris. Runs of an untrained tiny model, written directly (no training)."""

from __future__ import annotations

import os
import struct
import zipfile

import numpy as np
import pytest
import torch

from dmol.audio.features import recipe_for
from dmol.wavenet import checkpoint as C
from dmol.wavenet.checkpoint import CorruptCheckpointError, latest_checkpoint, load_checkpoint
from dmol.wavenet.presets import get_preset
from helpers import FullDisk, tiny_model


@pytest.fixture
def run(tmp_path):
    """A run folder with checkpoints at steps 2, 4 and 6 (and their checksum files)."""
    model, recipe = tiny_model(1), recipe_for("tiny")
    _, tc = get_preset("tiny")
    out = tmp_path / "run"
    for step in (2, 4, 6):
        C.save_checkpoint(out, step, {
            "format": "dmol-wavenet-1", "step": step, "preset": "tiny",
            "model_config": model.cfg.to_dict(), "train_config": tc.to_dict(),
            "recipe": recipe.to_dict(), "model": model.state_dict(), "ema": model.state_dict()})
    return out


def test_truncated_newest_checkpoint_without_checksum_falls_back(run, capsys):
    newest = run / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[:-100])
    (run / "ckpt_00000006.pt.sha256").unlink()
    capsys.readouterr()
    assert latest_checkpoint(run) == run / "ckpt_00000004.pt"
    err = capsys.readouterr().err
    assert "ckpt_00000006.pt" in err and "truncated" in err and "falling back to" in err
    # a flipped byte inside a tensor, no checksum file: the zip's CRC still catches it
    middle = run / "ckpt_00000004.pt"
    raw = bytearray(middle.read_bytes())
    with zipfile.ZipFile(middle) as z:
        big = max(z.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[big.header_offset + 26:big.header_offset + 30])
    raw[big.header_offset + 30 + name_len + extra_len + big.file_size // 2] ^= 0xFF
    middle.write_bytes(bytes(raw))
    (run / "ckpt_00000004.pt.sha256").unlink()
    with pytest.raises(CorruptCheckpointError, match="ckpt_00000004.pt.*damaged"):
        load_checkpoint(middle)
    assert latest_checkpoint(run) == run / "ckpt_00000002.pt"


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"hello, this is a text file\n", "not a PyTorch checkpoint"),
    (np.random.default_rng(0).bytes(5000), "not a PyTorch checkpoint"),
])
def test_corrupt_checkpoint_messages_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg, msg
    for bad in ("weights_only", "KeyError", "EOFError", "UnpicklingError", "miniz"):
        assert bad not in msg, msg


class Opaque:  # pickled by reference: weights_only loading must refuse it
    pass


def test_checkpoint_of_unknown_origin_is_refused_without_suggesting_unsafe_loading(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "dmol-wavenet-1", "thing": Opaque()}, path)
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "weights_only" not in msg and "Python objects" in msg, msg


def test_disk_full_during_a_checkpoint_write_leaves_no_debris(run, monkeypatch):
    before = sorted(os.listdir(run))
    state = load_checkpoint(run / "ckpt_00000006.pt")
    monkeypatch.setattr(C, "open", FullDisk(), raising=False)
    with pytest.raises(OSError, match="No space left"):
        C.save_checkpoint(run, 8, state)
    assert sorted(os.listdir(run)) == before  # no .tmp, no orphan ckpt_00000008.pt.sha256
    assert latest_checkpoint(run) == run / "ckpt_00000006.pt"
