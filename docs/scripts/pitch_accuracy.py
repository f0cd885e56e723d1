"""How well the pitch from the mel (dmol.audio.pitch) matches WORLD's on real speech.

For the first utterances of a dmol dataset's validation split (and of any audio folders
given after it, analysed with the dataset's mel recipe), the first 3 s of each: the share of
frames WORLD (DIO + StoneMask) calls voiced whose mel estimate is within 7% (0.1 octave) of
WORLD's F0, the RMS error in Hz among those, and the octave errors.

    python docs/scripts/pitch_accuracy.py data/ [/usr/share/asterisk/sounds/fr_CA_f_June ...]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dmol.audio.corpus import list_split, load_recipe, load_utterance
from dmol.audio.metrics import f0_track
from dmol.audio.pitch import pitch_from_mel
from dmol.wavenet.evaluate import audio_utterances


def score(utterances, recipe, seconds: float = 3.0) -> dict[str, float]:
    sr, hop = recipe.sample_rate, recipe.hop_length
    est, ref = [], []
    for audio, mel in utterances:
        frames = min(len(mel), int(seconds * sr) // hop)
        # WORLD every hop: frame i at i * hop / sr seconds, the mel frame's centre
        f0, _ = f0_track(audio[:frames * hop], sr, method="dio", frame_period=1000 * hop / sr)
        n = min(frames, len(f0))
        e, _ = pitch_from_mel(torch.from_numpy(np.asarray(mel[:n])), recipe)
        est.append(e.numpy())
        ref.append(f0[:n])
    e, r = np.concatenate(est), np.concatenate(ref)
    v = r > 0
    octaves = np.log2(e[v] / r[v])
    ok = np.abs(octaves) < 0.1
    return {"voiced frames": int(v.sum()), "within 7%": float(ok.mean()),
            "RMS Hz within": float(np.sqrt(np.mean((e[v][ok] - r[v][ok]) ** 2))),
            "octave low": float(np.mean(np.abs(octaves + 1) < 0.1)),
            "octave high": float(np.mean(np.abs(octaves - 1) < 0.1))}


def utterance_sets(data_dir: str, voices, count: int) -> dict[str, list]:
    """{name: [(audio, mel), ...]}: the first ``count`` validation utterances of a dataset, and
    of each audio folder in ``voices`` (analysed with the dataset's recipe)."""
    recipe = load_recipe(data_dir)
    sets = {f"{data_dir} (validation)": [load_utterance(p)
                                         for p in list_split(data_dir, "val")[:count]]}
    for v in voices:
        sets[v] = [(a, m) for _, a, m in audio_utterances([v], recipe)[:count]]
    return sets


def main(data_dir: str, *voices: str, count: int = 8) -> None:
    recipe = load_recipe(data_dir)
    for name, utts in utterance_sets(data_dir, voices, count).items():
        s = score(utts, recipe)
        print(f"{name}: {len(utts)} utterances, {s['voiced frames']} voiced frames; within 7%: "
              f"{s['within 7%']:.1%}, RMS error among those {s['RMS Hz within']:.1f} Hz; "
              f"an octave low {s['octave low']:.1%}, high {s['octave high']:.1%}")


if __name__ == "__main__":
    main(*sys.argv[1:])
