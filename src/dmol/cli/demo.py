"""`dmol demo`: the main job end to end on real speech, on a CPU, in minutes.

The command line of :func:`dmol.wavenet.demo.run_demo` (what it does: its module's docstring).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dmol.cli._sampling import add_sampling_arguments
from dmol.wavenet.demo import DEFAULT_SEEDS, DEFAULT_UNSEEN, run_demo


def main(argv: Sequence[str] | None = None) -> int:
    """``dmol demo [--out demo] [--model pretrained] [--train-minutes N] [--utterances N]``."""
    p = argparse.ArgumentParser(prog="dmol demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default demo)")
    p.add_argument("--model", default="pretrained",
                   help="model to show: 'pretrained' (shipped), a checkpoint or a run folder")
    p.add_argument("--train-minutes", type=float, default=None,
                   help="also train a model from scratch for N minutes and show it")
    p.add_argument("--preset", default=None,
                   help="preset of that training run (default: the model's preset)")
    p.add_argument("--utterances", type=int, default=None,
                   help="held-out utterances to vocode (default: all of them)")
    p.add_argument("--unseen", type=int, default=DEFAULT_UNSEEN,
                   help=f"prompts of each unseen voice (default {DEFAULT_UNSEEN})")
    p.add_argument("--limit", type=int, default=None, help="use only N corpus files")
    p.add_argument("--max-seconds", type=float, default=3.0, help="crop each utterance (s)")
    p.add_argument("--mode", default="folded", help="synthesis mode: folded or incremental")
    add_sampling_arguments(p, "the WaveNet's output")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help="vocode each prompt with N seeds (--seed..--seed+N-1); the metrics are "
                        f"their mean (the page plays the first; default {DEFAULT_SEEDS})")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: fastest for these small models on shared cores)")
    a = p.parse_args(argv)
    try:
        run_demo(a.out, model=a.model, train_minutes=a.train_minutes, preset=a.preset,
                 utterances=a.utterances, unseen=a.unseen, limit=a.limit,
                 max_seconds=a.max_seconds, mode=a.mode, seed=a.seed, seeds=a.seeds,
                 temperature=a.temperature, scale_temperature=a.scale_temperature,
                 postfilter=a.postfilter, envelope=a.envelope, threads=a.threads)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
