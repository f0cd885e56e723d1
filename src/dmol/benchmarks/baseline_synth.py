"""The usual incremental WaveNet synthesis loop, written out plainly: the speed baseline.

It works the way most WaveNet vocoder code bases (e.g. r9y9/wavenet_vocoder's
``incremental_forward``) run a trained model sample by sample:

* every dilated convolution keeps an input buffer of its last ``(k - 1) d + 1`` inputs that is
  shifted by one row every step, and the ``k`` taps are read back with a strided slice;
* each convolution is one ``F.linear`` per step with its weight unfolded to ``(G, k R)``;
* the conditioning 1x1 is applied to the step's conditioning vector inside the step, the gate,
  the residual and the skip 1x1s are separate ops, in a Python loop over the layers;
* the output mixture is sampled with the reference sampler every step.

The conditioning is upsampled once up front, as there. Written for this project from the
model's definition (same weights, same math as :class:`dmol.wavenet.model.WaveNet`); it is
only here to be timed against :mod:`dmol.wavenet.incremental`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dmol.compat.r9y9 import sample_from_discretized_mix_logistic
from dmol.wavenet.model import WaveNet


class BaselineIncremental:
    """Sample-by-sample generation with shifted per-layer input buffers.

    Example::

        >>> base = BaselineIncremental(model)
        >>> audio = base.generate(mel, steps=1000, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, model: WaveNet) -> None:
        self.model = model
        self.layers = []
        for layer in model.layers:
            w = layer.conv.weight.detach()  # (G, R, k): unfold to (G, k R), tap-major
            self.layers.append({
                "d": layer.dilation, "k": layer.kernel_size,
                "w": w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous(),
                "b": layer.conv.bias.detach(),
                "w_cond": layer.cond.weight.detach()[:, :, 0],
                "w_out": None if layer.out is None else layer.out.weight.detach()[:, :, 0],
                "b_out": None if layer.out is None else layer.out.bias.detach(),
                "w_skip": layer.skip.weight.detach()[:, :, 0],
                "b_skip": layer.skip.bias.detach(),
            })
        self.w_first = model.first.weight.detach()[:, :, 0]
        self.b_first = model.first.bias.detach()
        p1, p2 = model.post_convs
        self.post = [(p1.weight.detach()[:, :, 0], p1.bias.detach()),
                     (p2.weight.detach()[:, :, 0], p2.bias.detach())]

    @torch.inference_mode()
    def generate(self, mel: Tensor, steps: int | None = None, *,
                 generator: torch.Generator | None = None,
                 teacher: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Generate ``steps`` samples (default: all) of a (1, n_mels, frames) mel.

        With ``teacher`` (1, T), the true samples are fed back and the network outputs are
        returned too (for checking this loop against ``model.forward``).
        """
        c = self.model.upsample(mel)  # (1, cin, T)
        T = c.shape[-1] if steps is None else steps
        R = self.w_first.shape[0]
        buffers = [torch.zeros(1, (p["k"] - 1) * p["d"] + 1, R) for p in self.layers]
        x = torch.zeros(1, 1)
        out, params = [], []
        head = self.model.head
        for t in range(T):
            ct = c[:, :, t]
            h = F.linear(x, self.w_first, self.b_first)
            skips = 0
            for p, buf in zip(self.layers, buffers, strict=True):
                residual = h
                buf[:, :-1] = buf[:, 1:].clone()  # shift the input buffer by one step
                buf[:, -1] = h
                taps = buf[:, 0::p["d"], :]  # (1, k, R), oldest first
                z = F.linear(taps.reshape(1, -1), p["w"], p["b"])
                a, b = z.split(z.shape[1] // 2, dim=1)
                ca, cb = F.linear(ct, p["w_cond"]).split(z.shape[1] // 2, dim=1)
                u = torch.tanh(a + ca) * torch.sigmoid(b + cb)
                skips = skips + F.linear(u, p["w_skip"], p["b_skip"])
                if p["w_out"] is not None:
                    h = (F.linear(u, p["w_out"], p["b_out"]) + residual) * math.sqrt(0.5)
            y = skips * math.sqrt(1.0 / len(self.layers))
            for w, b in self.post:
                y = F.linear(torch.relu(y), w, b)
            if teacher is not None:
                params.append(y)
                x = teacher[:, t:t + 1]
            else:
                x = sample_from_discretized_mix_logistic(
                    y[:, :, None], log_scale_min=head.log_scale_min, clamp_log_scale=True,
                    generator=generator)
            out.append(x[0, 0])
        samples = torch.stack(out)
        return samples, (torch.stack(params, dim=-1) if teacher is not None else None)
