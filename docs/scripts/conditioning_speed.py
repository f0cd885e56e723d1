"""Seconds to compute the conditioning of 6 s of the LJSpeech preset (517 frames, random
weights and mel) with ``Conditioner.frames``, in pieces of 1 to 517 frames, on one thread.

    python docs/scripts/conditioning_speed.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dmol.audio.features import recipe_for
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset
from dmol.wavenet.synthesis import Conditioner


def main() -> None:
    torch.set_num_threads(1)
    cfg, _ = get_preset("r9y9-ljspeech-mol")
    torch.manual_seed(0)
    model = WaveNet(cfg).eval()
    recipe, frames = recipe_for("r9y9-ljspeech-mol"), 517
    rng = np.random.default_rng(0)
    mel = torch.from_numpy(rng.uniform(recipe.log_min + 2, recipe.log_max - 2,
                                       (cfg.n_mels, frames)).astype(np.float32))[None]
    cond = Conditioner(model)
    for piece in (1, 4, 8, 16, 32, 64, 256, frames):
        cond.frames(mel, 0, piece, frames)  # warm-up
        t = time.perf_counter()
        for a in range(0, frames, piece):
            cond.frames(mel, a, min(a + piece, frames), frames)
        print(f"pieces of {piece:3d} frames: {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
