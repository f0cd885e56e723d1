"""Objective copy-synthesis evaluation of a trained WaveNet vocoder against Griffin-Lim.

For each held-out utterance the model re-creates the waveform from the utterance's own log-mel
("copy synthesis"); Griffin-Lim inverts the same mel without any network. Both outputs are
compared with the original recording by :func:`dmol.audio.metrics.evaluate_pair` (MCD, log-mel
L1, multi-resolution STFT, F0 RMSE, V/UV error), and the model's teacher-forced NLL of the
original audio is reported in bits per sample (its training objective, on unseen speech).

Example::

    >>> from dmol.audio.corpus import list_split
    >>> from dmol.wavenet.checkpoint import load_model
    >>> model, head, recipe, _ = load_model("runs/small/checkpoint.pt")
    >>> result = evaluate_model(model, head, recipe, list_split("data/allison", "val")[:3])
    >>> print(result["table"])                      # one row per system
    >>> result["systems"]["WaveNet"]["mcd_db"]

From the shell: ``dmol evaluate CHECKPOINT INPUT... [--max-utterances N] [--json OUT]``, where
INPUT is a dmol dataset (its validation split), or audio files and folders of them, analysed
with the checkpoint's own mel recipe (trimmed and peak-normalized as ``dmol preprocess`` does).
CHECKPOINT may be ``pretrained``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmol.audio.corpus import audio_files, load_utterance, prepare_audio
from dmol.audio.features import griffin_lim
from dmol.audio.metrics import bits_per_sample, evaluate_pairs, metrics_table
from dmol.wavenet.synthesis import check_postfilter_settings, vocode

__all__ = [
    "SYSTEMS",
    "audio_utterances",
    "evaluate_model",
    "log_metrics",
    "paired_difference",
    "paired_text",
    "teacher_forced_bits",
    "write_json",
]

SYSTEMS = ("WaveNet", "Griffin-Lim")
WAV_SUFFIX = {"original": "original", "WaveNet": "wavenet", "Griffin-Lim": "griffinlim"}
Utterance = str | Path | tuple[str, np.ndarray, np.ndarray]
#: The paired comparison's metrics: the issue's four and the log-mel distance, with labels.
PAIRED = {"mcd_db": ("MCD", "dB", ".2f"), "log_mel_l1": ("log-mel L1", "Np", ".3f"),
          "mrstft": ("MR-STFT", "", ".3f"), "f0_rmse_hz": ("F0 RMSE", "Hz", ".1f"),
          "vuv_error": ("V/UV", "", ".4f")}
#: A paired difference counts as measured when it exceeds this many standard errors.
MEASURED_SE = 2.0


# ---- pieces --------------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()  # not inference_mode: the trainer's validation pass already compiled this
def teacher_forced_bits(model, head, audio: np.ndarray, mel: np.ndarray) -> float:
    """Mean NLL of ``audio`` (T,) given its ``mel`` (frames, n_mels), in bits per sample.

    Teacher forcing: every step is predicted from the *true* past samples, so this is the
    training loss on this utterance (what the model believes about real speech), not a
    property of its own samples. A model with a phase clock reads the synthesis clock here
    (the mel's integrated F0, as when it vocodes), not the recording's own phase it trained on.

    Example::

        >>> bits = teacher_forced_bits(model, head, audio, mel)   # e.g. 9.1 for 16-bit MoL
    """
    model.eval()
    dev = _model_device(model)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(dev)
    c = torch.from_numpy(np.ascontiguousarray(mel.T, dtype=np.float32))[None].to(dev)
    # a pre-emphasis model predicts s = (x - alpha x[t-1]) / (1 + alpha): the audio's NLL is
    # the signal's plus log(1 + alpha) (the Jacobian given the past), so models compare
    s = model.emphasize(x)
    nll = head.nll(model(s, c), s).double().mean() + math.log1p(model.cfg.preemphasis)
    return float(bits_per_sample(float(nll)))


def _load(utt: Utterance, i: int) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, audio, mel) from a dataset ``.npz`` path or an already loaded triple."""
    if isinstance(utt, (str, Path)):
        audio, mel = load_utterance(utt)
        return Path(utt).stem, audio, mel
    if isinstance(utt, tuple) and len(utt) == 3:
        name, audio, mel = utt
        return str(name), np.asarray(audio, dtype=np.float32), np.asarray(mel, dtype=np.float32)
    raise TypeError(
        f"utterance {i} must be a path to a dataset .npz or a (name, audio, mel) tuple, "
        f"got {type(utt).__name__}"
    )


def _crop(
    audio: np.ndarray, mel: np.ndarray, hop: int, max_frames: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``max_frames`` frames and their ``frames * hop`` samples."""
    if audio.ndim != 1 or mel.ndim != 2:
        raise ValueError(
            f"utterance {name!r}: expected audio (T,) and mel (frames, n_mels), got "
            f"{audio.shape} and {mel.shape}"
        )
    frames = min(mel.shape[0], max_frames, len(audio) // hop)
    if frames < 1:
        raise ValueError(f"utterance {name!r} is shorter than one mel frame ({len(audio)} samples)")
    return audio[: frames * hop], mel[:frames]


def _nanmean(values: Sequence[float]) -> float:
    """Mean over the finite values; NaN when there is none (e.g. no voiced frame anywhere)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of the finite values (NaN with fewer than two)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    # 32-bit float, unclipped: the file holds exactly the samples that were scored. (16-bit
    # rounding is not neutral here: in near-silent pauses it changes Harvest's voicing
    # decisions; Griffin-Lim's V/UV error on 8 held-out prompts went from 0.033 to 0.041,
    # docs/quality.md session 16.)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype="FLOAT")


# ---- evaluation ----------------------------------------------------------------------------
def evaluate_model(
    model,
    head,
    recipe,
    utterances: Sequence[Utterance],
    *,
    synth: bool = True,
    baseline: bool = True,
    mode: str = "folded",
    dtype: str = "float32",
    seed: int = 0,
    seeds: int = 1,
    temperature: float = 1.0,
    scale_temperature: float = 1.0,
    postfilter: float = 0.0,
    envelope: float = 0.0,
    max_seconds: float | None = 2.0,
    gl_iters: int = 60,
    f0_method: str = "harvest",
    wav_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Copy-synthesis metrics of the WaveNet and of Griffin-Lim against the original audio.

    Args:
        model, head, recipe: as returned by :func:`dmol.wavenet.checkpoint.load_model`.
        utterances: dataset ``.npz`` paths (e.g. ``list_split(data_dir, "val")``) or
            ``(name, audio (T,), mel (frames, n_mels))`` tuples made with ``recipe``.
        synth: vocode with the WaveNet (the slow part); ``False`` reports only its NLL.
        baseline: also invert each mel with Griffin-Lim (``gl_iters`` iterations).
        mode, dtype, seed, temperature, scale_temperature, postfilter, envelope: passed to
            :func:`dmol.wavenet.synthesis.vocode`; utterance ``i`` uses seed ``seed + i``.
        seeds: vocode every utterance ``seeds`` times, with the seeds of runs ``seed``,
            ``seed + 1``, ..., ``seed + seeds - 1`` (the same numbers as that many separate
            runs; the original's NLL and Griffin-Lim are computed once). One seed moves the
            F0 and V/UV means by more than the gaps between good systems; with ``seeds > 1``
            the WaveNet's means are the mean over the seeds' means, ``standard_error`` gives
            their standard error, and each utterance keeps ``WaveNet_by_seed``.
        max_seconds: keep only the first ``max_seconds`` of each utterance (None: all of it).
            Autoregressive synthesis costs time per sample, so this bounds the run time.
        f0_method: "harvest" (reliable) or "dio" (~20x faster) for the F0 metrics.
        wav_dir: write ``NAME_original.wav``, ``NAME_wavenet.wav``, ``NAME_griffinlim.wav``
            (32-bit float: the samples that were scored, so the metrics can be recomputed;
            the WaveNet's of the first seed).

    Returns:
        ``{"systems": {system: {metric: mean}}, "utterances": [per-utterance dicts],
        "table": str, "settings": {...}}``. Systems are "WaveNet" and "Griffin-Lim"; metric
        keys are those of :func:`~dmol.audio.metrics.evaluate_pair` plus the WaveNet's
        ``bits_per_sample``. Means skip NaN values (an F0 error with no jointly voiced frame).
        With ``seeds > 1`` also ``"standard_error": {"WaveNet": {metric: se}}``; with both
        systems on two or more utterances also ``"difference"`` (:func:`paired_difference`),
        whose two lines (:func:`paired_text`) end the table.
    """
    if isinstance(utterances, (str, Path)) or not isinstance(utterances, Sequence):
        raise TypeError("utterances must be a sequence of .npz paths or (name, audio, mel) tuples")
    if not utterances:
        raise ValueError("no utterances to evaluate (is the dataset's val split empty?)")
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    seeds = int(seeds)
    if seeds > 1 and not synth:
        raise ValueError(f"seeds = {seeds} needs synth=True: without synthesis nothing is sampled")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds!r}")
    for name, t in (("temperature", temperature), ("scale_temperature", scale_temperature)):
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {t!r}")
    check_postfilter_settings(postfilter, envelope)
    if model.hop_length != recipe.hop_length:
        raise ValueError(
            f"the model upsamples by {model.hop_length} but the mel recipe has hop_length "
            f"{recipe.hop_length}: model and features do not belong together"
        )
    sr, hop = recipe.sample_rate, recipe.hop_length
    max_frames = sys.maxsize if max_seconds is None else max(1, int(max_seconds * sr) // hop)
    out_dir = None if wav_dir is None else Path(wav_dir)

    rows = []
    for i, utt in enumerate(utterances):
        name, audio, mel = _load(utt, i)
        audio, mel = _crop(audio, mel, hop, max_frames, name)
        mel = recipe.validate_mel(mel)
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "name": name,
            "seconds": len(audio) / sr,
            "bits_per_sample": teacher_forced_bits(model, head, audio, mel),
        }
        waves = {"original": audio}
        sampled = []
        for k in range(seeds if synth else 0):
            t1 = time.perf_counter()
            sampled.append(np.asarray(
                vocode(model, head, recipe, mel, mode=mode, dtype=dtype, seed=seed + k + i,
                       temperature=temperature, scale_temperature=scale_temperature,
                       postfilter=postfilter, envelope=envelope, progress=progress),
                dtype=np.float32,
            ).reshape(-1))
            if k == 0:
                waves["WaveNet"] = sampled[0]
                row["synthesis_seconds"] = time.perf_counter() - t1
        if baseline:
            waves["Griffin-Lim"] = griffin_lim(mel, recipe, n_iter=gl_iters)
        # one analysis of the original serves every seed and Griffin-Lim
        scores = evaluate_pairs(audio, sampled + ([waves["Griffin-Lim"]] if baseline else []),
                                sr, f0_method=f0_method)
        if sampled:
            by_seed = scores[: len(sampled)]
            row["WaveNet"] = {m: _nanmean([b[m] for b in by_seed]) for m in by_seed[0]}
            if seeds > 1:
                row["WaveNet_by_seed"] = by_seed
        if baseline:
            row["Griffin-Lim"] = scores[-1]
        if out_dir is not None:
            row["wavs"] = {}
            for key, wave in waves.items():
                path = out_dir / f"{name}_{WAV_SUFFIX[key]}.wav"
                _write_wav(path, wave, sr)
                row["wavs"][key] = path.name
        rows.append(row)
        if progress:
            took = time.perf_counter() - t0
            print(f"  evaluated {name} ({row['seconds']:.2f} s of audio) in {took:.1f} s")

    systems, standard_error, table = _summarize(rows, synth, seed, seeds)
    difference = paired_difference(rows)
    if difference is not None:
        table += "\n" + paired_text(difference)
    result = {
        "systems": systems,
        "utterances": rows,
        "table": table,
        "settings": {
            "mode": mode, "dtype": dtype, "seed": seed, "seeds": seeds,
            "temperature": temperature,
            "scale_temperature": scale_temperature, "postfilter": postfilter,
            "envelope": envelope,
            "max_seconds": max_seconds,
            "gl_iters": gl_iters, "f0_method": f0_method, "sample_rate": sr,
            "n_utterances": len(rows), "seconds": sum(r["seconds"] for r in rows),
        },
    }
    if standard_error is not None:
        result["standard_error"] = standard_error
    if difference is not None:
        result["difference"] = difference
    return result


def paired_difference(rows: Sequence[Mapping[str, Any]], a: str = "WaveNet",
                      b: str = "Griffin-Lim") -> dict[str, dict[str, float]] | None:
    """System ``a`` minus system ``b``, utterance by utterance: per metric of :data:`PAIRED`
    the mean of the differences, its standard error over the utterances and their count ``n``
    (utterances where either value is undefined drop out). None unless both systems scored at
    least two utterances.

    Pairing removes what the utterances share (a hard prompt is hard for both systems), so a
    gap between two systems is judged against the spread of the *differences*: with few
    prompts and one seed the two means move by more than the gap between good systems. The
    standard error covers the prompts and, with ``seeds > 1``, the seeds averaged per prompt.
    """
    both = [r for r in rows if a in r and b in r]
    if len(both) < 2:
        return None
    out = {}
    for m in PAIRED:
        d = np.array([r[a][m] - r[b][m] for r in both], dtype=np.float64)
        d = d[np.isfinite(d)]
        out[m] = {"mean": _nanmean(d), "se": _standard_error(d), "n": int(d.size)}
    return out


def paired_text(difference: Mapping[str, Mapping[str, float]],
                names: tuple[str, str] = ("WaveNet", "Griffin-Lim")) -> str:
    """Two lines for a table: each metric's paired difference (mean ± standard error), then
    which way the gaps of more than :data:`MEASURED_SE` standard errors go ("not separable":
    within them, or no standard error). Lower is better in every metric."""
    cells: list[str] = []
    verdict: dict[str, list[str]] = {"better": [], "worse": [], "not separable": []}
    for m, (label, unit, fmt) in PAIRED.items():
        d = difference[m]
        mean, se = d["mean"], d["se"]
        spread = format(se, fmt) if math.isfinite(se) else "n/a"
        cells.append(f"{label} {mean:+{fmt}} ± {spread}{' ' + unit if unit else ''}")
        side = ("not separable" if not (math.isfinite(mean) and math.isfinite(se))
                or abs(mean) <= MEASURED_SE * se else "better" if mean < 0 else "worse")
        verdict[side].append(label)
    n = max(d["n"] for d in difference.values())
    a, b = names
    said = "; ".join(f"{k} on {', '.join(v)}" for k, v in verdict.items() if v)
    return (f"{a} - {b}, utterance by utterance ({n} utterances; mean ± standard error): "
            f"{', '.join(cells)}\n{a} against {b}, counting gaps of more than {MEASURED_SE:g} "
            f"standard errors: {said}")


def _summarize(rows: list[dict[str, Any]], synth: bool, seed: int, seeds: int
               ) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None, str]:
    """The systems' means over the utterances (NaN skipped), the standard error over seeds
    (``seeds > 1``; else None), and the printed table."""
    systems: dict[str, dict[str, float]] = {}
    standard_error = None
    for system in SYSTEMS:
        if seeds > 1 and system == "WaveNet":
            # each seed's mean over the utterances, as a separate run would report it; the
            # mean over the seeds of those, and its standard error
            per_seed = [{m: _nanmean([r["WaveNet_by_seed"][k][m] for r in rows])
                         for m in rows[0]["WaveNet"]} for k in range(seeds)]
            systems[system] = {m: _nanmean([p[m] for p in per_seed]) for m in per_seed[0]}
            standard_error = {system: {m: _standard_error([p[m] for p in per_seed])
                                       for m in per_seed[0]}}
            continue
        have = [r[system] for r in rows if system in r]
        if have:
            systems[system] = {k: _nanmean([h[k] for h in have]) for k in have[0]}
    if not synth:  # the model's NLL still deserves a row
        systems = {"WaveNet": {}, **systems}
    systems["WaveNet"]["bits_per_sample"] = _nanmean([r["bits_per_sample"] for r in rows])
    table = metrics_table(systems)
    if standard_error is not None:
        se = {m: "n/a" if math.isnan(v) else v for m, v in standard_error["WaveNet"].items()}
        table += (f"\nWaveNet: mean of seeds {seed}-{seed + seeds - 1}; the standard error of "
                  f"that mean: MCD {se['mcd_db']:.3} dB, log-mel L1 {se['log_mel_l1']:.3} Np, "
                  f"MR-STFT {se['mrstft']:.3}, F0 RMSE {se['f0_rmse_hz']:.3} Hz, "
                  f"V/UV {se['vuv_error']:.3}")
    return systems, standard_error, table


def log_metrics(writer, step: int, metrics: Mapping[str, Any], prefix: str = "eval") -> None:
    """Write an :func:`evaluate_model` result as TensorBoard scalars ``prefix/system/metric``.

    ``writer`` is a ``torch.utils.tensorboard.SummaryWriter`` (anything with ``add_scalar``).
    NaN values (undefined F0 errors) are skipped. A cheap call for a trainer to make every few
    thousand steps, on a couple of short validation clips without the Griffin-Lim baseline::

        m = evaluate_model(model, head, recipe, val_paths[:2], max_seconds=0.5,
                           baseline=False, f0_method="dio", progress=False)
        log_metrics(writer, step, m)
    """
    systems = metrics.get("systems", metrics)
    for system, values in systems.items():
        tag = system.lower().replace("-", "")
        for key, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(f"{prefix}/{tag}/{key}", float(v), step)


def _jsonable(obj: Any) -> Any:
    """NaN/inf become null: JSON has no NaN and strict parsers reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def write_json(path: str | Path, result: Mapping[str, Any], **extra: Any) -> Path:
    """Write an :func:`evaluate_model` result (plus ``extra`` keys) as strict JSON."""
    path = Path(path)
    text = json.dumps(_jsonable({**result, **extra}), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file behind
    return path


def audio_utterances(inputs: Sequence[str | Path], recipe, limit: int | None = None
                     ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, audio, mel) of audio files and of the audio files in folders, in order.

    Each file is prepared as ``dmol preprocess`` would (:func:`dmol.audio.corpus.prepare_audio`:
    the recipe's rate, leading/trailing silence trimmed, peak-normalized), so a model meets
    the same kind of input it was trained on. Unreadable files raise, naming the file.
    """
    files = audio_files(inputs)
    files = files[:limit] if limit is not None else files
    return [(f.stem, *prepare_audio(f, recipe)) for f in files]
