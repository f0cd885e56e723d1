"""The WaveNet model: causality, receptive field, shapes/errors, each head trains in it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import PRESETS, WaveNetConfig, get_preset

HEADS = ("mol", "gaussian", "mog", "mulaw")


def tiny(**overrides) -> WaveNetConfig:
    return get_preset("tiny", overrides)[0]


def inputs(cfg: WaveNetConfig, batch: int = 2, frames: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, frames * cfg.hop_length, generator=g) * 1.6 - 0.8
    mel = torch.randn(batch, cfg.n_mels, frames, generator=g) - 4.0
    return x, mel


@pytest.mark.parametrize("kernel_size,layers,stacks", [(3, 6, 2), (2, 4, 1), (4, 3, 3)])
def test_impulse_response_spans_the_receptive_field(kernel_size, layers, stacks):
    torch.manual_seed(0)
    cfg = tiny(kernel_size=kernel_size, layers=layers, stacks=stacks)
    model = WaveNet(cfg).double().eval()
    x, mel = inputs(cfg, batch=1, frames=4)
    x, mel = x.double() * 0, mel.double()
    s = 70  # impulse position
    x_imp = x.clone()
    x_imp[0, s] = 0.5
    with torch.no_grad():
        diff = (model(x_imp, mel) - model(x, mel)).abs().amax(dim=1)[0]  # (T,)
    changed = torch.nonzero(diff > 1e-12).flatten()
    rf = model.receptive_field.samples
    assert rf == (kernel_size - 1) * sum(2 ** (i % (layers // stacks)) for i in range(layers)) + 1
    # x[s] is the input at s + 1 (shift by one) and reaches rf - 1 further outputs
    assert changed.min().item() == s + 1
    assert changed.max().item() == s + rf
    assert len(changed) == rf


@pytest.mark.parametrize("lpc_order", [0, 8])
def test_forward_is_causal(lpc_order):
    from dmol.audio.features import recipe_for

    torch.manual_seed(1)
    cfg = tiny(lpc_order=lpc_order)
    model = WaveNet(cfg, recipe_for("tiny")).eval()
    x, mel = inputs(cfg)
    with torch.no_grad():
        y0 = model(x, mel)
        for t in (0, 37, 200, x.shape[1] - 1):
            x2 = x.clone()
            x2[:, t] = -x2[:, t] + 0.1
            y1 = model(x2, mel)
            assert torch.equal(y1[..., : t + 1], y0[..., : t + 1]), f"output <= {t} changed"
            if t + 1 < x.shape[1]:
                assert not torch.allclose(y1[..., t + 1], y0[..., t + 1])


def test_receptive_field_in_ms_and_presets():
    from dmol.audio.features import recipe_for

    for name in PRESETS:
        cfg = get_preset(name)[0]
        rf = WaveNet(cfg, recipe_for(name)).receptive_field
        assert rf.samples == cfg.receptive_field
        assert rf.ms == pytest.approx(1000 * rf.samples / cfg.sample_rate)
    cfg = get_preset("r9y9-ljspeech-mol")[0]
    assert cfg.receptive_field == 2 * 4 * (1 + 2 + 4 + 8 + 16 + 32) + 1


def count_parameters_by_hand(cfg: WaveNetConfig, out_channels: int) -> int:
    """Independent count from the architecture description (weights + biases)."""
    R, G, S, k, n = (cfg.residual_channels, cfg.gate_channels, cfg.skip_channels,
                     cfg.kernel_size, cfg.n_mels)
    per_layer = (R * G * k + G) + n * G + cfg.gin_channels * G + (G // 2 * R + R) + (G // 2 * S + S)
    upsample = (n * n * (2 * cfg.cin_pad + 1) if cfg.cin_pad else 0) + sum(
        cfg.freq_axis_kernel_size * (2 * s + 1) for s in cfg.upsample_scales
    )
    last_out = G // 2 * R + R  # the last layer has no residual output conv
    speakers = cfg.n_speakers * cfg.gin_channels
    post = (S * S + S) + (S * out_channels + out_channels)
    return (1 * R + R) + cfg.layers * per_layer - last_out + upsample + speakers + post


def test_parameter_counts_match_the_architecture():
    cfg = get_preset("r9y9-ljspeech-mol")[0]
    model = WaveNet(cfg)
    assert model.head.out_channels == 30
    assert model.num_parameters == count_parameters_by_hand(cfg, 30)
    assert 3.6e6 < model.num_parameters < 3.8e6  # r9y9's LJSpeech MoL model is ~3.7M
    cfg = tiny(n_speakers=3, gin_channels=5, head="mulaw")
    assert WaveNet(cfg).num_parameters == count_parameters_by_hand(cfg, 256)


def test_upsample_shape():
    cfg = tiny()
    model = WaveNet(cfg)
    _, mel = inputs(cfg, frames=7)
    assert model.upsample(mel).shape == (2, cfg.n_mels, 7 * cfg.hop_length)


def test_shape_errors_are_clear():
    cfg = tiny()
    model = WaveNet(cfg)
    x, mel = inputs(cfg, frames=5)
    with pytest.raises(ValueError, match="n_mels=20"):
        model(x, mel[:, :10])
    with pytest.raises(ValueError, match="transposed"):
        model(x, mel.transpose(1, 2).contiguous()[:, :, :20])
    with pytest.raises(ValueError, match="frames \\* hop_length"):
        model(x[:, :-1], mel)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(x[:1], mel)
    with pytest.raises(ValueError, match="\\(B, T\\)"):
        model(x[0], mel)
    with pytest.raises(TypeError, match="floating point"):
        model(x, mel.long())
    with pytest.raises(ValueError, match="no global conditioning"):
        model(x, mel, speaker=torch.tensor([0, 1]))


def test_global_conditioning():
    torch.manual_seed(0)
    cfg = tiny(n_speakers=3, gin_channels=4)
    model = WaveNet(cfg).eval()
    x, mel = inputs(cfg)
    with torch.no_grad():
        a = model(x, mel, speaker=torch.tensor([0, 0]))
        b = model(x, mel, speaker=torch.tensor([0, 2]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="lie in \\[0, 2\\]"):
        model(x, mel, speaker=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="pass speaker ids"):
        model(x, mel)
    with pytest.raises(ValueError, match="gin_channels and n_speakers"):
        tiny(n_speakers=3)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of stacks"):
        tiny(layers=5, stacks=2)
    with pytest.raises(ValueError, match="unknown head"):
        tiny(head="laplace")
    with pytest.raises(ValueError, match="unknown config field"):
        get_preset("tiny", {"layer": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    cfg = tiny(head="mog")
    assert WaveNetConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("cls", "field", "value"), [
    ("model", "log_scale_min", float("nan")), ("model", "log_scale_min", float("-inf")),
    ("train", "lr_min_ratio", float("nan")), ("train", "lr_gamma", float("inf")),
    ("train", "weight_decay", float("nan")), ("train", "grad_clip", float("inf")),
    ("train", "val_max_seconds", float("inf")), ("train", "betas", (0.9, float("nan"))),
    ("train", "betas", (0.9,)),
])
def test_configs_refuse_non_finite_numbers(cls, field, value):
    """The dataclasses themselves refuse NaN/inf (not only ``--set``): a config built in
    Python or read from a checkpoint cannot train with them."""
    from dmol.wavenet.presets import TrainConfig

    with pytest.raises(ValueError, match=field):
        (WaveNetConfig if cls == "model" else TrainConfig)(**{field: value})


@pytest.mark.parametrize("name", HEADS)
def test_each_head_trains(name):
    torch.manual_seed(0)
    cfg = tiny(head=name, n_mixtures=2, num_classes=None if name != "mulaw" else 64)
    model = WaveNet(cfg)
    x, mel = inputs(cfg, frames=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(6):
        loss = model.head.loss(model(x, mel), x)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        opt.step()
        losses.append(loss.item())
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert losses[-1] < losses[0], losses


def test_dropout_only_in_training():
    cfg = dataclasses.replace(tiny(), dropout=0.5)
    model = WaveNet(cfg)
    x, mel = inputs(cfg)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mel), model(x, mel))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x, mel), model(x, mel))


def test_docs_show_the_current_presets_table():
    from pathlib import Path

    from dmol.wavenet.model import presets_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "wavenet.md").read_text()
    assert presets_table() in doc, "paste `dmol train --list-presets` into docs/wavenet.md"


@pytest.mark.parametrize("name,channels", [("mol", slice(6, 9)), ("mog", slice(6, 9)),
                                           ("gaussian", slice(1, 2))])
def test_scales_start_at_init_log_scale(name, channels):
    from dmol.wavenet.heads import INIT_LOG_SCALE

    model = WaveNet(tiny(head=name, n_mixtures=3))
    bias = model.post[3].bias.detach()
    assert (bias[channels] == INIT_LOG_SCALE).all()
    rest = torch.ones_like(bias, dtype=torch.bool)
    rest[channels] = False
    assert (bias[rest] != INIT_LOG_SCALE).all()  # only the log-scale channels
