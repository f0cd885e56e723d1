"""See what a WaveNet predicts: its output distribution over a real utterance, as a picture.

``dmol inspect CHECKPOINT WAV`` runs the model teacher-forced (each step sees the true past) and
draws one PNG with:

1. the per-sample NLL over the whole utterance (where the model is surprised);
2. the predicted density as a heat map over a window, the true waveform on top;
3. the mixture weights of each component over the window (mixture heads);
4. the predicted standard deviation over the window, against the actual error;
5. zoomed panels of the full PDF and CDF at chosen steps, each component drawn.

It works for every head (MoL, Gaussian, mixture of Gaussians, mu-law): everything is computed
from the head's ``torch.distributions`` object, so which channels hold which parameter never
has to be guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmol.audio.features import load_audio
from dmol.wavenet.checkpoint import load_model

__all__ = ["Prediction", "predict", "render", "inspect_checkpoint"]


@dataclass
class Prediction:
    """Teacher-forced predictions over one utterance (numpy, one row per time step)."""

    audio: np.ndarray  # (T,) true signal the model predicts (the audio, pre-emphasized if so)
    nll_bits: np.ndarray  # (T,) per-sample NLL in bits
    start: int  # first step of the detailed window
    grid: np.ndarray  # (G,) waveform values of the heat map rows
    log_density: np.ndarray  # (G, W) log density (per unit amplitude) over the window
    weights: np.ndarray | None  # (M, W) mixture weights, None for the mu-law head
    std: np.ndarray  # (W,) predicted standard deviation
    mean: np.ndarray  # (W,) predicted mean
    zoom: list[dict]  # per chosen step: x, pdf, cdf, components (list of pdfs), truth
    head: str
    sample_rate: int


# no_grad rather than inference_mode: it reuses the fused loss's already compiled variant
@torch.no_grad()
def predict(
    model,
    head,
    audio: np.ndarray,
    mel: np.ndarray,
    *,
    sample_rate: int,
    window: int = 1600,
    start: int | None = None,
    steps: list[int] | None = None,
    grid_size: int = 240,
) -> Prediction:
    """Run the model teacher-forced over ``audio`` (T,) with ``mel`` (frames, n_mels).

    ``start`` (default: the window of highest energy) and ``window`` pick the detailed view;
    ``steps`` are offsets inside it for the zoomed PDF/CDF panels (default: three spread out).
    """
    model.eval()
    # the signal the model predicts (pre-emphasized if its config says so; else the audio)
    x = model.emphasize(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])
    c = torch.from_numpy(np.ascontiguousarray(mel.T, dtype=np.float32))[None]
    y_hat = model(x, c)
    nll = head.nll(y_hat, x)[0].double() / math.log(2.0)
    T = x.shape[1]
    window = min(window, T)
    if start is None:  # where the speech is: the most energetic window
        energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(window), "valid")
        start = int(np.argmax(energy))
    start = int(np.clip(start, 0, T - window))
    dist = head.distribution(y_hat[..., start:start + window])
    # stay inside the edge bins: their tail mass divided by a bin width is no density
    inner = 1.0 - 1e-3
    grid = torch.linspace(-inner, inner, grid_size, dtype=y_hat.dtype)
    log_density = head.log_density(dist, grid)
    mean, std = head.moments(dist)
    weights = head.mixture_weights(dist)
    if weights is not None:
        weights = weights[0].T.numpy()
    signal = x[0].numpy()  # what the density is over: the audio, or its pre-emphasized form
    truth = signal[start:start + window]
    if steps is None:
        steps = [window // 4, window // 2, (3 * window) // 4]
    zoom = []
    for t in steps:
        t = int(np.clip(t, 0, window - 1))
        centre, spread = float(mean[0, t]), max(4 * float(std[0, t]), 0.02)
        xs = torch.linspace(max(-inner, centre - spread), min(inner, centre + spread), 400,
                            dtype=torch.float64)
        comps, _ = head.component_pdfs(dist, t, xs)
        step_dist = head.distribution(y_hat[..., start + t:start + t + 1])
        ld = head.log_density(step_dist, xs.to(y_hat.dtype))[:, 0].double()
        cdf = torch.cumsum(ld.exp(), 0) * (xs[1] - xs[0])
        zoom.append({"t": start + t, "x": xs.numpy(), "pdf": ld.exp().numpy(),
                     "cdf": cdf.numpy() + head.cdf_below(step_dist, float(xs[0])),
                     "components": [p.numpy() for p in comps], "truth": float(truth[t])})
    return Prediction(audio=signal, nll_bits=nll.numpy(), start=start, grid=grid.numpy(),
                      log_density=log_density.double().numpy(), weights=weights,
                      std=std[0].numpy(), mean=mean[0].numpy(), zoom=zoom, head=head.name,
                      sample_rate=sample_rate)


def render(pred: Prediction, path: str | Path, title: str = "") -> Path:
    """Draw a :class:`Prediction` into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr, W = pred.sample_rate, pred.log_density.shape[1]
    t_win = (pred.start + np.arange(W)) / sr * 1000.0  # ms
    fig = plt.figure(figsize=(12, 13), constrained_layout=True)
    gs = fig.add_gridspec(5, 3, height_ratios=[1.0, 2.0, 1.1, 1.1, 1.6])

    ax = fig.add_subplot(gs[0, :])
    t_all = np.arange(pred.nll_bits.size) / sr
    k = max(1, pred.nll_bits.size // 2000)  # smooth to ~2000 points for legibility
    smooth = np.convolve(pred.nll_bits, np.ones(k) / k, "same")
    ax.plot(t_all, smooth, lw=0.7, color="C3")
    ax.axvspan(pred.start / sr, (pred.start + W) / sr, color="C0", alpha=0.2, label="window")
    ax.set(xlabel="time (s)", ylabel="NLL (bits/sample)",
           title=f"per-sample NLL, mean {pred.nll_bits.mean():.2f} bits")
    ax.legend(loc="upper right")

    ax = fig.add_subplot(gs[1, :])
    ld = np.maximum(pred.log_density / np.log(10), pred.log_density.max() / np.log(10) - 6)
    im = ax.imshow(ld, origin="lower", aspect="auto", cmap="magma",
                   extent=(t_win[0], t_win[-1], pred.grid[0], pred.grid[-1]))
    truth = pred.audio[pred.start:pred.start + W]
    ax.plot(t_win, truth, color="cyan", lw=0.8, label="true")
    lo, hi = truth.min(), truth.max()
    pad = 0.25 * (hi - lo) + 1e-3
    ax.set_ylim(max(-1, lo - pad), min(1, hi + pad))
    ax.set(xlabel="time (ms)", ylabel="amplitude", title=f"predicted density ({pred.head} head)")
    ax.legend(loc="upper right")
    fig.colorbar(im, ax=ax, label="log10 density")

    ax = fig.add_subplot(gs[2, :])
    if pred.weights is not None:
        ax.stackplot(t_win, pred.weights, lw=0)
        ax.set(ylim=(0, 1), ylabel="weight",
               title=f"mixture weights ({pred.weights.shape[0]} components)")
    else:
        ax.text(0.5, 0.5, "categorical head: no mixture components", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_title("mixture weights")
    ax.set_xlabel("time (ms)")

    ax = fig.add_subplot(gs[3, :])
    err = np.abs(pred.audio[pred.start:pred.start + W] - pred.mean)
    ax.semilogy(t_win, pred.std, lw=0.8, label="predicted std")
    ax.semilogy(t_win, np.maximum(err, 1e-6), lw=0.5, alpha=0.6, label="|true - mean|")
    ax.set(xlabel="time (ms)", ylabel="amplitude", title="predicted spread vs actual error")
    ax.legend(loc="upper right")

    for i, z in enumerate(pred.zoom[:3]):
        ax = fig.add_subplot(gs[4, i])
        # name the three heaviest components, whichever channels they sit in
        heaviest = sorted(range(len(z["components"])), key=lambda j: -z["components"][j].max())[:3]
        for j, comp in enumerate(z["components"]):
            ax.plot(z["x"], comp, lw=0.7, ls="--", label=f"comp {j}" if j in heaviest else None)
        ax.plot(z["x"], z["pdf"], color="k", lw=1.2, label="mixture")
        ax.axvline(z["truth"], color="C3", lw=1, label="true")
        ax.set(xlabel="amplitude", title=f"t = {z['t'] / sr * 1000:.2f} ms")
        if i == 0:
            ax.set_ylabel("density")
        cx = ax.twinx()
        cx.plot(z["x"], np.clip(z["cdf"], 0, 1), color="C7", lw=0.8)
        cx.set_ylim(0, 1.02)
        if i == 2:
            cx.set_ylabel("CDF")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _check_numbers(start_seconds: float | None, window_ms: float, max_seconds: float) -> None:
    for name, v in (("--window-ms", window_ms), ("--max-seconds", max_seconds)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v:g}")
    if start_seconds is not None and not (math.isfinite(start_seconds) and start_seconds >= 0):
        raise ValueError(f"--start must be a number of seconds >= 0, got {start_seconds:g}")


def inspect_checkpoint(
    checkpoint: str | Path,
    wav: str | Path,
    out: str | Path,
    *,
    start_seconds: float | None = None,
    window_ms: float = 100.0,
    max_seconds: float = 4.0,
) -> Path:
    """Load a checkpoint and a wav (analysed with the checkpoint's mel recipe), draw the PNG."""
    _check_numbers(start_seconds, window_ms, max_seconds)
    model, head, recipe, _ = load_model(checkpoint)
    audio = load_audio(wav, recipe.sample_rate)[: int(max_seconds * recipe.sample_rate)]
    frames = len(audio) // recipe.hop_length
    if frames < 1:
        raise ValueError(f"{wav}: too short ({len(audio)} samples) for one mel frame")
    audio = audio[: frames * recipe.hop_length]
    mel = recipe.compute(audio)
    start = None if start_seconds is None else int(start_seconds * recipe.sample_rate)
    pred = predict(model, head, audio, mel, sample_rate=recipe.sample_rate, start=start,
                   window=max(1, int(window_ms / 1000 * recipe.sample_rate)))
    return render(pred, out, title=f"{Path(checkpoint).name} on {Path(wav).name}")
