"""How close to harvest's F0 are the comb's estimate and the learned one (session 19)?

Fits `dmol.audio.pitch_net.MelPitchNet` as `dmol export --fit-pitch` does (the training split
of a dataset, harvest's F0 per mel frame, seed 0) and scores both estimates per mel frame
against harvest's F0 of the recording (16 ms frames, the first 3 s of each prompt), over the
frames harvest calls voiced: the RMS error in Hz, the share of frames more than 300 cents
("gross") and more than 50 cents off; for the learned estimate also how often its voicing
agrees with harvest's, and the same scores over the frames it calls voiced (where a vocoder
with ``pitch_net`` uses it).

    python docs/scripts/pitch_net_accuracy.py data/ [/usr/share/asterisk/sounds/fr_CA_f_June ...]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from dmol.audio.corpus import list_split, load_recipe, load_utterance
from dmol.audio.pitch import pitch_from_mel
from dmol.audio.pitch_net import fit_mel_pitch_net, pitch_examples
from dmol.wavenet.evaluate import audio_utterances

SECONDS = 3.0


def scores(est: np.ndarray, ref: np.ndarray, use: np.ndarray) -> str:
    e, r = est[use], ref[use]
    cents = 1200 * np.abs(np.log2(e / r))
    return (f"RMSE {np.sqrt(np.mean((e - r) ** 2)):5.1f} Hz, > 300 cents {np.mean(cents > 300):.3f}"
            f", > 50 cents {np.mean(cents > 50):.3f} ({use.sum()} frames)")


def report(label: str, examples, recipe, net) -> None:
    mel = torch.from_numpy(np.concatenate([m for m, _ in examples]))
    ref = np.concatenate([f for _, f in examples])
    comb = np.concatenate([pitch_from_mel(torch.from_numpy(m), recipe)[0].numpy()
                           for m, _ in examples])
    f0, p = (t.numpy() for t in net.estimate(mel))
    voiced, heard = ref > 0, p > 0.5
    print(f"{label}: comb    {scores(comb, ref, voiced)}")
    print(f"{label}: learned {scores(f0, ref, voiced)}; voicing agrees in "
          f"{np.mean(heard == voiced):.3f} of all frames")
    print(f"{label}: where the learned one hears a pitch and harvest too: comb "
          f"{scores(comb, ref, voiced & heard)}; learned {scores(f0, ref, voiced & heard)}")


def main(data: str, *folders: str) -> None:
    warnings.filterwarnings("ignore", message="pkg_resources")
    recipe = load_recipe(data)
    train = pitch_examples([load_utterance(p) for p in list_split(data, "train")], recipe)
    net = fit_mel_pitch_net(train, recipe.n_mels)
    frames = int(SECONDS * recipe.sample_rate) // recipe.hop_length
    held = [load_utterance(p) for p in list_split(data, "val")]
    sets = [("held-out", [(a[:frames * recipe.hop_length], m[:frames]) for a, m in held])]
    for folder in folders:
        utts = audio_utterances([folder], recipe, 28)
        sets.append((Path(folder).name, [(a[:frames * recipe.hop_length], m[:frames])
                                         for _, a, m in utts]))
    for label, utts in sets:
        report(label, pitch_examples(utts, recipe, progress=False), recipe, net)


if __name__ == "__main__":
    main(*sys.argv[1:])
