"""Give an LP checkpoint a phase clock without changing what it computes.

    python docs/scripts/add_phase_clock.py runs/ltpe/ckpt_00016145.pt runs/phase/ 3
    dmol train data --preset lp-16k-ltp --out runs/phase --resume

Writes a resumable checkpoint of the same step into the (new) run folder whose model has
``phase_harmonics = H`` (default 3): every layer's conditioning projection gets 2 H new input
columns for the clock's cos / sin features (:mod:`dmol.audio.phase`), starting at zero with
zero Adam moments, so the network's outputs are those of the original until training moves
them; ``--resume`` continues with the original's optimizer, schedule, batches and EMA. The
run keeps its preset name (resume checks it); its config says ``phase_harmonics: H``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dmol.audio.features import MelRecipe
from dmol.wavenet.checkpoint import load_checkpoint, save_checkpoint
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import WaveNetConfig


def main(src: str, out_dir: str, harmonics: str = "3") -> Path:
    H = int(harmonics)
    state = load_checkpoint(src)
    cfg = state["model_config"]
    if not cfg.get("lpc_order") or cfg.get("phase_harmonics"):
        raise SystemExit(f"{src}: needs an LP model without a phase clock")
    if not 1 <= H <= 16:
        raise SystemExit(f"harmonics must be an integer in [1, 16], got {H}")
    if len(state["optimizer"]["param_groups"]) != 1:
        raise SystemExit("unexpected optimizer layout: more than one parameter group")
    if any(Path(out_dir).glob("ckpt_*.pt")):
        raise SystemExit(f"{out_dir} already has checkpoints: give a new folder")
    # the optimizer's state is indexed by parameter order: the model's own
    names = [n for n, _ in WaveNet(WaveNetConfig.from_dict(cfg),
                                   MelRecipe.from_dict(state["recipe"])).named_parameters()]
    cfg["phase_harmonics"] = H
    moments = state["optimizer"]["state"]
    grown = 0
    for i, name in enumerate(names):
        if not name.endswith(".cond.weight"):
            continue
        for key in ("model", "ema"):
            old = state[key][name]  # (G, n_mels, 1)
            state[key][name] = torch.cat([old, old.new_zeros(old.shape[0], 2 * H, 1)], 1)
        if moments[i]["exp_avg"].shape != old.shape:
            raise SystemExit(f"unexpected optimizer layout: parameter {i} is not {name}")
        for k in ("exp_avg", "exp_avg_sq"):
            m = moments[i][k]
            moments[i][k] = torch.cat([m, m.new_zeros(m.shape[0], 2 * H, 1)], 1)
        grown += 1
    path = save_checkpoint(out_dir, state["step"], state,
                           keep=state["train_config"].get("keep_checkpoints", 3))
    print(f"wrote {path}: step {state['step']}, a phase clock of {H} harmonics at zero weight "
          f"in {grown} layers")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:4])
