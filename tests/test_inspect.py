"""`dmol inspect` renders each head's predicted distribution from a tiny model."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from dmol.audio.features import recipe_for
from dmol.inspect import predict, render
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset


@pytest.mark.parametrize("head", ["mol", "gaussian", "mog", "mulaw"])
def test_each_head_renders(tmp_path, head):
    recipe = recipe_for("tiny")
    t = np.arange(recipe.hop_length * 24) / recipe.sample_rate
    audio = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    torch.manual_seed(0)
    model = WaveNet(get_preset("tiny", {"head": head})[0])
    pred = predict(model, model.head, audio, recipe.compute(audio),
                   sample_rate=recipe.sample_rate, window=300)
    # every panel has data: a finite density over the window, an NLL for every sample
    assert pred.log_density.shape == (240, 300) and np.isfinite(pred.log_density).all()
    assert pred.nll_bits.shape == audio.shape and np.isfinite(pred.nll_bits).all()
    assert (pred.weights is None) == (head == "mulaw")
    if pred.weights is not None:
        np.testing.assert_allclose(pred.weights.sum(0), 1.0, atol=1e-6)
    assert len(pred.zoom) == 3 and all(np.isfinite(z["pdf"]).all() for z in pred.zoom)
    png = render(pred, tmp_path / f"{head}.png")
    img = imread(png)
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not a blank canvas
