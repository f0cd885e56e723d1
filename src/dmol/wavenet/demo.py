"""`dmol demo`: the main job end to end on real speech, on a CPU, in minutes.

1. assemble the built-in corpus (Asterisk prompts, CC-BY-SA-3.0) into ``OUT/data``;
2. load the shipped pretrained LP-WaveNet (``--model``), and with ``--train-minutes N`` also
   train a model from scratch into ``OUT/run`` (a second run resumes or reuses it);
3. vocode the held-out utterances (all of them, cropped to 3 s) from their mels with the
   WaveNet and with Griffin-Lim, and score both against the originals, prompt by prompt: the
   table says which differences exceed two standard errors of the paired difference;
4. the same for prompts of voices the model never heard (other speakers, other languages);
5. write into ``OUT``: the WAVs, ``report.png`` (loss curve, spectrograms, the model's
   predicted distribution), ``inspect.png``, ``metrics.json`` and ``index.html``, a page that
   opens offline with a player for every WAV, the pictures, the metrics and the licences.

Example::

    $ dmol demo                                   # the pretrained model, writes ./demo
    $ dmol demo --train-minutes 10 --out /tmp/d   # and a model trained here, side by side
"""

from __future__ import annotations

import hashlib
import html
import json
import numbers
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmol.audio.corpus import ASTERISK_NON_SPEECH, build_builtin, list_split, load_utterance
from dmol.audio.features import recipe_for
from dmol.audio.metrics import COLUMNS
from dmol.wavenet import checkpoint  # module-qualified: tests substitute their functions
from dmol.wavenet import train as training
from dmol.wavenet.evaluate import audio_utterances, evaluate_model, paired_text, write_json
from dmol.wavenet.inspection import predict, render
from dmol.wavenet.synthesis import (
    CLI_ENVELOPE_DB,
    CLI_POSTFILTER,
    CLI_SCALE_TEMPERATURE,
    check_postfilter_settings,
)

__all__ = ["pick_utterances", "run_demo", "write_index", "write_report"]

# The F0 and V/UV columns move with the prompts and the sampling seed by about as much as the
# gaps between good systems: the paired line under each table says which gaps are measured.
SEED_CAVEAT = ("the F0 and V/UV columns move with the prompts and --seed by about as much as "
               "the gaps between the systems: read the paired line under each table (--seeds "
               "N averages N seeds per prompt); the shipped model's figures over 16 seeds are "
               "in docs/pretrained.md")
#: Sampling seeds per prompt in the demo (their mean is scored; the page plays the first).
DEFAULT_SEEDS = 2
#: Prompts of each unseen voice in the demo.
DEFAULT_UNSEEN = 12

SYSTEM_LABELS = {"original": "Original", "WaveNet": "WaveNet (dmol)",
                 "Griffin-Lim": "Griffin-Lim (no network)"}
#: Scale temperature of the demo's sampling (a sharper excitation than the model's own).
DEFAULT_SCALE_TEMPERATURE = CLI_SCALE_TEMPERATURE
#: Gain of the pitch post-filter on the demo's WaveNet output (dmol.audio.postfilter).
DEFAULT_POSTFILTER = CLI_POSTFILTER
#: Largest correction (dB) of the envelope post-filter on the demo's WaveNet output.
DEFAULT_ENVELOPE_DB = CLI_ENVELOPE_DB
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
    ckpt = checkpoint.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    budget = 60.0 * minutes
    if ckpt is None:
        print(f"training preset {preset!r} from scratch for {minutes:g} min into {run_dir}")
        training.train(data_dir, run_dir, preset, minutes=minutes, overrides=overrides)
    else:
        state = checkpoint.load_checkpoint(ckpt)
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
        training.train(data_dir, run_dir, preset, minutes=left, resume=True, overrides=overrides)
    ckpt = checkpoint.latest_checkpoint(run_dir)
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
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_result(wav_dir: Path, vocoded: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation in ``wav_dir/vocoded.json`` if it was made exactly as asked and its WAVs
    exist (written after the WAVs, so a complete file means complete audio)."""
    try:
        old = json.loads((wav_dir / "vocoded.json").read_text())
        if old["demo"]["vocoded"] != json.loads(json.dumps(vocoded)):
            return None
        files = [f for u in old["utterances"] for f in u["wavs"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return old if files and all((wav_dir / f).is_file() for f in files) else None


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


def write_report(path: Path, *, run: dict[str, Any], wavs: dict[str, Path], sample_rate: int,
                 inspect_png: Path | None, title: str) -> Path:
    """Loss curves (``run``: a metrics.json dict), the spectrograms of ``wavs`` (original,
    WaveNet, Griffin-Lim...) and the inspect picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    have_inspect = inspect_png is not None and inspect_png.is_file()
    # left column: loss and spectrograms; right column: the inspect picture, full height
    rows = 1 + len(wavs)
    fig = plt.figure(figsize=(21 if have_inspect else 11, 3 * rows), constrained_layout=True)
    gs = fig.add_gridspec(rows, 2 if have_inspect else 1, width_ratios=[1, 1] if have_inspect
                          else None)

    ax = fig.add_subplot(gs[0, 0])
    curves = _loss_curves(run)
    for label, (steps, values) in curves.items():
        ax.plot(steps, values / np.log(2.0), marker="o" if len(steps) < 30 else None,
                ms=3, lw=1, label=label)
    ax.set(xlabel="step", ylabel="NLL (bits/sample)",
           title=" and ".join(curves) + " loss" if curves else "loss")
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
    keys = list(dict.fromkeys(k for r in systems.values() for k in r))
    head = "".join(f"<th>{html.escape(COLUMNS.get(k, (k, ''))[0])}</th>" for k in keys)
    rows = []
    for name, r in systems.items():
        cells = "".join(f"<td>{_fmt(r[k], COLUMNS.get(k, ('', '.4g'))[1]) if k in r else '-'}"
                        "</td>" for k in keys)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (f"<table><tr><th>system</th>{head}</tr>\n" + "\n".join(rows) +
            "</table>\n<p class=note>lower is better in every column</p>")


def write_index(path: Path, *, title: str, summary: list[str],
                sections: list[tuple[str, list[dict], str, dict[str, dict[str, float]], str]],
                pictures: list[tuple[str, str]], license_text: str) -> Path:
    """A self-contained page: relative links only, no script, no external style or font.

    ``sections``: (heading, utterances with their ``wavs``, credit line, metrics by system,
    the paired comparison's lines or ""); each shows its metrics, then a player per WAV.
    """
    e = html.escape
    parts = []
    for heading, utterances, credit, systems, paired in sections:
        players = []
        for u in utterances:
            cells = "".join(
                f"<td><div>{e(SYSTEM_LABELS.get(k, k))}</div>"
                f"<audio controls preload=none src=\"{e(f)}\"></audio>"
                f"<div><a href=\"{e(f)}\">{e(f)}</a></div></td>"
                for k, f in u["wavs"].items()
            )
            players.append(f"<tr><th>{e(u['name'])}<br><small>{u['seconds']:.2f} s</small>"
                           f"</th>{cells}</tr>")
        lines = "".join(f"<p>{e(line)}</p>" for line in paired.splitlines())
        parts.append(f"<h2>{e(heading)}</h2>" + (f"<p class=note>{e(credit)}</p>" if credit
                                                   else "") +
                     f"<h3>Objective metrics (mean over {len(utterances)} prompts)</h3>\n"
                     f"{_metrics_html(systems)}\n{lines}\n<h3>Listen</h3>\n"
                     f"<table>{''.join(players)}</table>\n")
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
<p>Copy synthesis: each system re-creates the waveform from the utterance's log-mel.
Griffin-Lim inverts the mel's magnitudes directly, so it matches the log-mel closely by
construction (log-mel L1); it has no model of the excitation, which costs it in MCD, MR-STFT
and pitch, and is what you hear as phasiness.</p>
{"".join(parts)}
<p class=note>Per-utterance values: <a href="metrics.json">metrics.json</a>. NLL is the WaveNet's
teacher-forced negative log-likelihood of the original audio.</p>
<h2>Pictures</h2>
{pics}
<h2>Licences</h2>
<pre>{e(license_text)}</pre>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


# ---- voices the shipped model never heard ---------------------------------------------------
#: Asterisk prompt sets of other speakers (Debian packages asterisk-core-sounds-{fr,it}-g722).
UNSEEN_VOICES = {
    "June (fr-CA, female)": ("/usr/share/asterisk/sounds/fr_CA_f_June",
                             "Asterisk French prompts, voice of June Wallack, CC-BY-SA-3.0"),
    "Carlo (it-IT, male)": ("/usr/share/asterisk/sounds/it_IT_m_Carlo",
                            "Asterisk Italian prompts, voice of Carlo Flora, CC-BY-3.0"),
}


def unseen_voice_files(folder: str | Path, n: int, max_seconds: float) -> list[Path]:
    """``n`` speech prompts of an unseen voice (not the tones and beeps of
    :data:`~dmol.audio.corpus.ASTERISK_NON_SPEECH`): spread over the sorted list,
    deterministic."""
    files = sorted(p for p in Path(folder).glob("*.g722")
                   if p.stat().st_size > 0 and p.stem not in ASTERISK_NON_SPEECH)
    # a G.722 file is 8000 bytes per second: keep prompts that fill the crop without waste
    fits = [p for p in files if 0.6 * max_seconds * 8000 <= p.stat().st_size <= 3 * 8000]
    pool = fits or files
    if not pool:
        return []
    step = max(1, len(pool) // n)
    return pool[::step][:n]


# ---- the whole job -----------------------------------------------------------------------
def run_demo(
    out: str | Path = "demo",
    *,
    model: str = "pretrained",
    train_minutes: float | None = None,
    preset: str | None = None,
    utterances: int | None = None,
    unseen: int = DEFAULT_UNSEEN,
    limit: int | None = None,
    max_seconds: float = 3.0,
    mode: str = "folded",
    seed: int = 0,
    seeds: int = DEFAULT_SEEDS,
    temperature: float = 1.0,
    scale_temperature: float = DEFAULT_SCALE_TEMPERATURE,
    postfilter: float = DEFAULT_POSTFILTER,
    envelope: float = DEFAULT_ENVELOPE_DB,
    threads: int | None = 1,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the evaluation written to ``out/metrics.json``.

    ``model`` (default: the shipped pretrained LP-WaveNet) vocodes ``utterances`` held-out
    built-in utterances (None: all of them, the model card's protocol) and ``unseen`` prompts
    of each voice in :data:`UNSEEN_VOICES` it never heard, next to Griffin-Lim, each with
    ``seeds`` sampling seeds. ``train_minutes``: also train ``preset`` (default: the model's
    preset) from scratch for that long (resumed or reused by a second run) and show it on the
    same page. ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards;
    None: leave torch's default): these models are small and one thread is fastest on shared
    cores.
    """
    if train_minutes is not None and not train_minutes > 0:
        raise ValueError(f"train_minutes must be positive, got {train_minutes!r}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    if (utterances is not None and utterances < 1) or unseen < 0:
        raise ValueError(f"utterances must be >= 1 and unseen >= 0, got {utterances!r}, "
                         f"{unseen!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
    for name, t in (("temperature", temperature), ("scale_temperature", scale_temperature)):
        if not (np.isfinite(t) and t >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {t!r}")
    check_postfilter_settings(postfilter, envelope)
    if preset is not None:
        recipe_for(preset)  # a bad preset fails before any work
    model_path = checkpoint.resolve_model_path(model)
    if not model_path.exists():
        raise FileNotFoundError(f"no such model: {model}")
    if Path(out).resolve() in model_path.resolve().parents:
        # the demo writes into OUT (and trains into OUT/run, rotating its checkpoints)
        raise ValueError(f"the model {model_path} lies inside --out {out}, which the demo "
                         f"writes into: copy the model elsewhere or choose another --out")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        settings = {"mode": mode, "seed": seed, "seeds": seeds, "temperature": temperature,
                    "scale_temperature": scale_temperature, "postfilter": postfilter,
                    "envelope": envelope, "max_seconds": max_seconds}
        return _run(Path(out), model_path, train_minutes, preset, utterances, unseen, limit,
                    settings, overrides)
    finally:
        torch.set_num_threads(before)


def _evaluate(model_path: Path, utts: list, out: Path, wav_dir: Path, settings: dict[str, Any],
              baseline: bool = True) -> dict[str, Any]:
    """evaluate_model, or the result an earlier run wrote for the same model, audio and
    settings (``wav_dir/metrics.json``, with its WAVs)."""
    names = [u if isinstance(u, str) else (u.stem if isinstance(u, Path) else u[0])
             for u in utts]
    key = {"model_sha256": _sha256(model_path), "utterances": names, "baseline": baseline,
           **settings}
    cached = _cached_result(wav_dir, key)
    if cached is not None:
        print(f"reusing the vocoded utterances in {wav_dir}: same model, audio and settings")
        return cached
    model, head, recipe, _ = checkpoint.load_model(model_path)
    result = evaluate_model(model, head, recipe, utts, baseline=baseline, wav_dir=wav_dir,
                            **settings)
    write_json(wav_dir / "vocoded.json", result, demo={"vocoded": key})
    return json.loads((wav_dir / "vocoded.json").read_text())  # the same either way


def _run(out: Path, model_path: Path, train_minutes: float | None, preset: str | None,
         utterances: int, unseen: int, limit: int | None, settings: dict[str, Any],
         overrides: dict[str, Any] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    n = 6
    bundle = checkpoint.load_checkpoint(model_path, bundle_ok=True)
    model_preset = bundle.get("preset") or "lp-16k"
    preset = preset or model_preset
    print(f"dmol demo: model {model_path.name} ({model_preset}, step {bundle['step']}), output "
          f"in {out} ({torch.get_num_threads()} CPU thread(s))")
    max_seconds = settings["max_seconds"]

    data_dir = out / "data"
    _stage(1, n, f"built-in speech corpus -> {data_dir}", t0)
    manifest = build_builtin(data_dir, model_preset, limit=limit)
    model, head, recipe, info = checkpoint.load_model(model_path)
    if recipe != recipe_for(model_preset):
        raise ValueError(f"{model_path}: its mel recipe is not the {model_preset} recipe")

    run_dir, trained = out / "run", None
    _stage(2, n, "training" if train_minutes else "model", t0)
    if train_minutes:
        train_data = data_dir
        if recipe_for(preset) != recipe:
            train_data = out / f"data-{preset}"
            build_builtin(train_data, preset, limit=limit)
        trained = _train_or_reuse(train_data, run_dir, preset, train_minutes, overrides)
    else:
        print(f"using {model_path} (no training: pass --train-minutes N to train one too)")

    val = list_split(data_dir, "val")
    want = len(val) if utterances is None else utterances
    _stage(3, n, f"vocoding {'all ' if utterances is None else ''}{want} held-out built-in "
                 f"utterance(s) ({settings['mode']} mode)", t0)
    # an empty split: pick_utterances says so
    chosen = pick_utterances(val, max(1, want), max_seconds, recipe.sample_rate)
    if len(chosen) < want:
        print(f"note: the corpus has only {len(chosen)} validation utterance(s)")
    held_out = _evaluate(model_path, chosen, out, out, settings)
    print("\n" + held_out["table"] + "\n" + SEED_CAVEAT)
    extra = None
    if trained is not None:
        extra_utts = chosen
        if recipe_for(preset) != recipe:
            extra_utts = [out / f"data-{preset}" / "val" / p.name for p in chosen]
        extra = _evaluate(trained, extra_utts, out, out / "run-audio", settings,
                          baseline=False)
        print(f"\nthe {train_minutes:g}-min run:\n" + extra["table"])

    _stage(4, n, "voices the model never heard", t0)
    voices = {}
    for voice, (folder, credit) in UNSEEN_VOICES.items():
        files = unseen_voice_files(folder, unseen, max_seconds) if unseen else []
        if not files:
            print(f"skipping {voice}: no prompts in {folder} (make data installs them)")
            continue
        tag = voice.split()[0].lower()
        utts = [(f"{tag}-{name}", a, m) for name, a, m in audio_utterances(files, recipe)]
        voices[voice] = (_evaluate(model_path, utts, out, out / f"unseen-{tag}", settings),
                         credit, f"unseen-{tag}")
        print(f"\n{voice}:\n" + voices[voice][0]["table"])

    _stage(5, n, "report pictures", t0)
    first = held_out["utterances"][0]
    audio, mel = load_utterance(chosen[0])
    frames = min(mel.shape[0], len(audio) // recipe.hop_length,
                 max(1, int(max_seconds * recipe.sample_rate) // recipe.hop_length))
    audio, mel = audio[: frames * recipe.hop_length], mel[:frames]
    pred = predict(model, head, audio, mel, sample_rate=recipe.sample_rate,
                   window=min(len(audio), int(0.05 * recipe.sample_rate)))
    render(pred, out / "inspect.png", title=f"{model_path.name} on {first['name']}")
    title = f"dmol demo: {model_preset} LP-WaveNet on built-in and unseen speech"
    write_report(out / "report.png", run=_curves_of(bundle, run_dir if trained else None),
                 wavs={k: out / f for k, f in first["wavs"].items()},
                 sample_rate=recipe.sample_rate, inspect_png=out / "inspect.png",
                 title=f"{title} ({first['name']})")
    print(f"wrote {out / 'report.png'} and {out / 'inspect.png'}")

    _stage(6, n, "metrics.json and index.html", t0)
    systems = {"held-out built-in": dict(held_out["systems"])}
    if extra is not None:
        systems["held-out built-in"][f"WaveNet ({train_minutes:g}-min run)"] = \
            extra["systems"]["WaveNet"]
    for voice, (res, _, _) in voices.items():
        systems[voice] = res["systems"]
    demo_info = {"model": str(model_path), "preset": model_preset, "step": info["step"],
                 "train_seconds": bundle.get("train_seconds") or bundle.get(
                     "metrics", {}).get("train_seconds", 0.0),
                 "corpus": manifest.get("source"), "settings": settings,
                 "trained": None if trained is None else {
                     "checkpoint": str(trained), "minutes": train_minutes, "preset": preset,
                     "systems": extra["systems"]}}
    result = {"systems": held_out["systems"], "utterances": held_out["utterances"],
              "table": held_out["table"], "settings": held_out["settings"],
              "unseen": {v: r for v, (r, _, _) in voices.items()}}
    if "standard_error" in held_out:
        result["standard_error"] = held_out["standard_error"]
    write_json(out / "metrics.json", result, demo=demo_info)
    summary = [
        f"model: {model_path.name}, preset {model_preset}, {model.num_parameters:,} parameters, "
        f"{head.name} head{' with linear prediction' if model.cfg.lpc_order else ''}, "
        f"receptive field {model.receptive_field.ms:.1f} ms, trained "
        f"{demo_info['train_seconds'] / 3600:.2f} h ({info['step']} steps)"
        + ("; pitch from a learned F0 estimate where it hears one (docs/wavenet.md)"
           if model.pitch_net is not None else ""),
        f"held-out built-in utterances and unseen voices vocoded from their mels in "
        f"{settings['mode']} mode, {_seeds_text(settings)}, temperature "
        f"{settings['temperature']:g}, scale temperature {settings['scale_temperature']:g}, "
        f"pitch post-filter gain {settings['postfilter']:g}, envelope post-filter "
        f"{settings['envelope']:g} dB",
        f"corpus: {manifest.get('source')}",
        SEED_CAVEAT,
    ]
    if trained is not None:
        summary.append(f"also trained here: preset {preset} for {train_minutes:g} min "
                       f"({trained.parent.name}/{trained.name})")
    sections = [("Held-out built-in speech (the training speaker)", held_out["utterances"], "",
                 systems["held-out built-in"], _paired(held_out))]
    if extra is not None:
        for u, e in zip(sections[0][1], extra["utterances"], strict=True):
            u["wavs"] = {**u["wavs"], f"WaveNet ({train_minutes:g}-min run)":
                         f"run-audio/{e['wavs']['WaveNet']}"}
    for voice, (res, credit, sub) in voices.items():
        utts = [{**u, "wavs": {k: f"{sub}/{f}" for k, f in u["wavs"].items()}}
                for u in res["utterances"]]
        sections.append((f"A voice it never heard: {voice}", utts, credit, res["systems"],
                         _paired(res)))
    license_text = manifest.get("license", "unknown") + "".join(
        f"\n{credit}" for _, credit, _ in voices.values())
    write_index(out / "index.html", title=title, summary=summary, sections=sections,
                pictures=[("Report: loss, spectrograms, predicted distribution", "report.png"),
                          ("Predicted distribution (full size)", "inspect.png")],
                license_text=license_text)
    took = time.perf_counter() - t0
    print(f"\nwrote {out / 'index.html'} (open it in a browser; it works offline)")
    print(f"total wall time {took / 60:.1f} min ({took:.0f} s)")
    return result


def _paired(result: dict[str, Any]) -> str:
    """The paired comparison's lines of an evaluation (read back from JSON, where an undefined
    value is null), or "" without one."""
    diff = result.get("difference")
    if not diff:
        return ""
    nan = float("nan")
    return paired_text({m: {k: nan if v is None else v for k, v in d.items()}
                        for m, d in diff.items()})


def _seeds_text(settings: dict[str, Any]) -> str:
    first, n = settings["seed"], settings["seeds"]
    return f"seed {first}" if n == 1 else f"the mean of seeds {first}-{first + n - 1}"


def _curves_of(bundle: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """Loss curves for the report: a run folder's metrics, else the bundle's validation curve."""
    if run_dir is not None:
        return _run_metrics(run_dir)
    return {"val": bundle.get("val") or bundle.get("metrics", {}).get("val", [])}
