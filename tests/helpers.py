"""Helpers shared by test files: tiny WaveNets with perturbed weights, random log-mels, a
chi-square test of draws against a pmf, an independent pmf enumeration, a disk that fills up."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from dmol.audio.features import recipe_for
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset


def tiny_model(seed: int = 0, **overrides) -> WaveNet:
    """The tiny preset with every parameter perturbed (non-zero biases test the folding)."""
    torch.manual_seed(seed)
    cfg, _ = get_preset("tiny", overrides)
    model = WaveNet(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def random_mel(frames: int, n_mels: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, n_mels)) - 4.0).astype(np.float32)


def lp_model(seed: int = 0, head: str = "mol", order: int = 8) -> WaveNet:
    """The tiny preset as an LP-WaveNet, every parameter perturbed."""
    torch.manual_seed(seed)
    cfg, _ = get_preset("tiny", {"lpc_order": order, "head": head})
    model = WaveNet(cfg, recipe_for("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ltp_model(seed: int = 0, head: str = "mol", taps: int = 3,
              excitation: bool = False, phase: int = 0, continuity: float = 0.0,
              pitch_net: int = 0) -> WaveNet:
    """:func:`lp_model` with pitch taps (and their excitation, and a phase clock of ``phase``
    harmonics, and a pitch estimate tracked with ``continuity``, refined by a learned one of
    width ``pitch_net``); 80 mel bands (the tiny recipe's 20 cannot resolve harmonics), every
    parameter perturbed."""
    import dataclasses

    torch.manual_seed(seed)
    cfg, _ = get_preset("tiny", {"lpc_order": 8, "head": head, "pitch_taps": taps,
                                 "n_mels": 80, "pitch_excitation": excitation,
                                 "phase_harmonics": phase, "pitch_continuity": continuity,
                                 "pitch_net": pitch_net})
    model = WaveNet(cfg, dataclasses.replace(recipe_for("tiny"), n_mels=80)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def lp_mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """(B, n_mels, frames) log-mels in the tiny recipe's range (speech-like envelopes)."""
    return torch.from_numpy(np.stack([random_mel(frames, seed=seed + s) for s in range(batch)])
                            ).transpose(1, 2).contiguous()


def chi2_pvalue(classes: torch.Tensor, pmf: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's chi-square p-value of integer draws ``classes`` against ``pmf`` (K,).

    Classes expected fewer than ``min_expected`` times are pooled into one cell.
    """
    n, pmf = classes.numel(), pmf.double() / pmf.double().sum()
    counts = torch.bincount(classes.flatten().long(), minlength=len(pmf)).double()
    assert len(counts) == len(pmf), "a draw outside the pmf's support"
    expected = n * pmf
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    return float(stats.chi2.sf(chi2, len(exp) - 1))


def enumerated_pmf(family: str, logits, means, log_scales, K: int) -> np.ndarray:
    """(*batch, K) float64 bin masses of a discretized mixture, from scipy's CDFs alone.

    K bins on [-1, 1], centres -1 + 2k / (K - 1), the edge bins take the tails: an
    enumeration independent of dmol (``family``: "logistic" or "gaussian").
    """
    dist = {"logistic": stats.logistic, "gaussian": stats.norm}[family]
    lg, mu, ls = (np.asarray(t, np.float64)[..., None, :] for t in (logits, means, log_scales))
    w = np.exp(lg - lg.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    c = (-1 + 2 * np.arange(K) / (K - 1))[:, None]
    hi = dist.cdf((c + 1 / (K - 1) - mu) / np.exp(ls))
    lo = dist.cdf((c - 1 / (K - 1) - mu) / np.exp(ls))
    hi[..., -1, :], lo[..., 0, :] = 1.0, 0.0
    # upper minus lower CDF from the side with the smaller values (no cancellation near 1)
    upper_tail = (c - mu) > 0
    sf_lo = dist.sf((c - 1 / (K - 1) - mu) / np.exp(ls))
    sf_hi = dist.sf((c + 1 / (K - 1) - mu) / np.exp(ls))
    sf_lo[..., 0, :], sf_hi[..., -1, :] = 1.0, 0.0
    mass = np.where(upper_tail, sf_lo - sf_hi, hi - lo)
    return (w * mass).sum(-1)


class FullDisk:
    """``open`` for dmol.wavenet.checkpoint whose ``.pt.tmp`` files fill the disk half-way
    (after ``after`` successful writes)."""

    def __init__(self, after: int = 0):
        self.after, self.calls = after, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        f = open(file, mode, *args, **kwargs)  # noqa: SIM115
        if str(file).endswith(".pt.tmp") and "w" in mode:
            self.calls += 1
            if self.calls > self.after:
                real_write = f.write

                def write(data):
                    real_write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")

                f.write = write
        return f


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: no entry can be added, removed or renamed.

    A normal user gets mode 0555. Root ignores modes, so as root the folder gets the
    immutable attribute (``chattr +i``: ext4, xfs, btrfs), which root too must obey; where the
    filesystem has no such attribute the test is skipped with that reason.
    """
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"running as root and chattr +i failed here: {done.stderr.strip()}")
    try:
        probe = folder / ".dmol-probe"
        with contextlib.suppress(OSError):
            probe.touch()
        assert not probe.exists(), "chattr +i did not make the folder read-only"
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def ar2_model(f0: float = 150.0, r: float = 0.995, scale: float = 1e-3) -> WaveNet:
    """A tiny WaveNet set by hand to x[t] = a1 x[t-1] + a2 x[t-2] + logistic noise: a
    narrow-band resonance at f0 whose samples change smoothly (so seams would show)."""
    cfg, _ = get_preset("tiny")
    model = WaveNet(cfg).eval()
    a1, a2 = 2 * r * math.cos(2 * math.pi * f0 / cfg.sample_rate), -r * r
    eps, shift, M, H = 1e-3, 5.0, cfg.n_mixtures, cfg.gate_channels // 2
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.first.weight[0, 0, 0] = 1.0  # channel 0 carries x[t-1]
        conv = model.layers[0].conv  # dilation 1: taps on x[t-1] (j = 2) and x[t-2] (j = 1)
        conv.weight[0, 0, 2], conv.weight[0, 0, 1] = eps * a1, eps * a2
        conv.bias[H] = 20.0  # sigmoid gate fully open; tanh(eps v) ~ eps v
        skip = model.layers[0].skip
        skip.weight[0, 0, 0], skip.bias[0] = 1 / eps, shift  # shift keeps the ReLUs linear
        model.post[1].weight[0, 0, 0] = math.sqrt(cfg.layers)
        model.post[3].weight[M:2 * M, 0, 0], model.post[3].bias[M:2 * M] = 1.0, -shift
        model.post[3].bias[2 * M:] = math.log(scale)
    return model
