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
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from dmol.wavenet.checkpoint import (
    CorruptCheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import (
    PRESETS,
    TrainConfig,
    WaveNetConfig,
    apply_overrides,
    get_preset,
)

__all__ = ["SegmentSampler", "describe", "lr_factor", "main", "train"]


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
    from dmol.audio.corpus import list_split, load_utterance

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


# ---- the run -------------------------------------------------------------------------------
def describe(model_cfg: WaveNetConfig, train_cfg: TrainConfig, preset: str = "") -> str:
    """Human-readable summary: both configs, receptive field, parameter count, mel recipe."""
    from dmol.audio.features import MEL_RECIPES

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
        from dmol.audio.features import recipe_for

        lines.append(f"mel recipe: {recipe_for(preset).to_dict()}")
    except ValueError:
        pass
    return "\n".join(lines)


def _check_recipe(recipe, cfg: WaveNetConfig, data_dir: Path) -> None:
    bad = [(k, getattr(recipe, k), v) for k, v in (("sample_rate", cfg.sample_rate),
           ("n_mels", cfg.n_mels), ("hop_length", cfg.hop_length)) if getattr(recipe, k) != v]
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
    from dmol.audio.corpus import load_recipe

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: known presets are {sorted(PRESETS)}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes!r}")
    overrides = dict(overrides or {})
    for k, v in (("max_steps", max_steps), ("seed", seed), ("batch_size", batch_size)):
        if v is not None:
            overrides[k] = v
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    env, dev = _init_distributed(device)

    def log(msg: str) -> None:
        if env.main:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr if msg.startswith("warning") else sys.stdout)

    recipe = load_recipe(data_dir)
    ckpt_path = latest_checkpoint(out_dir, verbose=env.main)
    state = None
    if ckpt_path is not None and not resume:
        raise ValueError(f"{out_dir} already has checkpoints (newest {ckpt_path.name}): pass "
                         f"resume=True (--resume) to continue it, or choose another out_dir")
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        if state.get("preset") != preset:
            raise ValueError(f"{ckpt_path} was trained from preset {state.get('preset')!r}, "
                             f"not {preset!r}")
        model_cfg = WaveNetConfig.from_dict(state["model_config"])
        train_cfg = TrainConfig.from_dict(state["train_config"])
        new_model_cfg, train_cfg = apply_overrides(model_cfg, train_cfg, overrides)
        if new_model_cfg != model_cfg:
            changed = [f.name for f in dataclasses.fields(model_cfg)
                       if getattr(model_cfg, f.name) != getattr(new_model_cfg, f.name)]
            raise ValueError(f"cannot change model fields {changed} when resuming {ckpt_path}")
        log(f"resuming from {ckpt_path} (step {state['step']})")
    else:
        if resume:
            log(f"no checkpoint in {out_dir}: starting a new run")
        model_cfg, train_cfg = get_preset(preset, overrides)
    _check_recipe(recipe, model_cfg, data_dir)
    tc = train_cfg

    # ---- data
    train_utts = _load_split(data_dir, "train", model_cfg, log)
    val_utts = _load_split(data_dir, "val", model_cfg, log)
    if not train_utts:
        raise ValueError(f"dataset {data_dir} has no usable training utterances")
    if state is None and "mel_mean" not in overrides:
        # normalize the conditioning with training-set statistics (stored in the config)
        mels = np.concatenate([m for _, _, m in train_utts]).astype(np.float64)
        model_cfg = dataclasses.replace(model_cfg, mel_mean=round(float(mels.mean()), 4),
                                        mel_std=round(float(mels.std()) + 1e-3, 4))
    seg_frames = max(1, tc.segment_length // model_cfg.hop_length)
    sampler = SegmentSampler([(a, m) for _, a, m in train_utts], model_cfg.hop_length,
                             seg_frames, tc.batch_size, tc.seed, recipe.log_min)
    max_val = max(1, int(tc.val_max_seconds * recipe.sample_rate) // model_cfg.hop_length)
    val_set = [(n, a[: max_val * model_cfg.hop_length], m[:max_val])
               for n, a, m in val_utts[: tc.val_utterances]]
    if not val_set:
        log("warning: the dataset has no validation utterances: no validation loss")

    # ---- model, optimizer, EMA
    torch.manual_seed(tc.seed)
    model = WaveNet(model_cfg, recipe).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas,
                            weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tc))
    metrics: dict[str, Any] = {"train": [], "val": [], "lr": [], "grad_norm": [],
                               "train_seconds": 0.0, "skipped_steps": 0, "skipped_at": []}
    step = 0
    # running sum of the losses since the last log line (checkpointed: resumed curves match)
    window = {"loss": 0.0, "n": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        metrics.update(state.get("metrics", {}))
        step = int(state["step"])
        window.update(state.get("log_window", {}))
        _set_rng(state.get("rng"))
    head = model.head
    ddp = model
    if env.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    writer = None
    if env.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(
            {"preset": preset, "model": model_cfg.to_dict(), "train": tc.to_dict(),
             "recipe": recipe.to_dict(), "world_size": env.world}, indent=2))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last checkpoint
            writer = SummaryWriter(str(out_dir / "tb"), purge_step=step if step else None)
        rf = model.receptive_field
        log(f"{preset}: {model.num_parameters:,} parameters, receptive field {rf.samples} "
            f"samples ({rf.ms:.1f} ms), {len(train_utts)} train / {len(val_set)} val "
            f"utterances, {env.world} process(es) on {dev}")

    def checkpoint_state() -> dict[str, Any]:
        return {
            "format": "dmol-wavenet-1", "step": step, "preset": preset,
            "model_config": model_cfg.to_dict(), "train_config": tc.to_dict(),
            "recipe": recipe.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _get_rng(),
            "metrics": copy.deepcopy(metrics), "log_window": dict(window),
            "world_size": env.world,
        }

    def save() -> None:
        if env.main:
            p = save_checkpoint(out_dir, step, checkpoint_state(), keep=tc.keep_checkpoints)
            log(f"step {step}: saved {p.name}")
        if env.world > 1:
            dist.barrier()

    def validate() -> float | None:
        if not val_set or not env.main:
            return None
        loss = _validation_loss(ema, val_set, dev)
        metrics["val"].append([step, loss])
        if writer:
            writer.add_scalar("val/loss", loss, step)
            writer.add_scalar("val/bits_per_sample", loss / math.log(2), step)
        log(f"step {step}: val loss {loss:.4f} nats ({loss / math.log(2):.3f} bits) [EMA]")
        return loss

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if tc.precision == "bf16" and dev.type == "cuda" else contextlib.nullcontext())
    batches = _StepBatches(sampler, step, tc.max_steps, env.rank)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=tc.num_workers,
        pin_memory=dev.type == "cuda", persistent_workers=False,
    )
    if step >= tc.max_steps:
        log(f"{out_dir} already reached max_steps = {tc.max_steps}: nothing to do "
            f"(raise max_steps to train further)")
        if writer:
            writer.close()
        return {**metrics, **_summary(step, tc, model, preset, env)}
    if state is None and val_set:
        validate()  # the starting point of the val curve

    bar = None
    if env.main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.max_steps, initial=step, unit="step", dynamic_ncols=True)
    samples_per_step = tc.batch_size * seg_frames * model_cfg.hop_length * env.world
    t_start = time.perf_counter()
    seconds_before = float(metrics["train_seconds"])
    session_steps, window_t, window_steps = 0, time.perf_counter(), 0
    target_logged = False
    stop_reason = "max_steps"
    try:
        for x, mel, mask in loader:
            if step >= tc.max_steps:
                break
            ddp.train()
            torch.manual_seed(derive_seed(tc.seed, step, env.rank, 1))  # dropout stream
            x, mel, mask = (t.to(dev, non_blocking=True) for t in (x, mel, mask))
            past = x
            if tc.input_noise > 0:  # the past as synthesis will see it: not quite the truth
                g = torch.Generator(dev).manual_seed(derive_seed(tc.seed, step, env.rank, 2))
                past = x + tc.input_noise * torch.randn(x.shape, generator=g, device=dev)
            with autocast:
                y_hat = ddp(x, mel, past=past)
            loss = head.loss(y_hat.float(), x, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            over_time = minutes is not None and (
                time.perf_counter() - t_start >= 60.0 * minutes) and env.main
            # one collective per step: summed loss, agreement that the step is finite, stop flag
            flags = torch.stack([loss.detach().float(),
                                 (torch.isfinite(loss) & torch.isfinite(gnorm)).float(),
                                 torch.tensor(float(over_time), device=dev)])
            if env.world > 1:
                flags = torch.nan_to_num(flags, nan=float("inf"))
                dist.all_reduce(flags)
            mean_loss, ok, stop = flags[0].item() / env.world, flags[1].item(), flags[2].item()
            if ok == env.world:
                opt.step()
                _ema_update(ema, model, step, tc.ema_decay)
                window["loss"] += mean_loss
                window["n"] += 1
            else:
                metrics["skipped_steps"] += 1
                metrics["skipped_at"] = (metrics["skipped_at"] + [step])[-100:]
                log(f"warning: step {step}: non-finite loss or gradient (loss {mean_loss:.4g}, "
                    f"grad norm {float(gnorm):.4g}): skipped the update "
                    f"({metrics['skipped_steps']} skipped so far)")
            sched.step()
            step += 1
            session_steps += 1
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if step % tc.log_interval == 0 or step == tc.max_steps:
                now = time.perf_counter()
                sps = samples_per_step * window_steps / max(now - window_t, 1e-9)
                avg = window["loss"] / window["n"] if window["n"] else float("nan")
                window_t, window_steps = now, 0
                window.update(loss=0.0, n=0)
                lr = opt.param_groups[0]["lr"]
                metrics["train"].append([step, avg])
                metrics["lr"].append([step, lr])
                metrics["grad_norm"].append([step, float(gnorm)])
                if bar is not None:
                    bar.set_postfix(loss=f"{avg:.3f}", lr=f"{lr:.2e}",
                                    samples_s=f"{sps:,.0f}")
                if writer:
                    writer.add_scalar("train/loss", avg, step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/grad_norm", float(gnorm), step)
                    writer.add_scalar("train/samples_per_sec", sps, step)
                    writer.add_scalar("train/skipped_steps", metrics["skipped_steps"], step)
            if step % tc.val_interval == 0 and step < tc.max_steps:
                validate()
            if env.main and writer and step % tc.media_interval == 0:
                _log_media(writer, ema, val_set or [train_utts[0]], step, recipe.sample_rate, dev,
                           log_target=not target_logged)
                target_logged = True
            metrics["train_seconds"] = seconds_before + time.perf_counter() - t_start
            if stop:
                stop_reason = "minutes"
                break
            if step % tc.ckpt_interval == 0 and step < tc.max_steps:
                save()
                if env.main:
                    _write_metrics(out_dir, metrics, _summary(step, tc, model, preset, env))
    except KeyboardInterrupt:
        if env.world == 1:
            log(f"interrupted at step {step}: saving a checkpoint")
            save()
        raise
    finally:
        if bar is not None:
            bar.close()
    metrics["train_seconds"] = seconds_before + time.perf_counter() - t_start
    validate()
    save()
    elapsed = time.perf_counter() - t_start
    throughput = samples_per_step * session_steps / max(elapsed, 1e-9)
    summary = _summary(step, tc, model, preset, env)
    summary.update(stop_reason=stop_reason, samples_per_sec=throughput,
                   steps_per_sec=session_steps / max(elapsed, 1e-9), session_steps=session_steps)
    if env.world > 1:  # DDP keeps replicas identical; verify it rather than assume it
        digests = [None] * env.world
        dist.all_gather_object(digests, _weights_digest(model))
        summary["replica_digests"] = digests
        if env.main and len(set(digests)) != 1:
            log("warning: the replicas' weights differ at the end of training")
    if env.main:
        _write_metrics(out_dir, metrics, summary)
        log(f"done: step {step}/{tc.max_steps} ({stop_reason}), {throughput:,.0f} samples/s, "
            f"{session_steps / max(elapsed, 1e-9):.2f} steps/s this session, "
            f"{metrics['skipped_steps']} skipped step(s); metrics in {out_dir / 'metrics.json'}")
    if writer:
        writer.close()
    if env.world > 1:
        dist.barrier()
    return {**metrics, **summary}


def _summary(step, tc, model, preset, env) -> dict[str, Any]:
    return {"preset": preset, "step": step, "max_steps": tc.max_steps,
            "finished": step >= tc.max_steps, "parameters": model.num_parameters,
            "receptive_field": model.receptive_field.samples, "world_size": env.world}


def _write_metrics(out_dir: Path, metrics: dict[str, Any], summary: dict[str, Any]) -> None:
    data = {**summary, **metrics}
    data["final_val_loss"] = metrics["val"][-1][1] if metrics["val"] else None
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out_dir / "metrics.json")


@torch.no_grad()
def _validation_loss(model: WaveNet, val_set, dev: torch.device) -> float:
    """Teacher-forced NLL (nats per sample) over the validation utterances."""
    total, count = 0.0, 0
    for _, audio, mel in val_set:
        x = torch.from_numpy(np.ascontiguousarray(audio))[None].to(dev)
        c = torch.from_numpy(np.ascontiguousarray(mel.T))[None].to(dev)
        nll = model.head.nll(model(x, c).float(), x)
        total += float(nll.double().sum())
        count += nll.numel()
    return total / max(count, 1)


@torch.no_grad()
def _log_media(writer, model: WaveNet, utts, step: int, sample_rate: int, dev,
               log_target: bool) -> None:
    """A teacher-forced sample (each step drawn given the true past) and the density picture."""
    from dmol.wavenet.plots import distribution_image

    _, audio, mel = utts[0]
    frames = min(mel.shape[0], max(1, sample_rate // 2 // model.hop_length))  # ~0.5 s
    x = torch.from_numpy(np.ascontiguousarray(audio[: frames * model.hop_length]))[None].to(dev)
    c = torch.from_numpy(np.ascontiguousarray(mel[:frames].T))[None].to(dev)
    y_hat = model(x, c).float()
    sample = model.head.sample(y_hat, generator=torch.Generator(dev).manual_seed(step))
    writer.add_audio("media/teacher_forced_sample", sample[0].cpu().clamp(-1, 1), step, sample_rate)
    if log_target:
        writer.add_audio("media/target", x[0].cpu(), step, sample_rate)
    writer.add_image("media/distribution", distribution_image(model.head, y_hat, x), step,
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


# ---- command line --------------------------------------------------------------------------
def _parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v  # a bare word: a string such as a head name
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="dmol train", description="Train a WaveNet vocoder on a dmol dataset.",
        epilog="Multi-GPU / multi-process: torchrun --nproc_per_node N -m dmol.wavenet.train ...",
    )
    p.add_argument("data_dir", nargs="?", help="dataset folder (dmol preprocess / dmol data)")
    p.add_argument("--preset", default="small-16k", choices=sorted(PRESETS))
    p.add_argument("--out", help="run folder (checkpoints, metrics.json, tb/)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--minutes", type=float, help="wall-clock training budget")
    p.add_argument("--resume", action="store_true", help="continue the newest checkpoint in --out")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--segment-length", type=int, help="samples per training segment")
    p.add_argument("--lr", type=float)
    p.add_argument("--head", choices=["mol", "gaussian", "mog", "mulaw"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set layers=16 --set ema_decay=0.999")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: GPU if available)")
    p.add_argument("--threads", type=int,
                   help="CPU threads per process (torch.set_num_threads); 1 is often fastest "
                        "for small models on a busy machine")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--print-config", action="store_true",
                   help="print the configuration and receptive field, then exit")
    p.add_argument("--list-presets", action="store_true",
                   help="print a table of the presets (receptive field, parameters), then exit")
    a = p.parse_args(argv)
    if a.list_presets:
        from dmol.wavenet.presets import presets_table

        print(presets_table())
        return 0
    try:
        overrides = _parse_set(a.set)
        for key in ("segment_length", "lr", "head", "max_steps", "seed", "batch_size"):
            if getattr(a, key) is not None:
                overrides[key] = getattr(a, key)
        if a.print_config:
            print(describe(*get_preset(a.preset, overrides), preset=a.preset))
            return 0
        if not a.data_dir or not a.out:
            p.error("DATA_DIR and --out are required (unless --print-config)")
        train(a.data_dir, a.out, a.preset, overrides=overrides, resume=a.resume,
              minutes=a.minutes, device=a.device, threads=a.threads, progress=not a.no_progress,
              tensorboard=not a.no_tensorboard)
    except (ValueError, FileNotFoundError, CorruptCheckpointError) as e:
        print(f"dmol train: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
