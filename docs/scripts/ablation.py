"""The fixed-budget recipe ablation of docs/quality.md: each arm trains from scratch for the
same CPU time on the same data, then is scored free-running against Griffin-Lim.

    python docs/scripts/ablation.py data/ runs/ablation --minutes 30 --threads 2
    python docs/scripts/ablation.py data/ runs/ablation --report docs/results/ablation

Arms run one after another (``--arms`` picks some; two invocations with ``--threads 1`` and
disjoint arms share a 2-core machine at the same budget in core-minutes). A stopped arm
resumes where it was: its budget counts the ``train_seconds`` its run already has. Every arm
is the ``lp-16k`` network (14 layers, 32 channels, 10 logistics) so that only the recipe
differs. ``--report DIR`` evaluates each arm's last checkpoint (``dmol evaluate``: 8 held-out
prompts x 3 s, seeds 0 and 1, scale temperatures 1 and 0.3) and writes ``table.md``, the
JSON files, ``spectrograms.png`` (one held-out prompt, every arm) and ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# name -> (preset, overrides, what it tests)
ARMS: dict[str, tuple[str, dict[str, object], str]] = {
    "mol": ("lp-16k", {"lpc_order": 0, "input_noise": 0.0}, "MoL, no linear prediction"),
    "mol-lp": ("lp-16k", {"input_noise": 0.0}, "MoL + LP (means shifted by p_t)"),
    "mol-lp-noise": ("lp-16k", {}, "MoL + LP + input noise 2e-4 (the lp-16k preset)"),
    "gaussian-lp": ("lp-16k", {"head": "gaussian"}, "one Gaussian + LP + input noise"),
    "logistic-lp": ("lp-16k", {"n_mixtures": 1}, "one logistic + LP + input noise (MoL, M = 1)"),
    "ltp": ("lp-16k-ltp", {}, "MoL + LP + noise + 5 pitch taps (lp-16k-ltp)"),
    "ltp-self": ("lp-16k-ltp", {"self_sample": 0.5, "self_sample_passes": 2},
                 "lp-16k-ltp + self-sampling (half the batch, 2 passes)"),
    "ltpe": ("lp-16k-ltpe", {}, "lp-16k-ltp + the taps' excitation (lp-16k-ltpe)"),
    "ltpe-clock": ("lp-16k-ltpe-clock", {}, "lp-16k-ltpe + a phase clock (lp-16k-ltpe-clock)"),
}
KEYS = ("mcd_db", "log_mel_l1", "mrstft", "f0_rmse_hz", "vuv_error")
HEADER = ("MCD dB", "log-mel L1", "MR-STFT", "F0 RMSE Hz", "V/UV")
DMOL = [sys.executable, "-m", "dmol"]


def _metrics(run: Path) -> dict:
    f = run / "metrics.json"
    return json.loads(f.read_text()) if f.exists() else {}


def train_arm(name: str, data: Path, runs: Path, minutes: float, threads: int) -> None:
    preset, overrides, _ = ARMS[name]
    run = runs / name
    done = _metrics(run).get("train_seconds", 0.0) / 60.0
    left = minutes - done
    if left <= 0.05:
        print(f"{name}: budget spent ({done:.1f} of {minutes:g} min)", flush=True)
        return
    sets = [f"--set={k}={v}" for k, v in overrides.items()]
    resume = ["--resume"] if any(run.glob("ckpt_*.pt")) else []
    print(f"{name}: training {left:.1f} min ({preset} {' '.join(sets)})", flush=True)
    subprocess.run([*DMOL, "train", str(data), "--preset", preset, "--out", str(run),
                    "--threads", str(threads), "--minutes", f"{left:.3f}", "--no-progress",
                    *sets, *resume], check=True)


def _last_checkpoint(run: Path) -> Path:
    ckpts = sorted(run.glob("ckpt_*.pt"))
    if not ckpts:
        raise SystemExit(f"{run}: no checkpoint: train the arm first")
    return ckpts[-1]


def report(names: list[str], data: Path, runs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows, gl = [], None
    for name in names:
        ckpt, m = _last_checkpoint(runs / name), _metrics(runs / name)
        for st in (1.0, 0.3):
            results = []
            for seed in (0, 1):
                f = out / f"{name}_st{st:g}_seed{seed}.json"
                if not f.exists():
                    subprocess.run([*DMOL, "evaluate", str(ckpt), str(data), "--max-utterances",
                                    "8", "--max-seconds", "3", "--scale-temperature", str(st),
                                    "--seed", str(seed), "--json", str(f)],
                                   check=True, env=env, stdout=subprocess.DEVNULL)
                results.append(json.loads(f.read_text())["systems"])
            gl = results[0]["Griffin-Lim"]
            mean = [np.mean([r["WaveNet"][k] for r in results]) for k in KEYS]
            rows.append((name, st, m.get("step"), m.get("train_seconds", 0) / 60, mean))
    lines = ["| arm | recipe | steps | minutes | scale temp. | " + " | ".join(HEADER) + " |",
             "|---|---|---|---|---|" + "---|" * len(KEYS)]
    for name, st, step, minutes, mean in rows:
        cells = [f"{v:.2f}" if k == "mcd_db" else f"{v:.1f}" if k == "f0_rmse_hz" else f"{v:.3f}"
                 for k, v in zip(KEYS, mean, strict=True)]
        lines.append(f"| {name} | {ARMS[name][2]} | {step:,} | {minutes:.0f} | {st:g} | "
                     + " | ".join(cells) + " |")
    if gl is not None:
        lines.append("| Griffin-Lim | 60 iterations | | | | "
                     + " | ".join(f"{gl[k]:.3f}" for k in KEYS) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    spectrograms(names, data, runs, out / "spectrograms.png")
    curves(names, runs, out / "curves.png")


def spectrograms(names: list[str], data: Path, runs: Path, path: Path, index: int = 2) -> None:
    import torch

    from dmol.audio.corpus import list_split, load_utterance
    from dmol.audio.features import griffin_lim
    from dmol.wavenet.checkpoint import load_model
    from dmol.wavenet.demo import _spectrogram_db
    from dmol.wavenet.synthesis import vocode

    torch.set_num_threads(1)
    utt = list_split(data, "val")[index]
    audio, mel = load_utterance(utt)
    waves, recipe = [], None
    for name in names:
        model, head, recipe, info = load_model(_last_checkpoint(runs / name))
        frames = min(len(mel), 3 * recipe.sample_rate // recipe.hop_length)
        w = vocode(model, head, recipe, mel[:frames], mode="folded", seed=0)
        waves.append((f"{name} (step {info['step']:,}), scale temperature 1", np.asarray(w)))
    frames = min(len(mel), 3 * recipe.sample_rate // recipe.hop_length)
    waves = [("original", audio[: frames * recipe.hop_length]),
             ("Griffin-Lim", griffin_lim(mel[:frames], recipe)), *waves]
    fig, axs = plt.subplots(len(waves), 1, figsize=(10, 2.0 * len(waves)), constrained_layout=True)
    top = max(_spectrogram_db(w).max() for _, w in waves)
    for ax, (title, w) in zip(axs, waves, strict=True):
        ax.imshow(_spectrogram_db(w), origin="lower", aspect="auto", cmap="magma",
                  vmin=top - 80, vmax=top,
                  extent=(0, len(w) / recipe.sample_rate, 0, recipe.sample_rate / 2000))
        ax.set(ylabel="kHz", title=title)
    axs[-1].set_xlabel(f"time (s): {utt.stem}, held out")
    fig.savefig(path, dpi=72)
    plt.close(fig)


def curves(names: list[str], runs: Path, path: Path) -> None:
    """Validation NLL (teacher forced, EMA) against training minutes: the budget's x-axis."""
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for name in names:
        m = _metrics(runs / name)
        if not m.get("val") or not m.get("step"):
            continue
        per_step = m["train_seconds"] / 60.0 / m["step"]
        steps, nll = np.array(m["val"]).T
        ax.plot(steps * per_step, nll, marker="o", label=name)
    ax.set(xlabel="training minutes (steps x mean minutes per step)",
           ylabel="validation NLL (nats/sample)", title="fixed-budget ablation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("runs", type=Path)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    p.add_argument("--minutes", type=float, default=30.0, help="wall minutes per arm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report", type=Path, default=None,
                   help="evaluate the arms (no training) and write the table and figures here")
    a = p.parse_args(argv)
    names = [n for n in a.arms.split(",") if n]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {unknown}: expected some of {list(ARMS)}")
    if a.report is not None:
        report(names, a.data, a.runs, a.report)
        return 0
    for name in names:
        train_arm(name, a.data, a.runs, a.minutes, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
