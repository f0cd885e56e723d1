"""Does preferring the comb's half or third octave fix its gross errors (session 21)?

For the held-out prompts and the first 60 speech prompts of four Asterisk voices (the first 3 s
of each; harvest's F0 per mel frame, cached in ./f0cache), the comb's estimate
(`dmol.audio.pitch.pitch_scores`, best candidate) against a rule that takes, among the best
candidate's half and third (the best-scoring candidate within 3 of each), the lowest whose
score is at least ALPHA times the best. Prints the RMSE over harvest's voiced frames and the
share more than 300 cents off, split into too high and too low.

    python docs/scripts/comb_octave_trial.py 0.9 0.8 0.7
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import torch
from pitch_net_voices import scores  # docs/scripts: the same per-frame scoring

from dmol.audio.corpus import ASTERISK_NON_SPEECH, list_split, load_recipe, load_utterance
from dmol.audio.pitch import pitch_candidates, pitch_scores
from dmol.audio.pitch_net import pitch_examples
from dmol.wavenet.evaluate import audio_utterances

warnings.filterwarnings("ignore", message="pkg_resources")
SOUNDS = "/usr/share/asterisk/sounds/"
SETS = {"held": None, "june": "fr_CA_f_June", "carlo": "it_IT_m_Carlo",
        "ru": "ru_RU_f_IvrvoiceRU", "es": "es_MX_f_Allison"}
CACHE = "f0cache"  # harvest of the five sets, computed once


def load(recipe) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(log-mel frames, harvest F0) of each set, from ./f0cache or computed."""
    os.makedirs(CACHE, exist_ok=True)
    frames = 3 * recipe.sample_rate // recipe.hop_length
    out = {}
    for k, folder in SETS.items():
        f = f"{CACHE}/{k}.npz"
        if not os.path.exists(f):
            if folder is None:
                utts = [load_utterance(p) for p in list_split("data", "val")]
            else:
                utts = [(a, m) for n, a, m in audio_utterances([SOUNDS + folder], recipe, 103)
                        if n not in ASTERISK_NON_SPEECH][:60]
            utts = [(a[: frames * recipe.hop_length], m[:frames]) for a, m in utts]
            ex = pitch_examples(utts, recipe, workers=1, progress=False)
            np.savez(f, mel=np.concatenate([m for m, _ in ex]),
                     f0=np.concatenate([h for _, h in ex]))
        z = np.load(f)
        out[k] = (z["mel"], z["f0"])
    return out


def rule(sc: np.ndarray, cand: np.ndarray, alpha: float | None, divs=(2, 3)) -> np.ndarray:
    """The best candidate, or (alpha given) the lowest of its 1/d (d in divs) scoring at least
    alpha times the best."""
    best = sc.argmax(-1)
    if alpha is None:
        return cand[best]
    logc = np.log(cand)
    f = cand[best].copy()
    bs = sc[np.arange(len(sc)), best]
    chosen = f.copy()
    for d in sorted(divs, reverse=True):  # the lowest divisor that qualifies wins
        target = np.log(f / d)
        idx = np.abs(logc[None] - target[:, None]).argmin(-1)
        ok = np.abs(logc[idx] - target) < 0.03
        lo = np.clip(idx - 3, 0, len(cand) - 1)  # the best candidate within +-3
        hi = np.clip(idx + 3, 0, len(cand) - 1)
        loc = np.array([lo[i] + sc[i, lo[i]:hi[i] + 1].argmax() for i in range(len(sc))])
        s = sc[np.arange(len(sc)), loc]
        take = ok & (s >= alpha * bs) & (chosen == f)
        chosen = np.where(take, cand[loc], chosen)
    return chosen


if __name__ == "__main__":
    recipe = load_recipe("data")
    data = load(recipe)
    cand = pitch_candidates(recipe).numpy()
    alphas = [None] + [float(a) for a in sys.argv[1:]]
    for k, (mel, f0) in data.items():
        sc = pitch_scores(torch.from_numpy(mel), recipe).numpy()
        for a in alphas:
            print(f"{k:6s} alpha {a}: {scores(rule(sc, cand, a), f0)}")
