"""docs/scripts/ablation.py: every arm is a valid recipe on the same network, and bad arms are
refused before any training."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from dmol.audio.features import recipe_for
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset
from dmol.wavenet.train import check_overrides

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "ablation.py"
ns = runpy.run_path(str(SCRIPT))


@pytest.mark.parametrize("name", list(ns["ARMS"]))
def test_every_arm_builds_the_same_network_shape(name):
    preset, overrides, _ = ns["ARMS"][name]
    cfg, tc = get_preset(preset, check_overrides(dict(overrides)))
    base, _ = get_preset("lp-16k")
    for field in ("layers", "stacks", "residual_channels", "gate_channels", "skip_channels",
                  "kernel_size", "upsample_scales", "sample_rate"):
        assert getattr(cfg, field) == getattr(base, field), field
    WaveNet(cfg, recipe_for(preset))  # constructible (e.g. pitch taps need the 80-band recipe)
    for k, v in overrides.items():
        assert getattr(cfg if hasattr(cfg, k) else tc, k) == v


def test_unknown_arm_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        ns["main"]([str(tmp_path), str(tmp_path / "runs"), "--arms", "mol,banana"])
    assert e.value.code == 2 and "banana" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
