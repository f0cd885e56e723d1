"""Does the learned F0 estimate generalize to lower voices if it also sees the training voice
pitch-shifted down (session 19, not in the bundle)?

Fits two `MelPitchNet`s as `dmol export --fit-pitch` does: on the training split, and on the
training split plus every other prompt shifted down by SEMITONES (librosa's pitch shift, which
moves the formants too: a lower, larger-sounding voice), harvest's F0 of each; scores both as
`pitch_net_accuracy.py` does.

    python docs/scripts/pitch_net_shifted.py data/ 7 /usr/share/asterisk/sounds/fr_CA_f_June \
        /usr/share/asterisk/sounds/it_IT_m_Carlo
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import librosa
import numpy as np

from dmol.audio.corpus import list_split, load_recipe, load_utterance
from dmol.audio.pitch_net import fit_mel_pitch_net, pitch_examples
from dmol.wavenet.evaluate import audio_utterances

sys.path.insert(0, str(Path(__file__).parent))
from pitch_net_accuracy import SECONDS, report  # noqa: E402


def main(data: str, semitones: str, *folders: str) -> None:
    warnings.filterwarnings("ignore", message="pkg_resources")
    recipe = load_recipe(data)
    sr, hop = recipe.sample_rate, recipe.hop_length
    utts = [load_utterance(p) for p in list_split(data, "train")]
    shifted = []
    for audio, _ in utts[::2]:
        y = librosa.effects.pitch_shift(audio, sr=sr, n_steps=-float(semitones))
        y = np.clip(y, -1.0, 1.0).astype(np.float32)[: len(y) // hop * hop]
        shifted.append((y, recipe.compute(y)))
    plain = pitch_examples(utts, recipe)
    extra = pitch_examples(shifted, recipe)
    nets = {"plain": fit_mel_pitch_net(plain, recipe.n_mels),
            f"+{len(shifted)} shifted -{semitones} st": fit_mel_pitch_net(plain + extra,
                                                                         recipe.n_mels)}
    frames = int(SECONDS * sr) // hop
    sets = [("held-out", [(a[:frames * hop], m[:frames]) for a, m in
                          (load_utterance(p) for p in list_split(data, "val"))])]
    for folder in folders:
        sets.append((Path(folder).name, [(a[:frames * hop], m[:frames]) for _, a, m in
                                         audio_utterances([folder], recipe, 28)]))
    for label, s in sets:
        examples = pitch_examples(s, recipe, progress=False)
        for name, net in nets.items():
            print(f"--- {name}")
            report(label, examples, recipe, net)


if __name__ == "__main__":
    main(*sys.argv[1:])
