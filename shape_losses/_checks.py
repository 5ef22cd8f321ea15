"""Input checks at the public boundary: clear errors instead of deep IndexErrors or silent NaNs."""

from __future__ import annotations

import math
from numbers import Real

import torch


def check_latents(latents: object, name: str = "latents", *, finite: bool = False) -> torch.Tensor:
    """Require a floating tensor of shape ``[B, H, W]`` (B >= 1); optionally all finite."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, H, W], got {type(latents).__name__}")
    if latents.dim() != 3:
        hint = " (add a batch dimension: x.unsqueeze(0))" if latents.dim() == 2 else ""
        raise ValueError(
            f"{name} must have shape [B, H, W], got {tuple(latents.shape)}{hint}"
        )
    if not latents.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {latents.dtype}")
    if latents.shape[0] < 1 or latents.shape[1] < 2 or latents.shape[2] < 2:
        raise ValueError(f"{name} must have B >= 1, H >= 2 and W >= 2, got {tuple(latents.shape)}")
    if finite and not bool(torch.isfinite(latents).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return latents


def check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value: object, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value
