"""`dmol vocode`: the command line of :func:`dmol.wavenet.synthesis.vocode`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from dmol.audio.corpus import check_writable
from dmol.audio.features import load_audio
from dmol.cli._sampling import add_sampling_arguments, sampling_problem
from dmol.wavenet.checkpoint import load_model, resolve_model_path
from dmol.wavenet.synthesis import (
    BACKEND_CHOICES,
    DTYPES,
    MODES,
    vocode,
)


def _load_input(path: Path, recipe) -> np.ndarray:
    """A (frames, n_mels) mel from a .npy (checked against the recipe) or any audio file."""
    if path.suffix.lower() == ".npy":
        try:
            mel = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
        try:
            return recipe.validate_mel(mel)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
    return recipe.compute(load_audio(path, recipe.sample_rate))


def main(argv: list[str] | None = None) -> int:
    """``dmol vocode CHECKPOINT MEL_OR_WAV... --out DIR``: write ``DIR/NAME.wav`` per input."""
    import soundfile as sf

    p = argparse.ArgumentParser(
        prog="dmol vocode",
        description="Synthesize speech from log-mels (.npy, (frames, n_mels), made with the "
                    "checkpoint's recipe) or from audio files (analysed with that recipe).")
    p.add_argument("checkpoint", help="checkpoint file or run folder (its newest checkpoint)")
    p.add_argument("inputs", nargs="+", metavar="MEL_OR_WAV", help=".npy mels or audio files")
    p.add_argument("--out", required=True, help="output folder for NAME.wav")
    p.add_argument("--mode", choices=MODES, default="incremental")
    add_sampling_arguments(p)
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="weight precision (bfloat16: faster, not exact)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and the C++ kernel (default: torch's setting; "
                        "the kernel uses 1 for incremental mode)")
    p.add_argument("--speaker", type=int, default=None, help="speaker id (multi-speaker models)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.dtype == "int8" and a.backend not in ("auto", "cpp"):
        p.error(f"--dtype int8 runs on the C++ kernel only: use --backend cpp (or auto), "
                f"not {a.backend}")
    problem = sampling_problem(a)  # before loading anything
    if problem:
        print(f"dmol vocode: {problem}", file=sys.stderr)
        return 2
    if a.threads is not None:
        if a.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    paths = [Path(x) for x in a.inputs]
    missing = [str(x) for x in paths if not x.is_file()]
    if missing:
        print(f"dmol vocode: no such file(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        ckpt = resolve_model_path(a.checkpoint)
    except FileNotFoundError:  # load_model says so below
        ckpt = Path(a.checkpoint)
    problem = _output_problem(out, paths, (ckpt,) if ckpt.is_file() else ())
    if problem:
        print(f"dmol vocode: {problem}", file=sys.stderr)
        return 2
    try:
        model, head, recipe, _ = load_model(a.checkpoint)
    except (ValueError, FileNotFoundError) as e:  # CorruptCheckpointError is a ValueError
        print(f"dmol vocode: {e}", file=sys.stderr)
        return 1
    mels = {}
    try:
        for path in paths:
            mels[path] = _load_input(path, recipe)
    except ValueError as e:
        print(f"dmol vocode: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for path, mel in mels.items():
        audio = vocode(model, head, recipe, mel, mode=a.mode, seed=a.seed,
                       temperature=a.temperature, scale_temperature=a.scale_temperature,
                       progress=not a.no_progress,
                       backend=a.backend, dtype=a.dtype, threads=a.threads,
                       speaker=a.speaker, postfilter=a.postfilter, envelope=a.envelope)
        dest = out / f"{path.stem}.wav"
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:  # a whole file or none under the final name
            sf.write(str(tmp), audio, recipe.sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, dest)
        except (OSError, RuntimeError) as e:  # disk full, folder gone (libsndfile: RuntimeError)
            print(f"dmol vocode: could not write {dest}: {e}", file=sys.stderr)
            return 1
        finally:
            tmp.unlink(missing_ok=True)
        print(f"{path} -> {dest} ({len(audio) / recipe.sample_rate:.2f} s)")
    return 0


def _output_problem(out: Path, inputs: list[Path], protected: tuple[Path, ...] = ()
                    ) -> str | None:
    """Why writing ``out/STEM.wav`` for every input would lose data, or None: --out is a file,
    two inputs share a stem (one output would overwrite the other), or an output is an input
    or one of the ``protected`` files (the checkpoint)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    try:
        check_writable(out, f"--out {out}")
    except ValueError as e:
        return str(e)
    dests: dict[Path, Path] = {}
    for path in inputs:
        dest = out / f"{path.stem}.wav"
        key = dest.resolve()
        if key in dests:
            return (f"{dests[key]} and {path} would both be written to {dest}: "
                    f"vocode them into different --out folders")
        if key in {i.resolve() for i in (*inputs, *protected)}:
            return f"the output {dest} would overwrite the input {path}: choose another --out"
        dests[key] = path
    return None
