"""Benchmarks run by `dmol bench` (shipped in the package, so they work from an installed wheel).

Each ``bench_*`` module times dmol against a baseline of the usual code (``baseline_*``) in one
process and prints ratios; ``python -m dmol.benchmarks.bench_loss`` runs one directly.
"""
