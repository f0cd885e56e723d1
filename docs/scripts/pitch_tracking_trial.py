"""The tracked pitch estimate (``pitch_continuity``, :class:`dmol.audio.pitch.PitchTracker`):
how often it is off, where the vocoder's F0 errors are, and the vocoder with it swapped in.

Sessions 11-12 tried it here first (docs/quality.md); since session 13 it is the library's
(``pitch_from_mel(..., continuity=)``, the model config's ``pitch_continuity``), and a model
is trained with it by ``dmol train ... --set pitch_continuity=0.8``.

    # how often the estimate is > 0.2 octave off WORLD's (harvest) F0, per-frame vs tracked
    python docs/scripts/pitch_tracking_trial.py accuracy data/ DIR...
    # where the output's gross F0 errors are: WAVDIR from `dmol evaluate ... --wav-dir WAVDIR`
    python docs/scripts/pitch_tracking_trial.py errors WAVDIR data/
    # `dmol evaluate ...` of a model trained per frame, with the tracked estimate swapped in:
    # MODE all (clock and pitch taps) or clock (the clock only; the taps stay per frame, as
    # trained); the post-filter keeps the model's own (per-frame) estimate
    python docs/scripts/pitch_tracking_trial.py evaluate 0.8 all pretrained data --seed 0 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from dmol.audio import pitch as P
from dmol.audio.corpus import load_recipe
from dmol.audio.metrics import f0_track
from dmol.audio.phase import clock_phase


def accuracy(data: str, *dirs: str, seconds: float = 3.0) -> None:
    from pitch_accuracy import utterance_sets  # the sets that script measures, 28 each

    recipe = load_recipe(data)
    sr, hop = recipe.sample_rate, recipe.hop_length
    sets = utterance_sets(data, dirs, 28)
    ways = {"per frame": lambda m: P.pitch_from_mel(m, recipe)[0]}
    ways |= {f"tracked {lam:g}": (lambda m, lam=lam: P.pitch_from_mel(m, recipe, lam)[0])
             for lam in (0.2, 0.4, 0.8)}
    for name, utts in sets.items():
        voiced, off = 0, dict.fromkeys(ways, 0)
        for audio, mel in utts:
            frames = min(len(mel), int(seconds * sr) // hop)
            ref, _ = f0_track(np.asarray(audio[:frames * hop], np.float64), sr,
                              frame_period=1000 * hop / sr)
            ref = ref[:frames]
            v = ref > 0
            voiced += int(v.sum())
            for way, fn in ways.items():
                est = fn(torch.as_tensor(np.asarray(mel[:frames]))[None])[0].numpy()[:len(ref)]
                off[way] += int((np.abs(np.log2(est[v] / ref[v])) > 0.2).sum())
        print(name, {k: round(n / voiced, 4) for k, n in off.items()})


def errors(wav_dir: str, data: str) -> None:
    """Frames voiced in both the recording and the vocoder's output whose F0 is > 0.2 octave
    off, and how many of them have a mel estimate as far off (at the mel's hop)."""
    import soundfile as sf

    recipe = load_recipe(data)
    sr, hop = recipe.sample_rate, recipe.hop_length
    both = gross = gross_mel = 0
    se = se_mel = 0.0
    for f in sorted(Path(wav_dir).glob("*_original.wav")):
        x, _ = sf.read(f)
        y, _ = sf.read(str(f).replace("_original.wav", "_wavenet.wav"))
        n = min(len(x), len(y)) // hop * hop
        x, y = x[:n], y[:n]
        mel = torch.from_numpy(recipe.compute(x.astype(np.float32)))[None]
        fm = P.pitch_from_mel(mel, recipe)[0][0].numpy()
        fx, _ = f0_track(x, sr, frame_period=1000 * hop / sr)
        fy, _ = f0_track(y, sr, frame_period=1000 * hop / sr)
        k = min(len(fx), len(fy), len(fm))
        fx, fy, fm = fx[:k], fy[:k], fm[:k]
        v = (fx > 0) & (fy > 0)
        ref = np.where(v, fx, 1.0)
        off = v & (np.abs(np.log2(np.where(v, fy, 1.0) / ref)) > 0.2)
        mel_off = v & (np.abs(np.log2(fm / ref)) > 0.2)
        both, gross = both + v.sum(), gross + off.sum()
        gross_mel += (off & mel_off).sum()
        se += ((fy - fx)[v] ** 2).sum()
        se_mel += ((fy - fx)[v & mel_off] ** 2).sum()
    print(f"{both} frames voiced in both, {gross} of them > 0.2 octave off, {gross_mel} of those "
          f"where the mel's estimate is off too; share of the squared Hz error in frames where "
          f"the mel's estimate is off: {se_mel / se:.2f}")


def run_cli(lam: float, mode: str, *args: str) -> int:
    import dmol.wavenet.model as M
    from dmol.cli import main

    if mode == "all":
        M.pitch_from_mel = lambda m, r, *args, **kwargs: P.pitch_from_mel(m, r, lam)
    elif mode == "clock":  # synthesis's clock only (dmol evaluate synthesizes folded)
        def clock(self, mel):
            f0 = P.pitch_from_mel(mel.transpose(1, 2), self.recipe, lam)[0]
            return clock_phase(f0, self.hop_length, self.cfg.sample_rate)

        M.WaveNet.clock_phase = clock
    else:
        raise SystemExit(f"mode must be all or clock, got {mode!r}")
    return main(["evaluate", *args])


if __name__ == "__main__":
    if sys.argv[1:2] == ["accuracy"]:
        accuracy(*sys.argv[2:])
    elif sys.argv[1:2] == ["errors"]:
        errors(*sys.argv[2:4])
    elif sys.argv[1:2] == ["evaluate"]:
        sys.exit(run_cli(float(sys.argv[2]), sys.argv[3], *sys.argv[4:]))
    else:
        raise SystemExit(__doc__)
