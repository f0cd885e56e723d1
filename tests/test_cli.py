"""The `dmol` dispatcher and `dmol bench`: every command answers --help through the dispatcher,
unknown commands are refused, `python -m dmol` is the same program, a tiny benchmark runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dmol import cli
from dmol.cli import bench


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0 and cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_is_dispatched(name, capsys):
    """``dmol NAME --help`` reaches NAME's own parser (its usage line names the program)."""
    try:
        rc = cli.main([name, "--help"])
    except SystemExit as e:  # argparse exits after printing the help
        rc = e.code
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"dmol {name}" in out  # the command's own help, not the dispatcher's


def test_unknown_command_is_refused(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err


def test_python_m_dmol_is_the_dispatcher():
    done = subprocess.run([sys.executable, "-m", "dmol", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in cli.COMMANDS)


def test_bench_refuses_unknown_benchmarks(capsys):
    assert bench.main(["--help"]) == 0 and "dmol bench synth" in capsys.readouterr().out
    assert bench.main(["speed"]) == 2
    assert "unknown benchmark 'speed'" in capsys.readouterr().err


def test_bench_synth_runs_on_a_tiny_model(capsys):
    """`dmol bench synth` end to end, tiny: a row per system with a positive rate, and the
    baseline's row as the reference the others' speedups are measured against."""
    rc = cli.main(["bench", "synth", "--preset", "tiny", "--mode", "incremental", "--seconds",
                   "0.05", "--baseline-seconds", "0.02", "--backend", "torch", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["preset"] == "tiny" and res["rows"]
    for row in res["rows"]:
        assert row["samples_per_s"] > 0 and row["rtf"] > 0
    assert any(row["speedup_vs_baseline"] is not None for row in res["rows"])


def test_bench_loss_times_the_shifted_loss_against_means_shifted_by_hand(capsys):
    """`dmol bench loss --cases lp`: the loc= path, the same loss unshifted and the baseline on
    means shifted by hand, each timed, with the baseline's ratio to both."""
    rc = cli.main(["bench", "loss", "--quick", "--cases", "lp", "--no-memory", "--no-cold",
                   "--repeats", "7", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for impl in ("dmol.logistic loss, loc=", "same, no shift", "baseline, means shifted by hand"):
        row = next(ln for ln in out.splitlines() if f"| {impl} " in ln)
        assert re.search(r"\d+\.\d ms \| +\d+\.\d ms", row), row
    ratios = [ln for ln in out.splitlines() if "baseline, means shifted by hand /" in ln]
    assert len(ratios) == 2 and all(re.search(r"\d+\.\dx", r) for r in ratios)
