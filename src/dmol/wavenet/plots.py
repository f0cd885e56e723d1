"""Small pictures of what a WaveNet predicts, for TensorBoard and the inspection tool.

Example::

    >>> y_hat = model(x, mel)                                  # (B, C, T) teacher-forced
    >>> img = distribution_image(model.head, y_hat, x)         # (H, W, 3) uint8
    >>> writer.add_image("distribution", img, step, dataformats="HWC")
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["distribution_image", "log_density", "training_curve"]


def log_density(head, y_hat: Tensor, grid: Tensor) -> Tensor:
    """log p(v) per unit amplitude for each grid value v (G,) at each step: (G, T).

    ``y_hat`` is one sequence, (1, C, T); see :meth:`dmol.wavenet.heads.Head.log_density`.
    """
    return head.log_density(head.distribution(y_hat), grid.to(y_hat.dtype))


@torch.no_grad()
def distribution_image(
    head,
    y_hat: Tensor,
    y: Tensor,
    *,
    start: int | None = None,
    window: int = 400,
    grid_size: int = 160,
    dynamic_range: float = 12.0,
    title: str = "",
) -> np.ndarray:
    """Heat map of the predicted density over a short window, the true waveform drawn on top.

    Args:
        head: a :mod:`dmol.wavenet.heads` head.
        y_hat: network output (B, C, T) or (C, T); the first sequence is drawn.
        y: the true waveform (B, T) or (T,).
        start: first step of the window (default: the window with the most energy).
        window: number of steps drawn.
        grid_size: amplitude rows; the rows span the waveform's range in the window plus margin.
        dynamic_range: natural-log units of density shown below the image's maximum.

    Returns:
        An (H, W, 3) uint8 RGB array.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y_hat = y_hat if y_hat.dim() == 3 else y_hat.unsqueeze(0)
    y = y if y.dim() == 2 else y.unsqueeze(0)
    y_hat, truth = y_hat[:1].detach().float().cpu(), y[0].detach().double().cpu().numpy()
    T = y_hat.shape[-1]
    if truth.shape[0] != T:
        raise ValueError(f"y has {truth.shape[0]} steps but y_hat has {T}")
    window = max(1, min(window, T))
    if start is None:  # where the signal is: the most energetic window
        energy = np.convolve(truth**2, np.ones(window), "valid")
        start = int(np.argmax(energy))
    start = int(np.clip(start, 0, T - window))
    seg = truth[start : start + window]
    lo, hi = float(seg.min()), float(seg.max())
    margin = 0.15 * (hi - lo) + 0.02
    # stay inside the edge bins: their tail mass over a bin width is no density
    lo, hi = max(lo - margin, -0.999), min(hi + margin, 0.999)
    grid = torch.linspace(lo, hi, grid_size, dtype=torch.float64)
    ld = log_density(head, y_hat[..., start : start + window], grid).double().numpy()
    ld = np.nan_to_num(ld, nan=-np.inf)
    top = float(np.max(ld[np.isfinite(ld)])) if np.isfinite(ld).any() else 0.0

    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.clip(ld, top - dynamic_range, top), origin="lower", aspect="auto",
              extent=(start, start + window, lo, hi), cmap="magma", interpolation="nearest")
    ax.plot(np.arange(start, start + window) + 0.5, seg, color="#7fdbff", lw=0.8, label="true")
    ax.set_xlabel("sample")
    ax.set_ylabel("amplitude")
    ax.set_title(title or f"{head.name}: predicted log density (top {dynamic_range:g} nats)",
                 fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def training_curve(metrics: dict, path, title: str = "") -> None:
    """Training and validation NLL (bits/sample) against hours of training, as a PNG.

    ``metrics`` is a run's ``metrics.json`` (``train``/``val`` lists of [step, nats] and
    ``train_seconds``); steps become hours at the run's average rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max([s for s, _ in metrics.get("train", [])] + [1])
    hours_per_step = float(metrics.get("train_seconds", 0.0)) / 3600.0 / last
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for key, label, style in (("train", "training (mean of 20 steps)", "-"),
                              ("val", "validation, held-out (EMA weights)", "o-")):
        pts = np.asarray(metrics.get(key) or [], dtype=float).reshape(-1, 2)
        if len(pts):
            ax.plot(pts[:, 0] * hours_per_step, pts[:, 1] / math.log(2.0), style, ms=3, lw=1,
                    label=label, alpha=0.6 if key == "train" else 1.0)
    ax.set(xlabel="hours of training (CPU)", ylabel="NLL (bits/sample, 16-bit)",
           title=title or "training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
