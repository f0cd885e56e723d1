"""Training-time pictures (dmol.wavenet.plots): every head's predicted distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmol.wavenet.heads import make_head
from dmol.wavenet.plots import distribution_image


@pytest.mark.parametrize("name", ["mol", "gaussian", "mog", "mulaw"])
def test_distribution_image(name):
    head = make_head(name, n_mixtures=3)
    g = torch.Generator().manual_seed(0)
    y = torch.sin(torch.arange(300) / 9.0)[None] * 0.4
    y_hat = torch.randn(1, head.out_channels, 300, generator=g)
    img = distribution_image(head, y_hat, y, window=200)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert img.shape[0] > 100 and img.shape[1] > 200 and img.std() > 10
