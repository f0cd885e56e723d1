"""Fused vs unfused MoL loss and sampler: time and peak memory, in one process.

    dmol bench loss            # or: python -m dmol.benchmarks.bench_loss / make bench
    dmol bench loss --quick    # smaller shapes, fewer repeats (smoke test)

Times are medians of >= 7 runs, the two implementations alternating run by run so that a
change in machine load hits both. Peak extra memory is measured in a fresh subprocess per
case (glibc told to return large blocks to the OS at once, VmHWM reset through
/proc/self/clear_refs after the inputs exist and one warm-up run) and reported as a multiple
of the parameter tensor's size; it includes the gradient, which is itself 1x.

First, the cold start: a fresh Python process with empty dmol and inductor caches imports
dmol, runs loss + backward at a batch of one and at the WaveNet shape and samples at that
shape (the first use of the fused kernels builds them); then a second process does the same
with the caches it left. Both are timed from outside, interpreter start-up included
(``--no-cold`` skips them).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dmol import fused
from dmol.benchmarks.baseline_mol import (
    coupled_nll_baseline,
    mol_nll_baseline,
    mol_sample_baseline,
)
from dmol.coupled import coupled_mix_logistic_loss
from dmol.logistic import discretized_mix_logistic_loss, sample_discretized_mix_logistic

# name -> (kind, shape parameters)
CASES = {
    "wavenet": ("mol", dict(B=8, M=10, T=10240, K=65536, lsm=-16.0)),
    "lp": ("lp", dict(B=8, M=10, T=10240, K=65536, lsm=-16.0)),
    "long": ("mol", dict(B=2, M=10, T=65536, K=65536, lsm=-16.0)),
    "pixelcnn": ("coupled", dict(B=16, M=10, H=32, W=32, K=256, lsm=-7.0)),
    "sample": ("sample", dict(B=8, M=10, T=10240, K=65536, lsm=-16.0)),
    "recompute": ("recompute", dict(B=8, M=10, T=10240, K=65536, lsm=-16.0)),
}
QUICK = {
    "wavenet": dict(B=2, T=2048),
    "lp": dict(B=2, T=2048),
    "long": dict(B=1, T=8192),
    "pixelcnn": dict(B=2, H=8, W=8),
    "sample": dict(B=2, T=2048),
    "recompute": dict(B=2, T=2048),
}


def make_inputs(kind: str, p: dict, seed: int = 0):
    """Network-output-like parameters (a leaf that requires grad) and targets."""
    g = torch.Generator().manual_seed(seed)
    if kind == "coupled":
        B, M, H, W, K = p["B"], p["M"], p["H"], p["W"], p["K"]
        l = torch.randn(B, 10 * M, H, W, generator=g)
        x = (torch.randint(0, K, (B, 3, H, W), generator=g) * (2.0 / (K - 1)) - 1.0)
        return l.requires_grad_(), x
    B, M, T, K = p["B"], p["M"], p["T"], p["K"]
    y_hat = torch.randn(B, 3 * M, T, generator=g)
    y_hat[:, 2 * M :] -= 4.0  # narrow components, as a trained vocoder predicts
    y = torch.randint(0, K, (B, T), generator=g) * (2.0 / (K - 1)) - 1.0
    if kind == "lp":  # an LP-WaveNet's prediction p_t, close to the target: the target is (y, p)
        return y_hat.requires_grad_(), (y, y + 0.01 * torch.randn(B, T, generator=g))
    return y_hat.requires_grad_(), y


def implementations(kind: str, p: dict):
    """{name: loss(params, target)} callables; the last one is the baseline."""
    if kind in ("mol", "recompute"):
        def packed(y_hat, y, recompute=False):
            nll = fused.mixture_nll_packed(y_hat.transpose(1, 2), y, p["K"], p["lsm"],
                                           recompute=recompute, grad_scale=1.0 / y.numel())
            return nll.mean()

        if kind == "recompute":  # the two ways of getting the gradient, against each other
            return {"fused, gradient computed in forward": packed,
                    "fused, recomputed in backward": lambda a, b: packed(a, b, True)}

        def loss(y_hat, y):
            return discretized_mix_logistic_loss(
                y_hat, y, num_classes=p["K"], log_scale_min=p["lsm"], reduction="mean"
            )

        def base(y_hat, y):
            return mol_nll_baseline(y_hat, y, p["K"], p["lsm"]).mean()

        return {"fused.mixture_nll_packed": packed, "dmol.logistic loss": loss,
                "baseline": base}
    if kind == "lp":  # loc= against the usual chain of ops on means shifted by hand
        M = p["M"]

        def shifted(y_hat, target):
            y, loc = target
            return discretized_mix_logistic_loss(y_hat, y, num_classes=p["K"],
                                                 log_scale_min=p["lsm"], loc=loc)

        def unshifted(y_hat, target):
            return discretized_mix_logistic_loss(y_hat, target[0], num_classes=p["K"],
                                                 log_scale_min=p["lsm"])

        def base(y_hat, target):
            y, loc = target
            by_hand = torch.cat([y_hat[:, :M], y_hat[:, M:2 * M] + loc[:, None],
                                 y_hat[:, 2 * M:]], dim=1)
            return mol_nll_baseline(by_hand, y, p["K"], p["lsm"]).mean()

        return {"dmol.logistic loss, loc=": shifted, "same, no shift": unshifted,
                "baseline, means shifted by hand": base}
    if kind == "coupled":
        def base(l, x):
            return coupled_nll_baseline(x, l, p["K"], p["lsm"]).sum() / x.numel()

        def ours(l, x):
            return coupled_mix_logistic_loss(
                x, l, num_classes=p["K"], log_scale_min=p["lsm"], reduction="mean"
            )

        return {"dmol.coupled": ours, "baseline": base}

    def fused_sample(y_hat, y):
        return sample_discretized_mix_logistic(
            y_hat, num_classes=p["K"], log_scale_min=p["lsm"], generator=torch.Generator()
        )

    def base_sample(y_hat, y):
        return mol_sample_baseline(y_hat, p["lsm"], generator=torch.Generator())

    return {"fused sampler": fused_sample, "baseline (Gumbel-max chain)": base_sample}


def run_once(fn, params, target, backward: bool) -> None:
    if backward:
        fn(params, target).backward()
        params.grad = None
    else:
        with torch.no_grad():
            fn(params, target)


def time_case(name: str, kind: str, p: dict, repeats: int) -> dict:
    params, target = make_inputs(kind, p)
    impls = implementations(kind, p)
    modes = [False] if kind == "sample" else [False, True]
    out = {}
    for backward in modes:
        for fn in impls.values():  # warm-up: compile, allocator caches
            run_once(fn, params, target, backward)
        times = {k: [] for k in impls}
        for _ in range(repeats):
            for k, fn in impls.items():  # alternate, so load changes hit both
                t0 = time.perf_counter()
                run_once(fn, params, target, backward)
                times[k].append(time.perf_counter() - t0)
        for k, ts in times.items():
            out[(k, "fwd+bwd" if backward else "fwd")] = statistics.median(ts)
    return out


# -- cold start: what a user's first process pays ----------------------------------------------

COLD_CHILD = """
import json, time
t0 = time.perf_counter()
import torch
import dmol
from dmol.logistic import discretized_mix_logistic_loss, sample_discretized_mix_logistic
out = {"import": time.perf_counter() - t0}
for name, B in (("batch 1", 1), ("B=8", 8)):
    t = time.perf_counter()
    y_hat = torch.randn(B, 30, 10240, requires_grad=True)
    y = torch.rand(B, 10240) * 2 - 1
    discretized_mix_logistic_loss(y_hat, y, num_classes=65536, log_scale_min=-16.0).backward()
    out[f"loss+backward {name}"] = time.perf_counter() - t
t = time.perf_counter()
sample_discretized_mix_logistic(y_hat.detach(), num_classes=65536, log_scale_min=-16.0)
out["sampling B=8"] = time.perf_counter() - t
out["backend"] = dmol.fused.backend()
print(json.dumps(out))
"""


def cold_start() -> list[str]:
    """Two fresh processes (empty caches, then warm caches), timed from outside: lines to print."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DMOL_CACHE": str(Path(tmp) / "dmol"),
               "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        for label in ("first process, empty caches", "later process"):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", COLD_CHILD], env=env, capture_output=True,
                                 text=True)
            wall = time.perf_counter() - t0
            if res.returncode:
                lines.append(f"# cold start ({label}) failed:\n{res.stderr[-2000:]}")
                break
            parts = json.loads(res.stdout.strip().splitlines()[-1])
            backend = parts.pop("backend")
            detail = ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
            lines.append(f"# {label}: {wall:.1f} s in all ({detail}; backend {backend})")
    t0 = time.perf_counter()  # the floor under both: the interpreter and torch alone
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    lines.append(f"# for scale, a process that only imports torch: "
                 f"{time.perf_counter() - t0:.1f} s")
    return lines


# -- memory, one fresh process per (case, implementation) -------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(case: str, impl: str, quick: bool) -> None:
    kind, p = CASES[case]
    p = {**p, **(QUICK[case] if quick else {})}
    params, target = make_inputs(kind, p)
    fn = implementations(kind, p)[impl]
    backward = kind != "sample"
    run_once(fn, params, target, backward)  # warm-up (compilation happens here)
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    run_once(fn, params, target, backward)
    peak = _status("VmHWM")
    print(json.dumps({"extra": peak - base, "params": params.numel() * params.element_size()}))


def measure_memory(case: str, impl: str, quick: bool) -> float | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, "-m", "dmol.benchmarks.bench_loss", "--memory-child", case, impl,
           "--threads", str(torch.get_num_threads())] + (["--quick"] if quick else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode or not lines:
        print(f"  memory measurement failed for {case}/{impl}:\n{res.stderr[-2000:]}")
        return None
    r = json.loads(lines[-1])
    return r["extra"] / r["params"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, 7 repeats")
    ap.add_argument("--repeats", type=int, default=9, help="runs per timing (median; >= 7)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start processes")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.quick)
        return 0
    repeats = max(7, args.repeats)

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    print(f"# dmol bench loss  {datetime.datetime.now():%Y-%m-%d %H:%M}  torch {torch.__version__}"
          f"  threads {torch.get_num_threads()}  {cpu}  os.cpu_count() {os.cpu_count()}")
    if not args.no_cold:
        print("# cold start: import, loss + backward at (1, 30, 10240) and (8, 30, 10240), "
              "sampling at (8, 30, 10240)")
        for line in cold_start():
            print(line, flush=True)
    print(f"# fused backend: {fused.backend()}; median of {repeats} alternating runs")
    rows = []
    for case in args.cases.split(","):
        kind, p = CASES[case]
        p = {**p, **(QUICK[case] if args.quick else {})}
        shape = ", ".join(f"{k}={v}" for k, v in p.items())
        times = time_case(case, kind, p, repeats)
        impls = list(implementations(kind, p))
        mem = {} if args.no_memory else {i: measure_memory(case, i, args.quick) for i in impls}
        for impl in impls:
            rows.append((f"{case} ({shape})" if impl == impls[0] else "", impl,
                         times.get((impl, "fwd")), times.get((impl, "fwd+bwd")), mem.get(impl)))
        base = impls[-1]
        for ours in impls[:-1]:
            ratio = [f"{times[(base, m)] / times[(ours, m)]:.1f}x" if (ours, m) in times else ""
                     for m in ("fwd", "fwd+bwd")]
            saved = f"{mem[base] / mem[ours]:.1f}x" if mem.get(ours) and mem.get(base) else ""
            label = f"  {base} / {ours}" if len(impls) > 2 else f"  {base} / ours"
            rows.append(("", label, *ratio, saved))

    def fmt(v, unit):
        if v is None or v == "":
            return ""
        return v if isinstance(v, str) else (f"{v * 1e3:.1f} ms" if unit == "ms" else f"{v:.2f}x")

    head = ("case", "implementation", "fwd", "fwd+bwd", "peak extra / params")
    table = [head] + [(c, i, fmt(f, "ms"), fmt(b, "ms"), fmt(m, "x")) for c, i, f, b, m in rows]
    widths = [max(len(r[k]) for r in table) for k in range(5)]
    for n, r in enumerate(table):
        print("| " + " | ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return 0


if __name__ == "__main__":
    sys.exit(main())
