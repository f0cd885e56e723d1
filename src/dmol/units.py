"""Unit conversions for likelihoods."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bits_per_dim(nll_nats: Tensor | float, num_dims: int = 1) -> Tensor:
    """Convert a negative log-likelihood in nats over ``num_dims`` values to bits per value.

    For audio a "dimension" is one sample (bits per sample); for an H x W x C image summed NLL,
    pass ``num_dims = H * W * C``.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return torch.as_tensor(nll_nats) / (math.log(2.0) * num_dims)
