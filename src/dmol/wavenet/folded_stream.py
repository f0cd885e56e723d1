"""Streaming at the speed of folded synthesis: mel frames in, audio out a block at a time.

:class:`~dmol.wavenet.synthesis.StreamingVocoder` runs one stream, sample after sample: its
latency is the conditioning's lookahead (tens of ms), but its speed is that of batch-1 steps,
which read every weight of the network once per sample. For a large network that traffic,
not the arithmetic, sets the pace (r9y9 preset, int8 weights: 2.2 MB per step, ~124 us on one
core, where 22.05 kHz real time needs 45 us; docs/synthesis.md). Folded synthesis reads each
weight once per step for a whole batch of segments.

:class:`FoldedStreamingVocoder` brings that to a stream: the audio is made one *block* of
frames at a time, as soon as the block's frames (and the lookahead after them) have arrived,
its samples cut into ``segments`` parts generated side by side. Each part starts ``overlap``
samples early from silence and that warm-up is crossfaded with the end of the part before, as
in :func:`~dmol.wavenet.synthesis.synthesize_folded`; across blocks too: a block's last part
runs ``overlap`` samples past the block, and the next block's first part fades in over them.
Latency: the block, the overlap and the lookahead, plus the time to compute a block. The
per-frame inputs (phase clock, LP coefficients, pitch lags, tracked pitch, the post-filters'
F0 and mel) come from the one-stream vocoder's code, frame by frame as frames arrive; the
mel's conditioning is computed a block at a time.

Example::

    >>> stream = FoldedStreamingVocoder(model, block_seconds=2.0, segments=12, threads=2,
    ...                                 dtype="int8")
    >>> audio = [stream.push(mel[i:i + 10]) for i in range(0, len(mel), 10)] + [stream.flush()]
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

from dmol.wavenet.model import WaveNet
from dmol.wavenet.synthesis import (
    StreamingVocoder,
    _torch_threads,
    crossfade,
    make_engine,
    run_rows,
)

__all__ = ["FoldedStreamingVocoder", "block_plan"]


def _real(x) -> bool:
    """A finite real number (not a bool)."""
    return (isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)
            and math.isfinite(x))


def block_plan(b0: int, b1: int, end: int, segments: int, overlap: int,
               warm0: int = 0) -> list[tuple[int, int, int]]:
    """The parts that make samples ``[b0, b1)`` of a stream (and ``[b1, end)`` for the next
    block to fade into): ``(start, boundary, stop)`` each, as :func:`crossfade` takes them.

    At most ``segments`` parts, each at least two overlaps long, all of about the same number
    of steps G (a batch runs as long as its longest part): part 0 generates ``[b0, b0 + G)``,
    its first ``warm0`` samples faded in over the previous block's tail (0 at the start of a
    stream); part i > 0 starts ``overlap`` samples before its boundary; the last ends at
    ``end``. ``n G - (n - 1) overlap`` covers ``end - b0``.
    """
    n = min(segments, max(1, (b1 - b0) // (2 * max(overlap, 1))))
    G = math.ceil((end - b0 + (n - 1) * overlap) / n)
    plan, a = [], b0
    for i in range(n):
        start = b0 if i == 0 else a - overlap
        stop = end if i == n - 1 else min(end, start + G)
        plan.append((start, b0 + warm0 if i == 0 else a, stop))
        a = stop
    return plan


class FoldedStreamingVocoder(StreamingVocoder):
    """Mel frames in, audio out, one block of frames at a time, folded into segments.

    Args:
        model: the trained WaveNet (eval mode).
        block_seconds: audio made per block (rounded to whole frames); the latency grows with it.
        segments: parts of a block generated side by side (the engine's batch); default 6 per
            kernel thread (each thread then reads every weight once per step for 6 streams).
        overlap_seconds: each part's warm-up, crossfaded with the end of the part before it
            (rounded up to whole frames, so that whole frames come out).
        threads: C++ kernel threads (each runs its share of the segments).
        seed, temperature, scale_temperature, backend, dtype, speaker, recipe, postfilter,
        envelope: as :class:`~dmol.wavenet.synthesis.StreamingVocoder`.

    ``push`` returns the audio now final: whole frames, in order, possibly none; ``flush``
    the rest. :attr:`latency_samples` counts the frames that must arrive after a frame before
    its audio can be made (the block's and the lookahead), not the compute time.
    """

    def __init__(self, model: WaveNet, *, block_seconds: float = 2.0,
                 segments: int | None = None, overlap_seconds: float = 0.05, threads: int = 2,
                 backend: str = "auto", dtype: torch.dtype | str = "float32",
                 **options) -> None:
        if "engine" in options:
            raise TypeError("FoldedStreamingVocoder builds its own engine (batch = segments)")
        hop, sr = model.hop_length, model.cfg.sample_rate
        if not _real(block_seconds) or not block_seconds > 0:
            raise ValueError(f"block_seconds must be a positive number, got {block_seconds!r}")
        if not _real(overlap_seconds) or not overlap_seconds >= 0:
            raise ValueError(f"overlap_seconds must be a number >= 0, got {overlap_seconds!r}")
        self.block = max(1, round(block_seconds * sr / hop))  # frames
        self.overlap = math.ceil(overlap_seconds * sr / hop) * hop  # samples, whole frames
        fit = self.block * hop // (2 * max(self.overlap, 1))  # parts of >= 2 overlaps
        if segments is None:  # 6 per thread, as many as fit, a multiple of the threads
            th = max(1, int(threads))
            segments = max(1, min(6 * th, fit) // th * th) if fit >= th else max(1, fit)
        elif isinstance(segments, bool | np.bool_) or not isinstance(segments, numbers.Integral) \
                or segments < 1:
            raise ValueError(f"segments must be a positive integer, got {segments!r}")
        elif segments > fit:
            raise ValueError(f"a block of {self.block * hop} samples is too short for "
                             f"{segments} segments of at least two overlaps "
                             f"({self.overlap} samples) each: give a longer block_seconds, "
                             f"fewer segments or a shorter overlap_seconds")
        segments = int(segments)
        self.segments = segments
        engine = make_engine(model, backend=backend, dtype=dtype, batch=segments,
                             threads=threads)
        self.threads = threads
        super().__init__(model, engine=engine, **options)
        self._speaker = options.get("speaker")
        # per-sample inputs of the frames done, from sample _base on: phase clock features
        # (1, 2 H, hop), LP coefficients (1, hop, O) and lags (1, hop) per frame, or None
        # (the mel's conditioning is computed a block at a time, when the block runs)
        self._inputs: list[tuple[Tensor | None, Tensor | None, Tensor | None]] = []
        self._base = 0  # the sample the first kept frame's inputs start at
        self._made = 0  # samples of the stream whose blocks have run (a block boundary)
        self._tail: Tensor | None = None  # the last part's own samples of [_made - overlap, _made)

    @property
    def latency_samples(self) -> int:
        """Samples from a frame's arrival to the earliest its audio can be made: the rest of
        its block, the overlap after it and the lookahead (the first frame of a block waits
        longest), plus the envelope post-filter's delay; a block's compute time comes on top."""
        return (self.block - 1 + self.lookahead) * self.hop + self.overlap + sum(
            e.latency for e in self.envelope)

    def _generate(self, until: int, total: int | None, callback=None) -> np.ndarray:
        out, ovf = [], self.overlap // self.hop
        with torch.inference_mode():
            while self._done < until:  # every frame's inputs, as soon as it can be computed
                self._inputs.append(self._next_frame(total, conditioning=False))
            while True:
                frames = self._done - self._made // self.hop  # prepared, not yet made
                if total is not None and frames <= self.block + ovf:
                    if frames:  # the last block: to the end of the utterance
                        out.append(self._run_block(total * self.hop, total * self.hop, total))
                    break
                if frames < self.block + ovf:
                    break
                b1 = self._made + self.block * self.hop
                out.append(self._run_block(b1, b1 + self.overlap, total))
        return self._finish(np.concatenate(out) if out else np.zeros(0, np.float32),
                            final=total is not None)

    def _keep_from(self) -> int:
        # the next block's conditioning reads from its first frame's lookback on
        return min(super()._keep_from(), self._made // self.hop - self.cond.lookback)

    def _run_block(self, b1: int, end: int, total: int | None) -> np.ndarray:
        """Make samples ``[b0, b1)`` final (``b0`` where the last block ended) by generating
        ``[b0, end)`` as parts side by side: part 0 starts at ``b0`` and fades in over the
        previous block's last ``overlap`` samples (:attr:`_tail`), part i > 0 starts
        ``overlap`` before its boundary; ``[b1, end)`` becomes the next block's tail."""
        hop, ov, b0 = self.hop, self.overlap, self._made
        warm0 = 0 if self._tail is None else min(ov, end - b0)
        plan = block_plan(b0, b1, end, self.segments, ov, warm0)
        tail = None if self._tail is None else self._tail[:warm0]
        # the block's conditioning, in one piece (phase clock features appended), then the
        # kept per-frame inputs as per-sample tensors from sample _base on
        off = self._offset
        with _torch_threads(max(torch.get_num_threads(), self.threads)):
            c = self.cond.chunked(self._mel, self._base // hop - off, end // hop - off,
                                  None if total is None else total - off)
        if self._inputs[0][0] is not None:
            clock = torch.cat([i[0] for i in self._inputs], dim=-1)[..., :c.shape[-1]]
            c = torch.cat([c, clock.to(c)], dim=1)
        c = c[0]  # (cin, samples from _base on)
        lpc = (torch.cat([i[1] for i in self._inputs], dim=1)[0]
               if self._inputs[0][1] is not None else None)
        lags = (torch.cat([i[2] for i in self._inputs], dim=1)[0]
                if self._inputs[0][2] is not None else None)
        B, steps = len(plan), max(b - a for a, _, b in plan)
        last = end - 1 - self._base  # past a part's end: its last sample's inputs (dropped)
        starts = torch.tensor([a - self._base for a, _, _ in plan])
        sp = None if self._speaker is None else torch.tensor([int(self._speaker)]).expand(B)
        state = self.engine.new_state(B, speaker=sp)

        def inputs(j0: int, j1: int) -> tuple:
            idx = (starts[:, None] + torch.arange(j0, j1)[None]).clamp(max=last)
            return (c[:, idx.to(c.device)].permute(1, 0, 2),
                    None if lpc is None else lpc[idx.to(lpc.device)],
                    None if lags is None else lags[idx.to(lags.device)])

        x = run_rows(self.engine, state, steps, B, inputs, generator=self.generator,
                     temperature=self.temperature, scale_temperature=self.scale_temperature)
        pieces = [x[i, :b - a] for i, (a, _, b) in enumerate(plan)]
        if tail is not None:
            pieces.insert(0, tail)
            plan.insert(0, (b0, b0, b0 + len(tail)))
        joined = crossfade(pieces, [(a - b0, s - b0, b - b0) for a, s, b in plan], end - b0)
        self._tail = joined[b1 - b0:].clone() if end > b1 else None
        self._made = b1
        drop = (b1 - self._base) // hop  # frames before the next block's first sample
        if drop > 0:
            del self._inputs[:drop]
            self._base += drop * hop
        return joined[:b1 - b0].numpy()
