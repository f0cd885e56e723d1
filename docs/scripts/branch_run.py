"""Branch a training run with model fields changed that leave the network's parameters as
they are (e.g. how the pitch estimate is computed), so that ``dmol train --resume`` continues
it: the checkpoint (weights, EMA, optimizer, RNG, curves) is copied into a new run folder with
the fields written into its model config. ``dmol train --resume`` refuses to change model
fields itself; this is the deliberate way to do it, for the fields that only change how the
network's inputs are derived (BRANCHABLE).

    python docs/scripts/branch_run.py training/lp-16k-ltpe-clock-tracked/ckpt_00071564.pt \\
        runs/ramp "pitch_continuity_ramp=(0.5, 0.8)"
    .venv/bin/dmol train data --preset lp-16k-ltp --out runs/ramp --threads 2 --resume

``pitch_net=BUNDLE`` puts the learned F0 estimate of a bundle (one exported with ``dmol export
--fit-pitch``) into the branch, frozen as a new run's is: its weights into the model and the
EMA, its width into the config.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

from dmol.audio.features import MelRecipe
from dmol.wavenet.checkpoint import load_checkpoint, save_checkpoint
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import WaveNetConfig

# fields that change how the pitch estimate behind the taps and the clock is computed, not
# what the weights mean otherwise
BRANCHABLE = {"pitch_continuity", "pitch_continuity_ramp", "pitch_ceiling", "pitch_net"}


def main(src: str, out: str, *assignments: str) -> None:
    state = load_checkpoint(src)
    fields = dict(state["model_config"])
    known = {f.name for f in dataclasses.fields(WaveNetConfig)}
    for a in assignments:
        key, _, value = a.partition("=")
        key = key.strip()
        if key not in known:
            raise SystemExit(f"unknown model field {key!r}")
        if key not in BRANCHABLE:
            raise SystemExit(f"{key} is not a field a run can branch on ({sorted(BRANCHABLE)})")
        if key == "pitch_net":  # the learned estimate of a bundle, frozen
            bundle = load_checkpoint(value, bundle_ok=True)
            net = {k: v for k, v in bundle["ema"].items() if k.startswith("pitch_net.")}
            if not net:
                raise SystemExit(f"{value} holds no learned F0 estimate (pitch_net)")
            fields["pitch_net"] = bundle["model_config"]["pitch_net"]
            for weights in (state["model"], state["ema"]):
                weights.update({k: v.clone() for k, v in net.items()})
            continue
        try:
            fields[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise SystemExit(f"{a!r}: the value must be a Python literal") from None
    cfg = WaveNetConfig.from_dict(fields)  # checks the new values
    shapes = {k: tuple(v.shape) for k, v in state["model"].items()}
    fresh = WaveNet(cfg, MelRecipe.from_dict(state["recipe"])).state_dict()
    if {k: tuple(v.shape) for k, v in fresh.items()} != shapes:
        raise SystemExit("these fields change the network's parameters: not a branch")
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SystemExit(f"{out_dir} is not empty")
    state["model_config"] = cfg.to_dict()
    path = save_checkpoint(out_dir, state["step"], state)
    print(f"wrote {path} (step {state['step']}): {', '.join(assignments)}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
