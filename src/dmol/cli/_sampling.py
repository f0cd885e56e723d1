"""The sampling and post-filter options shared by `dmol vocode`, `dmol evaluate` and `dmol demo`."""

from __future__ import annotations

import argparse
import math

from dmol.wavenet.synthesis import CLI_ENVELOPE_DB, CLI_POSTFILTER, CLI_SCALE_TEMPERATURE


def add_sampling_arguments(p: argparse.ArgumentParser, what: str = "the output") -> None:
    """``--seed``, ``--temperature``, ``--scale-temperature``, ``--postfilter G`` and
    ``--envelope DB``, with the measured command-line defaults."""
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divides the mixture logits (0: the most probable component)")
    p.add_argument("--scale-temperature", type=float, default=CLI_SCALE_TEMPERATURE,
                   help="multiplies the components' scales (< 1: a sharper excitation, 0: the "
                        f"component's mean; default {CLI_SCALE_TEMPERATURE:g}, measured: "
                        "docs/quality.md)")
    p.add_argument("--postfilter", type=float, default=CLI_POSTFILTER,
                   help=f"gain in [0, 1] of the pitch post-filter on {what} (0: none; default "
                        f"{CLI_POSTFILTER:g}, measured: docs/quality.md)")
    p.add_argument("--envelope", type=float, default=CLI_ENVELOPE_DB,
                   help="largest correction (dB) of the envelope post-filter, which brings the "
                        f"output's mel to the given mel (0: off; default {CLI_ENVELOPE_DB:g}, "
                        "measured: docs/quality.md)")


def sampling_problem(a: argparse.Namespace) -> str | None:
    """A one-line message if a temperature, ``--postfilter`` or ``--envelope`` is out of
    range, else None."""
    for flag, v in (("--temperature", a.temperature),
                    ("--scale-temperature", a.scale_temperature)):
        if not (math.isfinite(v) and v >= 0):
            return f"{flag} must be finite and >= 0, got {v}"
    if not 0.0 <= a.postfilter <= 1.0:
        return f"--postfilter must be a gain in [0, 1], got {a.postfilter}"
    if not (math.isfinite(a.envelope) and a.envelope >= 0):
        return f"--envelope must be a finite gain in dB >= 0, got {a.envelope}"
    return None
