"""Blob-seeded Gaussian noise: the starting images that the losses sculpt.

The seed notebook starts each image from weak noise (std 0.1) plus two Gaussian blobs at
random places, of random size and brightness, "to break symmetry". Here the same recipe is
vectorised and, given ``seed``, reproducible whatever the global random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_int, check_real

MARGIN = 5
"""Blob centres keep this many pixels from every edge (the seed's ``randint(5, H - 5)``)."""

MIN_SIZE = 2 * MARGIN + 1
"""The smallest image side the blob seeds fit in (the seed's numpy call fails below it)."""


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        raise TypeError(f"image_size must be an int or a pair of ints (H, W), got {image_size!r}")
    height, width = image_size
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(
            f"image_size must be at least {MIN_SIZE}x{MIN_SIZE} so the blob seeds fit "
            f"{MARGIN} px from the edges, got {height}x{width}"
        )
    return height, width


def _range(value: Sequence[float], name: str, *, integer: bool = False) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = (check_real(v, name) for v in value)
    if integer and (low != int(low) or high != int(high)):
        raise TypeError(f"{name} must be a pair of ints, got {value!r}")
    if not low < high or low <= 0:
        raise ValueError(f"{name} must satisfy 0 < low < high, got {value!r}")
    return low, high


def initialize_latents(
    batch_size: int = 6,
    image_size: int | Sequence[int] = (32, 32),
    device: str | torch.device = "cpu",
    *,
    seed: int | None = None,
    n_blobs: int = 2,
    blob_size: Sequence[int] = (3, 7),
    amplitude: Sequence[float] = (0.5, 1.5),
    noise_std: float = 0.1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weak Gaussian noise plus ``n_blobs`` Gaussian blobs per image, as in the seed.

    Each blob has its centre drawn uniformly from ``[5, H - 5) x [5, W - 5)``, an integer
    width ``size`` from ``[blob_size[0], blob_size[1])`` and a brightness from
    ``[amplitude[0], amplitude[1])``; it adds ``brightness * exp(-r^2 / (2 size^2))``.

    Args:
        batch_size: number of images B (>= 1).
        image_size: ``(H, W)`` or one int for a square; each side >= 11.
        device: where the tensor lives.
        seed: makes the result reproducible, independent of the global RNG. ``None`` draws
            from torch's global generator (like the seed notebook, which used numpy's).
        n_blobs, blob_size, amplitude, noise_std: the recipe's knobs (seed values by default).
        dtype: floating dtype of the result.

    Returns:
        A leaf tensor ``[B, H, W]`` with ``requires_grad=True``, like the seed's.
    """
    check_int(batch_size, "batch_size", minimum=1)
    height, width = _image_size(image_size)
    check_int(n_blobs, "n_blobs", minimum=0)
    size_low, size_high = _range(blob_size, "blob_size", integer=True)
    amp_low, amp_high = _range(amplitude, "amplitude")
    noise_std = check_real(noise_std, "noise_std", nonnegative=True)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")

    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))

    shape = (batch_size, n_blobs)
    noise = torch.randn(batch_size, height, width, generator=generator, dtype=torch.float64) * noise_std
    cy = torch.randint(MARGIN, height - MARGIN, shape, generator=generator)
    cx = torch.randint(MARGIN, width - MARGIN, shape, generator=generator)
    size = torch.randint(int(size_low), int(size_high), shape, generator=generator).double()
    amp = amp_low + (amp_high - amp_low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    yy = torch.arange(height, dtype=torch.float64).view(1, 1, height, 1) - cy[..., None, None]
    xx = torch.arange(width, dtype=torch.float64).view(1, 1, 1, width) - cx[..., None, None]
    blobs = torch.exp(-(yy**2 + xx**2) / (2 * size[..., None, None] ** 2)) * amp[..., None, None]
    latents = (noise + blobs.sum(dim=1)).to(device=device, dtype=dtype)
    return latents.requires_grad_(True)
