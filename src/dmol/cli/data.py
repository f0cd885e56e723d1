"""`dmol data` and `dmol preprocess`: the command lines of :mod:`dmol.audio.corpus`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from dmol._fs import describe_os_error, sigterm_as_interrupt
from dmol.audio.corpus import DEFAULT_TRIM_DB, build_builtin, preprocess


def _run(fn, *args, **kwargs) -> int:
    seen: list[int] = []
    try:
        with sigterm_as_interrupt() as seen:
            fn(*args, **kwargs)
    except (ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a missing folder, permissions, a full disk
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the staging folder is already gone
        signum = seen[0] if seen else signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}): the output folder was left as it "
              f"was", file=sys.stderr)
        return 128 + signum
    return 0


def data_main(argv: Sequence[str] | None = None) -> int:
    """``dmol data builtin OUT_DIR [--preset P] [--limit N]``."""
    p = argparse.ArgumentParser(prog="dmol data", description="assemble a speech corpus")
    sub = p.add_subparsers(dest="corpus", required=True)
    b = sub.add_parser("builtin", help="Asterisk English prompts (CC-BY-SA-3.0), or espeak-ng")
    b.add_argument("out_dir", type=Path)
    b.add_argument("--preset", default="small-16k", help="mel recipe preset (default small-16k)")
    b.add_argument("--limit", type=int, default=None, help="use only N files, spread evenly")
    b.add_argument("--seed", type=int, default=0, help="train/val split seed")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    return _run(
        build_builtin, a.out_dir, a.preset, limit=a.limit, seed=a.seed, progress=not a.quiet
    )


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """``dmol preprocess IN_DIR OUT_DIR --preset P [--val-fraction F] [--seed S]``."""
    p = argparse.ArgumentParser(
        prog="dmol preprocess", description="wav/flac/g722 folder -> dmol log-mel dataset"
    )
    p.add_argument("in_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--preset", required=True, help="mel recipe preset, e.g. small-16k")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--min-val", type=int, default=1, help="at least this many val utterances")
    p.add_argument("--seed", type=int, default=0, help="train/val split seed")
    p.add_argument(
        "--trim-db",
        type=float,
        default=DEFAULT_TRIM_DB,
        help="trim edges quieter than this many dB below the peak (<= 0: no trim)",
    )
    p.add_argument("--license", default="unknown", help="licence text stored in the manifest")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.trim_db != a.trim_db:  # NaN: not "no trimming" by accident
        p.error("--trim-db must be a number (<= 0: no trimming), got nan")
    return _run(
        preprocess,
        a.in_dir,
        a.out_dir,
        a.preset,
        val_fraction=a.val_fraction,
        min_val=a.min_val,
        seed=a.seed,
        trim_db=a.trim_db if a.trim_db > 0 else None,
        progress=not a.quiet,
        license=a.license,
    )
