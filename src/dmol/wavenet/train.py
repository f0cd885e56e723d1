"""Train a WaveNet vocoder on a dmol dataset: plain PyTorch, one process or many (DDP).

One machine, one process::

    dmol train data/allison --preset small-16k --out runs/small --minutes 15

Several GPUs or CPU processes (``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; the backend is
NCCL on GPUs, gloo on CPU)::

    torchrun --nproc_per_node 4 -m dmol.wavenet.train data/lj --preset r9y9-ljspeech-mol \
        --out runs/lj

Each step's batch is a pure function of ``(seed, step, rank)``: utterances are drawn in
proportion to their length with a ``torch.Generator`` seeded from those three numbers, and a
segment starting at a random mel-frame boundary is cut from each. A resumed run therefore sees
exactly the batches the interrupted one would have seen, and with the optimizer, scheduler,
EMA and step restored from the checkpoint it reaches the same weights. Dropout draws from the
global generator, which is reseeded from the same triple every step.

Every ``log_interval`` steps the loss, learning rate, gradient norm and samples/s go to
TensorBoard (``RUN_DIR/tb``) and ``RUN_DIR/metrics.json``; every ``val_interval`` the
teacher-forced NLL of the validation utterances under the EMA weights; every
``media_interval`` an audio clip and a picture of the predicted distribution. A step whose
loss or gradient is NaN/inf is skipped (no optimizer or EMA update) and counted.

A run folder is used by one process at a time: ``RUN_DIR/.lock`` (holding the PID and host)
is locked while training runs, so a second ``dmol train`` on the same folder is refused; the
lock of a process that died is taken over with a warning. Ctrl-C (SIGINT) and SIGTERM stop
training at a step boundary (an update and the step counter that counts it are one unit), save
a checkpoint, write ``metrics.json`` and exit with 130 or 143.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from dmol._fs import pid_alive
from dmol.audio.corpus import check_writable, list_split, load_recipe, load_utterance
from dmol.audio.features import MEL_RECIPES, recipe_for
from dmol.audio.lpc import excitation_noise
from dmol.audio.pitch_net import fit_mel_pitch_net, pitch_examples
from dmol.wavenet.checkpoint import (
    CorruptCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from dmol.wavenet.model import WaveNet
from dmol.wavenet.plots import distribution_image
from dmol.wavenet.presets import (
    PRESETS,
    TrainConfig,
    WaveNetConfig,
    apply_overrides,
    get_preset,
)

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to O_EXCL and PID checks
    fcntl = None

__all__ = ["RunLockedError", "SegmentSampler", "TrainingInterrupted", "check_overrides",
           "describe", "lr_factor", "main", "noisy_past", "self_sampled_past", "train"]


# ---- data ----------------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (nearby steps get unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class SegmentSampler:
    """Random aligned (audio, mel) segments from in-memory utterances, indexed by step.

    ``batch(step, rank)`` is deterministic: the same arguments give the same batch in any
    process. Utterances shorter than the segment are zero-padded (the mel with the recipe's
    silence floor) and masked out of the loss.

    Args:
        utterances: list of (audio (T,), mel (frames, n_mels)) float32 arrays.
        hop_length: samples per mel frame.
        segment_frames: segment length in mel frames.
        batch_size: segments per batch.
        seed: run seed.
        pad_value: log-mel value used for padding (silence).
    """

    def __init__(self, utterances: list[tuple[np.ndarray, np.ndarray]], hop_length: int,
                 segment_frames: int, batch_size: int, seed: int, pad_value: float) -> None:
        if not utterances:
            raise ValueError("no training utterances")
        self.audio = [torch.from_numpy(np.ascontiguousarray(a)) for a, _ in utterances]
        self.mel = [torch.from_numpy(np.ascontiguousarray(m.T)) for _, m in utterances]
        self.frames = torch.tensor([m.shape[1] for m in self.mel], dtype=torch.float64)
        self.hop, self.seg, self.batch_size = hop_length, segment_frames, batch_size
        self.seed, self.pad_value = seed, pad_value
        self.n_mels = self.mel[0].shape[0]

    def batch(self, step: int, rank: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(audio (B, S * hop), mel (B, n_mels, S), mask (B, S * hop)) for this step and rank."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, step, rank))
        # length-weighted choice: every frame of the corpus is equally likely to be seen
        idx = torch.multinomial(self.frames, self.batch_size, replacement=True, generator=g)
        S, hop = self.seg, self.hop
        x = torch.zeros(self.batch_size, S * hop)
        mel = torch.full((self.batch_size, self.n_mels, S), self.pad_value)
        mask = torch.zeros(self.batch_size, S * hop)
        for b, i in enumerate(idx.tolist()):
            frames = self.mel[i].shape[1]
            start = int(torch.randint(0, max(frames - S, 0) + 1, (1,), generator=g))
            n = min(S, frames - start)
            mel[b, :, :n] = self.mel[i][:, start : start + n]
            x[b, : n * hop] = self.audio[i][start * hop : (start + n) * hop]
            mask[b, : n * hop] = 1.0
        return x, mel, mask


class _StepBatches(torch.utils.data.Dataset):
    """Batches for steps first..last-1 of one rank, so DataLoader workers can prepare them."""

    def __init__(self, sampler: SegmentSampler, first: int, last: int, rank: int) -> None:
        self.sampler, self.first, self.last, self.rank = sampler, first, last, rank

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, i: int):
        return self.sampler.batch(self.first + i, self.rank)


def _load_split(data_dir: Path, split: str, cfg: WaveNetConfig, log) -> list[tuple[str, Any, Any]]:
    """Read a split, skipping (and naming) unreadable or mismatched utterances."""
    out = []
    for path in list_split(data_dir, split):
        try:
            audio, mel = load_utterance(path)
            if mel.shape[1] != cfg.n_mels:
                raise ValueError(f"{path}: mel has {mel.shape[1]} bins, the model {cfg.n_mels}")
            if len(audio) != mel.shape[0] * cfg.hop_length:
                raise ValueError(f"{path}: {len(audio)} samples for {mel.shape[0]} frames, "
                                 f"expected frames * hop_length = {mel.shape[0] * cfg.hop_length}")
            if not (np.isfinite(audio).all() and np.isfinite(mel).all()):
                raise ValueError(f"{path}: contains NaN/inf values")
        except ValueError as e:
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            log(f"warning: skipping unreadable {split} utterance {msg}")
            continue
        out.append((path.stem, audio, mel))
    return out


def noisy_past(model: WaveNet, x: Tensor, mel: Tensor, tc: TrainConfig, seed: int) -> Tensor:
    """The past the network reads in training: ``x`` plus the configured noise, so that it
    learns to predict the clean sample from a past that is not quite the truth, as in
    synthesis from its own samples. ``input_noise``: white, in the signal; ``lp_noise`` (LP
    models): in the excitation, coloured by the synthesis filter like synthesis's own errors.
    """
    if tc.input_noise <= 0 and (tc.lp_noise <= 0 or not model.cfg.lpc_order):
        return x
    g = torch.Generator(x.device).manual_seed(seed)
    past = x
    if tc.input_noise > 0:
        past = past + tc.input_noise * torch.randn(x.shape, generator=g, device=x.device)
    if tc.lp_noise > 0 and model.cfg.lpc_order:
        with torch.no_grad():
            past = past + excitation_noise(x, model.lpc(mel), model.hop_length, tc.lp_noise, g)
    return past


@torch.no_grad()
def self_sampled_past(model: WaveNet, x: Tensor, mel: Tensor, past: Tensor, tc: TrainConfig,
                      seed: int, phase: Tensor | None = None) -> Tensor:
    """Replace the past of a random ``tc.self_sample`` fraction of the batch's segments by the
    model's own samples (parallel scheduled sampling). A pass is one teacher-forced forward
    and one draw per step (temperature 1, as synthesis samples); the next pass reads the
    draws as its past. Unlike white noise, the errors have the model's own size and shape:
    large and signed at the glottal pulses, small in silence."""
    if tc.self_sample <= 0:
        return past
    g = torch.Generator(x.device).manual_seed(seed)
    pick = (torch.rand(x.shape[0], generator=g, device=x.device) < tc.self_sample).nonzero()[:, 0]
    if pick.numel() == 0:
        return past
    was_training = model.training
    model.eval()  # dropout off: the draws are the model's, not a thinned network's
    try:
        own = past[pick]
        for _ in range(tc.self_sample_passes):
            ph = None if phase is None else phase[pick]
            own = model.head.sample(model(x[pick], mel[pick], past=own, phase=ph).float(),
                                    generator=g)
    finally:
        model.train(was_training)
    out = past.clone()
    out[pick] = own.to(past.dtype)
    return out


# ---- schedule and EMA ----------------------------------------------------------------------
def lr_factor(step: int, tc: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warmup, then the schedule."""
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    decay_steps = tc.lr_decay_steps or tc.max_steps
    t = step - tc.warmup_steps
    if tc.lr_schedule == "constant":
        return 1.0
    if tc.lr_schedule == "exponential":
        return tc.lr_gamma ** (t / decay_steps)
    progress = min(1.0, t / max(1, decay_steps - tc.warmup_steps))
    return tc.lr_min_ratio + (1 - tc.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    # a short memory at first ((1 + t) / (10 + t)), so EMA weights are useful in short runs
    d = min(decay, (1 + step) / (10 + step))
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - d)


# ---- distributed helpers -------------------------------------------------------------------
@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | None) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    env = _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device is None:
        device = f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return env, dev


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- one process per run folder, and interrupts at step boundaries -------------------------
class RunLockedError(ValueError):
    """The run folder is in use by another training process."""


def _describe_owner(owner: dict[str, Any]) -> str:
    parts = [f"PID {owner.get('pid', '?')}"]
    if owner.get("host"):
        parts.append(f"on {owner['host']}")
    if owner.get("started"):
        parts.append(f"since {owner['started']}")
    return " ".join(parts)


def _parse_owner(text: str) -> dict[str, Any]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


class _RunLock:
    """``RUN_DIR/.lock``: held while a training process uses the folder.

    Where ``fcntl`` exists the file carries an advisory ``flock``, which the kernel drops when
    the process dies however it dies: a lock file nobody holds is stale by construction, and is
    taken over with a warning. Elsewhere the file is created with ``O_EXCL`` and a lock whose
    PID is not running on this host counts as stale. The file holds the owner's PID, host and
    start time, for the message a second process prints.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path, warn) -> None:
        self.path, self.warn, self.fd = run_dir / self.NAME, warn, None
        self.me = {"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _refuse(self, owner: dict[str, Any]) -> None:
        raise RunLockedError(
            f"{self.path.parent} is in use by another training process "
            f"({_describe_owner(owner)}): wait for it to end or stop it, or choose another --out"
        )

    def __enter__(self) -> _RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            self._acquire_exclusive()
            return self
        for _ in range(50):  # retried only while a releasing process removes the file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse(_parse_owner(self.path.read_text(errors="replace")))
            try:  # the file we locked must still be the one under the name
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = os.read(fd, 4096).decode(errors="replace").strip()
            if old:
                self.warn(f"warning: taking over the stale lock of "
                          f"{_describe_owner(_parse_owner(old))} in {self.path.parent}: that "
                          f"process is gone")
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.me).encode())
            self.fd = fd
            return self
        raise RunLockedError(f"could not lock {self.path}: it keeps changing")

    def _acquire_exclusive(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                owner = _parse_owner(self.path.read_text(errors="replace"))
                same_host = owner.get("host") in (None, self.me["host"])
                if same_host and not _pid_alive(int(owner.get("pid") or 0)):
                    self.warn(f"warning: taking over the stale lock of {_describe_owner(owner)}"
                              f" in {self.path.parent}: that process is gone")
                    self.path.unlink(missing_ok=True)
                    continue
                self._refuse(owner)
            os.write(fd, json.dumps(self.me).encode())
            self.fd = fd
            return
        self._refuse({})

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:
            if fcntl is None or os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                self.path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _pid_alive(pid: int) -> bool:
    return pid_alive(pid)


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT or SIGTERM; ``checkpoint`` is what it saved (or None)."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(signal.Signals(signum).name)


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, except inside :meth:`critical` sections,
    where they wait for the section's end. Signals a parent set to be ignored stay ignored
    (e.g. SIGINT of a job started with ``&``); nothing is installed outside the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth, self._pending, self._old = 0, False, {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                with contextlib.suppress(ValueError, OSError):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self, *, then_raise: bool = True):
        """A section no signal cuts in two; one that arrived meanwhile is raised at its end
        (``then_raise=False``: dropped, for the save that answers an interrupt)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._pending and not self._depth:
            self._pending = False
            if then_raise:
                raise KeyboardInterrupt


# ---- checking what train() is given, before it writes anything ------------------------------
def _check_device(device: str | None) -> None:
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"device {device!r}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r} is not supported for training: use cpu, cuda or "
                         f"cuda:N")


def _is_run_dir(d: Path) -> bool:
    """A folder a dmol training run wrote (or started to write)."""
    if list_checkpoints(d) or (d / _RunLock.NAME).exists():
        return True
    for name in ("config.json", "metrics.json"):
        try:
            data = json.loads((d / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "preset" in data:
            return True
    return False


def _check_run_dir(out_dir: Path, data_dir: Path) -> None:
    if data_dir.exists() and data_dir.resolve() in out_dir.resolve().parents:
        raise ValueError(f"--out {out_dir} lies inside the dataset {data_dir}: choose a run "
                         f"folder outside it")
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} exists and is not a folder")
        if data_dir.exists() and out_dir.resolve() == data_dir.resolve():
            raise ValueError(f"--out {out_dir} is the dataset folder: choose a run folder of "
                             f"its own")
        entries = sorted(p.name for p in out_dir.iterdir())
        if entries and not _is_run_dir(out_dir):
            raise ValueError(
                f"--out {out_dir} is not empty and is not a dmol run folder (it holds "
                f"{', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''}; no checkpoints "
                f"or config.json of a run): choose a new or empty folder"
            )
    check_writable(out_dir, f"--out {out_dir}")


def _check_value(name: str, value: Any, annotation: str) -> Any:
    """``value`` as config field ``name`` of type ``annotation`` needs it, or a ValueError
    saying what is expected (NaN and infinities are never a valid setting)."""

    def number(v: Any) -> float | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    def integer(v: Any) -> int | None:
        f = number(v)
        return int(f) if f is not None and f.is_integer() else None

    hint = " (--set takes Python literals, e.g. 3e-4, (0.9, 0.99), None)"
    if annotation in ("int", "int | None"):
        if value is None and annotation.endswith("None"):
            return None
        v = integer(value)
        if v is None:
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return v
    if annotation in ("float", "float | None"):
        if value is None and annotation.endswith("None"):
            return None
        v = number(value)
        if v is None:
            raise ValueError(f"{name} must be a finite number, got {value!r}{hint}")
        return v
    if annotation == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a name (a string), got {value!r}")
        return value
    if annotation.startswith("tuple["):
        floats = "float" in annotation
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        items = [(number if floats else integer)(v) for v in value] if ok else []
        size = annotation.count(",") + 1 if "..." not in annotation else None
        if not ok or any(v is None for v in items) or (size and len(items) != size):
            kind = f"{size} finite numbers" if floats else "integers"
            example = "(0.9, 0.999)" if floats else "(4, 4, 4)"
            raise ValueError(f"{name} must be a tuple of {kind} like {example}, got {value!r}")
        return tuple(items)
    return value


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Type-check ``--set`` style overrides (``{"lr": "3e-4"}`` or parsed values) against the
    config dataclasses' fields and return them converted; unknown names are left to
    :func:`apply_overrides`, which lists the valid ones."""
    fields = {f.name: f for cls in (WaveNetConfig, TrainConfig) for f in dataclasses.fields(cls)}
    out = {}
    for k, v in overrides.items():
        f = fields.get(k)
        out[k] = _check_value(k, v, f.type if isinstance(f.type, str) else
                              getattr(f.type, "__name__", "")) if f else v
    if out.get("seed") is not None and out["seed"] < 0:
        raise ValueError(f"seed must be >= 0, got {out['seed']}")
    return out


# ---- the run -------------------------------------------------------------------------------
def describe(model_cfg: WaveNetConfig, train_cfg: TrainConfig, preset: str = "") -> str:
    """Human-readable summary: both configs, receptive field, parameter count, mel recipe."""
    model = WaveNet(model_cfg, MEL_RECIPES.get(preset))
    rf = model.receptive_field
    lines = [f"preset: {preset}" if preset else "preset: (custom)", "model:"]
    lines += [f"  {k}: {v}" for k, v in model_cfg.to_dict().items()]
    lines += ["training:"] + [f"  {k}: {v}" for k, v in train_cfg.to_dict().items()]
    lines += [
        f"head: {model.head!r} ({model.head.out_channels} output channels)",
        f"receptive field: {rf.samples} samples = {rf.ms:.2f} ms at {model_cfg.sample_rate} Hz",
        f"hop length: {model_cfg.hop_length} samples",
        f"parameters: {model.num_parameters:,}",
    ]
    try:
        lines.append(f"mel recipe: {recipe_for(preset).to_dict()}")
    except ValueError:
        pass
    return "\n".join(lines)


def _check_recipe(recipe, cfg: WaveNetConfig, data_dir: Path) -> None:
    bad = cfg.recipe_mismatches(recipe)
    if bad:
        desc = ", ".join(f"{k} {a} vs {b}" for k, a, b in bad)
        raise ValueError(f"dataset {data_dir} does not fit the model (dataset vs model: {desc}); "
                         f"preprocess it with the same preset")


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    preset: str = "small-16k",
    *,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    minutes: float | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Train (or resume training) a WaveNet; returns the metrics written to ``metrics.json``.

    Args:
        data_dir: a dmol dataset (``dmol preprocess`` / ``dmol data builtin``).
        out_dir: run folder for checkpoints, ``metrics.json``, ``config.json`` and ``tb/``.
        preset: a name in :data:`~dmol.wavenet.presets.PRESETS`.
        overrides: config fields by name (model or training), e.g. ``{"head": "mulaw"}``.
        resume: continue from the newest valid checkpoint in ``out_dir``. Without it, an
            ``out_dir`` that already has checkpoints is an error. On resume, the checkpoint's
            configs are used; training fields may be overridden, model fields may not.
        max_steps, seed, batch_size: shortcuts for the same-named overrides.
        minutes: stop (with a checkpoint) after this much wall-clock training time.
        device: "cpu", "cuda", "cuda:1"...; default: this rank's GPU if there is one.
        threads: ``torch.set_num_threads`` for this process (None: leave torch's default).
            On a CPU shared with other work, 1 thread can be several times faster than 2.

    Example::

        >>> metrics = train("data/allison", "runs/tiny", "tiny", max_steps=100)
        >>> metrics["val"][-1]    # [step, teacher-forced NLL in nats] of the EMA weights
    """
    # ---- everything is checked before anything is written
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: known presets are {sorted(PRESETS)}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    overrides = dict(overrides or {})
    for k, v in (("max_steps", max_steps), ("seed", seed), ("batch_size", batch_size)):
        if v is not None:
            overrides[k] = v
    overrides = check_overrides(overrides)
    if not resume:
        get_preset(preset, overrides)  # a bad value fails now, not after loading the data
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    _check_run_dir(out_dir, data_dir)
    _check_device(device)
    recipe = load_recipe(data_dir)
    if threads is not None:
        torch.set_num_threads(threads)
    env, dev = _init_distributed(device)
    created = not out_dir.exists()

    def log(msg: str) -> None:
        if env.main:
            tqdm.write(msg, file=sys.stderr if msg.startswith("warning") else sys.stdout)

    try:
        # DDP: rank 0 speaks for the run (the others never write into the folder)
        lock = _RunLock(out_dir, log) if env.main else contextlib.nullcontext()
        with lock, _Interrupts() as interrupts:
            try:
                return Trainer(
                    data_dir, out_dir, preset, recipe, overrides, resume=resume, minutes=minutes,
                    env=env, dev=dev, progress=progress, tensorboard=tensorboard, log=log,
                    interrupts=interrupts).run()
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:  # before the first step, or on a DDP replica
                raise TrainingInterrupted(interrupts.signum or signal.SIGINT, None, None
                                          ) from None
    finally:
        if created and env.main:  # a run that stopped before writing anything leaves no folder
            with contextlib.suppress(OSError):
                out_dir.rmdir()


class Trainer:
    """One training session of a run folder, read top to bottom by :meth:`run`:

    1. :meth:`setup`: the configs (the preset's, or the checkpoint's when resuming), the data,
       the model, its EMA copy, the optimizer and scheduler, restored from the checkpoint;
    2. the loop: :meth:`train_step` per batch, then :meth:`validate`, the media and
       :meth:`save` on their intervals; Ctrl-C/SIGTERM end it through :meth:`_interrupted`;
    3. :meth:`finish`: the session's summary into ``metrics.json``.

    :func:`train` checks the arguments, takes the run folder's lock and runs it.
    """

    def __init__(self, data_dir: Path, out_dir: Path, preset: str, recipe,
                 overrides: dict[str, Any], *, resume: bool, minutes: float | None, env: _Dist,
                 dev: torch.device, progress: bool, tensorboard: bool, log,
                 interrupts: _Interrupts) -> None:
        self.data_dir, self.out_dir, self.preset, self.recipe = data_dir, out_dir, preset, recipe
        self.overrides, self.resume, self.minutes = overrides, resume, minutes
        self.env, self.dev, self.log, self.interrupts = env, dev, log, interrupts
        self.progress, self.tensorboard = progress, tensorboard
        self.writer = None
        self.bar = None

    def run(self) -> dict[str, Any]:
        self.setup()
        tc, env = self.tc, self.env
        if self.step >= tc.max_steps:
            self.log(f"{self.out_dir} already reached max_steps = {tc.max_steps}: nothing to do "
                     f"(raise max_steps to train further)")
            if self.writer:
                self.writer.close()
            return {**self.metrics, **_summary(self.step, tc, self.model, self.preset, env)}
        self.samples_per_step = (tc.batch_size * self.seg_frames * self.model_cfg.hop_length
                                 * env.world)
        self.t_start = time.perf_counter()
        self.seconds_before = float(self.metrics["train_seconds"])
        self.skipped_before = int(self.metrics["skipped_steps"])
        self.session_steps, self.window_t, self.window_steps = 0, time.perf_counter(), 0
        self.target_logged = False
        self.stop_reason = "max_steps"
        # DDP: a signal must not cut one replica out of a collective. It is only recorded;
        # the ranks learn of it in the next step's all-reduce, finish that step together and
        # stop there (rank 0 saves). One process: it stops at once (after a critical section).
        self.halted = False
        defer = (self.interrupts.critical(then_raise=False) if env.world > 1
                 else contextlib.nullcontext())
        try:
            defer.__enter__()
            if self.state is None and self.val_set:
                self.validate()  # the starting point of the val curve
            if env.main and self.progress:
                self.bar = tqdm(total=tc.max_steps, initial=self.step, unit="step",
                                dynamic_ncols=True)
            for x, mel, mask in self.loader:
                if self.step >= tc.max_steps:
                    break
                stop = self.train_step(x, mel, mask)
                if self.bar is not None:
                    self.bar.update(1)
                if self.halted:  # every rank, after the same step
                    raise KeyboardInterrupt
                if self.step % tc.val_interval == 0 and self.step < tc.max_steps:
                    self.validate()
                if env.main and self.writer and self.step % tc.media_interval == 0:
                    _log_media(self.writer, self.ema, self.val_set or [self.train_utts[0]],
                               self.step, self.recipe.sample_rate, self.dev,
                               log_target=not self.target_logged)
                    self.target_logged = True
                if stop:
                    self.stop_reason = "minutes"
                    break
                if self.step % tc.ckpt_interval == 0 and self.step < tc.max_steps:
                    self.save()
                    if env.main:
                        _write_metrics(self.out_dir, self.metrics, self._summary())
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            self.metrics["train_seconds"] = self.seconds_before + time.perf_counter() - self.t_start
            self.validate()
            self.save()
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            defer.__exit__(None, None, None)
            if self.bar is not None:
                self.bar.close()
        return self.finish()

    # ---- 1. setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        self._configs()
        self._data()
        self._model()
        self._run_folder()

    def _configs(self) -> None:
        """The preset's configs, or the checkpoint's (training fields may be overridden)."""
        out_dir, preset, overrides = self.out_dir, self.preset, self.overrides
        ckpt_path = latest_checkpoint(out_dir, verbose=self.env.main)
        state = None
        if ckpt_path is not None and not self.resume:
            raise ValueError(f"{out_dir} already has checkpoints (newest {ckpt_path.name}): "
                             f"pass resume=True (--resume) to continue it, or choose another "
                             f"out_dir")
        if ckpt_path is not None:
            state = load_checkpoint(ckpt_path)
            lacking = [k for k in ("model", "optimizer", "scheduler") if k not in state]
            if lacking:
                raise CorruptCheckpointError(ckpt_path, f"cannot be resumed: it lacks {lacking}")
            if state.get("preset") != preset:
                raise ValueError(f"{ckpt_path} was trained from preset {state.get('preset')!r}, "
                                 f"not {preset!r}")
            model_cfg = WaveNetConfig.from_dict(state["model_config"])
            train_cfg = TrainConfig.from_dict(state["train_config"])
            new_model_cfg, train_cfg = apply_overrides(model_cfg, train_cfg, overrides)
            if new_model_cfg != model_cfg:
                changed = [f.name for f in dataclasses.fields(model_cfg)
                           if getattr(model_cfg, f.name) != getattr(new_model_cfg, f.name)]
                raise ValueError(f"cannot change model fields {changed} when resuming "
                                 f"{ckpt_path}")
            self.log(f"resuming from {ckpt_path} (step {state['step']})")
        else:
            if self.resume:
                self.log(f"no checkpoint in {out_dir}: starting a new run")
            model_cfg, train_cfg = get_preset(preset, overrides)
        _check_recipe(self.recipe, model_cfg, self.data_dir)
        self.ckpt_path, self.state, self.model_cfg, self.tc = ckpt_path, state, model_cfg, train_cfg

    def _data(self) -> None:
        """The utterances, the step-indexed batch sampler and the validation set."""
        tc, recipe, log = self.tc, self.recipe, self.log
        self.train_utts = _load_split(self.data_dir, "train", self.model_cfg, log)
        val_utts = _load_split(self.data_dir, "val", self.model_cfg, log)
        if not self.train_utts:
            raise ValueError(f"dataset {self.data_dir} has no usable training utterances")
        if self.state is None and "mel_mean" not in self.overrides:
            # normalize the conditioning with training-set statistics (stored in the config)
            mels = np.concatenate([m for _, _, m in self.train_utts]).astype(np.float64)
            self.model_cfg = dataclasses.replace(
                self.model_cfg, mel_mean=round(float(mels.mean()), 4),
                mel_std=round(float(mels.std()) + 1e-3, 4))
        hop = self.model_cfg.hop_length
        self.seg_frames = max(1, tc.segment_length // hop)
        self.sampler = SegmentSampler([(a, m) for _, a, m in self.train_utts], hop,
                                      self.seg_frames, tc.batch_size, tc.seed, recipe.log_min)
        max_val = max(1, int(tc.val_max_seconds * recipe.sample_rate) // hop)
        self.val_set = [(n, a[: max_val * hop], m[:max_val])
                        for n, a, m in val_utts[: tc.val_utterances]]
        if not self.val_set:
            log("warning: the dataset has no validation utterances: no validation loss")

    def _model(self) -> None:
        """Model, EMA copy, optimizer, scheduler and metrics; restored when resuming."""
        tc, dev, state = self.tc, self.dev, self.state
        torch.manual_seed(tc.seed)
        self.model = WaveNet(self.model_cfg, self.recipe).to(dev)
        if state is None and self.model.pitch_net is not None:  # fitted once, then frozen
            self.log("fitting the learned F0 estimate (pitch_net) to harvest's F0 of the "
                     "training audio")
            net = fit_mel_pitch_net(
                pitch_examples([(a, m) for _, a, m in self.train_utts], self.recipe,
                               progress=self.progress and self.env.main),
                self.model_cfg.n_mels, hidden=self.model_cfg.pitch_net, seed=tc.seed,
                progress=self.progress and self.env.main)
            self.model.pitch_net.load_state_dict(net.state_dict())
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        # the trained parameters only (a learned F0 estimate is fitted before, and frozen)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, tc))
        self.metrics: dict[str, Any] = {"train": [], "val": [], "lr": [], "grad_norm": [],
                                        "train_seconds": 0.0, "skipped_steps": 0,
                                        "skipped_at": []}
        self.step = 0
        # running sum of the losses since the last log line (checkpointed: resumed curves match)
        self.window = {"loss": 0.0, "n": 0}
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.metrics.update(state.get("metrics", {}))
            self.step = int(state["step"])
            # the rate is the config's (``--set lr=`` may change it on resume), not the one the
            # checkpoint's optimizer and scheduler remember
            self.sched.base_lrs = [tc.lr] * len(self.opt.param_groups)
            for group in self.opt.param_groups:
                group["initial_lr"], group["lr"] = tc.lr, tc.lr * lr_factor(self.step, tc)
            self.window.update(state.get("log_window", {}))
            _set_rng(state.get("rng"))
        self.head = self.model.head
        self.ddp = self.model
        if self.env.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        self.saved = {"step": self.step if state is not None else None, "path": self.ckpt_path}
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if tc.precision == "bf16" and dev.type == "cuda"
                         else contextlib.nullcontext())
        batches = _StepBatches(self.sampler, self.step, tc.max_steps, self.env.rank)
        self.loader = torch.utils.data.DataLoader(
            batches, batch_size=None, shuffle=False, num_workers=tc.num_workers,
            pin_memory=dev.type == "cuda", persistent_workers=False,
        )

    def _run_folder(self) -> None:
        """config.json, the TensorBoard writer and the opening log line (rank 0 only)."""
        if not self.env.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(self.out_dir / "config.json", json.dumps(
            {"preset": self.preset, "model": self.model_cfg.to_dict(), "train": self.tc.to_dict(),
             "recipe": self.recipe.to_dict(), "world_size": self.env.world}, indent=2))
        if self.tensorboard:
            # lazy: tensorboard is optional ([audio] extra) and slow to import
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last checkpoint
            self.writer = SummaryWriter(str(self.out_dir / "tb"),
                                        purge_step=self.step if self.step else None)
        rf = self.model.receptive_field
        self.log(f"{self.preset}: {self.model.num_parameters:,} parameters, receptive field "
                 f"{rf.samples} samples ({rf.ms:.1f} ms), {len(self.train_utts)} train / "
                 f"{len(self.val_set)} val utterances, {self.env.world} process(es) on {self.dev}")

    # ---- 2. the loop ---------------------------------------------------------------------------
    def train_step(self, x: Tensor, mel: Tensor, mask: Tensor) -> bool:
        """One optimizer step on a batch; returns whether the time budget says stop."""
        tc, env, dev, model = self.tc, self.env, self.dev, self.model
        self.ddp.train()
        torch.manual_seed(derive_seed(tc.seed, self.step, env.rank, 1))  # dropout stream
        x, mel, mask = (t.to(dev, non_blocking=True) for t in (x, mel, mask))
        x = model.emphasize(x)  # the signal the model predicts (identity without pre-emphasis)
        past = noisy_past(model, x, mel, tc, derive_seed(tc.seed, self.step, env.rank, 2))
        # a phase clock reads the recording's own fundamental, so the pulses learn the clock
        phase = model.analysis_phase(x, mel) if model.cfg.phase_harmonics else None
        with self.autocast:
            past = self_sampled_past(model, x, mel, past, tc,
                                     derive_seed(tc.seed, self.step, env.rank, 3), phase)
            y_hat = self.ddp(x, mel, past=past, phase=phase)
        self.opt.zero_grad(set_to_none=True)
        if bool(torch.isfinite(y_hat).all()):
            loss = self.head.loss(y_hat.float(), x, mask)
            loss.backward()
        else:  # the loss refuses NaN/inf parameters: a zero backward (DDP's all-reduce
            # still runs on every rank) and a NaN loss, so the step is skipped below
            (y_hat.nan_to_num(0.0, 0.0, 0.0) * 0.0).sum().backward()
            loss = torch.tensor(float("nan"), device=dev)
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        over_time = self.minutes is not None and (
            time.perf_counter() - self.t_start >= 60.0 * self.minutes) and env.main
        # one collective per step: summed loss, agreement that the step is finite, stop flag,
        # and (DDP) whether any rank received SIGINT/SIGTERM
        interrupted = float(self.interrupts.signum is not None)
        flags = torch.stack([loss.detach().float(),
                             (torch.isfinite(loss) & torch.isfinite(gnorm)).float(),
                             torch.tensor(float(over_time), device=dev),
                             torch.tensor(interrupted, device=dev)])
        if env.world > 1:
            flags = torch.nan_to_num(flags, nan=float("inf"))
            dist.all_reduce(flags)
            self.halted = flags[3].item() > 0
        mean_loss, ok, stop = flags[0].item() / env.world, flags[1].item(), flags[2].item()
        # the update, the step that counts it and its log line are one unit: a signal that
        # arrives in between waits for the end (else a checkpoint saved on the interrupt
        # would hold an update that resuming applies a second time)
        with self.interrupts.critical():
            if ok == env.world:
                self.opt.step()
                _ema_update(self.ema, model, self.step, tc.ema_decay)
                self.window["loss"] += mean_loss
                self.window["n"] += 1
            else:
                self.metrics["skipped_steps"] += 1
                self.metrics["skipped_at"] = (self.metrics["skipped_at"] + [self.step])[-100:]
                self.log(f"warning: step {self.step}: non-finite loss or gradient (loss "
                         f"{mean_loss:.4g}, grad norm {float(gnorm):.4g}): skipped the update "
                         f"({self.metrics['skipped_steps']} skipped so far)")
            self.sched.step()
            self.step += 1
            self.session_steps += 1
            self.window_steps += 1
            if self.step % tc.log_interval == 0 or self.step == tc.max_steps:
                self._log_train(float(gnorm))
            self.metrics["train_seconds"] = (self.seconds_before + time.perf_counter()
                                             - self.t_start)
        return bool(stop)

    def _log_train(self, gnorm: float) -> None:
        """The mean loss since the last log line, the lr, grad norm and speed: metrics, bar, TB."""
        step, metrics, writer = self.step, self.metrics, self.writer
        now = time.perf_counter()
        sps = self.samples_per_step * self.window_steps / max(now - self.window_t, 1e-9)
        avg = self.window["loss"] / self.window["n"] if self.window["n"] else float("nan")
        self.window_t, self.window_steps = now, 0
        self.window.update(loss=0.0, n=0)
        lr = self.opt.param_groups[0]["lr"]
        metrics["train"].append([step, avg])
        metrics["lr"].append([step, lr])
        metrics["grad_norm"].append([step, gnorm])
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{avg:.3f}", lr=f"{lr:.2e}", samples_s=f"{sps:,.0f}")
        if writer:
            writer.add_scalar("train/loss", avg, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/grad_norm", gnorm, step)
            writer.add_scalar("train/samples_per_sec", sps, step)
            writer.add_scalar("train/skipped_steps", metrics["skipped_steps"], step)

    def validate(self) -> float | None:
        """Teacher-forced NLL of the EMA weights on the validation set (rank 0)."""
        if not self.val_set or not self.env.main:
            return None
        loss = _validation_loss(self.ema, self.val_set, self.dev)
        self.metrics["val"].append([self.step, loss])
        if self.writer:
            self.writer.add_scalar("val/loss", loss, self.step)
            self.writer.add_scalar("val/bits_per_sample", loss / math.log(2), self.step)
        self.log(f"step {self.step}: val loss {loss:.4f} nats ({loss / math.log(2):.3f} bits) "
                 f"[EMA]")
        return loss

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs to reach the same weights."""
        return {
            "format": "dmol-wavenet-1", "step": self.step, "preset": self.preset,
            "model_config": self.model_cfg.to_dict(), "train_config": self.tc.to_dict(),
            "recipe": self.recipe.to_dict(), "model": self.model.state_dict(),
            "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng": _get_rng(),
            "metrics": copy.deepcopy(self.metrics), "log_window": dict(self.window),
            "world_size": self.env.world,
        }

    def save(self) -> None:
        if self.env.main:
            p = save_checkpoint(self.out_dir, self.step, self.checkpoint_state(),
                                keep=self.tc.keep_checkpoints)
            self.saved["path"] = p
            self.log(f"step {self.step}: saved {p.name}")
        self.saved["step"] = self.step  # on every rank: DDP decides together whether to save
        if self.env.world > 1:
            dist.barrier()

    def _interrupted(self) -> None:
        """Ctrl-C or SIGTERM: save the current step (once), write metrics.json, and raise
        :class:`TrainingInterrupted`."""
        if self.bar is not None:
            self.bar.close()
        if self.env.world > 1 and not self.halted:  # not at an agreed step: nothing to save
            raise
        # a second Ctrl-C must not cut the save short: it waits, and is then dropped
        with self.interrupts.critical(then_raise=False):
            self.metrics["train_seconds"] = self.seconds_before + time.perf_counter() - self.t_start
            if self.saved["step"] != self.step and (self.step > 0 or self.session_steps):
                self.save()
            if self.saved["path"] is not None:
                summary = self._summary()
                summary.update(stop_reason="interrupted", session_steps=self.session_steps)
                _write_metrics(self.out_dir, self.metrics, summary)
        if self.writer:
            self.writer.close()
        raise TrainingInterrupted(self.interrupts.signum or signal.SIGINT, self.step,
                                  self.saved["path"] if self.saved["step"] == self.step else None
                                  ) from None

    # ---- 3. the end ----------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        return _summary(self.step, self.tc, self.model, self.preset, self.env)

    def finish(self) -> dict[str, Any]:
        """The session's summary (speed, stop reason; DDP: replica digests) into metrics.json."""
        env, log, metrics = self.env, self.log, self.metrics
        elapsed = time.perf_counter() - self.t_start
        throughput = self.samples_per_step * self.session_steps / max(elapsed, 1e-9)
        summary = self._summary()
        summary.update(stop_reason=self.stop_reason, samples_per_sec=throughput,
                       steps_per_sec=self.session_steps / max(elapsed, 1e-9),
                       session_steps=self.session_steps)
        if env.world > 1:  # DDP keeps replicas identical; verify it rather than assume it
            digests = [None] * env.world
            dist.all_gather_object(digests, _weights_digest(self.model))
            summary["replica_digests"] = digests
            if env.main and len(set(digests)) != 1:
                log("warning: the replicas' weights differ at the end of training")
        if env.main:
            _write_metrics(self.out_dir, metrics, summary)
            log(f"done: step {self.step}/{self.tc.max_steps} ({self.stop_reason}), "
                f"{throughput:,.0f} samples/s, {self.session_steps / max(elapsed, 1e-9):.2f} "
                f"steps/s this session, {metrics['skipped_steps']} skipped step(s); metrics in "
                f"{self.out_dir / 'metrics.json'}")
            if (self.session_steps
                    and metrics["skipped_steps"] - self.skipped_before == self.session_steps):
                log(f"warning: all {self.session_steps} step(s) of this session were skipped "
                    f"(non-finite loss or gradient): nothing was learned; check the "
                    f"configuration (--set, --lr)")
        if self.writer:
            self.writer.close()
        if env.world > 1:
            dist.barrier()
        return {**metrics, **summary}


def _summary(step, tc, model, preset, env) -> dict[str, Any]:
    return {"preset": preset, "step": step, "max_steps": tc.max_steps,
            "finished": step >= tc.max_steps, "parameters": model.num_parameters,
            "receptive_field": model.receptive_field.samples, "world_size": env.world}


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file (this process's own) and rename it over ``path``;
    on failure (a full disk) the temporary file is removed and ``path`` is as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:  # a plain open: the umask decides the mode
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_metrics(out_dir: Path, metrics: dict[str, Any], summary: dict[str, Any]) -> None:
    data = {**summary, **metrics}
    data["final_val_loss"] = metrics["val"][-1][1] if metrics["val"] else None
    _write_text_atomic(out_dir / "metrics.json", json.dumps(data, indent=1))


@torch.no_grad()
def _validation_loss(model: WaveNet, val_set, dev: torch.device) -> float:
    """Teacher-forced NLL (nats per sample) over the validation utterances: the training
    loss's objective (a phase clock reads the recording's own phase, as in training)."""
    total, count = 0.0, 0
    for _, audio, mel in val_set:
        x = torch.from_numpy(np.ascontiguousarray(audio))[None].to(dev)
        c = torch.from_numpy(np.ascontiguousarray(mel.T))[None].to(dev)
        x = model.emphasize(x)
        phase = model.analysis_phase(x, c) if model.cfg.phase_harmonics else None
        nll = model.head.nll(model(x, c, phase=phase).float(), x)
        total += float(nll.double().sum())
        count += nll.numel()
    return total / max(count, 1)


@torch.no_grad()
def _log_media(writer, model: WaveNet, utts, step: int, sample_rate: int, dev,
               log_target: bool) -> None:
    """A teacher-forced sample (each step drawn given the true past) and the density picture."""
    _, audio, mel = utts[0]
    frames = min(mel.shape[0], max(1, sample_rate // 2 // model.hop_length))  # ~0.5 s
    x = torch.from_numpy(np.ascontiguousarray(audio[: frames * model.hop_length]))[None].to(dev)
    c = torch.from_numpy(np.ascontiguousarray(mel[:frames].T))[None].to(dev)
    y_hat = model(model.emphasize(x), c).float()
    sample = model.head.sample(y_hat, generator=torch.Generator(dev).manual_seed(step))
    sample = model.deemphasize(sample)
    writer.add_audio("media/teacher_forced_sample", sample[0].cpu().clamp(-1, 1), step, sample_rate)
    if log_target:
        writer.add_audio("media/target", x[0].cpu(), step, sample_rate)
    writer.add_image("media/distribution", distribution_image(model.head, y_hat,
                                                              model.emphasize(x)), step,
                     dataformats="HWC")


def _get_rng() -> dict[str, Any]:
    # the legacy global numpy generator is what third-party code (librosa...) may draw from
    np_state = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng(rng: dict[str, Any] | None) -> None:
    if not rng:
        return
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


if __name__ == "__main__":  # `torchrun -m dmol.wavenet.train ...`: the `dmol train` command line
    from dmol.cli.train import main

    sys.exit(main())
