"""Synthesis speed: the plain incremental loop (baseline_synth.py) vs dmol's engine, one process.

    dmol bench synth --preset r9y9-ljspeech-mol --seconds 2 --kernel-threads 1 2
    dmol bench synth --preset r9y9-ljspeech-mol --mode folded --json
    dmol bench synth --preset r9y9-ljspeech-mol --mode streaming     # latency of StreamingVocoder
    dmol bench synth --preset r9y9-ljspeech-mol --mode folded-streaming --dtype int8 \
        --kernel-threads 2 --seconds 6                  # FoldedStreamingVocoder, fed in real time
    dmol bench synth --preset r9y9-ljspeech-mol --r9y9-src DIR       # + r9y9's own loop
    dmol bench synth --preset lp-16k --mode incremental --seconds 4     # an LP-WaveNet

Random weights (speed does not depend on them) and a random log-mel in the recipe's range.
Every system runs in this one process, one after the other, so the ratios compare like with
like even on a busy machine; "wall" is elapsed time, "cpu" the process's CPU time (all
threads). The baseline is timed with 1 and with ``--threads`` torch threads; the faster
counts. RTF = wall seconds per second of audio (<= 1 is real time). ``--profile`` adds where
the time of sequential synthesis goes, and the weight traffic per step against this machine's
measured read bandwidth. An LP-WaveNet preset (``lpc_order > 0``, e.g. ``lp-16k``) has no
baseline (the plain loop has no linear prediction): its rows are dmol's engine alone.

``--r9y9-src DIR`` adds the reference implementation itself: r9y9/wavenet_vocoder's WaveNet,
imported from DIR (a checkout or its unpacked sdist; nothing of it ships with dmol), built
with the preset's hyper-parameters and timed on its own ``incremental_forward`` for
``--baseline-seconds`` of audio (see r9y9_reference.py); every row then also shows its
speed over r9y9's. Streaming rows push the mel into a :class:`StreamingVocoder` one frame at
a time, as a live source would: besides the rate they give the latency from a frame's
arrival to the end of its audio, i.e. the lookahead (frames that must arrive first) plus the
compute time of the push that completes it (median and 95th percentile over the frames).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

from dmol.audio.features import recipe_for
from dmol.audio.phase import phase_features
from dmol.benchmarks import r9y9_reference
from dmol.benchmarks.baseline_synth import BaselineIncremental
from dmol.wavenet.folded_stream import FoldedStreamingVocoder
from dmol.wavenet.incremental import lpc_per_sample
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import PRESETS, get_preset
from dmol.wavenet.synthesis import (
    CLI_ENVELOPE_DB,
    CLI_POSTFILTER,
    Conditioner,
    StreamingVocoder,
    folded_plan,
    make_engine,
    synthesize_folded,
    synthesize_incremental,
)

MODES = {"incremental": ["incremental"], "folded": ["folded"], "streaming": ["streaming"],
         "folded-streaming": ["folded-streaming"], "both": ["incremental", "folded"],
         "all": ["incremental", "folded", "streaming", "folded-streaming"]}


def _timed(fn, repeat: int = 1):
    """fn's output and its median wall and CPU seconds over ``repeat`` runs (and every run's
    wall seconds): a shared machine's timings scatter by 10-20% from run to run."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, float(np.median(walls)), float(np.median(cpus)), walls


def _row(name: str, samples: int, wall: float, cpu: float, sr: int,
         walls: list[float] | None = None) -> dict:
    row = {"system": name, "samples": samples, "wall_s": wall, "cpu_s": cpu,
           "samples_per_s": samples / wall, "samples_per_cpu_s": samples / cpu,
           "rtf": wall / (samples / sr)}
    if walls and len(walls) > 1:
        row["rtf_runs"] = [w / (samples / sr) for w in walls]
    return row


def profile_incremental(model: WaveNet, mel: np.ndarray, engine) -> dict:
    """Seconds per frame in each stage of sequential synthesis, and the kernel's bandwidth."""
    cond, hop = Conditioner(model), model.hop_length
    m = torch.from_numpy(mel.T.copy())[None]
    F_ = m.shape[-1]
    state, g = engine.new_state(1), torch.Generator().manual_seed(0)
    t = dict.fromkeys(("conditioning", "noise", "steps"), 0.0)
    with torch.inference_mode():
        coef = model.lpc(m) if model.cfg.lpc_order else None  # LP: coefficients up front
        pl = model.pitch_lags(m) if model.cfg.pitch_taps else None
        H = model.cfg.phase_harmonics  # the phase clock's features, up front like the LPC
        clock = phase_features(model.clock_phase(m), H) if H else None
        for f in range(F_):
            t0 = time.perf_counter()
            c = cond.frames(m, f, f + 1, F_)
            if clock is not None:
                c = torch.cat([c, clock[..., f * hop:(f + 1) * hop]], dim=1)
            lpc = None if coef is None else lpc_per_sample(coef, f * hop, (f + 1) * hop, hop, F_)
            lags = None if pl is None else lpc_per_sample(pl, f * hop, (f + 1) * hop, hop, F_)
            t1 = time.perf_counter()
            noise = engine.draw_noise(hop, 1, generator=g)
            t2 = time.perf_counter()
            engine.run(state, c, noise=noise, lpc=lpc, lags=lags)  # the steps, projection of c
            t3 = time.perf_counter()
            for k, a, b in (("conditioning", t0, t1), ("noise", t1, t2), ("steps", t2, t3)):
                t[k] += b - a
    total = sum(t.values())
    step_s = t["steps"] / (F_ * hop)
    traffic = engine.weight_bytes_per_step()
    # the same number of bytes read by a plain vectorized sum, for this machine's bandwidth
    w = torch.ones(int(traffic // engine.w_skip.element_size()), dtype=engine.dtype)
    w.sum()
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        w.sum()
    read_s = (time.perf_counter() - t0) / reps
    return {"seconds_per_frame": {k: v / F_ for k, v in t.items()},
            "share": {k: v / total for k, v in t.items()},
            "step_us": step_s * 1e6, "weight_bytes_per_step": traffic,
            "step_bandwidth_GBps": traffic / step_s / 1e9,
            "plain_read_bandwidth_GBps": traffic / read_s / 1e9}


def _best_of_threads(threads: int, timed) -> dict:
    """The faster of ``timed(1)`` and ``timed(threads)`` (rows run with that many torch
    threads): batch-1 ops are tiny, a second thread mostly adds synchronisation and stalls
    when the machine is busy, so a one-at-a-time loop gets its better setting."""
    best = None
    for th in sorted({1, threads}):
        torch.set_num_threads(th)
        row = timed(th)
        best = row if best is None or row["samples_per_s"] > best["samples_per_s"] else best
    torch.set_num_threads(threads)
    return best


def time_streaming(model: WaveNet, mel: np.ndarray, engine, name: str, seed: int = 0) -> dict:
    """Push ``mel`` into a :class:`StreamingVocoder` one frame at a time: the rate, and the
    latency from a frame's arrival to the end of its audio (lookahead + compute per push)."""
    sr = model.cfg.sample_rate
    warm = StreamingVocoder(model, seed=seed, engine=engine)  # builds, first-call costs
    for f in range(min(len(mel), warm.lookahead + 2)):
        warm.push(mel[f:f + 1])
    warm.flush()
    stream = StreamingVocoder(model, seed=seed, engine=engine)
    compute, n = [], 0
    w, c = time.perf_counter(), time.process_time()
    for f in range(len(mel)):
        t = time.perf_counter()
        m = len(stream.push(mel[f:f + 1]))
        if m:  # this push completed frame f - lookahead
            compute.append(time.perf_counter() - t)
        n += m
    n += len(stream.flush())  # the last `lookahead` frames, at once
    row = _row(name, n, time.perf_counter() - w, time.process_time() - c, sr)
    look = stream.latency_samples / sr * 1e3
    med, p95 = (np.percentile(np.array(compute) * 1e3, [50, 95]).tolist() if compute
                else (None, None))
    row |= {"lookahead_frames": stream.lookahead, "lookahead_ms": look,
            "frame_ms": model.hop_length / sr * 1e3, "frames_timed": len(compute),
            "compute_ms_median": med, "compute_ms_p95": p95,
            "latency_ms_median": None if med is None else look + med,
            "latency_ms_p95": None if p95 is None else look + p95}
    return row


def time_folded_streaming(model: WaveNet, mel: np.ndarray, name: str, seed: int = 0,
                          **options) -> dict:
    """Feed ``mel`` to a :class:`FoldedStreamingVocoder` as a live source would, frame f
    arriving (f + 1) hop / sr seconds after the start: the compute time of its pushes (RTF
    = compute per second of audio: <= 1 keeps up), and each frame's latency, from its
    arrival to the return of its audio."""
    sr, hop = model.cfg.sample_rate, model.hop_length
    warm = FoldedStreamingVocoder(model, seed=seed, **options)  # builds, first-call costs
    warm.push(mel[:warm.block + warm.overlap // hop + warm.lookahead])
    warm.flush()
    stream = FoldedStreamingVocoder(model, seed=seed, **options)
    busy, cpu, done, latency = 0.0, 0.0, 0, []
    t0 = time.perf_counter()
    for f in range(len(mel) + 1):
        if f < len(mel):
            time.sleep(max(0.0, t0 + (f + 1) * hop / sr - time.perf_counter()))
        w, c = time.perf_counter(), time.process_time()
        if f == len(mel):
            pushed = done  # frames the pushes returned (the flush's are not paced)
        n = len(stream.push(mel[f:f + 1]) if f < len(mel) else stream.flush()) // hop
        busy, cpu = busy + time.perf_counter() - w, cpu + time.process_time() - c
        now = time.perf_counter() - t0
        latency += [now - (g + 1) * hop / sr for g in range(done, done + n)]
        done += n
    row = _row(name, done * hop, busy, cpu, sr)
    lat = np.array(latency[:pushed]) * 1e3
    row |= {"block_s": stream.block * hop / sr, "segments": stream.segments,
            "overlap_s": stream.overlap / sr,
            "algorithmic_latency_ms": stream.latency_samples / sr * 1e3,
            "paced_latency_ms_median": float(np.median(lat)) if len(lat) else None,
            "paced_latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
            "paced_latency_ms_max": float(lat.max()) if len(lat) else None}
    return row


def run(preset: str, modes: list[str], seconds: float, baseline_seconds: float,
        dtypes: list[str], backend: str, max_batch: int, kernel_threads: list[int],
        profile: bool = False, seed: int = 0,
        r9y9: r9y9_reference.Reference | None = None, repeat: int = 3,
        block_seconds: float = 2.0) -> dict:
    """Long because it is the benchmark's script: the baselines, then a row per (mode, dtype,
    kernel threads), each timed in turn in this process."""
    cfg, _ = get_preset(preset)
    torch.manual_seed(seed)
    recipe = recipe_for(preset)
    model = WaveNet(cfg, recipe if cfg.lpc_order else None).eval()
    sr, hop = cfg.sample_rate, cfg.hop_length
    rng = np.random.default_rng(seed)
    frames = max(1, round(seconds * sr / hop))
    lo, hi = recipe.log_min + 2, recipe.log_max - 2
    mel = rng.uniform(lo, hi, (frames, cfg.n_mels)).astype(np.float32)
    rows, profiles = [], {}
    # baseline: the shifted-buffer loop, at its best torch thread count; it has no linear
    # prediction, so an LP model runs without it
    n_base = 0
    if not cfg.lpc_order and baseline_seconds > 0:
        n_base = max(hop, round(baseline_seconds * sr))
    threads = torch.get_num_threads()
    if n_base:
        base = BaselineIncremental(model)
        mel_t = torch.from_numpy(mel[: math.ceil(n_base / hop)].T.copy())[None]

        def timed_baseline(th: int) -> dict:
            base.generate(mel_t, steps=16, generator=torch.Generator().manual_seed(seed))
            _, wall, cpu, _ = _timed(lambda: base.generate(
                mel_t, steps=n_base, generator=torch.Generator().manual_seed(seed)))
            return _row(f"baseline (shifted buffers, per-layer linears) x{th}", n_base, wall,
                        cpu, sr)

        rows.append(_best_of_threads(threads, timed_baseline))
    if r9y9 is not None and n_base:  # the reference implementation, same audio length

        def timed_r9y9(th: int) -> dict:
            n, wall, cpu = r9y9_reference.time_incremental(r9y9, cfg, n_base, lo, hi, seed)
            return _row(f"r9y9/wavenet_vocoder {r9y9.version} incremental_forward x{th}", n,
                        wall, cpu, sr)

        rows.append(_best_of_threads(threads, timed_r9y9))
        rows[-1]["reference"] = True
    for dtype in dtypes:
        for th in kernel_threads if "incremental" in modes else []:
            engine = make_engine(model, backend=backend, dtype=dtype, batch=1, threads=th)
            if engine.backend != "cpp" and th != kernel_threads[0]:
                continue  # threads only apply to the C++ kernel
            synthesize_incremental(model, mel[:1], engine=engine)  # warm-up (builds, compiles)
            out, wall, cpu, walls = _timed(lambda e=engine: synthesize_incremental(
                model, mel, seed=seed, engine=e), repeat)
            tag = f"{engine.backend}" + (f" x{th}" if engine.backend == "cpp" else "")
            rows.append(_row(f"incremental, {tag}, {dtype}", len(out), wall, cpu, sr, walls))
            if th == kernel_threads[0] and model.recipe is not None:  # + the post-filters
                out, wall, cpu, walls = _timed(lambda e=engine: synthesize_incremental(
                    model, mel, seed=seed, engine=e, postfilter=CLI_POSTFILTER,
                    envelope=CLI_ENVELOPE_DB), repeat)
                rows.append(_row(f"incremental + post-filters (command-line), {tag}, {dtype}",
                                 len(out), wall, cpu, sr, walls))
            if profile:
                profiles[rows[-1]["system"]] = profile_incremental(model, mel, engine)
        for th in kernel_threads if "folded" in modes else []:
            # the engine for the batch the utterance folds into (its layout depends on it)
            n_seg = len(folded_plan(model, len(mel), max_batch=max_batch, threads=th))
            engine = make_engine(model, backend=backend, dtype=dtype,
                                 batch=min(max_batch, n_seg), threads=th)
            if engine.backend != "cpp" and th != kernel_threads[0]:
                continue
            synthesize_folded(model, mel[:1], engine=engine)
            out, wall, cpu, walls = _timed(lambda e=engine: synthesize_folded(
                model, mel, seed=seed, max_batch=max_batch, engine=e), repeat)
            tag = f"{engine.backend}" + (f" x{th}" if engine.backend == "cpp" else "")
            rows.append(_row(f"folded ({n_seg} segments), {tag}, {dtype}",
                             len(out), wall, cpu, sr, walls))
        for th in kernel_threads if "streaming" in modes else []:
            engine = make_engine(model, backend=backend, dtype=dtype, batch=1, threads=th)
            if engine.backend != "cpp" and th != kernel_threads[0]:
                continue
            tag = f"{engine.backend}" + (f" x{th}" if engine.backend == "cpp" else "")
            rows.append(time_streaming(model, mel, engine,
                                       f"streaming (1 frame per push), {tag}, {dtype}", seed))
        for th in kernel_threads if "folded-streaming" in modes else []:
            fs = FoldedStreamingVocoder(model, block_seconds=block_seconds, threads=th,
                                        backend=backend, dtype=dtype)
            if fs.engine.backend != "cpp" and th != kernel_threads[0]:
                continue
            tag = f"{fs.engine.backend}" + (f" x{th}" if fs.engine.backend == "cpp" else "")
            rows.append(time_folded_streaming(
                model, mel, f"folded streaming ({block_seconds:g} s blocks of {fs.segments}), "
                f"{tag}, {dtype}", seed, block_seconds=block_seconds, threads=th,
                backend=backend, dtype=dtype))
    ref = rows[0]["samples_per_s"] if n_base else None
    ref_r9y9 = next((r["samples_per_s"] for r in rows if r.get("reference")), None)
    for r in rows:
        r["speedup_vs_baseline"] = None if ref is None else r["samples_per_s"] / ref
        r["speedup_vs_r9y9"] = None if ref_r9y9 is None else r["samples_per_s"] / ref_r9y9
    return {"preset": preset, "parameters": model.num_parameters, "sample_rate": sr,
            "lpc_order": cfg.lpc_order,
            "seconds": frames * hop / sr, "baseline_seconds": n_base / sr,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "rows": rows, "profiles": profiles,
            "r9y9": None if r9y9 is None else {
                "src": r9y9.src, "version": r9y9.version, "parameters": r9y9.parameters,
                "cin_pad": r9y9.cin_pad, "unmatched": r9y9.unmatched}}


def load_r9y9(src: str, preset: str, seconds: float, seed: int = 0) -> r9y9_reference.Reference:
    """r9y9's WaveNet from ``src`` built like ``preset``; ValueError (one line) if it cannot
    be, before any timing starts."""
    cfg, _ = get_preset(preset)
    r9y9_reference.check_preset(cfg)
    if seconds <= 0:
        raise ValueError("--r9y9-src times r9y9 for --baseline-seconds: give it > 0")
    root = r9y9_reference.find_source(src)
    try:
        module = r9y9_reference.import_wavenet(root)
        torch.manual_seed(seed)
        return r9y9_reference.build(module, cfg)
    except Exception as e:  # its code, our shims: whatever fails, say so in one line
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise ValueError(f"--r9y9-src {src}: cannot build r9y9's WaveNet from {root}: "
                         f"{msg}") from e


def _print(res: dict) -> None:
    la = res["load_average"]
    lp = f", LP order {res['lpc_order']}" if res["lpc_order"] else ""
    print(f"preset {res['preset']} ({res['parameters']:,} parameters, {res['sample_rate']} Hz"
          f"{lp}), "
          f"torch {res['torch']}, {res['threads']} torch thread(s) on {res['cpus']} CPU(s)"
          + (f", load average {la[0]:.1f}" if la else ""))
    if res["r9y9"]:
        r = res["r9y9"]
        print(f"r9y9/wavenet_vocoder {r['version']} from {r['src']} ({r['parameters']:,} "
              f"parameters, random weights"
              + (f"; no argument for the preset's {', '.join(r['unmatched'])}"
                 if r["unmatched"] else "") + ")")
    r9 = res["r9y9"] is not None
    print(f"{'system':<56} {'samples/s':>10} {'(per cpu-s)':>11} {'RTF':>7} {'x baseline':>10}"
          + (f" {'x r9y9':>7}" if r9 else ""))
    for r in res["rows"]:
        x, xr = r["speedup_vs_baseline"], r["speedup_vs_r9y9"]
        runs = r.get("rtf_runs")
        print(f"{r['system']:<56} {r['samples_per_s']:>10.0f} {r['samples_per_cpu_s']:>11.0f} "
              f"{r['rtf']:>7.2f} {'-' if x is None else f'{x:.1f}':>10}"
              + (f" {f'{xr:.1f}':>7}" if r9 else "")
              + (f"   (RTF {min(runs):.2f}-{max(runs):.2f} in {len(runs)} runs)" if runs
                 else ""))
    if any(r.get("rtf_runs") for r in res["rows"]):
        print("samples/s and RTF: the median of the runs")
    for r in res["rows"]:  # the streaming rows' latencies
        if r.get("compute_ms_median") is not None:
            print(f"\n{r['system']}: a frame's audio ends {r['latency_ms_median']:.1f} ms "
                  f"(p95 {r['latency_ms_p95']:.1f} ms) after the frame arrives = lookahead "
                  f"{r['lookahead_frames']} frames ({r['lookahead_ms']:.1f} ms) + compute per "
                  f"push median {r['compute_ms_median']:.1f} ms, p95 "
                  f"{r['compute_ms_p95']:.1f} ms ({r['frames_timed']} frames of "
                  f"{r['frame_ms']:.1f} ms)")
            if r["rtf"] > 1:
                print("  (RTF > 1: fed in real time, the stream falls behind and this delay "
                      "grows)")
        elif r.get("paced_latency_ms_median") is not None:
            print(f"\n{r['system']}: frames fed in real time; a frame's audio came back "
                  f"{r['paced_latency_ms_median']:.0f} ms (p95 {r['paced_latency_ms_p95']:.0f}, "
                  f"max {r['paced_latency_ms_max']:.0f}) after it arrived; the block, overlap "
                  f"and lookahead alone: up to {r['algorithmic_latency_ms']:.0f} ms; compute "
                  f"RTF {r['rtf']:.2f}" + (" (> 1: falls behind)" if r["rtf"] > 1 else ""))
    for name, pr in res["profiles"].items():
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in pr["share"].items())
        print(f"\nprofile of {name}: {share}")
        print(f"  one step {pr['step_us']:.0f} us reads {pr['weight_bytes_per_step'] / 1e6:.2f} "
              f"MB of weights: {pr['step_bandwidth_GBps']:.1f} GB/s; a plain sum over as many "
              f"bytes reads {pr['plain_read_bandwidth_GBps']:.1f} GB/s here")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dmol bench synth", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="r9y9-ljspeech-mol", choices=sorted(PRESETS))
    p.add_argument("--mode", choices=tuple(MODES), default="both",
                   help="both: incremental and folded; all: also streaming and folded "
                        "streaming (fed in real time: --seconds of wall time per row)")
    p.add_argument("--seconds", type=float, default=2.0, help="audio generated by dmol")
    p.add_argument("--baseline-seconds", type=float, default=0.25,
                   help="audio generated by the (slow) baseline and by r9y9 (0: no baseline; "
                        "LP presets have none)")
    p.add_argument("--r9y9-src", metavar="DIR",
                   help="r9y9/wavenet_vocoder's source (checkout or unpacked sdist): time its "
                        "incremental_forward too")
    p.add_argument("--dtype", nargs="+", default=["float32"],
                   choices=("float32", "bfloat16", "int8"))
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "compile", "cpp"))
    p.add_argument("--max-batch", type=int, default=32, help="segments at once (folded)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the per-frame torch ops are small)")
    p.add_argument("--kernel-threads", type=int, nargs="+", default=[1],
                   help="threads of the C++ kernel, one row each")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per dmol row (the median is printed)")
    p.add_argument("--block-seconds", type=float, default=2.0,
                   help="folded streaming: audio made per block")
    p.add_argument("--profile", action="store_true", help="where sequential synthesis spends time")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error(f"--repeat must be >= 1, got {a.repeat}")
    if a.threads:
        torch.set_num_threads(a.threads)
    r9y9 = None
    if a.r9y9_src is not None:
        try:
            r9y9 = load_r9y9(a.r9y9_src, a.preset, a.baseline_seconds)
        except ValueError as e:
            print(f"dmol bench synth: {e}", file=sys.stderr)
            return 2
    res = run(a.preset, MODES[a.mode], a.seconds, a.baseline_seconds, a.dtype, a.backend,
              a.max_batch, a.kernel_threads, a.profile, r9y9=r9y9, repeat=a.repeat,
              block_seconds=a.block_seconds)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
