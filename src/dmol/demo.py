"""`dmol demo`: the main job end to end on built-in real speech, on a CPU, in minutes.

1. assemble the built-in corpus (Asterisk prompts, CC-BY-SA-3.0) into ``OUT/data``;
2. train a WaveNet with a MoL head for a wall-clock budget into ``OUT/run`` (a second run
   reuses that model: it resumes if the budget was not used up and skips training if it was);
3. vocode a few short held-out utterances from their mels with the WaveNet and with
   Griffin-Lim, and score both against the originals;
4. write into ``OUT``: the WAVs, ``report.png`` (loss curves, spectrograms, the model's
   predicted distribution), ``inspect.png``, ``metrics.json`` and ``index.html``, a page that
   opens offline with a player for every WAV, the pictures, the metrics and the licence.

Example::

    $ dmol demo                         # ~10 min of training on small-16k, writes ./demo
    $ dmol demo --preset tiny --minutes 0.5 --utterances 1 --limit 8 --out /tmp/demo
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "pick_utterances", "run_demo", "write_index", "write_report"]

SYSTEM_LABELS = {"original": "Original", "WaveNet": "WaveNet (dmol MoL)",
                 "Griffin-Lim": "Griffin-Lim (no network)"}
SPEC_HOP = 64  # samples between the report's spectrogram columns (4 ms at 16 kHz)


def _stage(i: int, n: int, msg: str, t0: float) -> None:
    print(f"\n[{i}/{n}] {msg}  (t = {time.perf_counter() - t0:.0f} s)", flush=True)


# ---- choosing held-out utterances ---------------------------------------------------------
def pick_utterances(paths: Sequence[Path], n: int, max_seconds: float, sample_rate: int,
                    min_seconds: float = 0.5) -> list[Path]:
    """``n`` validation utterances that are cheap to vocode yet long enough to hear.

    Prefers the longest ones not over ``max_seconds`` (more speech per second of synthesis),
    then the shortest of the rest (they get cropped to ``max_seconds``); deterministic.
    """
    from dmol.audio.corpus import load_utterance

    if n < 1:
        raise ValueError(f"need at least one utterance, got {n}")
    if not paths:
        raise ValueError("the corpus has no validation utterance to vocode")
    secs = {p: len(load_utterance(p)[0]) / sample_rate for p in paths}
    fits = sorted((p for p in paths if min_seconds <= secs[p] <= max_seconds),
                  key=lambda p: (-secs[p], p.name))
    rest = sorted((p for p in paths if p not in fits), key=lambda p: (secs[p] < min_seconds,
                                                                       secs[p], p.name))
    return (fits + rest)[:n]


# ---- training, or reusing what an earlier run trained --------------------------------------
def _train_or_reuse(data_dir: Path, run_dir: Path, preset: str, minutes: float,
                    overrides: dict[str, Any] | None) -> Path:
    """Train ``preset`` for ``minutes`` in ``run_dir``, resuming or skipping as appropriate.

    The time already spent and whether ``max_steps`` was reached are read from the newest
    checkpoint itself, so an interrupted run is judged by what it actually saved.
    """
    from dmol.wavenet.checkpoint import latest_checkpoint, load_checkpoint
    from dmol.wavenet.train import train

    ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    budget = 60.0 * minutes
    if ckpt is None:
        print(f"training preset {preset!r} from scratch for {minutes:g} min into {run_dir}")
        train(data_dir, run_dir, preset, minutes=minutes, overrides=overrides)
    else:
        state = load_checkpoint(ckpt)
        if state.get("preset") != preset:
            raise ValueError(f"{run_dir} holds a model of preset {state.get('preset')!r}, not "
                             f"{preset!r}: pass --preset {state.get('preset')} or another --out")
        spent = float(state.get("metrics", {}).get("train_seconds", 0.0))
        finished = int(state["step"]) >= int(state["train_config"]["max_steps"])
        if spent >= 0.98 * budget or finished:
            why = "it reached max_steps" if finished else "the budget is used up"
            print(f"reusing the trained model {ckpt} (step {state['step']}, {spent / 60:.1f} "
                  f"of {minutes:g} min trained): {why}, skipping training")
            return ckpt
        left = (budget - spent) / 60.0
        print(f"resuming training from {ckpt} (step {state['step']}, {spent / 60:.1f} of "
              f"{minutes:g} min trained, {left:.1f} min left)")
        train(data_dir, run_dir, preset, minutes=left, resume=True, overrides=overrides)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise RuntimeError(f"training wrote no checkpoint into {run_dir}")
    return ckpt


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


# ---- reusing the vocoded outputs of an earlier run -----------------------------------------
def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_result(out: Path, vocoded: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation in ``out/metrics.json`` if it was made exactly as asked and its WAVs exist."""
    try:
        old = json.loads((out / "metrics.json").read_text())
        if old["demo"]["vocoded"] != vocoded:
            return None
        files = [f for u in old["utterances"] for f in u["wavs"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return old if files and all((out / f).is_file() for f in files) else None


# ---- the report picture ------------------------------------------------------------------
def _spectrogram_db(audio: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """(1 + n_fft // 2, frames) magnitude in dB: Hann window, centred frames, zero padding."""
    x = np.pad(np.asarray(audio, dtype=np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::SPEC_HOP]
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    s = np.abs(np.fft.rfft(frames * window, axis=1)).T
    return 20.0 * np.log10(np.maximum(s, 1e-5))


def _loss_curves(run: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (steps, NLL in nats) from a run's metrics.json ``[[step, loss], ...]`` lists."""
    curves = {}
    for key, label in (("train", "training"), ("val", "validation (EMA weights)")):
        pts = np.array([p[:2] for p in run.get(key) or []], dtype=float).reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            curves[label] = (pts[:, 0], pts[:, 1])
    return curves


def write_report(path: Path, *, run_dir: Path, wavs: dict[str, Path], sample_rate: int,
                 inspect_png: Path | None, title: str) -> Path:
    """Loss curves, three spectrograms (original/WaveNet/Griffin-Lim) and the inspect picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    have_inspect = inspect_png is not None and inspect_png.is_file()
    # left column: loss and spectrograms; right column: the inspect picture, full height
    fig = plt.figure(figsize=(21 if have_inspect else 11, 12), constrained_layout=True)
    gs = fig.add_gridspec(4, 2 if have_inspect else 1, width_ratios=[1, 1] if have_inspect
                          else None)

    ax = fig.add_subplot(gs[0, 0])
    curves = _loss_curves(_run_metrics(run_dir))
    for label, (steps, values) in curves.items():
        ax.plot(steps, values / np.log(2.0), marker="o" if len(steps) < 30 else None,
                ms=3, lw=1, label=label)
    ax.set(xlabel="step", ylabel="NLL (bits/sample)", title="training and validation loss")
    if curves:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss curve recorded", ha="center", transform=ax.transAxes)

    specs = {k: _spectrogram_db(sf.read(str(p), dtype="float32")[0]) for k, p in wavs.items()}
    vmax = max(s.max() for s in specs.values())
    for i, (key, s) in enumerate(specs.items()):
        ax = fig.add_subplot(gs[1 + i, 0])
        dur = (s.shape[1] - 1) * SPEC_HOP / sample_rate
        im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80,
                       vmax=vmax, extent=(0, dur, 0, sample_rate / 2000))
        ax.set(ylabel="kHz", title=SYSTEM_LABELS.get(key, key))
        if i == len(specs) - 1:
            ax.set_xlabel("time (s)")
        fig.colorbar(im, ax=ax, label="dB", pad=0.01)

    if have_inspect:
        ax = fig.add_subplot(gs[:, 1])
        ax.imshow(plt.imread(inspect_png))
        ax.set_axis_off()
        ax.set_title("the model's predicted distribution (dmol inspect, full size in inspect.png)")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---- the web page ------------------------------------------------------------------------
def _fmt(v: Any, fmt: str) -> str:
    # NaN (or null, once it went through JSON): an undefined value, e.g. F0 with no voicing
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return format(float(v), fmt)


def _metrics_html(systems: dict[str, dict[str, float]]) -> str:
    from dmol.audio.metrics import COLUMNS

    keys = list(dict.fromkeys(k for r in systems.values() for k in r))
    head = "".join(f"<th>{html.escape(COLUMNS.get(k, (k, ''))[0])}</th>" for k in keys)
    rows = []
    for name, r in systems.items():
        cells = "".join(f"<td>{_fmt(r[k], COLUMNS.get(k, ('', '.4g'))[1]) if k in r else '-'}"
                        "</td>" for k in keys)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (f"<table><tr><th>system</th>{head}</tr>\n" + "\n".join(rows) +
            "</table>\n<p class=note>lower is better in every column</p>")


def write_index(path: Path, *, title: str, summary: list[str], utterances: list[dict],
                systems: dict[str, dict[str, float]], pictures: list[tuple[str, str]],
                license_text: str) -> Path:
    """A self-contained page: relative links only, no script, no external style or font."""
    e = html.escape
    players = []
    for u in utterances:
        cells = "".join(
            f"<td><div>{e(SYSTEM_LABELS.get(k, k))}</div>"
            f"<audio controls preload=none src=\"{e(f)}\"></audio>"
            f"<div><a href=\"{e(f)}\">{e(f)}</a></div></td>"
            for k, f in u["wavs"].items()
        )
        players.append(f"<tr><th>{e(u['name'])}<br><small>{u['seconds']:.2f} s</small></th>"
                       f"{cells}</tr>")
    pics = "\n".join(f"<h3>{e(caption)}</h3><a href=\"{e(f)}\"><img src=\"{e(f)}\" "
                     f"alt=\"{e(caption)}\"></a>" for caption, f in pictures)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
th {{ text-align: left; }}
img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; }}
.note {{ color: #555; font-size: 90%; }}
</style></head><body>
<h1>{e(title)}</h1>
<ul>{"".join(f"<li>{e(s)}</li>" for s in summary)}</ul>
<h2>Listen: copy synthesis from held-out mels</h2>
<table>{"".join(players)}</table>
<h2>Objective metrics (mean over the utterances above)</h2>
{_metrics_html(systems)}
<p class=note>Per-utterance values: <a href="metrics.json">metrics.json</a>. NLL is the WaveNet's
teacher-forced negative log-likelihood of the original audio.</p>
<h2>Pictures</h2>
{pics}
<h2>Corpus licence</h2>
<pre>{e(license_text)}</pre>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


# ---- the whole job -----------------------------------------------------------------------
def run_demo(
    out: str | Path = "demo",
    *,
    minutes: float = 10.0,
    preset: str = "small-16k",
    utterances: int = 3,
    limit: int | None = None,
    max_seconds: float = 2.0,
    mode: str = "folded",
    seed: int = 0,
    threads: int | None = 1,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the evaluation written to ``out/metrics.json``.

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards; None: leave
    torch's default). One thread is the default because these models are small: per-step
    work is a few small matrix products, and a second thread mostly adds synchronization,
    which turns into long stalls when the cores are shared with anything else.
    """
    import torch

    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes!r}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    if utterances < 1:
        raise ValueError(f"utterances must be >= 1, got {utterances!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
    from dmol.audio.features import recipe_for

    recipe_for(preset)  # a bad preset fails before any work
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(Path(out), minutes, preset, utterances, limit, max_seconds, mode, seed,
                    overrides)
    finally:
        torch.set_num_threads(before)


def _run(out: Path, minutes: float, preset: str, utterances: int, limit: int | None,
         max_seconds: float, mode: str, seed: int,
         overrides: dict[str, Any] | None) -> dict[str, Any]:
    import torch

    from dmol.audio.corpus import build_builtin, list_split
    from dmol.wavenet.checkpoint import load_model
    from dmol.wavenet.evaluate import evaluate_model, write_json

    t0 = time.perf_counter()
    data_dir, run_dir = out / "data", out / "run"
    n = 5
    print(f"dmol demo: preset {preset}, {minutes:g} min of training, output in {out} "
          f"({torch.get_num_threads()} CPU thread(s))")

    _stage(1, n, f"built-in speech corpus -> {data_dir}", t0)
    manifest = build_builtin(data_dir, preset, limit=limit)

    _stage(2, n, f"training ({minutes:g} min budget) -> {run_dir}", t0)
    ckpt = _train_or_reuse(data_dir, run_dir, preset, minutes, overrides)
    model, head, recipe, ckpt_info = load_model(ckpt)

    _stage(3, n, f"vocoding {utterances} held-out utterance(s) ({mode} mode)", t0)
    chosen = pick_utterances(list_split(data_dir, "val"), utterances, max_seconds,
                             recipe.sample_rate)
    if len(chosen) < utterances:
        print(f"note: the corpus has only {len(chosen)} validation utterance(s)")
    vocoded = {"checkpoint_sha256": _sha256(ckpt), "utterances": [p.stem for p in chosen],
               "mode": mode, "seed": seed, "max_seconds": max_seconds}
    result = _cached_result(out, vocoded)
    reused = result is not None
    if reused:
        print(f"reusing the vocoded utterances in {out}: same checkpoint, utterances and "
              f"settings as the run that wrote them")
    else:
        result = evaluate_model(model, head, recipe, chosen, mode=mode, seed=seed,
                                max_seconds=max_seconds, wav_dir=out)
    print("\n" + result["table"])

    _stage(4, n, "report pictures", t0)
    title = f"dmol demo: {preset} WaveNet on built-in speech"
    first = result["utterances"][0]
    pictures = (out / "report.png", out / "inspect.png")
    if reused and all(p.is_file() for p in pictures):
        # metrics.json is written after the pictures: they belong to the same model and audio
        print("reusing report.png and inspect.png (same model and audio)")
    else:
        from dmol.audio.corpus import load_utterance
        from dmol.inspect import predict, render

        audio, mel = load_utterance(chosen[0])
        frames = min(mel.shape[0], len(audio) // recipe.hop_length,
                     max(1, int(max_seconds * recipe.sample_rate) // recipe.hop_length))
        audio, mel = audio[: frames * recipe.hop_length], mel[:frames]
        pred = predict(model, head, audio, mel, sample_rate=recipe.sample_rate,
                       window=min(len(audio), int(0.05 * recipe.sample_rate)))
        render(pred, pictures[1], title=f"{ckpt.name} on {first['name']}")
        write_report(pictures[0], run_dir=run_dir,
                     wavs={k: out / f for k, f in first["wavs"].items()},
                     sample_rate=recipe.sample_rate, inspect_png=pictures[1],
                     title=f"{title} ({first['name']})")
        print(f"wrote {pictures[0]} and {pictures[1]}")

    _stage(5, n, "metrics.json and index.html", t0)
    run = _run_metrics(run_dir)
    info = {"preset": preset, "checkpoint": str(ckpt.relative_to(out)),
            "minutes_budget": minutes, "train_seconds": run.get("train_seconds", 0.0),
            "step": ckpt_info["step"], "corpus": manifest.get("source"),
            "train_utterances": len(manifest["train"]), "val_utterances": len(manifest["val"]),
            "vocoded": vocoded}
    write_json(out / "metrics.json", {k: v for k, v in result.items() if k != "demo"}, demo=info)
    summary = [
        f"model: preset {preset}, {model.num_parameters:,} parameters, {head.name} head, "
        f"receptive field {model.receptive_field.ms:.1f} ms",
        f"training: {info['train_seconds'] / 60:.1f} min on "
        f"{len(manifest['train'])} utterances ({manifest.get('seconds', 0) / 60:.1f} min of "
        f"audio in the corpus)",
        f"held-out utterances vocoded from their mels in {mode} mode, seed {seed}",
        f"corpus: {manifest.get('source')}",
    ]
    write_index(out / "index.html", title=title, summary=summary,
                utterances=result["utterances"], systems=result["systems"],
                pictures=[("Report: loss, spectrograms, predicted distribution", "report.png"),
                          ("Predicted distribution (full size)", "inspect.png")],
                license_text=manifest.get("license", "unknown"))
    took = time.perf_counter() - t0
    print(f"\nwrote {out / 'index.html'} (open it in a browser; it works offline)")
    print(f"total wall time {took / 60:.1f} min ({took:.0f} s)")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``dmol demo [--out demo] [--minutes 10] [--preset small-16k] [--utterances 3]``."""
    p = argparse.ArgumentParser(prog="dmol demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default demo)")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget, wall clock")
    p.add_argument("--preset", default="small-16k", help="model preset (default small-16k)")
    p.add_argument("--utterances", type=int, default=3, help="held-out utterances to vocode")
    p.add_argument("--limit", type=int, default=None, help="use only N corpus files")
    p.add_argument("--max-seconds", type=float, default=2.0, help="crop each utterance (s)")
    p.add_argument("--mode", default="folded", help="synthesis mode: folded or incremental")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: fastest for these small models on shared cores)")
    a = p.parse_args(argv)
    try:
        run_demo(a.out, minutes=a.minutes, preset=a.preset, utterances=a.utterances,
                 limit=a.limit, max_seconds=a.max_seconds, mode=a.mode, seed=a.seed,
                 threads=a.threads)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
