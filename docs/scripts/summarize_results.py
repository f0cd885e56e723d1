"""Mean of `dmol evaluate --json` results over seeds, for all their prompts and for the first N.

Each argument is a glob of one system's JSON files (one per seed, or runs with `--seeds N`,
whose N seeds count as N files); a row per argument and
system (WaveNet, and Griffin-Lim once), columns MCD / log-mel L1 / MR-STFT / F0 RMSE / V/UV,
the mean over seeds of the per-prompt means (as `dmol evaluate` prints them). With `--se` the
WaveNet's F0 and V/UV cells also give the standard error of that mean over the seeds (the
sampling's spread; Griffin-Lim is deterministic). With `--prompts` each argument also gets
the WaveNet - Griffin-Lim difference prompt by prompt (each prompt's WaveNet figure the mean
over all its seeds) with its standard error over the prompts, as `dmol evaluate` prints it:
whether a gap would hold on other prompts of the kind, not only on these. With `--against
GLOB` each argument is also compared seed by seed with that run on the seeds both have (same
prompts, same seed: the mean of the per-seed differences and its standard error), and with
`--prompts` too prompt by prompt.

    python docs/scripts/summarize_results.py "docs/results/s15_all28_T68141soft_s*.json" \\
        --first 8
"""

from __future__ import annotations

import argparse
import glob
import json

import numpy as np

from dmol.wavenet.evaluate import paired_difference, paired_text

METRICS = ("mcd_db", "log_mel_l1", "mrstft", "f0_rmse_hz", "vuv_error")


def table(pattern: str, first: int | None, exclude: set[str] = frozenset()
          ) -> dict[str, list[float]]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no file matches {pattern}")
    rows: dict[str, list[list[float]]] = {}
    prompts = set()
    for f in files:
        with open(f) as fh:
            utts = [u for u in json.load(fh)["utterances"][:first] if u["name"] not in exclude]
        if not utts:
            raise SystemExit(f"{f}: no prompts left after --first/--exclude")
        prompts.add(len(utts))
        # a run with --seeds N keeps each seed's metrics: N seeds, as N files would
        seeds = ([[u["WaveNet_by_seed"][k] for u in utts]
                  for k in range(len(utts[0]["WaveNet_by_seed"]))]
                 if "WaveNet_by_seed" in utts[0] else [[u["WaveNet"] for u in utts]])
        griffin_lim = [[u["Griffin-Lim"] for u in utts]]
        for system, runs in (("WaveNet", seeds), ("Griffin-Lim", griffin_lim)):
            for run in runs:
                per = [[scores[m] for m in METRICS] for scores in run]
                rows.setdefault(system, []).append(np.nanmean(np.array(per, float), axis=0))
    if len(prompts) != 1:
        raise SystemExit(f"{pattern}: the files hold different numbers of prompts {prompts}")
    n, k = prompts.pop(), len(rows["WaveNet"])
    # as `dmol evaluate --seeds` does: a seed whose mean is undefined (NaN) drops out
    w = np.array(rows["WaveNet"])
    have = np.isfinite(w).sum(axis=0)
    se = np.nanstd(w, axis=0, ddof=1) / np.sqrt(have) if k > 1 else None
    out = {s: [len(v), n, *np.nanmean(v, axis=0)] for s, v in rows.items()}
    out["se"] = None if se is None else list(se)
    return out


def seed_means(pattern: str, first: int | None, exclude: set[str] = frozenset()
               ) -> dict[int, np.ndarray]:
    """Each seed's WaveNet means over the prompts (METRICS), by seed number."""
    out = {}
    for f in sorted(glob.glob(pattern)):
        with open(f) as fh:
            d = json.load(fh)
        utts = [u for u in d["utterances"][:first] if u["name"] not in exclude]
        by_seed = [u.get("WaveNet_by_seed", [u["WaveNet"]]) for u in utts]
        for k in range(len(by_seed[0])):
            out[d["settings"]["seed"] + k] = np.nanmean(
                np.array([[b[k][m] for m in METRICS] for b in by_seed], float), axis=0)
    return out


def seed_pairs(pattern: str, against: str, first: int | None,
               exclude: set[str] = frozenset()) -> str:
    """The per-seed differences ``pattern - against`` on their common seeds."""
    a, b = seed_means(pattern, first, exclude), seed_means(against, first, exclude)
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return f"fewer than two common seeds ({common})"
    d = np.array([a[k] - b[k] for k in common])
    cells = [f"{m} {d[:, i].mean():+.4f} ± {d[:, i].std(ddof=1) / np.sqrt(len(d)):.4f}"
             for i, m in enumerate(METRICS)]
    return f"seeds {common[0]}-{common[-1]} ({len(common)}): " + ", ".join(cells)


def _per_prompt(pattern: str, first: int | None, exclude: set[str]
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each prompt's WaveNet means over every seed of the files, and its Griffin-Lim scores."""
    seeds: dict[str, list[dict]] = {}
    gl: dict[str, dict] = {}
    for f in sorted(glob.glob(pattern)):
        with open(f) as fh:
            for u in json.load(fh)["utterances"][:first]:
                if u["name"] not in exclude:
                    seeds.setdefault(u["name"], []).extend(u.get("WaveNet_by_seed",
                                                                 [u["WaveNet"]]))
                    gl[u["name"]] = u["Griffin-Lim"]
    wavenet = {name: {m: float(np.nanmean([s[m] for s in by])) for m in METRICS}
               for name, by in seeds.items()}
    return wavenet, gl


def prompt_pairs(pattern: str, first: int | None, exclude: set[str] = frozenset(),
                 against: str | None = None) -> str:
    """The paired lines of the WaveNet (per prompt: the mean over every seed of the files)
    against Griffin-Lim, or against the WaveNet of the runs ``against`` (their common
    prompts)."""
    a, gl = _per_prompt(pattern, first, exclude)
    b = gl if against is None else _per_prompt(against, first, exclude)[0]
    rows = [{"WaveNet": a[n], "other": b[n]} for n in a if n in b]
    names = ("WaveNet", "Griffin-Lim" if against is None else "the other run")
    diff = paired_difference(rows, "WaveNet", "other")
    return "(fewer than two prompts)" if diff is None else paired_text(diff, names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("patterns", nargs="+")
    p.add_argument("--first", type=int, help="only the first N prompts of each file")
    p.add_argument("--se", action="store_true",
                   help="the standard error over seeds of the WaveNet's F0 and V/UV means")
    p.add_argument("--prompts", action="store_true",
                   help="also the WaveNet - Griffin-Lim difference prompt by prompt, with its "
                        "standard error over the prompts")
    p.add_argument("--against", metavar="GLOB",
                   help="also each argument minus this run, seed by seed on their common seeds")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                   help="leave out these prompts (e.g. June's tones: ascending-2tone beep "
                        "beeperr)")
    a = p.parse_args()
    if a.first is not None and a.first < 1:
        p.error(f"--first must be >= 1, got {a.first}")
    print("| system | seeds | prompts | MCD dB | log-mel L1 | MR-STFT | F0 RMSE Hz | V/UV |")
    print("|---|---|---|---|---|---|---|---|")
    gl = None
    for pat in a.patterns:
        t = table(pat, a.first, set(a.exclude))
        w, se = t["WaveNet"], t["se"]
        f0, vuv = f"{w[5]:.1f}", f"{w[6]:.4f}"
        if a.se and se is not None:
            f0, vuv = f"{f0} ± {se[3]:.1f}", f"{vuv} ± {se[4]:.4f}"
        print(f"| {pat} | {w[0]} | {w[1]} | {w[2]:.2f} | {w[3]:.3f} | {w[4]:.3f} | {f0} "
              f"| {vuv} |")
        gl = gl or t["Griffin-Lim"]
    print(f"| Griffin-Lim | {gl[0]} | {gl[1]} | {gl[2]:.2f} | {gl[3]:.3f} | {gl[4]:.3f} "
          f"| {gl[5]:.1f} | {gl[6]:.4f} |")
    if a.against:
        for pat in a.patterns:
            print(f"\n{pat} - {a.against}:\n"
                  f"{seed_pairs(pat, a.against, a.first, set(a.exclude))}")
    if a.prompts:
        for pat in a.patterns:
            print(f"\n{pat}:\n{prompt_pairs(pat, a.first, set(a.exclude))}")
            if a.against:
                print(f"{pat} against {a.against}, prompt by prompt:\n"
                      f"{prompt_pairs(pat, a.first, set(a.exclude), a.against)}")


if __name__ == "__main__":
    main()
