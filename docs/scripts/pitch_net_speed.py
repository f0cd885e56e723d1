"""What the learned F0 estimate costs in synthesis (session 19): the shipped bundle vocodes the
same mel with and without it (``model.pitch_net = None``: the comb's estimate alone), single
stream, one thread, in the same process, alternating, median of ``repeats`` runs each.

    OMP_NUM_THREADS=1 python docs/scripts/pitch_net_speed.py data/ 8 3 incremental
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np
import torch

from dmol.audio.corpus import list_split, load_utterance
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, vocode


def main(data: str, seconds: str = "8", repeats: str = "3", mode: str = "incremental") -> None:
    warnings.filterwarnings("ignore", message="pkg_resources")
    torch.set_num_threads(1)
    model, head, recipe, _ = load_model("pretrained")
    net = model.pitch_net
    frames = int(float(seconds) * recipe.sample_rate) // recipe.hop_length
    mel = np.concatenate([load_utterance(p)[1] for p in list_split(data, "val")])[:frames]
    samples = len(mel) * recipe.hop_length
    times: dict[str, list[float]] = {}
    vocode(model, head, recipe, mel[:50], mode=mode, progress=False)  # warm-up
    for _ in range(int(repeats)):
        for kind in ("comb", "learned"):
            model.pitch_net = net if kind == "learned" else None
            for post in (False, True):
                t = time.perf_counter()
                vocode(model, head, recipe, mel, mode=mode, seed=0, progress=False,
                       postfilter=CLI_POSTFILTER if post else 0.0,
                       envelope=CLI_ENVELOPE_DB if post else 0.0)
                key = f"{kind}, post-filters" if post else kind
                times.setdefault(key, []).append(time.perf_counter() - t)
    med = {k: statistics.median(ts) for k, ts in times.items()}
    audio_s = samples / recipe.sample_rate
    for kind, m in med.items():
        print(f"{kind:24s} {samples / m:9.0f} samples/s  RTF {m / audio_s:.3f}")
    for kind in ("learned", "learned, post-filters"):
        base = kind.replace("learned", "comb")
        print(f"{kind} / {base}: time x{med[kind] / med[base]:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
