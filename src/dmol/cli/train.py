"""`dmol train` (and ``torchrun -m dmol.wavenet.train``): the command line of
:func:`dmol.wavenet.train.train`."""

from __future__ import annotations

import argparse
import ast
import signal
import sys
from typing import Any

import torch.distributed as dist

from dmol._fs import describe_os_error
from dmol.wavenet.checkpoint import CorruptCheckpointError
from dmol.wavenet.heads import HEADS
from dmol.wavenet.model import presets_table
from dmol.wavenet.presets import PRESETS, get_preset
from dmol.wavenet.train import TrainingInterrupted, check_overrides, describe, train


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
    p.add_argument("--head", choices=HEADS)
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
        print(presets_table())
        return 0
    try:
        overrides = _parse_set(a.set)
        for key in ("segment_length", "lr", "head", "max_steps", "seed", "batch_size"):
            if getattr(a, key) is not None:
                overrides[key] = getattr(a, key)
        overrides = check_overrides(overrides)
        if a.print_config:
            print(describe(*get_preset(a.preset, overrides), preset=a.preset))
            return 0
        if not a.data_dir or not a.out:
            p.error("DATA_DIR and --out are required (unless --print-config)")
        train(a.data_dir, a.out, a.preset, overrides=overrides, resume=a.resume,
              minutes=a.minutes, device=a.device, threads=a.threads, progress=not a.no_progress,
              tensorboard=not a.no_tensorboard)
    except TrainingInterrupted as e:
        name = signal.Signals(e.signum).name
        if e.checkpoint is not None:
            what = f"saved {e.checkpoint}; continue with --resume"
        elif e.step:
            what = f"the newest checkpoint is older than step {e.step}; continue with --resume"
        else:
            what = "nothing was saved"
        print(f"dmol train: interrupted ({name}) at step {e.step or 0}: {what}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("dmol train: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ValueError, CorruptCheckpointError) as e:  # FileNotFoundError: see OSError below
        print(f"dmol train: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"dmol train: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, permissions: the run folder keeps its last checkpoint
        print(f"dmol train: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
