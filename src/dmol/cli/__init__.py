"""The `dmol` command: a thin dispatcher over functions you can call from Python.

Each subcommand is a module of this package exposing ``main(argv) -> int``: it parses the
arguments and calls library functions you can call from Python (the library modules hold no
argument parsing). The modules are imported lazily so ``dmol --help`` is instant and a missing
optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("dmol.cli.data", "data_main", "assemble a corpus: `dmol data builtin OUT_DIR`"),
    "preprocess": ("dmol.cli.data", "preprocess_main", "wav/flac folder -> log-mel dataset"),
    "train": ("dmol.cli.train", "main", "train a WaveNet vocoder"),
    "export": ("dmol.cli.export", "main",
               "training run -> inference bundle (config + mel recipe + EMA weights)"),
    "vocode": ("dmol.cli.vocode", "main", "mel (.npy) or wav -> wav"),
    "inspect": ("dmol.cli.inspection", "main", "draw a model's predicted distribution over a wav"),
    "evaluate": ("dmol.cli.evaluate", "main", "objective copy-synthesis metrics"),
    "bench": ("dmol.cli.bench", "main", "benchmarks: `dmol bench loss`, `dmol bench synth`"),
    "demo": ("dmol.cli.demo", "main", "the main job end to end on built-in speech"),
}


def _usage() -> str:
    lines = ["usage: dmol COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`dmol COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dmol: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
