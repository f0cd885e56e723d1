"""Output heads (dmol.wavenet.heads): one interface for every distribution, and make_head."""

from __future__ import annotations

import pytest
import torch

from dmol.wavenet.heads import make_head

HEADS = ("mol", "gaussian", "mog", "mulaw")


@pytest.mark.parametrize("name", HEADS)
def test_head_interface_is_consistent(name):
    head = make_head(name, n_mixtures=3, log_scale_min=-9.0)
    g = torch.Generator().manual_seed(0)
    B, T = 2, 50
    y_hat = torch.randn(B, head.out_channels, T, generator=g)
    y = (torch.rand(B, T, generator=g) * 2 - 1).clamp(-1, 1)
    nll = head.nll(y_hat, y)
    assert nll.shape == (B, T) and torch.isfinite(nll).all()
    assert head.loss(y_hat, y).item() == pytest.approx(nll.mean().item(), rel=1e-5)
    mask = torch.zeros(B, T)
    mask[:, :20] = 1
    assert head.loss(y_hat, y, mask).item() == pytest.approx(nll[:, :20].mean().item(), rel=1e-5)
    d = head.distribution(y_hat)
    assert tuple(d.batch_shape) == (B, T)
    torch.testing.assert_close(-d.log_prob(y), nll, rtol=1e-4, atol=1e-4)
    s = head.sample(y_hat, generator=torch.Generator().manual_seed(1))
    assert s.shape == (B, T) and s.abs().max() <= 1
    s2 = head.sample(y_hat, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, s2)
    assert type(make_head(name, **head.config())) is type(head)
    with pytest.raises(ValueError, match=f"\\(B, {head.out_channels}, T\\)"):
        head.loss(y_hat[:, :-1], y)


def test_make_head_errors_and_defaults():
    assert make_head("mol").out_channels == 30 and make_head("mol").num_classes == 65536
    assert make_head("mulaw").out_channels == 256
    assert make_head("gaussian", n_mixtures=7).out_channels == 2
    with pytest.raises(ValueError, match="unknown head"):
        make_head("cauchy")
    with pytest.raises(TypeError, match="unknown argument"):
        make_head("mol", mixtures=3)
