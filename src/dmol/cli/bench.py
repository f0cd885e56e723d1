"""`dmol bench`: run the benchmarks in :mod:`dmol.benchmarks`.

    dmol bench loss [--quick] [--cases wavenet,long,pixelcnn,sample] [--no-memory]
    dmol bench synth [...]

``loss`` times the fused MoL loss and sampler against the unfused baseline
(``dmol/benchmarks/bench_loss.py``); ``synth`` times the synthesis engine (incremental,
folded, streaming with its latency) against the plain incremental loop, and against
r9y9/wavenet_vocoder's own ``incremental_forward`` with ``--r9y9-src DIR``
(``dmol/benchmarks/bench_synth.py``). They are modules of the package, so this works from an
installed wheel as from a checkout.
"""

from __future__ import annotations

import importlib
import sys

MODULES = {"loss": "dmol.benchmarks.bench_loss", "synth": "dmol.benchmarks.bench_synth"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in MODULES:
        print(f"dmol bench: unknown benchmark {name!r}; expected one of {sorted(MODULES)}",
              file=sys.stderr)
        return 2
    # imported only now: the benchmarks pull in torch and the vocoder
    return int(importlib.import_module(MODULES[name]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
