"""Waveform synthesis from log-mel frames: sequential, folded (batched) and streaming.

Three ways to run a trained :class:`~dmol.wavenet.model.WaveNet` autoregressively, all on the
step engine of :mod:`dmol.wavenet.incremental` (ring buffers, one matrix product per layer):

* ``mode="incremental"``: one stream, sample after sample, exactly the model's distribution.
  It is :class:`StreamingVocoder` fed the whole mel at once, so streaming and offline output
  are the same numbers for the same seed.
* ``mode="folded"``: the utterance is cut into segments generated side by side as one batch.
  Segment ``s`` starts ``overlap`` samples before its boundary from silence (as an utterance
  does), and that warm-up is crossfaded with the end of segment ``s - 1`` with equal-power
  gains ``cos`` / ``sin`` of a quarter period, so no sample is dropped, repeated or zeroed.
* :class:`StreamingVocoder`: ``push`` mel frames as they arrive, get the audio of every frame
  whose conditioning is complete. The upsampling network looks :attr:`lookahead` frames ahead
  (``cin_pad`` for its input convolution plus what its smoothing convolutions add), so the
  audio of frame ``f`` comes out once frame ``f + lookahead`` has arrived: a fixed latency of
  ``lookahead * hop_length`` samples.

The conditioning of frame ``f`` is always computed from the same window of frames, whatever
pieces the mel arrives in, and the noise of frame ``f`` is always the next ``hop_length`` draws
of one generator: that is what makes streaming output equal offline output.

An LP-WaveNet (``cfg.lpc_order > 0``) also needs each sample's LPC coefficients
(``model.lpc(mel)``, the frame whose centre is nearest: frame ``f``'s audio reads frames ``f``
and ``f + 1``, which the lookahead has already brought). :class:`LpcFrames` computes them in
fixed blocks of :data:`LPC_BLOCK` frames, so a frame's coefficients are the same numbers
however the mel arrived.

Example::

    >>> model, head, recipe, info = load_model("runs/small")
    >>> audio = vocode(model, head, recipe, mel, mode="folded", seed=0)   # mel: (frames, n_mels)
    >>> stream = StreamingVocoder(model, seed=0)
    >>> pieces = [stream.push(mel[i:i + 10]) for i in range(0, len(mel), 10)] + [stream.flush()]

Command line::

    dmol vocode runs/small speech.wav mel.npy --out out/ --mode folded --seed 0
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from dmol.audio.phase import frame_phase, phase_features
from dmol.audio.pitch import PitchTracker, pitch_lags, pitch_scores, resolves_harmonics
from dmol.audio.postfilter import EnvelopePostfilter, PitchPostfilter
from dmol.wavenet.incremental import (
    IncrementalWaveNet,
    _check_temperature,
    cpp_problem,
)
from dmol.wavenet.model import WaveNet

__all__ = [
    "MODES",
    "Conditioner",
    "LpcFrames",
    "StreamingVocoder",
    "make_engine",
    "synthesize_folded",
    "synthesize_incremental",
    "vocode",
]

MODES = ("incremental", "folded")
#: Scale temperature of the command-line tools (vocode, evaluate, demo). Measured on the shipped
#: model (lp-16k-ltp, docs/quality.md): of 1, 0.8, 0.6 and 0.3, 1 (the model's own spread) has
#: the best MCD, log-mel, MR-STFT and F0 error; lower values trade those for voicing and then
#: starve the excitation (the output fades). The first LP model (lp-16k) did best at 0.3.
CLI_SCALE_TEMPERATURE = 1.0
#: Gain of the pitch post-filter (:mod:`dmol.audio.postfilter`) in the command-line tools; the
#: library's default is 0 (the model's own samples). Measured: docs/quality.md, session 9.
CLI_POSTFILTER = 0.7
#: Largest gain (dB) of the envelope post-filter per pass in the command-line tools (library
#: default 0: off), and its passes. Measured: docs/quality.md, session 9.
CLI_ENVELOPE_DB = 6.0
ENVELOPE_PASSES = 2
BACKEND_CHOICES = ("auto", "torch", "compile", "cpp")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
# steps x streams per engine call: the engine holds every layer's projected conditioning of
# a call, MAX_BASE_ROWS * layers * gate_channels floats (r9y9: 8192 * 6144 * 4 B = 200 MB)
MAX_BASE_ROWS = 8192
# mel frames of conditioning computed at a time by Conditioner.chunked
COND_CHUNK = 32
# the largest batch whose engine computes past taps in blocks (make_engine)
AMORTIZE_MAX_BATCH = 16
# an LP model's coefficients are computed this many frames at a time, in blocks aligned to
# multiples of it (always the same shapes: the same numbers whatever pieces the mel came in)
LPC_BLOCK = 32


def make_engine(model: WaveNet, *, backend: str = "auto", dtype: torch.dtype | str = "float32",
                batch: int = 1, threads: int = 1) -> IncrementalWaveNet:
    """An :class:`IncrementalWaveNet` with a backend chosen for ``batch`` streams.

    ``backend="auto"``: on the CPU with a MoL head the C++ kernel (batch 1 is bound by reading
    the weights, which its panel layout streams at memory speed; batches by arithmetic, which
    its register tiles keep busy), or "torch" if no C++ compiler is found; elsewhere (a GPU,
    other heads) eager "torch". ``threads``: threads of the C++ kernel (worth it on idle cores).
    """
    if not isinstance(model, WaveNet):
        raise TypeError(f"expected a WaveNet, got {type(model).__name__}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype == torch.int8 and backend not in ("auto", "cpp"):
        raise ValueError(f"int8 weights run on the C++ kernel only (backend 'cpp'), not "
                         f"{backend!r}")
    if backend == "auto":
        cpu = next(model.parameters()).device.type == "cpu"
        backend = "torch"
        if cpu and model.head.engine_samples:
            problem = cpp_problem()
            if problem is None:
                backend = "cpp"
            elif dtype == torch.int8:  # no fallback: torch has no int8 products
                raise ValueError(f"int8 weights need the C++ kernel: {problem}")
            else:  # the reason, not a guess: a missing compiler and a failed build differ
                warnings.warn(f"{problem}: synthesis runs on the slower 'torch' backend",
                              RuntimeWarning, stacklevel=2)
        elif dtype == torch.int8:
            raise ValueError("int8 weights need the C++ kernel: a MoL head on the CPU")
    # past taps in blocks save weight traffic, which bounds small batches (folding a few
    # seconds makes 5-10 segments); a large batch is bound by arithmetic, and one product
    # over all k taps is then the cheaper layout (r9y9 preset, one thread, float32 / int8
    # samples/s: 5 segments 7,089 / 15,032 blocked against 4,578 / 12,714 not; 30 segments
    # 8,587 / 13,047 against 9,146 / 15,512)
    return IncrementalWaveNet(model, backend=backend, dtype=dtype,
                              amortize=batch <= AMORTIZE_MAX_BATCH, threads=threads)


# ---- conditioning, frame by frame ----------------------------------------------------------
class Conditioner:
    """The model's upsampled conditioning for any range of frames, from a finite window.

    :attr:`lookback` / :attr:`lookahead`: how many frames before / after a frame its
    ``hop_length`` conditioning samples depend on. ``conv_in`` (kernel ``2 cin_pad + 1``) adds
    ``cin_pad`` each way; each stretch level (repeat ``s`` times, then a kernel of ``2 s + 1``
    samples) adds one sample of the level below, which the loop below follows down to frames.
    """

    def __init__(self, model: WaveNet) -> None:
        self.model = model
        self.hop = model.hop_length
        scales, pad = model.upsample_net.scales, model.upsample_net.cin_pad
        ahead = back = 0
        for f in range(4 * math.prod(scales)):  # the pattern repeats; cover a few periods
            hi, lo = (f + 1) * self.hop - 1, f * self.hop
            for s in reversed(scales):
                hi, lo = hi // s + 1, lo // s - 1
            ahead, back = max(ahead, hi - f), max(back, f - lo)
        self.lookahead, self.lookback = ahead + pad, back + pad
        self._kernels: list[Tensor] = []
        self._versions: tuple[int, ...] = ()

    def _phase_kernels(self) -> list[Tensor]:
        """The stretch kernels by phase, made again only when the weights have changed."""
        convs = self.model.upsample_net.stretch
        versions = tuple(c.weight._version for c in convs) + tuple(
            c.weight.data_ptr() for c in convs)
        if versions != self._versions:
            with torch.no_grad():
                self._kernels = [_phase_kernels(c.weight.detach(), s)
                                 for s, c in zip(self.model.upsample_net.scales, convs,
                                                 strict=True)]
            self._versions = versions
        return self._kernels

    @torch.inference_mode()
    def frames(self, mel: Tensor, start: int, stop: int, total: int | None = None) -> Tensor:
        """Conditioning (B, n_mels, (stop - start) hop) of frames ``[start, stop)``.

        ``mel`` (B, n_mels, F) holds frames ``0 .. F-1``; ``total`` is the utterance length
        when its end is known (edge frames are then padded as in ``model.upsample``), else the
        frames must not need more than ``F``. The result equals ``model.upsample(mel)`` over
        those samples up to float rounding (each stretch level by phase, below); each level is
        evaluated only where the next one reads it.
        """
        F_ = mel.shape[-1]
        lo = max(0, start - self.lookback)
        hi = stop + self.lookahead  # exclusive: frame stop - 1 needs up to stop - 1 + lookahead
        if total is not None:
            hi = min(hi, total)
        if hi > F_:
            raise ValueError(f"frames {start}..{stop} need mel frames up to {hi - 1}, have {F_}")
        model, net = self.model, self.model.upsample_net
        x = (mel[..., lo:hi] - model.mel_mean) / model.mel_std
        if net.conv_in is not None:  # replicate padding at the window edge: the real edge, or
            p = net.cin_pad          # out of reach of the frames asked for
            x = net.conv_in(F.pad(x, (p, p), mode="replicate"))
        # sample ranges [a, b) each level must provide, from the output back to the frames
        need = [(start * self.hop, stop * self.hop)]
        for s in reversed(net.scales):
            a, b = need[0]
            need.insert(0, ((a - s) // s, (b - 1 + s) // s + 1))
        a, b = need[0]
        n = None if total is None else total  # length of the current level, if known
        a, b = max(a, 0), b if n is None else min(b, n)
        h, have = x[..., a - lo:b - lo], (a, b)  # values of samples have[0] .. have[1] - 1
        for s, k, (o0, o1) in zip(net.scales, self._phase_kernels(), need[1:], strict=True):
            # output t = q s + p (phase p) reads the level below at q - 1, q, q + 1 only (the
            # stretch repeats each value s times): one (freq, 3) kernel per phase, the sums of
            # the taps that fall on each, on the unstretched values (a third of the products
            # of the stretched convolution, and no stretched copy)
            qa, qb = o0 // s, (o1 - 1) // s + 1
            # values q - 1 .. q + 1; outside 0 .. n - 1 the stretched level is zero padding
            g0 = max(qa - 1, have[0], 0)
            g1 = min(qb + 1, have[1]) if n is None else min(qb + 1, have[1], n)
            hh = F.pad(h[..., g0 - have[0]:g1 - have[0]], (g0 - (qa - 1), (qb + 1) - g1))
            y = F.conv2d(hh.unsqueeze(1), k.to(hh),
                         padding=(k.shape[-2] // 2, 0))  # (B, s, n_mels, qb - qa)
            y = y.permute(0, 2, 3, 1).reshape(y.shape[0], y.shape[2], -1)
            h, have = y[..., o0 - qa * s:o1 - qa * s], (o0, o1)
            n = None if n is None else n * s
        return h

    def chunked(self, mel: Tensor, start: int, stop: int, total: int | None = None) -> Tensor:
        """:meth:`frames` of ``[start, stop)``, computed :data:`COND_CHUNK` frames at a time
        (faster than all at once or frame by frame: docs/scripts/conditioning_speed.py,
        docs/synthesis.md)."""
        return torch.cat([self.frames(mel, a, min(a + COND_CHUNK, stop), total)
                          for a in range(start, stop, COND_CHUNK)], dim=-1)


def _phase_kernels(w: Tensor, s: int) -> Tensor:
    """A stretch-by-s smoothing kernel (1, 1, fk, 2 s + 1) as s kernels (s, 1, fk, 3): phase
    p's taps on the values before, at and after its own (s - p, s and p + 1 taps summed)."""
    w = w[0, 0]
    return torch.stack([torch.stack([w[:, :s - p].sum(-1), w[:, s - p:2 * s - p].sum(-1),
                                     w[:, 2 * s - p:].sum(-1)], -1) for p in range(s)])[:, None]


class LpcFrames:
    """An LP model's per-frame coefficients (``model.lpc``) for frames that arrive over time,
    with pitch taps each frame's pitch period (``model.pitch_lags``), with a phase clock each
    frame's F0 estimate (``model.f0``).

    Frames are computed in blocks ``[i LPC_BLOCK, (i + 1) LPC_BLOCK)``, always a full block
    (frames not yet received are zeros; each frame's coefficients depend on its own mel frame
    only), so the coefficients of a frame are the same numbers whether its block was computed
    at once or again as frames arrived. A tracked F0 estimate (``cfg.pitch_continuity > 0``)
    also depends on the frames before: its :class:`~dmol.audio.pitch.PitchTracker` is fed
    each frame's comb scores once, in order, as the frame arrives. Old blocks are dropped
    with :meth:`forget`.
    """

    def __init__(self, model: WaveNet) -> None:
        if not model.cfg.lpc_order:
            raise ValueError("the model has no linear prediction (lpc_order = 0)")
        self.model, self.order = model, model.cfg.lpc_order
        self.taps = model.cfg.pitch_taps
        self.pitch = bool(self.taps or model.cfg.phase_harmonics)
        self.ceiling = model.cfg.pitch_ceiling
        self.tracker = (PitchTracker(model.recipe, model.cfg.pitch_continuity,
                                     model.cfg.pitch_continuity_ramp, self.ceiling)
                        if self.pitch else None)
        self._tracked = 0  # frames fed to the tracker so far
        # block -> (frames valid, (BLOCK, O) coefficients, (BLOCK,) lags, (BLOCK,) F0 or None)
        self._blocks: dict[int, tuple[int, Tensor, Tensor | None, Tensor | None]] = {}
        self._second: Tensor | None = None  # (hop, 1): the samples nearer frame f + 1

    def frame(self, mel: Tensor, offset: int, received: int, f: int
              ) -> tuple[Tensor, Tensor | None]:
        """Coefficients (order,) and pitch lag (() or None) of frame ``f`` (absolute index,
        below ``received``).

        ``mel`` (1, n_mels, F) holds frames ``offset .. offset + F - 1`` and ``received`` frames
        have arrived (``offset + F``).
        """
        have = self._block(mel, offset, received, f)
        i = f % LPC_BLOCK
        return have[1][i], None if have[2] is None else have[2][i]

    def f0(self, mel: Tensor, offset: int, received: int, f: int) -> float:
        """The F0 estimate (Hz) of frame ``f`` (arguments as :meth:`frame`)."""
        return float(self._block(mel, offset, received, f)[3][f % LPC_BLOCK])

    def _block(self, mel: Tensor, offset: int, received: int, f: int):
        if not 0 <= f < received:
            raise ValueError(f"coefficients of frame {f} asked, {received} received")
        blk, i = divmod(f, LPC_BLOCK)
        have = self._blocks.get(blk)
        if have is None or have[0] <= i:  # (again) with the frames that have arrived
            a0 = blk * LPC_BLOCK
            if a0 < offset:
                raise ValueError(f"frame {a0} was already dropped (kept from {offset})")
            if self.pitch and self._tracked < a0:  # the track reaches this block in order
                self._block(mel, offset, received, a0 - 1)
            n = min(received, a0 + LPC_BLOCK) - a0
            with torch.inference_mode():
                m = mel.new_zeros(1, mel.shape[1], LPC_BLOCK)
                m[..., :n] = mel[..., a0 - offset:a0 - offset + n]
                lags = f0 = None
                if self.pitch:  # frames tracked before keep their estimate; the new ones follow
                    f0 = have[3].clone() if have is not None else m.new_zeros(LPC_BLOCK)
                    t0 = self._tracked - a0
                    s = pitch_scores(m.transpose(1, 2), self.model.recipe,
                                     self.ceiling)[0]  # (BLOCK, C)
                    f0[t0:n] = self.model.refine_f0(
                        self.tracker(s[t0:n])[0], m.transpose(1, 2)[0, t0:n]).to(f0)
                    self._tracked = a0 + n
                    # (unreceived frames: unused)
                    lags = pitch_lags(f0, self.model.cfg.sample_rate, self.ceiling)
                have = self._blocks[blk] = (n, self.model.lpc(m)[0], lags, f0)
        return have

    def samples(self, mel: Tensor, offset: int, received: int, f: int,
                total: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Per-sample coefficients (1, hop, order) and lags ((1, hop) or None) of frame ``f``'s
        samples: the first ``hop - hop // 2`` nearest to frame f's centre, the rest to frame
        f + 1's (clamped to the last of ``total`` frames, as :func:`dmol.audio.lpc.lp_predict`)."""
        hop = self.model.hop_length
        f1 = f + 1 if total is None else min(f + 1, total - 1)
        (a0, l0), (a1, l1) = (self.frame(mel, offset, received, f),
                              self.frame(mel, offset, received, f1))
        if self._second is None:
            self._second = (torch.arange(hop) >= hop - hop // 2)[:, None].to(a0.device)
        lags = None if l0 is None else torch.where(self._second[:, 0], l1, l0)[None]
        return torch.where(self._second, a1, a0)[None], lags

    def forget(self, before: int) -> None:
        """Drop the blocks that hold only frames ``< before``."""
        for blk in [b for b in self._blocks if (b + 1) * LPC_BLOCK <= before]:
            del self._blocks[blk]


def _as_frames(model: WaveNet, frames: np.ndarray | Tensor, recipe=None) -> Tensor:
    """Check (n, n_mels) frames; return them as a float32 CPU tensor."""
    n_mels = model.cfg.n_mels
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu().numpy()
    m = np.asarray(frames)
    if m.ndim != 2 or m.shape[1] != n_mels:
        hint = " (transposed?)" if m.ndim == 2 and m.shape[0] == n_mels else ""
        raise ValueError(f"mel frames must have shape (n, n_mels={n_mels}), got {m.shape}{hint}")
    if m.shape[0] and recipe is not None:
        m = recipe.validate_mel(m)
    if not np.issubdtype(m.dtype, np.floating):
        raise TypeError(f"mel frames must be floating point, got dtype {m.dtype}")
    if not np.isfinite(m).all():
        raise ValueError(f"mel frames contain {int((~np.isfinite(m)).sum())} NaN/inf value(s)")
    return torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))


# ---- streaming and sequential --------------------------------------------------------------
class StreamingVocoder:
    """Mel frames in, audio out, with a fixed latency of :attr:`lookahead` frames.

    Args:
        model: the trained WaveNet (eval mode).
        seed: seeds the sampling noise (a ``torch.Generator``).
        temperature: divides the mixture logits (0: most probable component).
        scale_temperature: multiplies the components' scales (0: the component's mean; for
            an LP model, the mean plus the prediction).
        backend, dtype, threads: see :func:`make_engine`.
        speaker: integer speaker id for a multi-speaker model.
        recipe: if given, pushed frames are checked with ``recipe.validate_mel``.
        postfilter: gain of the pitch post-filter applied to the output
            (:class:`dmol.audio.postfilter.PitchPostfilter`, periods near the mel's F0
            estimate); 0 (the default) returns the model's samples unchanged.
        envelope: the largest correction (dB) of the envelope post-filter, which brings the
            output's mel to the given mel (:class:`dmol.audio.postfilter.EnvelopePostfilter`,
            :data:`ENVELOPE_PASSES` passes after the pitch post-filter); 0 (the default): off.
            Each pass delays the output by ``EnvelopePostfilter.latency`` samples (``n_fft -
            hop`` when ``hop`` divides ``n_fft / 2``), counted in :attr:`latency_samples`.

    Frames are (n, n_mels) arrays (the layout of :meth:`MelRecipe.compute`). ``push``
    returns the float32 audio of every frame whose lookahead has now arrived (possibly none);
    ``flush`` ends the utterance and returns the rest.

    Example::

        >>> stream = StreamingVocoder(model, seed=0)
        >>> a = stream.push(mel[:7]); b = stream.push(mel[7:]); c = stream.flush()
        >>> np.concatenate([a, b, c]).shape == (len(mel) * model.hop_length,)
        True
    """

    def __init__(self, model: WaveNet, *, seed: int = 0, temperature: float = 1.0,
                 scale_temperature: float = 1.0,
                 backend: str = "auto", dtype: torch.dtype | str = "float32",
                 threads: int = 1, speaker: int | None = None, recipe=None,
                 postfilter: float = 0.0, envelope: float = 0.0,
                 engine: IncrementalWaveNet | None = None) -> None:
        self.post = _postfilter(model, postfilter)
        self._post_f0 = _FrameF0(model)
        self.envelope = _envelope(model, envelope)
        self.temperature = _check_temperature("temperature", temperature)
        self.scale_temperature = _check_temperature("scale_temperature", scale_temperature)
        self.model, self.recipe = model, recipe
        self.engine = engine or make_engine(model, backend=backend, dtype=dtype, batch=1,
                                            threads=threads)
        self.cond = Conditioner(model)
        self.lookahead, self.hop = self.cond.lookahead, model.hop_length
        # LP: frame f's last hop // 2 samples use frame f + 1's coefficients, which must have
        # arrived with frame f's conditioning (lookahead >= cin_pad >= 1)
        self.lpc = LpcFrames(model) if model.cfg.lpc_order else None
        if self.lpc is not None and self.lookahead < 1:
            raise ValueError("an LP model needs a lookahead of at least one frame (cin_pad >= 1)")
        self.generator = torch.Generator().manual_seed(int(seed))
        sp = None if speaker is None else torch.tensor([int(speaker)])
        self.state = self.engine.new_state(1, speaker=sp)
        self._device = self.engine.device
        n_mels = model.cfg.n_mels
        self._mel = torch.empty(1, n_mels, 0, device=self._device)  # frames offset ..
        self._offset = 0  # index of the first frame kept in _mel
        self._received = 0  # frames pushed so far
        self._done = 0  # frames whose audio has been returned
        self._closed = False
        self._last: Tensor | None = None  # pre-emphasis: the last audio sample (float64)
        self._phase = 0.0  # phase clock: the phase (cycles) at frame _done's first sample
        # per frame done and not yet output: the post-filter's F0 and the envelope's mel
        self._post_frames: list[tuple[np.ndarray | None, np.ndarray | None]] = []

    @property
    def latency_samples(self) -> int:
        """Audio samples between a frame's arrival and the end of its audio (algorithmic)."""
        return self.lookahead * self.hop + sum(e.latency for e in self.envelope)

    def push(self, frames: np.ndarray | Tensor) -> np.ndarray:
        """Add (n, n_mels) frames; return the audio now complete, float32 (m * hop_length,)."""
        if self._closed:
            raise RuntimeError("this stream was flushed; start a new StreamingVocoder")
        m = self._check(frames)
        if m.shape[0]:
            self._mel = torch.cat([self._mel, m.T[None].to(self._device)], dim=-1)
            self._received += m.shape[0]
        return self._generate(self._received - self.lookahead, total=None)

    def flush(self) -> np.ndarray:
        """End of utterance: return the audio of the remaining frames."""
        if self._closed:
            raise RuntimeError("this stream was already flushed")
        self._closed = True
        return self._generate(self._received, total=self._received)

    def _check(self, frames: np.ndarray | Tensor) -> Tensor:
        return _as_frames(self.model, frames, self.recipe)

    def _with_clock(self, c: Tensor | None, f: int, total: int | None) -> Tensor:
        """Frame f's conditioning with the phase clock's features appended (and the clock
        moved to the next frame): :func:`dmol.audio.phase.frame_phase` of frames f, f + 1;
        the features alone for ``c=None``."""
        f1 = f + 1 if total is None else min(f + 1, total - 1)
        args = (self._mel, self._offset, self._received)
        phi, self._phase = frame_phase(self._phase, self.lpc.f0(*args, f), self.lpc.f0(*args, f1),
                                       self.hop, self.model.cfg.sample_rate)
        feats = phase_features(phi[None], self.model.cfg.phase_harmonics)
        return feats if c is None else torch.cat([c, feats.to(c)], dim=1)

    def _next_frame(self, total: int | None, conditioning: bool = True
                    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Frame ``_done``'s engine inputs, which then counts as done: conditioning
        (1, cin, hop) (``conditioning=False``: the phase clock's features alone, or None), LP
        coefficients (1, hop, order) and pitch lags (1, hop), or None. The post-filters' F0
        and mel of the frame go to :attr:`_post_frames`."""
        f, off = self._done, self._offset
        self._post_frames.append((
            self._post_f0(self._mel[..., f - off:f - off + 1]) if self.post is not None else None,
            self._mel[0, :, f - off].cpu().numpy() if self.envelope else None))
        tot = None if total is None else total - off
        c = self.cond.frames(self._mel, f - off, f - off + 1, tot) if conditioning else None
        lpc = lags = None
        if self.lpc is not None:  # frames f and f + 1 (lookahead >= 1: it is here)
            lpc, lags = self.lpc.samples(self._mel, off, self._received, f, total)
        if self.model.cfg.phase_harmonics:
            c = self._with_clock(c, f, total)
        self._done += 1
        # keep only the frames later windows (and LPC blocks) can still read
        keep = self._keep_from()
        if self.lpc is not None:
            keep = min(keep, self._done // LPC_BLOCK * LPC_BLOCK)
            self.lpc.forget(self._done)
        drop = keep - self._offset
        if drop > 64:
            self._mel = self._mel[..., drop:].contiguous()
            self._offset += drop
        return c, lpc, lags

    def _keep_from(self) -> int:
        """The first mel frame later conditioning windows can read."""
        return self._done - self.cond.lookback

    def _generate(self, until: int, total: int | None,
                  callback: Callable[[int], None] | None = None) -> np.ndarray:
        """Generate frames ``_done .. until - 1``, one frame per engine call."""
        out = []
        with torch.inference_mode():
            while self._done < until:
                c, lpc, lags = self._next_frame(total)
                # drawn for every head (other heads then draw from the generator in the step)
                noise = self.engine.draw_noise(self.hop, 1, generator=self.generator,
                                               temperature=self.temperature,
                                               scale_temperature=self.scale_temperature)
                x = self.engine.run(self.state, c, noise=noise, generator=self.generator,
                                    temperature=self.temperature,
                                    scale_temperature=self.scale_temperature, lpc=lpc,
                                    lags=lags,
                                    callback=callback)
                out.append(x[0].float().cpu().numpy())
        return self._finish(np.concatenate(out) if out else np.zeros(0, np.float32),
                            final=total is not None)

    def _finish(self, signal: np.ndarray, final: bool) -> np.ndarray:
        """The model's samples of the next whole frames (in order) to output audio:
        de-emphasis, the clip, the post-filters (which keep their state from call to call)."""
        frames = len(signal) // self.hop
        post, self._post_frames = self._post_frames[:frames], self._post_frames[frames:]
        if not frames:
            empty = np.zeros(0, np.float32)
            return _run_envelope(self.envelope, empty, np.zeros((0, self.model.cfg.n_mels)),
                                 final)
        if self.model.cfg.preemphasis:
            # the filter's state in float64, so that any split into pushes gives the same audio
            audio = self.model.deemphasize(torch.from_numpy(signal).double(), prev=self._last)
            self._last = audio[-1:].clone()  # the filter's state stays unclipped
            signal = audio.float().numpy()
        # an LP stream is unclipped (incremental.py, above sample_mol) and de-emphasis can
        # leave [-1, 1] too (a wander at 0 Hz gains up to (1 + alpha) / (1 - alpha))
        signal = np.clip(signal, -1.0, 1.0)
        # the post-filter is causal and keeps its state: frame by frame, pushes change nothing
        if self.post is not None:
            f0 = [f for f, _ in post]
            signal = self.post(signal, None if f0[0] is None else np.concatenate(f0))
        return _run_envelope(self.envelope, signal, np.array([m for _, m in post]), final)


def synthesize_incremental(model: WaveNet, mel: np.ndarray | Tensor, *, seed: int = 0,
                           temperature: float = 1.0, scale_temperature: float = 1.0,
                           backend: str = "auto",
                           dtype: torch.dtype | str = "float32", threads: int = 1,
                           speaker: int | None = None, progress: bool = False,
                           postfilter: float = 0.0, envelope: float = 0.0,
                           engine: IncrementalWaveNet | None = None) -> np.ndarray:
    """Sequential synthesis of a whole (frames, n_mels) mel: (frames * hop_length,) float32.

    The same numbers as pushing the mel into a :class:`StreamingVocoder` in any pieces.
    """
    stream = StreamingVocoder(model, seed=seed, temperature=temperature,
                              scale_temperature=scale_temperature, backend=backend,
                              dtype=dtype, threads=threads, speaker=speaker,
                              postfilter=postfilter, envelope=envelope, engine=engine)
    m = stream._check(mel)
    stream._mel = m.T[None].to(stream._device).contiguous()
    stream._received = m.shape[0]
    stream._closed = True
    with _progress(progress, m.shape[0] * stream.hop, "vocoding") as bar:
        return stream._generate(stream._received, total=stream._received, callback=bar)


# ---- folded (batched) synthesis ------------------------------------------------------------
def segment_plan(T: int, segment: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, boundary, stop)`` per segment: generate ``[start, stop)``, own ``[boundary,
    stop)``; ``[start, boundary)`` (``overlap`` samples, none for the first) is crossfaded."""
    if segment < 1 or overlap < 0:
        raise ValueError(f"need segment >= 1 and overlap >= 0, got {segment}, {overlap}")
    if overlap >= segment:
        raise ValueError(f"overlap ({overlap}) must be shorter than a segment ({segment})")
    bounds = list(range(0, T, segment)) + [T]
    return [(max(0, b - overlap), b, e) for b, e in zip(bounds[:-1], bounds[1:], strict=True)]


def crossfade(pieces: list[Tensor], plan: list[tuple[int, int, int]], T: int) -> Tensor:
    """Join segment outputs (each ``stop - start`` samples) with equal-power crossfades.

    Over ``[start, boundary)`` of segment ``s`` the output is ``cos(pi/2 tau) prev +
    sin(pi/2 tau) cur`` with ``tau`` rising from 0 to 1; not clipped (the caller clips the
    audio once, after de-emphasis).
    """
    out = torch.zeros(T)
    for x, (start, b, stop) in zip(pieces, plan, strict=True):
        out[b:stop] = x[b - start:]
        if b > start:
            # gains cos, sin of a quarter period: cos^2 + sin^2 = 1 keeps the power of two
            # unrelated signals; (n + 0.5) / X keeps both gains off exactly 0 and 1
            tau = (torch.arange(b - start) + 0.5) / (b - start)
            fade_in, fade_out = torch.sin(0.5 * math.pi * tau), torch.cos(0.5 * math.pi * tau)
            out[start:b] = out[start:b] * fade_out + x[:b - start] * fade_in
    return out


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def run_rows(engine: IncrementalWaveNet, state, steps: int, rows: int,
             inputs: Callable[[int, int], tuple[Tensor, Tensor | None, Tensor | None]], *,
             generator: torch.Generator, temperature: float, scale_temperature: float,
             done: Callable[[int, int], None] | None = None) -> Tensor:
    """``steps`` steps of ``rows`` streams side by side, :data:`MAX_BASE_ROWS` rows x steps
    per engine call: ``inputs(j0, j1)`` gives steps ``[j0, j1)``'s conditioning (rows, cin,
    j1 - j0) and LP coefficients and lags (or None), ``done(j0, j1)`` is told when they ran.
    Returns the samples (rows, steps) float32 on the CPU. The noise of each call is drawn in
    order from ``generator`` (folded synthesis and the folded stream draw alike)."""
    outs, chunk = [], max(1, MAX_BASE_ROWS // rows)
    for j0 in range(0, steps, chunk):
        j1 = min(steps, j0 + chunk)
        c, lpc, lags = inputs(j0, j1)
        noise = engine.draw_noise(j1 - j0, rows, generator=generator, temperature=temperature,
                                  scale_temperature=scale_temperature)
        outs.append(engine.run(state, c, noise=noise, generator=generator,
                               temperature=temperature, scale_temperature=scale_temperature,
                               lpc=lpc, lags=lags).float().cpu())
        if done is not None:
            done(j0, j1)
    return torch.cat(outs, dim=1)


def folded_plan(model: WaveNet, frames: int, *, segment_seconds: float | None = None,
                overlap_seconds: float = 0.05, max_batch: int = 32,
                threads: int = 1) -> list[tuple[int, int, int]]:
    """The segments :func:`synthesize_folded` cuts ``frames`` mel frames into (its arguments):
    ``(start, boundary, stop)`` samples each (:func:`segment_plan`).

    By default ``T / max_batch`` samples, but at least 8 overlaps (the warm-ups cost at most
    1/8 more steps). With ``threads`` kernel threads each thread runs its share of the segments
    and reads every weight once per step, so short utterances are cut finer: up to 6 segments
    per thread, at least 3 overlaps long, their count a multiple of ``threads`` (2 s at 22.05
    kHz on 2 threads: 12 segments, where 1 thread gets 5; r9y9 preset, int8, 2 threads: 12
    streams take 364 us per step, 6 streams 252, docs/synthesis.md). The segments, and so
    the audio of a seed, then depend on ``threads``: give ``segment_seconds`` for audio that
    does not.
    """
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    if frames == 0:
        raise ValueError("mel has 0 frames")
    sr, T = model.cfg.sample_rate, frames * model.hop_length
    overlap = max(0, round(overlap_seconds * sr))
    if segment_seconds is None:
        segment = max(math.ceil(T / max_batch), 8 * overlap, model.hop_length)
        if threads > 1:
            n = math.ceil(T / segment)
            fit = max(1, T // max(3 * overlap, model.hop_length))  # segments >= 3 overlaps
            n = max(n, min(max_batch, 6 * threads, fit))
            if math.ceil(n / threads) * threads <= min(max_batch, fit):
                n = math.ceil(n / threads) * threads
            segment = math.ceil(T / n)
    elif not segment_seconds > 0:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds!r}")
    else:
        segment = max(1, round(segment_seconds * sr))
    return segment_plan(T, segment, min(overlap, segment - 1))


def synthesize_folded(model: WaveNet, mel: np.ndarray | Tensor, *, seed: int = 0,
                      temperature: float = 1.0, scale_temperature: float = 1.0,
                      segment_seconds: float | None = None,
                      overlap_seconds: float = 0.05, max_batch: int = 32,
                      backend: str = "auto", dtype: torch.dtype | str = "float32",
                      threads: int | None = None, speaker: int | None = None,
                      progress: bool = False, postfilter: float = 0.0, envelope: float = 0.0,
                      engine: IncrementalWaveNet | None = None) -> np.ndarray:
    """Folded synthesis: segments generated in parallel, joined by equal-power crossfades.

    Args:
        mel: (frames, n_mels).
        segment_seconds: length of each segment; default: the utterance split into
            ``max_batch`` segments, but at least 8 overlaps long.
        overlap_seconds: warm-up of each segment (after the first), crossfaded with the end
            of the previous one. Longer than the receptive field is a good choice.
        max_batch: the most segments generated at once (more run in rounds).
        threads: C++ kernel threads, each running its share of the segments (default: torch's
            thread count); the conditioning network runs on at least as many torch threads.
        postfilter, envelope: the post-filters on the joined output (0: none), as
            :class:`StreamingVocoder`.

    An LP model's segments each start from silence, their prediction from their own past, with
    the coefficients of the utterance's frames (``model.lpc``). With pre-emphasis the segments
    are joined in the model's signal domain and the whole is de-emphasized.

    Returns:
        (frames * hop_length,) float32.
    """
    temperature = _check_temperature("temperature", temperature)
    scale_temperature = _check_temperature("scale_temperature", scale_temperature)
    post, stages = _postfilter(model, postfilter), _envelope(model, envelope)
    hop = model.hop_length
    m = _as_frames(model, mel)
    F_ = m.shape[0]
    T = F_ * hop
    threads = (engine.threads if engine is not None else
               torch.get_num_threads() if threads is None else threads)
    plan = folded_plan(model, F_, segment_seconds=segment_seconds,
                       overlap_seconds=overlap_seconds, max_batch=max_batch, threads=threads)
    e = engine or make_engine(model, backend=backend, dtype=dtype,
                              batch=min(len(plan), max_batch), threads=threads)
    cond = Conditioner(model)
    g = torch.Generator().manual_seed(int(seed))
    sp = None if speaker is None else torch.tensor([int(speaker)])
    mel_t = m.T[None].to(e.device)
    # the conditioning network runs once over the whole utterance, a batched convolution: on
    # the kernel's threads too (r9y9 preset, 2 s on 2 cores: a tenth of the time on one)
    with torch.inference_mode(), _torch_threads(max(torch.get_num_threads(), threads)):
        c = cond.chunked(mel_t, 0, F_, F_)  # (1, n_mels, T)
        if model.cfg.phase_harmonics:  # the utterance's clock: every segment reads its slice
            c = torch.cat([c, phase_features(model.clock_phase(mel_t),
                                             model.cfg.phase_harmonics).to(c)], dim=1)
        c = c[0]  # (cin, T)
        a_lpc = model.lpc(mel_t)[0] if model.cfg.lpc_order else None  # (F, order)
        f_lags = model.pitch_lags(mel_t)[0] if model.cfg.pitch_taps else None  # (F,)
    pieces: list[Tensor] = []
    with _progress(progress, sum(stop - start for start, _, stop in plan), "vocoding") as bar:
        for r0 in range(0, len(plan), max_batch):
            rnd = plan[r0:r0 + max_batch]
            B = len(rnd)
            steps = max(stop - start for start, _, stop in rnd)
            state = e.new_state(B, speaker=None if sp is None else sp.expand(B))
            # time index of every (segment, step); past the utterance end: the last frame's
            # conditioning (those samples are dropped)
            starts = torch.tensor([start for start, _, _ in rnd])

            def inputs(j0: int, j1: int, starts=starts) -> tuple:
                t_idx = (starts[:, None] + torch.arange(j0, j1)[None]).clamp(max=T - 1)
                lpc = lags = None
                if a_lpc is not None:  # each sample's nearest frame, as _frame_of_sample
                    fr = ((t_idx + hop // 2) // hop).clamp(max=F_ - 1).to(a_lpc.device)
                    lpc = a_lpc[fr]  # (B, steps, order)
                    lags = None if f_lags is None else f_lags[fr]  # (B, steps)
                return c[:, t_idx.to(c.device)].permute(1, 0, 2), lpc, lags  # (B, cin, steps)

            def done(j0: int, j1: int, rnd=rnd) -> None:
                if bar is not None:
                    bar(sum(max(0, min(j1, stop - start) - j0) for start, _, stop in rnd))

            x = run_rows(e, state, steps, B, inputs, generator=g, temperature=temperature,
                         scale_temperature=scale_temperature, done=done)
            pieces += [x[i, :stop - start] for i, (start, _, stop) in enumerate(rnd)]
    signal = crossfade(pieces, plan, T)
    if model.cfg.preemphasis:
        signal = model.deemphasize(signal.double()).float()
    # two segments in phase add up to sqrt(2) times their level, an LP stream is unclipped,
    # de-emphasis can gain: the audio is clipped once, here
    signal = signal.clamp(-1.0, 1.0)
    out = signal.numpy() if post is None else post(signal.numpy(), _FrameF0(model)(mel_t))
    return _run_envelope(stages, out, m.cpu().numpy(), final=True)


def _number(value: Any) -> float:
    """``float(value)`` for a real number; NaN for anything else (bools and strings too)."""
    if isinstance(value, bool | np.bool_ | str | bytes):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_postfilter_settings(postfilter: float, envelope: float) -> tuple[float, float]:
    """The post-filter settings as floats, or a ValueError naming the bad one: ``postfilter``
    a gain in [0, 1], ``envelope`` a finite gain in dB >= 0 (checked before any long work)."""
    g, db = _number(postfilter), _number(envelope)
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"postfilter must be a gain in [0, 1], got {postfilter!r}")
    if not (math.isfinite(db) and db >= 0.0):
        raise ValueError(f"envelope must be a finite gain in dB >= 0, got {envelope!r}")
    return g, db


def _postfilter(model: WaveNet, gain: float) -> PitchPostfilter | None:
    """The pitch post-filter of gain ``gain`` for the model's audio, or None for gain 0."""
    g, _ = check_postfilter_settings(gain, 0.0)
    return None if g == 0.0 else PitchPostfilter(model.cfg.sample_rate, model.hop_length, gain=g,
                                                 f0_max=model.cfg.pitch_ceiling)


def _envelope(model: WaveNet, max_gain_db: float) -> list[EnvelopePostfilter]:
    """The envelope post-filter's passes for the model's mel, or [] for 0 dB."""
    _, db = check_postfilter_settings(0.0, max_gain_db)
    if db == 0.0:
        return []
    if model.recipe is None:
        raise ValueError("the envelope post-filter needs the model's mel recipe (none given)")
    return [EnvelopePostfilter(model.recipe, max_gain_db=db) for _ in range(ENVELOPE_PASSES)]


def _run_envelope(stages: list[EnvelopePostfilter], audio: np.ndarray, mel: np.ndarray,
                  final: bool) -> np.ndarray:
    """Audio through the envelope passes in a row, each given the same mel frames."""
    for stage in stages:
        audio = stage(audio, mel)
        if final:
            audio = np.concatenate([audio, stage.flush()])
    return audio.astype(np.float32, copy=False)


class _FrameF0:
    """The post-filter's F0 estimates (F,) of (1, n_mels, F) mels given in order, the model's
    own (tracked with its ``pitch_continuity``), scored one frame at a time: always the same
    shapes, so the same numbers however the frames arrived. None when the model's mel is too
    coarse to resolve harmonics, or unknown (no recipe): the post-filter then searches every
    period."""

    def __init__(self, model: WaveNet) -> None:
        self.recipe = model.recipe
        if self.recipe is not None and not resolves_harmonics(self.recipe):
            self.recipe = None
        self.ceiling = model.cfg.pitch_ceiling
        self.refine = model.refine_f0
        self.tracker = (None if self.recipe is None
                        else PitchTracker(self.recipe, model.cfg.pitch_continuity,
                                          model.cfg.pitch_continuity_ramp, self.ceiling))

    def __call__(self, mel: Tensor) -> np.ndarray | None:
        if self.tracker is None:
            return None
        with torch.inference_mode():
            frames = mel[0].T[:, None, None, :]  # (F, 1, 1, n_mels): one frame per call
            f0 = torch.cat([self.tracker(pitch_scores(m, self.recipe, self.ceiling))[0][0]
                            for m in frames])
            # the learned estimate is per frame: all frames at once give the same numbers
            return self.refine(f0, mel[0].T).double().numpy().reshape(-1)


# ---- the public entry point ----------------------------------------------------------------
def vocode(model: WaveNet, head, recipe, mel: np.ndarray | Tensor, *, mode: str = "incremental",
           seed: int = 0, temperature: float = 1.0, scale_temperature: float = 1.0,
           progress: bool = True,
           backend: str = "auto", dtype: torch.dtype | str = "float32",
           threads: int | None = None,
           speaker: int | None = None, postfilter: float = 0.0, envelope: float = 0.0,
           **folded: Any) -> np.ndarray:
    """Synthesize the waveform of a (frames, n_mels) log-mel: float32 (frames * hop_length,).

    Args:
        model, head, recipe: as returned by :func:`dmol.wavenet.checkpoint.load_model`
            (``head`` must be the model's head; ``recipe`` checks the mel and the model agree).
        mel: (frames, n_mels) from ``recipe.compute``.
        mode: "incremental" (sequential, exact) or "folded" (segments in parallel).
        seed: the same seed gives the same audio (same mode, backend and dtype).
        temperature: divides the mixture logits (0: most probable component).
        scale_temperature: multiplies the components' scales (0: the component's mean, plus
            the prediction for an LP model); both finite and >= 0.
        progress: show a tqdm bar.
        backend, dtype: see :func:`make_engine`; float32 is exact, bfloat16 faster.
        threads: C++ kernel threads; default 1 for "incremental" (splitting one stream pays
            off only on idle cores), torch's thread count for "folded" (split by segments).
        postfilter: gain in [0, 1] of the pitch post-filter on the output
            (:mod:`dmol.audio.postfilter`); 0, the default, returns the model's own samples.
            The command-line tools use :data:`CLI_POSTFILTER`.
        envelope: the largest correction in dB of the envelope post-filter, which brings the
            output's mel to ``mel`` (:class:`StreamingVocoder`); 0, the default: off. The
            command-line tools use :data:`CLI_ENVELOPE_DB`.
        **folded: ``segment_seconds``, ``overlap_seconds``, ``max_batch`` for folded mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
    temperature = _check_temperature("temperature", temperature)
    scale_temperature = _check_temperature("scale_temperature", scale_temperature)
    if not isinstance(model, WaveNet):
        raise TypeError(f"model must be a WaveNet, got {type(model).__name__}")
    if head is not None and (type(head) is not type(model.head)
                             or head.config() != model.head.config()):
        raise ValueError(f"head {head!r} is not the model's head {model.head!r}")
    if recipe is not None:
        _check_recipe(model, recipe)
        mel = recipe.validate_mel(mel.detach().cpu().numpy() if isinstance(mel, Tensor) else mel)
    if mode == "folded":
        return synthesize_folded(model, mel, seed=seed, temperature=temperature,
                                 scale_temperature=scale_temperature, backend=backend,
                                 dtype=dtype, threads=threads, speaker=speaker,
                                 progress=progress, postfilter=postfilter, envelope=envelope,
                                 **folded)
    if folded:
        raise TypeError(f"options {sorted(folded)} only apply to mode='folded'")
    return synthesize_incremental(model, mel, seed=seed, temperature=temperature,
                                  scale_temperature=scale_temperature, backend=backend,
                                  dtype=dtype, threads=threads or 1, speaker=speaker,
                                  progress=progress, postfilter=postfilter, envelope=envelope)


def _check_recipe(model: WaveNet, recipe) -> None:
    bad = model.cfg.recipe_mismatches(recipe)
    if bad:
        name, got, want = bad[0]
        raise ValueError(f"the mel recipe has {name}={got} but the model expects {want}: "
                         f"model and features do not belong together")


class _progress:
    """A tqdm bar as a callback ``bar(n_done)``, or None when disabled."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.enabled, self.total, self.desc, self.bar = enabled, total, desc, None

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar = tqdm(total=self.total, desc=self.desc, unit="sample", unit_scale=True,
                        leave=False, file=sys.stderr)
        return self.bar.update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
