"""How close to harvest's F0 are the comb's estimate and the learned estimates of bundles, on
the training voice and four voices the vocoder never heard (session 21)?

Per 16 ms mel frame over the frames harvest calls voiced (the first 3 s of each prompt: the
28 held-out prompts of a dataset, and the first 60 speech prompts of each folder): the RMS
error in Hz and the share of frames more than 300 cents off ("gross"), split into too high
and too low; for a learned estimate also "as used", the learned estimate where it hears a
pitch and the comb's elsewhere, as a vocoder with ``pitch_net`` uses them
(`dmol.wavenet.model.WaveNet.f0`).

    python docs/scripts/pitch_net_voices.py data/ BUNDLE... -- FOLDER...
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from dmol.audio.corpus import ASTERISK_NON_SPEECH, list_split, load_recipe, load_utterance
from dmol.audio.pitch import pitch_from_mel
from dmol.audio.pitch_net import pitch_examples
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.evaluate import audio_utterances

SECONDS, PROMPTS = 3.0, 60


def scores(est: np.ndarray, ref: np.ndarray) -> str:
    v = ref > 0
    e, r = est[v], ref[v]
    gross = 1200 * np.abs(np.log2(e / r)) > 300
    return (f"RMSE {np.sqrt(np.mean((e - r) ** 2)):5.1f} Hz, gross {gross.mean():.3f} "
            f"(high {np.mean(gross & (e > r)):.3f}, low {np.mean(gross & (e < r)):.3f})")


def main(data: str, *args: str) -> None:
    warnings.filterwarnings("ignore", message="pkg_resources")
    split = args.index("--") if "--" in args else len(args)
    bundles, folders = args[:split], args[split + 1:]
    recipe = load_recipe(data)
    frames = int(SECONDS * recipe.sample_rate) // recipe.hop_length
    sets = [("held-out", [load_utterance(p) for p in list_split(data, "val")])]
    for folder in folders:
        utts = [(a, m) for n, a, m in audio_utterances([folder], recipe, 103)
                if n not in ASTERISK_NON_SPEECH][:PROMPTS]
        sets.append((Path(folder).name, utts))
    nets = [(Path(b).name, load_model(b)[0].pitch_net) for b in bundles]
    for label, utts in sets:
        pairs = pitch_examples([(a[: frames * recipe.hop_length], m[:frames]) for a, m in utts],
                               recipe, progress=False)
        mel = torch.from_numpy(np.concatenate([m for m, _ in pairs]))
        ref = np.concatenate([f for _, f in pairs])
        comb = pitch_from_mel(mel, recipe)[0].numpy()
        print(f"{label} ({len(pairs)} prompts, {(ref > 0).sum()} voiced frames)")
        print(f"  comb: {scores(comb, ref)}")
        for name, net in nets:
            if net is None:
                raise SystemExit(f"{name} has no learned F0 estimate (pitch_net)")
            f0, p = (t.numpy() for t in net.estimate(mel))
            used = np.where(p > 0.5, f0, comb)
            print(f"  {name}: {scores(f0, ref)}; as used {scores(used, ref)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
