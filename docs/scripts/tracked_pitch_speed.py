"""What the tracked pitch estimate costs in synthesis: the shipped bundle, single stream, one
thread, 8 s of held-out mel, with its ``pitch_continuity`` and with 0, in the same process
(best of two runs each; with and without the command-line post-filters).

    python docs/scripts/tracked_pitch_speed.py data/
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, synthesize_incremental


def main(data: str, seconds: float = 8.0) -> None:
    torch.set_num_threads(1)
    model, _, recipe, _ = load_model("pretrained")
    mels = [np.load(f)["mel"] for f in sorted(Path(data, "val").glob("*.npz"))]
    mel = np.concatenate(mels)[: int(seconds * recipe.sample_rate) // recipe.hop_length]
    n = len(mel) * recipe.hop_length
    tracked = model.cfg.pitch_continuity
    best: dict[tuple[float, str], float] = {}
    for _ in range(2):
        for c in (tracked, 0.0):
            model.cfg = dataclasses.replace(model.cfg, pitch_continuity=c)
            for name, kw in (("network", {}),
                             ("post-filters", {"postfilter": CLI_POSTFILTER,
                                               "envelope": CLI_ENVELOPE_DB})):
                t = time.perf_counter()
                synthesize_incremental(model, mel, seed=0, backend="cpp", threads=1, **kw)
                dt = time.perf_counter() - t
                best[c, name] = min(dt, best.get((c, name), dt))
    for (c, name), dt in best.items():
        print(f"pitch_continuity {c:g}, {name}: {n / dt:,.0f} samples/s, "
              f"RTF {dt * recipe.sample_rate / n:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
