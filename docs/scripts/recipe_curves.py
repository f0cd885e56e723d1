"""Validation curves of two LP-WaveNet runs against training steps, in comparable units.

    python docs/scripts/recipe_curves.py RUN_A RUN_B OUT.png

A run with pre-emphasis (``preemphasis = alpha``) models the emphasized signal, whose NLL per
sample is the audio's minus log(1 + alpha) (the Jacobian of s = (x - alpha x[t-1]) / (1 + alpha)
given the past); its curve is shifted by + log(1 + alpha) so both are NLLs of the audio.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(run: Path) -> tuple[str, list[int], list[float]]:
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    alpha = float(config["model"].get("preemphasis", 0.0))
    shift = math.log1p(alpha)
    steps = [s for s, _ in metrics["val"]]
    nats = [v + shift for _, v in metrics["val"]]
    label = f"{config['preset']} ({run.name})" + (f", + log(1 + {alpha:g})" if alpha else "")
    return label, steps, nats


def main(a: str, b: str, out: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    for run in (Path(a), Path(b)):
        label, steps, nats = curve(run)
        ax.plot(steps, nats, marker="o", ms=3, label=label)
        print(label, " ".join(f"{s}:{v:.3f}" for s, v in zip(steps, nats, strict=True)))
    ax.set(xlabel="training step (batches of 4 x 2048 samples)",
           ylabel="validation NLL of the audio (nats/sample)",
           title="EMA weights, teacher forced, 4 held-out prompts")
    ax.set_ylim(top=8.0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
