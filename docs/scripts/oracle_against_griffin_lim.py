"""Would a perfect F0 estimate make this network's F0 and voicing measurably better than
Griffin-Lim's, prompt by prompt (session 21)?

Reads the rows of `oracle_pitch.py` (the network with its own estimate, and with harvest's F0 of
the recording behind taps, clock and post-filter) and Griffin-Lim's scores of the same prompts
from a `dmol evaluate --json` run, and prints each kind minus Griffin-Lim per prompt (each
prompt's figure the mean over its seeds) as `dmol evaluate` prints its comparison, with the
spread of the per-prompt differences and the number of prompts that spread would need for a
gap of that size to pass two standard errors.

    python docs/scripts/oracle_against_griffin_lim.py docs/results/s19_oracle_pitch.json \\
        docs/results/s13_all28_S60580_data_s0.json
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from dmol.wavenet.evaluate import MEASURED_SE, PAIRED, paired_difference, paired_text


def main() -> None:
    oracle_json, evaluate_json = sys.argv[1:3]
    with open(evaluate_json) as fh:
        griffin_lim = {u["name"]: u["Griffin-Lim"] for u in json.load(fh)["utterances"]}
    with open(oracle_json) as fh:
        rows = json.load(fh)
    for kind in dict.fromkeys(r["kind"] for r in rows):
        seeds: dict[str, list[dict]] = {}
        for r in rows:
            if r["kind"] == kind:
                seeds.setdefault(r["name"], []).append(r)
        missing = sorted(set(seeds) - set(griffin_lim))
        if missing:
            raise SystemExit(f"{evaluate_json} has no Griffin-Lim scores for {missing[:3]}")
        per_prompt = [{"WaveNet": {m: float(np.nanmean([s[m] for s in ss])) for m in PAIRED},
                       "Griffin-Lim": griffin_lim[name]} for name, ss in seeds.items()]
        difference = paired_difference(per_prompt)
        print(f"F0 estimate: {kind}")
        print(paired_text(difference, (kind, "Griffin-Lim")))
        for m in ("f0_rmse_hz", "vuv_error"):
            d = difference[m]
            spread = d["se"] * math.sqrt(d["n"])
            need = (MEASURED_SE * spread / abs(d["mean"])) ** 2 if d["mean"] else math.inf
            print(f"  {m}: spread of the per-prompt differences {spread:.4g}; a gap of "
                  f"{abs(d['mean']):.3g} passes {MEASURED_SE:g} standard errors with "
                  f"~{need:.0f} prompts")


if __name__ == "__main__":
    main()
