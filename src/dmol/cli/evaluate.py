"""`dmol evaluate`: the command line of :func:`dmol.wavenet.evaluate.evaluate_model`."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from dmol.audio.corpus import list_split, load_recipe
from dmol.cli._sampling import add_sampling_arguments, sampling_problem
from dmol.wavenet.checkpoint import load_model, resolve_model_path
from dmol.wavenet.evaluate import audio_utterances, evaluate_model, write_json
from dmol.wavenet.incremental import cpp_problem
from dmol.wavenet.synthesis import DTYPES


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "recipe.json").is_file() and (path / "manifest.json").is_file()


def _output_problem(checkpoint: str, inputs: list[Path], json_path: Path | None,
                    wav_dir: Path | None) -> str | None:
    """Why writing ``--json`` or ``--wav-dir`` would change what the command reads (the
    checkpoint, a dataset, an audio file or folder), or None."""
    try:
        ckpt = resolve_model_path(checkpoint)
    except FileNotFoundError:  # load_model says so later
        ckpt = Path(checkpoint)
    sources = [Path(i) for i in inputs] + ([ckpt] if ckpt.exists() else [])
    folders = [p.resolve() for p in sources if p.is_dir()]
    files = {p.resolve() for p in sources if p.is_file()}

    def inside(path: Path, folder: Path) -> bool:
        return path == folder or folder in path.parents

    if json_path is not None:
        j = json_path.resolve()
        if j in files or (j.exists() and any(inside(j, d) for d in folders)):
            return f"--json {json_path} would overwrite an input of this command: write elsewhere"
    if wav_dir is not None:
        w = wav_dir.resolve()
        for d in folders:  # the WAVs would land among the inputs (and be read next time)
            if inside(w, d):
                return f"--wav-dir {wav_dir} lies inside the input {d}: choose another folder"
        for f in files:
            if f.parent == w:
                return f"--wav-dir {wav_dir} holds the input {f}: choose another folder"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``dmol evaluate CHECKPOINT INPUT... [--max-utterances N] [--max-seconds S] [--seeds N]
    [--json OUT]``."""
    p = argparse.ArgumentParser(
        prog="dmol evaluate",
        description="copy-synthesis metrics of a WaveNet checkpoint vs Griffin-Lim on held-out "
        "utterances, plus its teacher-forced NLL",
    )
    p.add_argument("checkpoint", help="checkpoint file, run folder, or 'pretrained'")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="a dmol dataset (`dmol preprocess` / `dmol data`), or audio files and "
                        "folders of them")
    p.add_argument("--split", default="val", choices=("val", "train"),
                   help="the dataset split to evaluate (a dataset input only)")
    p.add_argument("--max-utterances", type=int, default=4)
    p.add_argument("--max-seconds", type=float, default=2.0, help="crop each utterance (s)")
    p.add_argument("--mode", default="folded", help="synthesis mode (folded or incremental)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="weights of the synthesis engine (int8: the C++ kernel's 8-bit "
                        "products)")
    add_sampling_arguments(p, "the WaveNet's output")
    p.add_argument("--seeds", type=int, default=1,
                   help="vocode each utterance with N seeds (--seed .. --seed+N-1, the same "
                        "numbers as N separate runs) and report their mean and standard error")
    p.add_argument("--f0-method", default="harvest", choices=("harvest", "dio"))
    p.add_argument("--no-synth", action="store_true", help="NLL and Griffin-Lim only")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--wav-dir", type=Path, default=None, help="write the audio here")
    a = p.parse_args(argv)
    if a.max_utterances < 1:
        p.error(f"--max-utterances must be >= 1, got {a.max_utterances}")
    if a.seeds < 1:
        p.error(f"--seeds must be >= 1, got {a.seeds}")
    if a.seeds > 1 and a.no_synth:
        p.error("--seeds needs synthesis: it is meaningless with --no-synth")
    if not (math.isfinite(a.max_seconds) and a.max_seconds > 0):
        p.error(f"--max-seconds must be a finite number > 0, got {a.max_seconds}")
    if sampling_problem(a):
        p.error(sampling_problem(a))
    if a.dtype == "int8" and not a.no_synth and cpp_problem() is not None:
        p.error(f"--dtype int8 needs the C++ kernel: {cpp_problem()}")
    if a.json is not None and a.json.is_dir():
        p.error(f"--json {a.json} is a folder: give a file name")
    problem = _output_problem(a.checkpoint, a.inputs, a.json, a.wav_dir)
    if problem:
        p.error(problem)
    try:
        model, head, recipe, _ = load_model(a.checkpoint)
        if len(a.inputs) == 1 and _is_dataset(a.inputs[0]):
            data_recipe = load_recipe(a.inputs[0])
            if data_recipe != recipe:
                raise ValueError(
                    f"{a.inputs[0]} was made with mel recipe {data_recipe.to_dict()} but the "
                    f"checkpoint expects {recipe.to_dict()}: preprocess the audio with the "
                    f"checkpoint's preset"
                )
            utts = list_split(a.inputs[0], a.split)[: a.max_utterances]
            what = f"{a.split} utterance(s) of {a.inputs[0]}"
        else:
            utts = audio_utterances(a.inputs, recipe, limit=a.max_utterances)
            what = "audio file(s)"
        result = evaluate_model(
            model, head, recipe, utts, synth=not a.no_synth, mode=a.mode, dtype=a.dtype,
            seed=a.seed, seeds=a.seeds,
            temperature=a.temperature, scale_temperature=a.scale_temperature,
            postfilter=a.postfilter, envelope=a.envelope, max_seconds=a.max_seconds,
            f0_method=a.f0_method, wav_dir=a.wav_dir,
        )
    except (ValueError, FileNotFoundError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s = result["settings"]
    print(f"\n{s['n_utterances']} {what}, {s['seconds']:.1f} s of audio, "
          f"{a.checkpoint}:\n{result['table']}")
    if a.json is not None:
        print(f"wrote {write_json(a.json, result, checkpoint=str(a.checkpoint))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
