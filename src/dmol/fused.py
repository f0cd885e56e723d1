"""Placeholder: delegates to the unfused reference until the fused kernels land."""

from __future__ import annotations

import torch
from torch import Tensor


def backend() -> str:
    return "reference"


def mixture_nll(logits, means, log_scales, y, num_classes: int, log_scale_min) -> Tensor:
    from dmol.logistic import mixture_nll_reference

    return mixture_nll_reference(logits, means, log_scales, y, num_classes, log_scale_min)


def sample_mixture(logits, means, log_scales, *, temperature=1.0, scale_temperature=1.0,
                   log_scale_min=None, generator: torch.Generator | None = None) -> Tensor:
    from dmol.logistic import _apply_temperature, _gumbel_inverse_cdf

    if log_scale_min is not None:
        log_scales = log_scales.clamp(min=log_scale_min)
    logits, log_scales = _apply_temperature(logits, log_scales, temperature, scale_temperature)
    return _gumbel_inverse_cdf(logits, means, log_scales, generator)
