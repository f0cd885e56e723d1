"""FoldedStreamingVocoder: a stream made one block at a time, each block's parts side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmol.logistic import mixture_nll_reference
from dmol.wavenet.folded_stream import FoldedStreamingVocoder, block_plan
from dmol.wavenet.synthesis import StreamingVocoder, synthesize_folded, synthesize_incremental
from helpers import ar2_model, ltp_model, random_mel, tiny_model


def _stream(model, mel, pushes, **kw) -> tuple[np.ndarray, list[int]]:
    """The audio of ``mel`` pushed in pieces of ``pushes`` frames (then the rest), and how
    many samples each push returned."""
    s = FoldedStreamingVocoder(model, **kw)
    got, at = [], 0
    for n in pushes:
        got.append(s.push(mel[at:at + n]))
        at += n
    got.append(s.push(mel[at:]))
    got.append(s.flush())
    return np.concatenate(got), [len(g) for g in got]


@pytest.mark.parametrize("kind", ["mol", "lp-tracked"])
def test_any_pushes_give_the_same_audio_and_one_block_is_folded_synthesis(kind):
    """Blocks depend on frame counts, not on how frames arrive: every way of pushing gives
    the same numbers. A block longer than the utterance, cut without overlaps, is
    synthesize_folded with the same parts: the parts get the right inputs (conditioning,
    clock, LPC, lags; conditioning computed per block here, whole there: within 1e-5). The
    engine is a black box here (its backends agree: test_incremental.py)."""
    if kind == "mol":
        model, mel = tiny_model(3), random_mel(61)
    else:  # LP, pitch taps and their excitation, a phase clock, a tracked pitch estimate
        model, mel = ltp_model(4, excitation=True, phase=2, continuity=0.8), random_mel(
            61, 80, seed=1)
    hop, sr = model.hop_length, model.cfg.sample_rate
    kw = dict(block_seconds=12 * hop / sr, segments=3, overlap_seconds=2 * hop / sr,
              threads=1, seed=5)
    whole, _ = _stream(model, mel, [], **kw)
    assert whole.shape == (61 * hop,) and np.isfinite(whole).all()
    for pushes in ([1] * 61, [7, 0, 13, 2, 30]):
        assert np.array_equal(_stream(model, mel, pushes, **kw)[0], whole)
    # one block: 60 frames in 3 parts of 20 frames, as synthesize_folded cuts them
    one, _ = _stream(model, mel[:60], [], **(kw | {"block_seconds": 100.0,
                                                   "overlap_seconds": 0.0}))
    fold = synthesize_folded(model, mel[:60], seed=5, segment_seconds=20 * hop / sr,
                             overlap_seconds=0.0, threads=1)
    assert np.abs(one - fold).max() < 1e-5


def test_audio_comes_out_a_block_at_a_time_within_the_stated_latency():
    model = tiny_model(3)
    hop, sr = model.hop_length, model.cfg.sample_rate
    s = FoldedStreamingVocoder(model, block_seconds=10 * hop / sr, segments=2,
                               overlap_seconds=2 * hop / sr, threads=1, backend="torch")
    mel, out = random_mel(50), []
    for f in range(50):
        out.append(len(s.push(mel[f:f + 1])) // hop)
    # block 0's 10 frames come out once frames up to 10 + 2 (overlap) + lookahead are in
    first = 10 + 2 + s.lookahead
    assert out[first - 1] == 10 and sum(out[:first - 1]) == 0
    assert s.latency_samples == (first - 1) * hop  # the frames after frame 0
    assert sum(out) + len(s.flush()) // hop == 50


def test_block_joins_are_seamless_and_as_likely_as_sequential():
    """The AR(2) resonance of the folded test, made in blocks of 3 parts: no jump and no
    unlikely sample at any part's or block's join, mean NLL as sequential output's."""
    model = ar2_model()
    F_, hop, sr = 200, model.hop_length, model.cfg.sample_rate
    mel = np.zeros((F_, model.cfg.n_mels), np.float32)
    seq = synthesize_incremental(model, mel, seed=0)
    blk, _ = _stream(model, mel, [10] * 19, block_seconds=72 * hop / sr, segments=3,
                     overlap_seconds=12 * hop / sr, threads=1, seed=0)
    assert blk.shape == seq.shape and 0.2 < np.abs(blk).max() < 1.0
    ov, T = 12 * hop, F_ * hop
    # blocks of 72 frames while more than a block and an overlap remain, then the rest; each
    # block's last part runs an overlap on, the next block's first part fades in over it
    plans = [block_plan(0, 72 * hop, 84 * hop, 3, ov),
             block_plan(72 * hop, 144 * hop, 156 * hop, 3, ov, ov),
             block_plan(144 * hop, T, T, 3, ov, ov)]
    assert [len(p) for p in plans] == [3, 3, 2]  # the last 56 frames: 2 parts of >= 24
    near = np.zeros(T - 1, bool)  # next to where a fade starts or ends
    for start, b, _ in [part for p in plans for part in p][1:]:
        for e in (start, b):
            near[max(0, e - 8):e + 8] = True
    jump = np.abs(np.diff(blk))
    assert jump[near].max() <= jump[~near].max()
    with torch.no_grad():
        x = torch.from_numpy(np.stack([seq, blk]))
        y = model(x, torch.zeros(2, model.cfg.n_mels, F_)).transpose(1, 2)
        nll = mixture_nll_reference(*y.chunk(3, dim=-1), x, 65536, -16.0)
    assert abs(nll[1].mean().item() - nll[0].mean().item()) < 0.05
    at = np.concatenate([[False], near])
    assert nll[1][at].max() <= nll[1][~at].max()


def test_bad_settings_are_refused_before_any_work():
    model = tiny_model()
    hop, sr = model.hop_length, model.cfg.sample_rate
    for bad, match in (({"segments": 0}, "segments must be a positive integer"),
                       ({"segments": 2.5}, "segments must be a positive integer"),
                       ({"block_seconds": 0}, "block_seconds must be a positive number"),
                       ({"block_seconds": float("nan")}, "block_seconds must be"),
                       ({"block_seconds": True}, "block_seconds must be"),
                       ({"overlap_seconds": -1}, "overlap_seconds must be a number >= 0"),
                       ({"block_seconds": 4 * hop / sr, "segments": 4,
                         "overlap_seconds": hop / sr}, "too short for 4 segments")):
        with pytest.raises(ValueError, match=match):
            FoldedStreamingVocoder(model, backend="torch", threads=1, **bad)
    # by default as many parts as fit (6 per thread, a multiple of the threads)
    s = FoldedStreamingVocoder(model, backend="torch", threads=4, block_seconds=10 * hop / sr,
                               overlap_seconds=hop / sr)
    assert s.segments == 4
    with pytest.raises(TypeError, match="builds its own engine"):
        FoldedStreamingVocoder(model, engine=StreamingVocoder(model).engine)
