"""Argument checks and reductions shared by every head (MoL, Gaussian, mu-law, coupled).

Each check raises ``ValueError``/``TypeError`` naming the problem (shape, channel count,
range, NaN, dtype, layout) so a bad input fails here, not deep inside torch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LAYOUTS = ("BCT", "BTC")
REDUCTIONS = ("none", "mean", "sum")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision parameters are computed in float32: the tails need its exponent range."""
    if not dtype.is_floating_point:
        raise TypeError(f"parameters must be a floating point tensor, got dtype {dtype}")
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_btc(y_hat: Tensor, layout: str) -> Tensor:
    """Return the network output as (B, T, C) whatever its layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: expected one of {LAYOUTS}")
    if y_hat.dim() != 3:
        raise ValueError(
            f"y_hat must be 3-D ({'(B, C, T)' if layout == 'BCT' else '(B, T, C)'}), "
            f"got shape {tuple(y_hat.shape)}"
        )
    return y_hat.transpose(1, 2) if layout == "BCT" else y_hat


def split_channels(
    y_hat_btc: Tensor, groups: int, *, allow_single: int | None = None
) -> list[Tensor]:
    """Split the last axis into ``groups`` equal blocks of M channels each.

    ``allow_single`` names an extra channel count accepted as M = 1 without logits (the single
    Gaussian's ``[mean, log_scale]``); it is returned with a zero logit block prepended.
    """
    c = y_hat_btc.shape[-1]
    if allow_single is not None and c == allow_single:
        zeros = y_hat_btc.new_zeros(*y_hat_btc.shape[:-1], 1)
        return [zeros, *y_hat_btc.split(1, dim=-1)]
    if c == 0 or c % groups:
        extra = f" (or exactly {allow_single} for a single component)" if allow_single else ""
        raise ValueError(
            f"y_hat has {c} channels: expected a multiple of {groups}{extra}, "
            f"laid out as {groups} blocks of M channels"
        )
    return list(y_hat_btc.split(c // groups, dim=-1))


def target_bt(y: Tensor, batch: int, steps: int) -> Tensor:
    """Accept targets shaped (B, T), (B, T, 1) or (B, 1, T); return (B, T)."""
    shape = tuple(y.shape)
    if shape == (batch, steps):
        return y
    if shape == (batch, steps, 1):
        return y.squeeze(-1)
    if shape == (batch, 1, steps):
        return y.squeeze(1)
    raise ValueError(
        f"target shape {shape} does not match y_hat: expected (B, T) = {(batch, steps)} "
        f"or (B, T, 1) / (B, 1, T)"
    )


def check_finite(name: str, t: Tensor) -> None:
    # one sum (NaN and inf reach it) instead of isfinite's boolean temporaries, which cost more
    # than the fused kernels they guard; only a sum that overflows takes the slow look
    if t.numel() and bool(torch.isfinite(t.sum())):
        return
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")


def check_temperature(name: str, value: float) -> float:
    """A temperature must be a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"temperatures must be >= 0 and finite, got {name}={value!r}")
    return float(value)


def check_tensor(name: str, t: object) -> Tensor:
    """``t`` must be a tensor (a plain float has no shape): TypeError naming the argument."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_reduction(reduction: str) -> str:
    """Checked before any work (a forward pass, a first compile) is spent."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: expected one of {REDUCTIONS}")
    return reduction


def check_target_dtype(y: Tensor, what: str = "targets") -> Tensor:
    """Targets are waveform values: floating point, never integer PCM or classes."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(y).__name__}")
    if not y.dtype.is_floating_point:
        raise TypeError(
            f"{what} must be a floating point tensor of values in [-1, 1], got dtype {y.dtype} "
            "(scale integer PCM first, e.g. int16 / 32768)"
        )
    return y


def check_range(
    y: Tensor,
    *,
    clamp: bool = False,
    low: float = -1.0,
    high: float = 1.0,
    clamp_hint: bool = False,
) -> Tensor:
    """Targets must lie in [low, high]; ``clamp=True`` clips them instead of raising.

    NaN targets always raise: clipping cannot give them a value. ``clamp_hint``: the caller
    has a ``clamp_targets`` argument, which the error message then suggests.
    """
    check_target_dtype(y)
    if torch.isnan(y).any():
        raise ValueError("targets contain NaN")
    if clamp or y.numel() == 0:  # (min/max of an empty tensor would raise)
        return y.clamp(low, high)
    lo, hi = float(y.min()), float(y.max())
    if lo < low or hi > high:
        raise ValueError(
            f"targets must lie in [{low:g}, {high:g}], got min {lo:.6g} and max {hi:.6g}"
            + (" (pass clamp_targets=True to clip them)" if clamp_hint else "")
        )
    return y


def check_num_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def mask_bt(mask: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor | None:
    """A padding mask as float (B, T): either a (B, T) mask or (B,) lengths (integer dtype)."""
    if mask is None:
        return None
    if mask.dim() == 1 and not mask.dtype.is_floating_point and mask.dtype != torch.bool:
        if mask.shape[0] != batch:
            raise ValueError(f"lengths has shape {tuple(mask.shape)}, expected ({batch},)")
        if bool((mask < 0).any()) or bool((mask > steps).any()):
            raise ValueError(f"lengths must lie in [0, {steps}], got {mask.tolist()}")
        return (torch.arange(steps, device=device)[None, :] < mask.to(device)[:, None]).float()
    if tuple(mask.shape) != (batch, steps):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, expected (B, T) = {(batch, steps)} "
            f"or integer lengths of shape ({batch},)"
        )
    return mask.to(device=device, dtype=torch.float32)


def reduce(loss: Tensor, reduction: str, mask: Tensor | None) -> Tensor:
    """Reduce a (B, T) loss. ``mean`` is per valid element, never a disguised sum.

    Nothing to reduce (B = 0 or T = 0): ``none`` gives the empty (B, T) loss, ``sum`` 0 and
    ``mean`` NaN, as torch's own ``mean`` of an empty tensor. A mask that marks every
    element as padding gives 0 (its gradient stays 0, not NaN).
    """
    check_reduction(reduction)
    if mask is not None:
        loss = torch.where(mask > 0, loss, torch.zeros_like(loss)) * mask
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if mask is None:
        return loss.sum() / loss.numel() if loss.numel() else loss.sum() / 0.0
    return loss.sum() / mask.sum().clamp_min(1).to(loss.dtype)


def resolve_validate_args(validate_args: bool | None) -> bool:
    """dmol's distributions validate unless told not to.

    torch's global default (``Distribution._validate_args``) is not consulted: the first
    ``torch.compile`` in a process switches it off, which would silently disable these checks.
    """
    return True if validate_args is None else bool(validate_args)


def loc_bt(loc: Tensor | None, batch: int, steps: int) -> Tensor | None:
    """A per-position shift of every mean (e.g. a linear prediction): (B, T) or None."""
    if loc is None:
        return None
    if not isinstance(loc, Tensor):
        raise TypeError(f"loc must be a torch.Tensor of shape (B, T) or None, "
                        f"got {type(loc).__name__}")
    if tuple(loc.shape) != (batch, steps):
        raise ValueError(f"loc has shape {tuple(loc.shape)}, expected (B, T) = {(batch, steps)}")
    if not loc.is_floating_point():
        raise TypeError(f"loc must be floating point, got dtype {loc.dtype}")
    check_finite("loc", loc)
    return loc


def shift_means(means: Tensor, loc: Tensor | None) -> Tensor:
    """means (*batch, M) + loc (*batch): one shift for every component (None: unchanged)."""
    if loc is None:
        return means
    if not isinstance(loc, Tensor) or tuple(loc.shape) != tuple(means.shape[:-1]):
        got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
        raise ValueError(f"loc must have the batch shape {tuple(means.shape[:-1])}, got {got}")
    if not loc.is_floating_point():
        raise TypeError(f"loc must be floating point, got dtype {loc.dtype}")
    check_finite("loc", loc)
    dtype = compute_dtype(torch.promote_types(means.dtype, loc.dtype))
    return means.to(dtype) + loc.to(dtype)[..., None]
