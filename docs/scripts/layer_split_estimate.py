"""Would splitting the layers between two kernel threads pay? us per step of the int8 engine
on one thread for a (layers, streams) pair of the LJSpeech preset (random weights): a thread of
a layer split runs half the layers for all streams, one of today's split by streams all the
layers for half of them.

    python docs/scripts/layer_split_estimate.py 24 6     # today: each thread, 6 of 12 streams
    python docs/scripts/layer_split_estimate.py 12 12    # a layer split: half the layers, all 12
    # run two of either at once (`... & ...; wait`) for both cores busy
"""

from __future__ import annotations

import sys
import time

import torch

from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset
from dmol.wavenet.synthesis import make_engine


def main(layers: int, rows: int, steps: int = 2048) -> None:
    torch.set_num_threads(1)
    cfg, _ = get_preset("r9y9-ljspeech-mol", {"layers": layers, "stacks": layers // 6})
    torch.manual_seed(0)
    model = WaveNet(cfg).eval()
    engine = make_engine(model, backend="cpp", dtype="int8", batch=rows, threads=1)
    state, g = engine.new_state(rows), torch.Generator().manual_seed(0)
    cond = torch.randn(rows, cfg.n_mels, steps)
    best = float("inf")
    for _ in range(4):
        noise = engine.draw_noise(steps, rows, generator=g)
        t = time.perf_counter()
        engine.run(state, cond, noise=noise)
        best = min(best, time.perf_counter() - t)
    print(f"layers {layers}, streams {rows}: {best / steps * 1e6:.0f} us per step "
          f"(best of 4 runs of {steps} steps)")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
