"""`dmol bench`: run the benchmarks kept in the repository's ``benchmarks/`` folder.

    dmol bench loss [--quick] [--cases wavenet,long,pixelcnn,sample] [--no-memory]
    dmol bench synth [...]

``loss`` times the fused MoL loss and sampler against the unfused baseline
(``benchmarks/bench_loss.py``); ``synth`` runs ``benchmarks/bench_synth.py`` when present.
The scripts live next to the sources, so this works from a checkout (or an editable install).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS = {"loss": "bench_loss.py", "synth": "bench_synth.py"}


def _benchmarks_dir() -> Path | None:
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / "benchmarks").is_dir():
            return base / "benchmarks"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SCRIPTS:
        print(f"dmol bench: unknown benchmark {name!r}; expected one of {sorted(SCRIPTS)}",
              file=sys.stderr)
        return 2
    folder = _benchmarks_dir()
    script = folder / SCRIPTS[name] if folder else None
    if script is None or not script.is_file():
        print(f"dmol bench {name}: benchmarks/{SCRIPTS[name]} not found (run from a checkout "
              "of the dmol repository)", file=sys.stderr)
        return 2
    module = runpy.run_path(str(script), run_name="dmol_bench")
    return int(module["main"](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
