"""A learned F0 estimate of each log-mel frame: a small network taught by WORLD's harvest.

The comb of :mod:`dmol.audio.pitch` reads the pitch from the harmonics the mel's low bands
resolve, and is an octave or more off in about a tenth of the built-in voice's voiced frames:
fast glides, creak, frames whose low harmonics are weak. A vocoder's taps and phase clock
follow that estimate, so its output is off there too: with harvest's F0 of the recording in
their place the shipped vocoder's F0 RMSE falls from 23 to 18 Hz (docs/quality.md, session
19). What the comb misses is often still in the frame (the spacing of the higher bands'
ripple, the shape of the envelope that goes with a register), and a network that has seen a
voice's frames with harvest's answer learns it: on the held-out prompts it halves the gross
errors (10% -> 5% of voiced frames more than 300 cents off), on a voice it never heard
(June, fr-CA) they fall from 8.5% to 5.5%.

Each frame is estimated from that frame alone (its log-mel less its loudest band, so the
level does not matter), so a stream, a batch and one frame at a time give the same numbers.
The network scores F0 bins log-spaced ``BINS_PER_OCTAVE`` per octave from F0_LO to F0_HI and
a voicing logit; the estimate is the score-weighted mean of the bins around the best one,
and ``p_voiced`` says whether the frame has a pitch at all (a vocoder keeps the comb's
estimate where it has not, the one it was trained with: :meth:`dmol.wavenet.model.WaveNet.f0`).

Example::

    >>> pairs = [(recipe.compute(a), harvest_f0(a, recipe)) for a in training_audio]
    >>> net = fit_mel_pitch_net(pairs, recipe.n_mels)
    >>> f0, p_voiced = net.estimate(torch.from_numpy(recipe.compute(audio)))   # (F,) each
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from dmol.audio.corpus import audio_files, list_split, load_recipe, load_utterance, prepare_audio
from dmol.audio.features import MelRecipe
from dmol.audio.metrics import f0_track

__all__ = ["BINS_PER_OCTAVE", "F0_HI", "F0_LO", "MelPitchNet", "fit_mel_pitch_net",
           "fit_on_dataset", "harvest_f0", "pitch_examples"]

F0_LO, F0_HI = 50.0, 700.0  # Hz: the bins' range, wider than speaking voices on both sides
BINS_PER_OCTAVE = 48  # 25 cents: finer than the 1% the comb's candidates are apart
N_BINS = int(math.ceil(math.log2(F0_HI / F0_LO) * BINS_PER_OCTAVE)) + 1
LABEL_WIDTH = 1.5  # bins: the soft target's standard deviation (a near miss costs little)


class MelPitchNet(nn.Module):
    """F0 and voicing of each log-mel frame: an MLP on the frame's shape.

    Args:
        n_mels: mel bands of the frames.
        hidden: width of the two hidden layers.

    Shapes: ``log_mel`` (..., frames, n_mels), natural-log magnitudes as
    :meth:`MelRecipe.compute` returns them; :meth:`forward` gives logits (..., frames,
    N_BINS + 1) (the bins', then voicing's), :meth:`estimate` F0 (Hz) and p_voiced (...,
    frames). The input's mean and standard deviation per band (buffers) are set by
    :func:`fit_mel_pitch_net`.
    """

    def __init__(self, n_mels: int, hidden: int = 256) -> None:
        super().__init__()
        if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
            raise ValueError(f"n_mels must be a positive integer, got {n_mels!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.n_mels, self.hidden = n_mels, hidden
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.net = nn.Sequential(nn.Linear(n_mels, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, N_BINS + 1))
        self._f64: tuple[tuple, list[Tensor]] | None = None  # (key, float64 weights)

    def _check(self, log_mel: Tensor) -> None:
        if not isinstance(log_mel, Tensor) or log_mel.dim() < 1 or (
                log_mel.shape[-1] != self.n_mels):
            got = tuple(log_mel.shape) if isinstance(log_mel, Tensor) else type(log_mel).__name__
            raise ValueError(f"log_mel must be (..., frames, {self.n_mels}), got {got}")

    def features(self, log_mel: Tensor) -> Tensor:
        """The frames' shapes, standardized: each less its loudest band (a prompt's level is
        arbitrary), then per band less the training mean, over the standard deviation."""
        x = log_mel - log_mel.amax(-1, keepdim=True)
        return (x - self.mean.to(x)) / self.std.to(x)

    def forward(self, log_mel: Tensor) -> Tensor:
        """Logits (..., frames, N_BINS + 1): the F0 bins', then the voicing's (for fitting)."""
        self._check(log_mel)
        return self.net(self.features(log_mel))

    @torch.no_grad()
    def estimate(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        """F0 (Hz, float32, in [F0_LO, F0_HI]) and p_voiced (float32) of every frame.

        Computed in float64: a frame's numbers do not depend on how many frames share the
        call (a float32 matmul's blocking would move the last bits, and a pitch lag rounds)."""
        self._check(log_mel)
        x = self.features(log_mel.detach().double())
        w = iter(self._weights64())
        for layer in self.net:
            x = F.linear(x, next(w), next(w)) if isinstance(layer, nn.Linear) else layer(x)
        p = torch.softmax(x[..., :N_BINS], -1)
        best = p.argmax(-1, keepdim=True)
        # the mean of the bins around the best, by score: finer than a bin, and a second
        # peak an octave away (the commonest confusion) does not pull it
        near = (best + torch.arange(-2, 3, device=x.device)).clamp(0, N_BINS - 1)
        w = p.gather(-1, near)
        b = (w * near).sum(-1) / w.sum(-1)
        f0 = F0_LO * torch.exp2(b / BINS_PER_OCTAVE)
        return f0.float(), torch.sigmoid(x[..., N_BINS]).float()

    def _weights64(self) -> list[Tensor]:
        """The layers' weights and biases in float64, converted again only when they change
        (a stream asks for one frame at a time: a copy per call would cost more than the
        frame)."""
        params = [t for layer in self.net if isinstance(layer, nn.Linear)
                  for t in (layer.weight, layer.bias)]
        key = tuple((t.data_ptr(), t._version, t.device) for t in params)
        if self._f64 is None or self._f64[0] != key:
            self._f64 = (key, [t.detach().double() for t in params])
        return self._f64[1]


def _bins(f0: Tensor) -> Tensor:
    """Fractional bin of each F0 (Hz > 0)."""
    return torch.log2(f0.clamp(F0_LO, F0_HI) / F0_LO) * BINS_PER_OCTAVE


def harvest_f0(audio: np.ndarray, recipe: MelRecipe) -> np.ndarray:
    """Harvest's F0 (Hz, 0 = unvoiced) of each of ``recipe.compute(audio)``'s frames: the
    track ``dmol evaluate`` scores F0 with, sampled at the frames' centres."""
    frames = len(audio) // recipe.hop_length
    f0, _ = f0_track(np.asarray(audio, dtype=np.float64), recipe.sample_rate,
                     frame_period=1000.0 * recipe.hop_length / recipe.sample_rate,
                     f0_floor=F0_LO + 5.0, f0_ceil=F0_HI)
    return np.pad(f0, (0, max(0, frames - len(f0))))[:frames]


def _example(item: tuple[np.ndarray, np.ndarray, MelRecipe]) -> tuple[np.ndarray, np.ndarray]:
    audio, mel, recipe = item
    return mel, harvest_f0(audio[: len(mel) * recipe.hop_length], recipe)


def pitch_examples(utterances: Sequence[tuple[np.ndarray, np.ndarray]], recipe: MelRecipe, *,
                   workers: int | None = None, progress: bool = True
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(log_mel, harvest F0)`` of each ``(audio, log_mel)`` utterance, for
    :func:`fit_mel_pitch_net`. Harvest takes ~0.4 s per second of audio, so it runs on
    ``workers`` processes (default: the usable cores, at most 4). The workers are spawned,
    so they import the calling script: a script needs the ``if __name__ == "__main__":``
    guard (or ``workers=1``)."""
    items = [(np.asarray(a, dtype=np.float32), np.asarray(m), recipe) for a, m in utterances]
    n = workers or min(4, len(os.sched_getaffinity(0)))
    bar = tqdm(total=len(items), desc="harvest F0 of the training audio", disable=not progress,
               leave=False)
    with bar:
        if n <= 1 or len(items) < 2:
            out = []
            for it in items:
                out.append(_example(it))
                bar.update()
            return out
        # spawned workers: a forked copy of a process that has started torch's threads can hang
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as ex:
            out = []
            for r in ex.map(_example, items, chunksize=4):
                out.append(r)
                bar.update()
            return out


def fit_mel_pitch_net(examples: Sequence[tuple[np.ndarray, np.ndarray]], n_mels: int, *,
                      hidden: int = 256, epochs: int = 25, batch_size: int = 256,
                      lr: float = 1e-3, seed: int = 0, progress: bool = True) -> MelPitchNet:
    """Train a :class:`MelPitchNet` on ``(log_mel (F, n_mels), f0 (F,))`` pairs, F0 in Hz and
    0 where unvoiced (:func:`harvest_f0`); the same examples and seed give the same weights.

    The voiced frames teach the bins (cross-entropy against a Gaussian of LABEL_WIDTH bins
    around the answer), every frame the voicing (binary cross-entropy). Returns the network
    in eval mode, on the CPU.
    """
    mels, f0s = [], []
    for i, (m, f) in enumerate(examples):
        m, f = np.asarray(m), np.asarray(f)
        if m.ndim != 2 or m.shape[1] != n_mels or f.shape != (m.shape[0],):
            raise ValueError(f"example {i}: need log_mel (F, {n_mels}) and f0 (F,), got "
                             f"{m.shape} and {f.shape}")
        if not (np.isfinite(m).all() and np.isfinite(f).all() and (f >= 0).all()):
            raise ValueError(f"example {i}: log_mel and f0 must be finite, f0 >= 0")
        mels.append(m)
        f0s.append(f)
    if not mels:
        raise ValueError("no examples to fit the pitch network on")
    x = torch.from_numpy(np.concatenate(mels)).float()
    f0 = torch.from_numpy(np.concatenate(f0s)).float()
    voiced = f0 > 0
    if not voiced.any() or voiced.all():
        raise ValueError("the examples need both voiced (f0 > 0) and unvoiced frames")
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        net = MelPitchNet(n_mels, hidden)
    shape = x - x.amax(-1, keepdim=True)
    net.mean.copy_(shape.mean(0))
    net.std.copy_(shape.std(0) + 1e-3)
    target = _bins(torch.where(voiced, f0, torch.full_like(f0, F0_LO)))
    grid = torch.arange(N_BINS, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    steps = epochs * math.ceil(len(x) / batch_size)
    with tqdm(total=steps, desc="fitting the pitch network", disable=not progress,
              leave=False) as bar:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                z, v = net(x[idx]), voiced[idx]
                loss = F.binary_cross_entropy_with_logits(z[:, N_BINS], v.float())
                if v.any():
                    soft = torch.exp(-0.5 * ((grid - target[idx][v, None]) / LABEL_WIDTH) ** 2)
                    soft = soft / soft.sum(-1, keepdim=True)
                    loss = loss - (soft * torch.log_softmax(z[v, :N_BINS], -1)).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update()
    return net.eval()


def fit_on_dataset(data_dir: str | os.PathLike, recipe: MelRecipe, hidden: int = 256, *,
                   audio: Sequence[str | os.PathLike] = (), workers: int | None = None,
                   seed: int = 0, progress: bool = True) -> MelPitchNet:
    """A :class:`MelPitchNet` fitted to harvest's F0 of a ``dmol preprocess`` dataset's
    training split, whose mel recipe must be ``recipe`` (the model's).

    ``audio``: audio files, or folders searched for them, of other voices to fit on too
    (prepared as ``dmol preprocess`` prepares a file). Fitted on one voice the estimate knows
    that voice's registers only: on a low male voice it makes more octave errors than the
    comb (docs/quality.md, sessions 19-21).
    """
    have = load_recipe(data_dir)
    if have != recipe:
        raise ValueError(f"dataset {data_dir} was made with another mel recipe than the model's "
                         f"({have} against {recipe})")
    paths = list_split(data_dir, "train")
    if not paths:
        raise ValueError(f"dataset {data_dir} has no training utterances to fit the pitch on")
    files = audio_files(audio)
    utterances = [load_utterance(p) for p in paths] + [prepare_audio(f, recipe) for f in files]
    examples = pitch_examples(utterances, recipe, workers=workers, progress=progress)
    return fit_mel_pitch_net(examples, recipe.n_mels, hidden=hidden, seed=seed,
                             progress=progress)
