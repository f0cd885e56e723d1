"""How much of the excitation one pitch period back tells about the next excitation sample:
least-squares R^2 of e_t = x_t - p_t from a few inputs, on loud frames of training prompts.

    python docs/scripts/pitch_tap_information.py data/ [pretrained]

The LPC and the pitch lags are the model's own (from the mel); the signal is the recording.
Prints R^2 for x[t-1], e[t-1], p_t alone, with the K signal taps x[t - T0 + j], with the K
excitation taps (``dmol.audio.pitch.pitch_excitation_taps``) and with both (docs/wavenet.md).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dmol.audio.corpus import list_split, load_utterance
from dmol.audio.lpc import lp_predict
from dmol.audio.pitch import pitch_excitation_taps, pitch_taps
from dmol.wavenet.checkpoint import load_model


def main(data: str, checkpoint: str = "pretrained", utterances: int = 80,
         loud_rms: float = 0.05) -> None:
    torch.set_num_threads(1)
    model, _, _, _ = load_model(checkpoint)
    hop, K = model.hop_length, model.cfg.pitch_taps or 5
    cols: dict[str, list[np.ndarray]] = {"base": [], "signal": [], "excitation": []}
    target = []
    for path in list_split(data, "train")[:utterances]:
        audio, mel = load_utterance(path)
        x = torch.from_numpy(audio[: len(mel) * hop])[None].double()
        m = torch.from_numpy(mel.T.copy())[None]
        with torch.no_grad():
            a = model.lpc(m).double()
            lags = model.pitch_lags(m)
            p = lp_predict(x, a, hop)
            sig = pitch_taps(x, lags, hop, K)[0].numpy().T
            exc = pitch_excitation_taps(x, lags, a, hop, K)[0].numpy().T
        xs, ps = x[0].numpy(), p[0].numpy()
        es = xs - ps
        rms = np.sqrt(np.convolve(xs ** 2, np.ones(hop) / hop, "same"))
        t = np.arange(1, len(xs))
        t = t[rms[t] > loud_rms]
        cols["base"].append(np.stack([xs[t - 1], es[t - 1], ps[t]], 1))
        cols["signal"].append(sig[t])
        cols["excitation"].append(exc[t])
        target.append(es[t])
    y = np.concatenate(target)
    f = {k: np.concatenate(v) for k, v in cols.items()}

    def r2(X: np.ndarray) -> float:
        X = np.c_[X, np.ones(len(X))]
        w, *_ = np.linalg.lstsq(X, y, rcond=None)
        return 1.0 - float((y - X @ w).var() / y.var())

    print(f"{len(y):,} samples of {utterances} prompts (frames with rms > {loud_rms}), K = {K}")
    print(f"R^2 x[t-1], e[t-1], p_t:             {r2(f['base']):.3f}")
    print(f"  + signal taps x[t - T0 + j]:       {r2(np.c_[f['base'], f['signal']]):.3f}")
    print(f"  + excitation taps e_t(t - T0 + j): {r2(np.c_[f['base'], f['excitation']]):.3f}")
    print(f"  + both:                            "
          f"{r2(np.c_[f['base'], f['signal'], f['excitation']]):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
