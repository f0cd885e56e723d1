"""What would a better F0 estimate be worth to a trained vocoder (session 19)?

Vocodes held-out prompts as `dmol evaluate` does (folded, the command-line post-filters, seed
S + prompt index) twice: as the model is, and with harvest's F0 of the recording put into the
estimate behind its pitch taps, phase clock and pitch post-filter wherever harvest calls the
frame voiced (the model's own estimate elsewhere). The network is not retrained: the gap is what
an estimator as good as harvest on the recording would give this network.

    python docs/scripts/oracle_pitch.py pretrained data/ 0,1 0 28 out.json
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import torch

from dmol.audio.corpus import list_split
from dmol.audio.metrics import evaluate_pair
from dmol.audio.pitch_net import harvest_f0
from dmol.wavenet import synthesis
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.evaluate import _crop, _load
from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, vocode


def main() -> None:
    ckpt, data, seeds, first, last, out = sys.argv[1:7]
    warnings.filterwarnings("ignore", message="pkg_resources")
    torch.set_num_threads(1)
    model, head, recipe, _ = load_model(ckpt)
    hop, sr = recipe.hop_length, recipe.sample_rate
    oracle: dict[str, np.ndarray | None] = {"f0": None}
    own_f0, own_post = model.f0, synthesis._FrameF0.__call__

    def f0(mel):  # the model's estimate, harvest's where harvest hears a pitch
        est = own_f0(mel)
        h = oracle["f0"]
        if h is None:
            return est
        h = torch.as_tensor(h[: est.shape[1]], dtype=est.dtype)
        return torch.where(h > 0, h, est[0, : len(h)])[None]

    def post(self, mel):
        e = own_post(self, mel)
        return e if oracle["f0"] is None or e is None else f0(mel)[0].double().numpy()

    model.f0 = f0
    synthesis._FrameF0.__call__ = post
    rows = []
    for i, utt in enumerate(list_split(data, "val")[: int(last)]):
        if i < int(first):
            continue
        name, audio, mel = _load(utt, i)
        audio, mel = _crop(audio, mel, hop, int(3 * sr) // hop, name)
        mel = recipe.validate_mel(mel)
        h = harvest_f0(audio[: len(mel) * hop], recipe)
        for s in (int(v) for v in seeds.split(",")):
            for kind in ("model", "harvest"):
                oracle["f0"] = h if kind == "harvest" else None
                y = vocode(model, head, recipe, mel, mode="folded", seed=s + i, progress=False,
                           postfilter=CLI_POSTFILTER, envelope=CLI_ENVELOPE_DB)
                r = {**evaluate_pair(audio, y, sr), "name": name, "seed": s, "kind": kind}
                rows.append(r)
                print(name, s, kind, f"F0 {r['f0_rmse_hz']:.1f} V/UV {r['vuv_error']:.3f}",
                      flush=True)
    with open(out, "w") as fh:
        json.dump(rows, fh, indent=1)
    for kind in ("model", "harvest"):
        r = [x for x in rows if x["kind"] == kind]
        print(kind, " ".join(f"{m} {np.nanmean([x[m] for x in r]):.4f}" for m in
                             ("mcd_db", "mrstft", "f0_rmse_hz", "vuv_error",
                              "vuv_voiced_to_unvoiced", "vuv_unvoiced_to_voiced")))


if __name__ == "__main__":
    main()
