"""Give a pitch-tap checkpoint the taps' excitation without changing what it computes.

    python docs/scripts/add_excitation_taps.py runs/ltp/ckpt_00011764.pt runs/ltpe/
    dmol train data --preset lp-16k-ltp --out runs/ltpe --resume

Writes a resumable checkpoint of the same step into the (new) run folder whose model has
``pitch_excitation = True``: the first layer's K new input columns (and their Adam moments)
start at zero, so the network's outputs are those of the original until training moves them,
and ``--resume`` continues with the original's optimizer, schedule, batches and EMA. The run
keeps its preset name (resume checks it); its config says ``pitch_excitation: true``. This is
how the shipped model got its excitation taps at step 11,764 (docs/pretrained.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dmol.wavenet.checkpoint import load_checkpoint, save_checkpoint


def main(src: str, out_dir: str) -> Path:
    state = load_checkpoint(src)
    cfg = state["model_config"]
    K = int(cfg.get("pitch_taps", 0))
    if not K or cfg.get("pitch_excitation"):
        raise SystemExit(f"{src}: needs pitch taps and no excitation taps yet")
    if any(Path(out_dir).glob("ckpt_*.pt")):
        raise SystemExit(f"{out_dir} already has checkpoints: give a new folder")
    cfg["pitch_excitation"] = True
    w = state["model"]["first.weight"]  # (R, 3 + K, 1)
    for key in ("model", "ema"):
        old = state[key]["first.weight"]
        state[key]["first.weight"] = torch.cat([old, old.new_zeros(old.shape[0], K, 1)], 1)
    # the optimizer's state is indexed by parameter order: first.weight is parameter 0
    moments = state["optimizer"]["state"][0]
    if moments["exp_avg"].shape != w.shape:
        raise SystemExit("unexpected optimizer layout: parameter 0 is not first.weight")
    for k in ("exp_avg", "exp_avg_sq"):
        moments[k] = torch.cat([moments[k], moments[k].new_zeros(w.shape[0], K, 1)], 1)
    path = save_checkpoint(out_dir, state["step"], state,
                           keep=state["train_config"].get("keep_checkpoints", 3))
    print(f"wrote {path}: step {state['step']}, {K} excitation taps at zero weight")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:3])
