"""Would a higher ceiling of the mel's pitch estimate (``f0_max``, default 420 Hz) help?
For ceilings 420, 600 and 800 Hz (the candidates below 420 Hz the same, ~1% apart), per frame
and tracked (0.8): the share of harvest's voiced frames whose estimate is within 7% (0.1
octave), the octave errors, the share of voiced frames above 420 Hz, and how many frames'
estimate differs from the 420 Hz ceiling's (in how many prompts); 28 prompts x 3 s of the
held-out split and of each audio folder given.

    python docs/scripts/pitch_ceiling.py data/ /usr/share/asterisk/sounds/fr_CA_f_June \\
        /usr/share/asterisk/sounds/it_IT_m_Carlo
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from pitch_accuracy import utterance_sets

import dmol.audio.pitch as P
from dmol.audio.corpus import load_recipe
from dmol.audio.metrics import f0_track


def score(utts, recipe, continuity: float, ceiling: float, seconds: float = 3.0) -> tuple:
    sr, hop = recipe.sample_rate, recipe.hop_length
    est, ref, changed, prompts = [], [], 0, 0
    for audio, mel in utts:
        frames = min(len(mel), int(seconds * sr) // hop)
        f0, _ = f0_track(audio[:frames * hop], sr, method="harvest",
                         frame_period=1000 * hop / sr)
        n = min(frames, len(f0))
        m = torch.from_numpy(np.asarray(mel[:n]))
        e, _ = P.pitch_from_mel(m, recipe, continuity, f0_max=ceiling)
        d = int((e != P.pitch_from_mel(m, recipe, continuity)[0]).sum())
        changed, prompts = changed + d, prompts + (d > 0)
        est.append(e.numpy())
        ref.append(f0[:n])
    e, r = np.concatenate(est), np.concatenate(ref)
    v = r > 0
    o = np.log2(e[v] / r[v])
    return (int(v.sum()), np.mean(np.abs(o) < 0.1), np.mean(np.abs(o + 1) < 0.1),
            np.mean(np.abs(o - 1) < 0.1), np.mean(r[v] > 420), changed, prompts)


def main(data: str, *voices: str) -> None:
    recipe = load_recipe(data)
    sets = utterance_sets(data, voices, 28)
    for ceiling in (420.0, 600.0, 800.0):
        for continuity in (0.0, 0.8):
            for name, utts in sets.items():
                n, ok, low, high, above, changed, prompts = score(utts, recipe, continuity,
                                                                  ceiling)
                print(f"ceiling {ceiling:g} Hz, continuity {continuity:g}, {name}: {n} voiced "
                      f"frames, within 7% {ok:.3f}, octave low {low:.3f}, high {high:.3f}, "
                      f"above 420 Hz {above:.3f}; {changed} frames of {prompts} prompts "
                      f"differ from the 420 Hz ceiling's")


if __name__ == "__main__":
    main(*sys.argv[1:])
