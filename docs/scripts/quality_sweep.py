"""The scale-temperature sweep of docs/quality.md: copy-synthesis metrics of one model at
several scale temperatures on the same held-out utterances (F0 by dio: the sweep's purpose is
the ranking, the final tables use harvest).

    python docs/scripts/quality_sweep.py pretrained data/ docs/results/scale_temperature.json
"""

from __future__ import annotations

import json
import sys

import torch

from dmol.audio.corpus import list_split
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.evaluate import evaluate_model

TEMPERATURES = (1.0, 0.6, 0.3, 0.2, 0.1, 0.0)
KEYS = ("mcd_db", "log_mel_l1", "mrstft", "f0_rmse_hz", "vuv_error")


def main(model_path: str, data_dir: str, out: str, n: int = 8) -> None:
    torch.set_num_threads(1)
    model, head, recipe, info = load_model(model_path)
    utts = list_split(data_dir, "val")[:n]
    rows = {}
    for st in TEMPERATURES:
        res = evaluate_model(model, head, recipe, utts, max_seconds=3.0, f0_method="dio",
                             baseline=(st == TEMPERATURES[0]), scale_temperature=st,
                             progress=False)
        rows[f"WaveNet, scale temperature {st:g}"] = res["systems"]["WaveNet"]
        if "Griffin-Lim" in res["systems"]:
            rows["Griffin-Lim"] = res["systems"]["Griffin-Lim"]
    lines = ["| system | MCD dB | log-mel L1 | MR-STFT | F0 RMSE Hz | V/UV |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(f"{v[m]:.3f}" for m in KEYS) + " |"
              for k, v in rows.items()]
    print(f"{model_path} (step {info['step']}), {len(utts)} held-out utterances, <= 3 s each:")
    print("\n".join(lines))
    with open(out, "w") as f:
        json.dump({"step": info["step"], "n": len(utts), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
