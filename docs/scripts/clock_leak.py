"""Does a phase-clock model lean on the clock where the recording is unvoiced?

In training the clock reads the phase of the recording's own fundamental
(`dmol.audio.phase.analysis_phase`); in an unvoiced frame that phase is the angle of whatever
the signal has near the F0 estimate, so it carries a little of the target. Synthesis gives the
regular clock of the estimate instead. This prints the teacher-forced NLL (nats per sample) of
a checkpoint on held-out prompts, split by harvest's voicing of the recording, with three
clocks: the analysis phase (training's), the synthesis clock, and the analysis phase with its
baseband angle faded out where the baseband is weak (|baseband| / local rms from 0.1 to 0.3:
the synthesis clock in unvoiced frames, the recording's phase in voiced ones). If the
unvoiced frames' NLL barely depends on the clock, the network does not use it there.

    python docs/scripts/clock_leak.py pretrained data/ 16
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from dmol.audio.corpus import list_split, load_utterance
from dmol.audio.metrics import f0_track
from dmol.audio.phase import SMOOTH_HZ, clock_phase
from dmol.wavenet.checkpoint import load_model

FADE = (0.1, 0.3)  # |baseband| / rms: no angle at or below 0.1, all of it at or above 0.3


def clocks(x: torch.Tensor, f0: torch.Tensor, hop: int, sr: int) -> dict[str, torch.Tensor]:
    """The three clocks (1, T) in cycles for a signal x (1, T) and the estimate f0 (1, F)."""
    clock = clock_phase(f0, hop, sr)
    ang = 2 * math.pi * clock
    n = int(round(sr / SMOOTH_HZ)) | 1  # the analysis phase's own smoothing window
    w = torch.hann_window(n + 2, periodic=False, dtype=torch.float64)[1:-1]
    w = (w / w.sum()).view(1, 1, n)
    xd = x.double()

    def smooth(v: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(v.view(-1, 1, v.shape[-1]), (n // 2, n // 2)), w).view(v.shape)

    re, im = smooth(xd * torch.cos(ang)), smooth(-xd * torch.sin(ang))
    angle = torch.atan2(im, re) / (2 * math.pi)
    ratio = torch.hypot(re, im) / smooth(xd * xd).sqrt().clamp_min(1e-12)
    fade = ((ratio - FADE[0]) / (FADE[1] - FADE[0])).clamp(0, 1)
    out = {"analysis (training)": clock + angle, "synthesis clock": clock,
           "analysis, faded where weak": clock + fade * angle}
    return {k: v - torch.floor(v) for k, v in out.items()}


def main(ckpt: str, data: str, n: str = "16") -> None:
    model, head, recipe, _ = load_model(ckpt)
    model.eval()
    if not model.cfg.phase_harmonics:
        raise SystemExit(f"{ckpt} has no phase clock (phase_harmonics = 0)")
    sr, hop = recipe.sample_rate, recipe.hop_length
    nll: dict[str, dict[str, list]] = {}
    with torch.no_grad():
        for path in list_split(data, "val")[:int(n)]:
            audio, mel = load_utterance(path)
            x = model.emphasize(torch.from_numpy(audio)[None])
            m = torch.from_numpy(mel).T[None].contiguous()
            f0, t = f0_track(audio.astype(np.float64), sr)
            voiced = np.repeat(f0 > 0, sr // 200)[: x.shape[1]]  # 5 ms frames -> samples
            voiced = np.pad(voiced, (0, x.shape[1] - len(voiced)), mode="edge")
            for name, phase in clocks(x, model.f0(m).double(), hop, sr).items():
                per = head.nll(model(x, m, phase=phase).float(), x)[0].numpy()
                d = nll.setdefault(name, {"voiced": [], "unvoiced": []})
                d["voiced"].append(per[voiced])
                d["unvoiced"].append(per[~voiced])
    for name, d in nll.items():
        v, u = np.concatenate(d["voiced"]), np.concatenate(d["unvoiced"])
        print(f"{name:28s} voiced {v.mean():.4f}  unvoiced {u.mean():.4f} nats/sample "
              f"({len(v)} / {len(u)} samples)")


if __name__ == "__main__":
    main(*sys.argv[1:])
