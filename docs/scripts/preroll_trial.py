"""A pre-roll against the voicing errors at the start of the output (session 16; not kept).

The output's first ~100 ms are made from an empty past, and the held-out clips start right at
the speech (the corpus is trimmed). A pre-roll synthesizes k extra mel frames before the first
(`ref`: the first k frames mirrored, `rep`: the first frame repeated) and drops their audio.
Scores each prompt with and without, the same seeds, `dmol evaluate`'s settings (folded, the
command-line post-filters), and writes every row to a JSON file.

    python docs/scripts/preroll_trial.py pretrained data/ 0,1,2,3 8 none,ref8,rep8 out.json
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import torch

from dmol.audio.corpus import list_split
from dmol.audio.metrics import evaluate_pair
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.evaluate import _crop, _load
from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, vocode


def main() -> None:
    ckpt, data, seeds, n_utt, kinds, out = sys.argv[1:7]
    torch.set_num_threads(1)
    for kind in kinds.split(","):
        if kind != "none" and not (kind[:3] in ("ref", "rep") and kind[3:].isdigit()):
            raise SystemExit(f"unknown pre-roll {kind!r}: none, refK or repK (K frames)")
    model, head, recipe, _ = load_model(ckpt)
    hop, sr = recipe.hop_length, recipe.sample_rate
    rows = []
    for i, utt in enumerate(list_split(data, "val")[: int(n_utt)]):
        name, audio, mel = _load(utt, i)
        audio, mel = _crop(audio, mel, hop, int(3 * sr) // hop, name)
        mel = recipe.validate_mel(mel)
        for s in (int(v) for v in seeds.split(",")):
            for kind in kinds.split(","):
                k = 0 if kind == "none" else int(kind[3:])
                pre = mel[k:0:-1] if kind.startswith("ref") else np.repeat(mel[:1], k, 0)
                m = mel if k == 0 else np.concatenate([pre, mel], 0)
                y = vocode(model, head, recipe, m, mode="folded", seed=s + i, progress=False,
                           postfilter=CLI_POSTFILTER, envelope=CLI_ENVELOPE_DB)[k * hop:]
                r = {**evaluate_pair(audio, y, sr), "name": name, "seed": s, "kind": kind}
                rows.append(r)
                print(name, s, kind, f"V/UV {r['vuv_error']:.3f} F0 {r['f0_rmse_hz']:.1f}",
                      flush=True)
    with open(out, "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="pkg_resources")
    main()
