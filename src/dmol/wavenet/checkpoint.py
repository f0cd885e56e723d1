"""Self-describing, crash-safe training checkpoints.

A run folder holds ``ckpt_XXXXXXXX.pt`` (the step, zero-padded) and, beside each, a sidecar
``ckpt_XXXXXXXX.pt.sha256`` with the SHA-256 and byte length of the file. A checkpoint is
written to ``*.tmp``, flushed with ``fsync`` and renamed into place with ``os.replace``, so a
crash leaves either the old set of files or the new one, never half a file under a final
name (a failed write removes its ``.tmp`` and the new sidecar). A file damaged later
(truncated copy, full disk) fails its checksum (without a sidecar: the zip archive's own
directory and CRC-32s) and is reported with a :class:`CorruptCheckpointError` naming the file
and the problem; :func:`latest_checkpoint` then falls back to the previous checkpoint and
says so.

Contents (a plain dict, loadable with ``torch.load(path, weights_only=True)``)::

    format          "dmol-wavenet-1"
    step            optimizer steps taken
    preset          the preset name the run started from
    model_config    WaveNetConfig.to_dict()
    train_config    TrainConfig.to_dict()
    recipe          MelRecipe.to_dict() of the training data
    model, ema      state_dicts of the raw and the exponential-moving-average weights
    optimizer       AdamW state_dict
    scheduler       LR scheduler state_dict
    rng             {"torch", "numpy", "python"} generator states (of rank 0)
    metrics         loss curves, seconds trained, skipped steps so far

An *inference bundle* (:func:`export_model`, format ``"dmol-wavenet-model-1"``) is what ships:
the step, preset, configs, recipe and the EMA weights only (no optimizer, no raw weights, no
RNG), also with a checksum sidecar. The bundle inside the package is addressed by the name
``"pretrained"`` wherever a checkpoint is accepted (:data:`PRETRAINED`).

Example::

    >>> model, head, recipe, info = load_model("runs/small")      # newest valid checkpoint
    >>> model, head, recipe, info = load_model("pretrained")      # the shipped LP-WaveNet
    >>> y_hat = model(audio[None], torch.from_numpy(mel.T)[None])
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dmol.audio.corpus import audio_files
from dmol.audio.features import MelRecipe
from dmol.audio.pitch_net import fit_on_dataset
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import TrainConfig, WaveNetConfig

__all__ = [
    "PRETRAINED",
    "CorruptCheckpointError",
    "checkpoint_path",
    "export_model",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "resolve_model_path",
    "save_checkpoint",
]

FORMAT = "dmol-wavenet-1"
BUNDLE_FORMAT = "dmol-wavenet-model-1"
#: The inference bundle shipped inside the package (docs/pretrained.md), named "pretrained".
PRETRAINED = Path(__file__).resolve().parent / "pretrained" / "lp-16k-ltp.pt"
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but is damaged (truncated, wrong checksum, unreadable)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"corrupt checkpoint {self.path}: {reason}")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{int(step):08d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no half-written .tmp left behind
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not supported everywhere (e.g. Windows)
        return
    try:
        os.fsync(fd)  # make the renames themselves durable
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files in ``run_dir``, oldest step first (no validity check)."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _write_with_sidecar(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically, its SHA-256 and length to ``path.sha256`` first: a file
    name never exists without its checksum; a failed write leaves no orphan (or wrong) one."""
    side = _sidecar(path)
    old_side = side.read_bytes() if side.is_file() and path.is_file() else None
    _write_atomic(side, f"{hashlib.sha256(data).hexdigest()}  {len(data)}\n".encode())
    try:
        _write_atomic(path, data)
    except BaseException:
        if old_side is None:
            side.unlink(missing_ok=True)
        else:
            _write_atomic(side, old_side)
        raise


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``run_dir/ckpt_{step:08d}.pt`` atomically; keep the newest ``keep``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    for stale in d.glob("ckpt_*.tmp"):  # left by a crash during an earlier save
        stale.unlink(missing_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = checkpoint_path(d, step)
    _write_with_sidecar(path, data)
    _fsync_dir(d)
    for old in list_checkpoints(d)[: -max(1, keep)]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    return path


def _zip_problem(data: bytes) -> str | None:
    """Why ``data`` is not an intact ``torch.save`` zip archive, or None if it is.

    Used when a checkpoint has no checksum file: the zip's end-of-archive directory shows a
    truncation, and its per-member CRC-32s show damage inside.
    """
    if not data:
        return "empty file (0 bytes)"
    if not data.startswith(b"PK\x03\x04"):
        head = data[:16]
        kind = ("a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in head)
                else "unknown binary data")
        return f"not a PyTorch checkpoint (it starts like {kind}, not a zip archive)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        return (f"truncated or damaged: {len(data)} bytes, and the zip archive's directory, "
                f"at its end, is missing")
    except (OSError, EOFError, ValueError, zipfile.LargeZipFile, NotImplementedError) as e:
        return f"damaged zip archive ({e})"
    if bad is not None:
        return f"damaged: part {bad!r} fails its CRC check"
    return None


def _verified_bytes(path: Path) -> bytes:
    if not path.is_file():
        if path.exists():
            raise FileNotFoundError(f"checkpoint {path} is not a file")
        raise FileNotFoundError(f"no such checkpoint: {path}")
    data = path.read_bytes()
    side = _sidecar(path)
    if side.is_file():
        try:
            digest, size = side.read_text().split()
            size = int(size)
        except (ValueError, UnicodeDecodeError):
            raise CorruptCheckpointError(path, f"unreadable checksum file {side.name}") from None
        if len(data) != size:
            raise CorruptCheckpointError(
                path, f"{len(data)} bytes on disk but {size} were written (truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptCheckpointError(path, "SHA-256 does not match the one written with it")
    else:
        problem = _zip_problem(data)
        if problem:
            raise CorruptCheckpointError(path, problem)
    return data


# what every reader needs (resuming also needs "model", "optimizer", "scheduler": train checks)
_REQUIRED = ("step", "model_config", "train_config", "recipe", "ema")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    bundle_ok: bool = False) -> dict[str, Any]:
    """Read and verify a checkpoint; raises :class:`CorruptCheckpointError` if it is damaged.

    ``bundle_ok``: also accept an inference bundle (:func:`export_model`), which has no
    training state (so it cannot be resumed).

    Only tensors and plain containers are loaded (``weights_only=True``): a file holding other
    Python objects is refused, whatever its origin.
    """
    path = Path(path)
    data = _verified_bytes(path)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = ("it holds Python objects other than tensors and plain containers, which "
                      "dmol does not load (not a dmol checkpoint: made by another program?)")
        else:
            reason = f"PyTorch cannot read it ({type(e).__name__}): damaged or not a checkpoint"
        raise CorruptCheckpointError(path, reason) from None
    formats = (FORMAT, BUNDLE_FORMAT) if bundle_ok else (FORMAT,)
    if not isinstance(state, dict) or state.get("format") not in formats:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        what = ("an inference bundle, which holds no training state" if got == BUNDLE_FORMAT
                else f"format {got!r}")
        raise CorruptCheckpointError(path, f"not a dmol WaveNet training checkpoint ({what})")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CorruptCheckpointError(path, f"incomplete: it lacks {missing}")
    return state


def resolve_model_path(path: str | Path) -> Path:
    """A checkpoint file, a run folder, or ``"pretrained"`` (when no such file or folder exists
    here): the bundle shipped inside the package."""
    p = Path(path)
    if str(path) == "pretrained" and not p.exists():
        if not PRETRAINED.is_file():
            raise FileNotFoundError(f"the pretrained model is not part of this installation "
                                    f"(expected {PRETRAINED})")
        return PRETRAINED
    return p


def export_model(src: str | Path, dst: str | Path, *, extra: dict[str, Any] | None = None,
                 pitch_data: str | Path | None = None, pitch_audio: Sequence[str | Path] = (),
                 progress: bool = False) -> Path:
    """Write the inference bundle of a checkpoint (a run folder's newest, a bundle, or
    ``"pretrained"``) to ``dst``.

    The bundle keeps what synthesis needs (configs, mel recipe, EMA weights in float32, the
    step and seconds trained) and drops the optimizer, raw weights and RNG states: about a
    quarter of a checkpoint. Written atomically with a ``.sha256`` sidecar; ``extra`` adds
    JSON-able facts (e.g. the training command). ``pitch_data``: a dataset made with the
    model's mel recipe (its training data); a learned F0 estimate
    (:class:`~dmol.audio.pitch_net.MelPitchNet`, ``model_config["pitch_net"]``) is fitted to
    its training split and added, or replaces the one the checkpoint has; ``pitch_audio``:
    audio files or folders of other voices it is fitted on too (a learned estimate that has
    heard one voice only is worse than the comb on a voice unlike it: docs/quality.md,
    session 21). Returns ``dst``.
    """
    if pitch_audio and pitch_data is None:
        raise ValueError("pitch_audio (--fit-pitch-audio) adds voices to a pitch fit: it needs "
                         "pitch_data (--fit-pitch DATA) too")
    pitch_files = audio_files(pitch_audio)  # a missing or empty folder fails before any work
    src = resolve_model_path(src)
    if src.is_dir():
        found = latest_checkpoint(src)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (ckpt_*.pt) in {src}")
        src = found
    _check_export_target(Path(dst), src)
    state = load_checkpoint(src, bundle_ok=True)
    if state.get("format") == BUNDLE_FORMAT:  # a bundle again, e.g. with a pitch estimate added
        metrics = {"train_seconds": state.get("train_seconds", 0.0), "val": state.get("val", [])}
        extra = {**state.get("extra", {}), **(extra or {})}
    else:
        metrics = state.get("metrics", {})
    model_config, ema = dict(state["model_config"]), dict(state["ema"])
    if pitch_data is not None:
        hidden = int(model_config.get("pitch_net") or 256)
        model_config["pitch_net"] = hidden
        WaveNetConfig.from_dict(model_config)  # a one-line error (no taps, no clock) before work
        net = fit_on_dataset(pitch_data, MelRecipe.from_dict(state["recipe"]), hidden,
                             audio=pitch_files, progress=progress)
        ema = {k: v for k, v in ema.items() if not k.startswith("pitch_net.")}
        ema.update({f"pitch_net.{k}": v for k, v in net.state_dict().items()})
    bundle = {
        "format": BUNDLE_FORMAT, "step": int(state["step"]), "preset": state.get("preset"),
        "model_config": model_config, "train_config": state["train_config"],
        "recipe": state["recipe"],
        "ema": {k: v.detach().float().clone() for k, v in ema.items()},
        "train_seconds": float(metrics.get("train_seconds", 0.0)),
        "val": list(metrics.get("val", [])), "extra": dict(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(bundle, buf)
    data = buf.getvalue()
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"export_model would overwrite its input {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _write_with_sidecar(dst, data)
    return dst


def _check_export_target(dst: Path, src: Path) -> None:
    """Refuse, before any work, a bundle path that would destroy something: an existing file
    that is not an earlier bundle (the source, its checksum, a run's config, a dataset's
    manifest...), or a training checkpoint's name, which would make a run folder resume from
    a bundle."""
    if dst.is_dir():
        raise ValueError(f"{dst} is a folder: give the bundle's file name")
    if dst.resolve() in (src.resolve(), _sidecar(src).resolve()):
        raise ValueError(f"export_model would overwrite its input {src}")
    if _NAME.match(dst.name):
        raise ValueError(f"{dst.name} is a training checkpoint's name: a bundle under it would be "
                         f"taken for one (choose e.g. model.pt)")
    if dst.exists() or dst.is_symlink():
        try:
            fmt = load_checkpoint(dst, bundle_ok=True).get("format")
        except (CorruptCheckpointError, OSError, ValueError):
            fmt = None
        if fmt != BUNDLE_FORMAT:
            raise ValueError(f"{dst} exists and is not a dmol inference bundle: refusing to "
                             f"overwrite it")


def latest_checkpoint(run_dir: str | Path, *, verbose: bool = True) -> Path | None:
    """The newest checkpoint in ``run_dir`` that passes its checksum, or None if there is none.

    A checkpoint without its ``.sha256`` file (copied without it, or written by hand) is
    checked with its zip archive's own directory and CRC-32s instead, so a truncated one is
    found either way. A damaged newer checkpoint is skipped with a message naming it and the
    one used instead; if every checkpoint is damaged a :class:`CorruptCheckpointError` lists
    them.
    """
    paths = list_checkpoints(run_dir)
    bad: list[str] = []
    for path in reversed(paths):
        try:
            _verified_bytes(path)
        except (CorruptCheckpointError, FileNotFoundError) as e:
            bad.append(str(e))
            continue
        if bad and verbose:
            print(f"warning: {'; '.join(bad)}\nwarning: falling back to {path}", file=sys.stderr)
        return path
    if bad:
        raise CorruptCheckpointError(run_dir, "every checkpoint is damaged: " + "; ".join(bad))
    return None


def load_model(
    path: str | Path, *, ema: bool = True, map_location: str | torch.device = "cpu"
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint file, a run folder (its newest checkpoint),
    an inference bundle, or ``"pretrained"`` (the bundle shipped with the package).

    Returns ``(model, head, recipe, info)``: the :class:`~dmol.wavenet.model.WaveNet` in eval
    mode with the EMA weights (``ema=False``: the raw ones), its output head, the
    :class:`~dmol.audio.features.MelRecipe` of its training data, and ``info`` =
    ``{"model": WaveNetConfig, "train": TrainConfig, "step": int, "preset": str, "path": Path}``.
    """
    path = resolve_model_path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (ckpt_*.pt) in {path}")
        path = found
    state = load_checkpoint(path, map_location, bundle_ok=True)
    if not ema and state["format"] == BUNDLE_FORMAT:
        raise ValueError(f"{path} is an inference bundle: it holds the EMA weights only")
    cfg = WaveNetConfig.from_dict(state["model_config"])
    recipe = MelRecipe.from_dict(state["recipe"])
    model = WaveNet(cfg, recipe)
    model.load_state_dict(state["ema" if ema else "model"])
    model.to(map_location).eval()
    info = {
        "model": cfg,
        "train": TrainConfig.from_dict(state["train_config"]),
        "step": int(state["step"]),
        "preset": state.get("preset"),
        "path": path,
    }
    return model, model.head, recipe, info
