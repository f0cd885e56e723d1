"""How much of a mixture head's weight each component carries, teacher-forced over real speech.

    python docs/scripts/mixture_usage.py CHECKPOINT [AUDIO ...] [--json OUT.json]

Prints, per component, its mean weight, mean log-scale and mean offset from the prediction, and
the fraction of samples on which one component holds more than 99% of the weight. A mixture
that has collapsed onto one component is a single logistic: symmetric around its mean, it
cannot say "probably a small step, possibly a glottal pulse upwards".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dmol.audio.corpus import load_audio
from dmol.wavenet.checkpoint import load_model

DEFAULT_AUDIO = ["/usr/share/asterisk/sounds/en/conf-getconfno.g722",
                 "/usr/share/asterisk/sounds/en/vm-password.g722"]


def usage(checkpoint: str, audio: list[str], max_seconds: float = 3.0) -> dict:
    model, head, recipe, info = load_model(checkpoint)
    M = model.cfg.n_mixtures
    weights, scales, offsets, peaked, n = 0.0, 0.0, 0.0, 0.0, 0
    for path in audio:
        x = load_audio(Path(path), recipe.sample_rate)[: int(max_seconds * recipe.sample_rate)]
        mel = recipe.compute(x)
        T = mel.shape[0] * recipe.hop_length
        signal = model.emphasize(torch.from_numpy(np.ascontiguousarray(x[:T]))[None])
        with torch.no_grad():
            y = model(signal, torch.from_numpy(mel.T.copy())[None])[0].double()
        w = torch.softmax(y[:M], 0)
        weights = weights + w.sum(1)
        scales = scales + y[2 * M:3 * M].sum(1)
        offsets = offsets + y[M:2 * M].sum(1)
        peaked += float((w.max(0).values > 0.99).sum())
        n += T
    return {"checkpoint": checkpoint, "step": info.get("step"), "samples": n,
            "mean_weight": (weights / n).tolist(), "mean_log_scale": (scales / n).tolist(),
            "mean_offset": (offsets / n).tolist(), "one_component_over_99pct": peaked / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("audio", nargs="*", default=DEFAULT_AUDIO)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    r = usage(a.checkpoint, a.audio)
    print(f"{r['checkpoint']} (step {r['step']}), {r['samples']} samples")
    print("component | mean weight | mean log-scale | mean offset from p")
    for m, (w, s, o) in enumerate(zip(r["mean_weight"], r["mean_log_scale"], r["mean_offset"],
                                      strict=True)):
        print(f"{m} | {w:.4f} | {s:.2f} | {o:+.4f}")
    print(f"samples where one component has > 99% of the weight: "
          f"{r['one_component_over_99pct']:.3f}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
