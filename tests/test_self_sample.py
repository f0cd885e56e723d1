"""Parallel scheduled sampling: training reads the model's own draws as its past."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.helpers import lp_mel, lp_model, ltp_model
from tests.test_train import QUICK, run_train, speech  # noqa: F401  (fixture)

from dmol.wavenet.checkpoint import latest_checkpoint, load_checkpoint
from dmol.wavenet.presets import TrainConfig
from dmol.wavenet.train import self_sampled_past

FRAMES = 12


def batch(model, B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.randn(B, FRAMES * model.hop_length, generator=g)
    return x, lp_mel(FRAMES, B, seed)


def test_off_returns_the_past_itself():
    model = lp_model()
    x, mel = batch(model, 2)
    assert self_sampled_past(model, x, mel, x, TrainConfig(), 0) is x


@pytest.mark.parametrize("make", [lp_model, ltp_model])
def test_one_pass_is_the_models_draw_given_the_true_past(make):
    """self_sample=1: every segment's past is one draw per step from the model's teacher-forced
    distribution, the same draw the head's sampler makes with that generator state."""
    model = make()
    x, mel = batch(model, 3)
    if mel.shape[1] != model.cfg.n_mels:
        mel = torch.randn(3, model.cfg.n_mels, FRAMES) - 5.0
    past = x + 1e-4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    got = self_sampled_past(model, x, mel, past, TrainConfig(self_sample=1.0), seed=5)
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g)  # the pick draws come first
    with torch.no_grad():
        want = model.head.sample(model(x, mel, past=past), generator=g)
    assert torch.equal(got, want)
    # a draw, not the truth: it differs from the past, by about the model's own spread
    err = (got - x).abs()
    assert err.mean() > 1e-3 and torch.isfinite(got).all() and got.abs().max() <= 1.0


def test_each_pass_reads_the_previous_pass_draws():
    model = lp_model(1)
    x, mel = batch(model, 2)
    one = self_sampled_past(model, x, mel, x, TrainConfig(self_sample=1.0), seed=3)
    two = self_sampled_past(model, x, mel, x,
                            TrainConfig(self_sample=1.0, self_sample_passes=2), seed=3)
    g = torch.Generator().manual_seed(3)
    torch.rand(2, generator=g)
    with torch.no_grad():
        first = model.head.sample(model(x, mel, past=x), generator=g)
        assert torch.equal(first, one)
        assert torch.equal(two, model.head.sample(model(x, mel, past=first), generator=g))


def test_a_fraction_replaces_whole_segments_and_is_seeded():
    model = lp_model(2)
    x, mel = batch(model, 16)
    tc = TrainConfig(self_sample=0.5)
    got = self_sampled_past(model, x, mel, x, tc, seed=11)
    kept = [bool(torch.equal(got[b], x[b])) for b in range(16)]
    replaced = [bool((got[b] != x[b]).float().mean() > 0.9) for b in range(16)]
    # a segment is all truth or all draws
    assert all(k != r for k, r in zip(kept, replaced, strict=True))
    assert 3 <= sum(replaced) <= 13
    assert torch.equal(got, self_sampled_past(model, x, mel, x, tc, seed=11))
    assert not torch.equal(got, self_sampled_past(model, x, mel, x, tc, seed=12))
    assert x.requires_grad is False and not got.requires_grad


def test_dropout_is_off_in_the_draws_and_the_mode_is_restored():
    model = lp_model(3)
    model.train()
    x, mel = batch(model, 2)
    self_sampled_past(model, x, mel, x, TrainConfig(self_sample=1.0), seed=0)
    assert model.training


@pytest.mark.parametrize("value, field", [(1.5, "self_sample"), (-0.1, "self_sample"),
                                          (float("nan"), "self_sample")])
def test_bad_fraction_is_refused(value, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(self_sample=value)


@pytest.mark.parametrize("passes", [0, 9, 1.5, True])
def test_bad_passes_are_refused(passes):
    with pytest.raises(ValueError, match="self_sample_passes"):
        dataclasses.replace(TrainConfig(), self_sample_passes=passes)


def test_training_with_self_sampling_resumes_exactly(speech, tmp_path):  # noqa: F811
    """A run with self-sampling stopped at step 4 and resumed to 6 equals one run to 6: the
    draws are a function of (seed, step, rank), like the batches."""
    data, _, _ = speech
    o = {**QUICK, "self_sample": 0.5, "lr_schedule": "constant", "warmup_steps": 1,
         "ckpt_interval": 4}
    full = run_train(data, tmp_path / "full", overrides={**o, "max_steps": 6})
    run_train(data, tmp_path / "cut", overrides={**o, "max_steps": 4})
    cut = run_train(data, tmp_path / "cut", overrides={**o, "max_steps": 6}, resume=True)
    assert cut["train"] == full["train"]
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    for name, t in a["model"].items():
        assert torch.equal(b["model"][name], t), name
    plain = run_train(data, tmp_path / "plain", overrides={**o, "self_sample": 0.0,
                                                           "max_steps": 6})
    assert plain["train"] != full["train"]  # the option changes what the network reads
