"""The loss terms: the seed notebook's, exactly as it wrote them, registered by name.

Every term takes a batch of images ``latents`` of shape ``[B, H, W]`` and returns a scalar.
The seed-compatible functions at the bottom (``create_shape_losses`` and friends) keep the
seed's names, signatures and numbers, so code written against the seed runs unchanged.

The seed's terms have known quirks, kept on purpose so the notebooks can show them:

* ``object_size`` thresholds with ``>``, so its gradient is zero everywhere: its weight does nothing;
* ``autocorr`` is unbounded below: it keeps rewarding larger values until the clamp stops them;
* ``perimeter`` is 0 for an all-on or all-off image;
* ``morphological`` (a closing) leaves an isolated bright pixel unpenalised;
* ``sparsity`` pulls pixels to 0 while ``binary`` pulls them to +-1 and ``magnitude`` keeps mean |x| >= 0.3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_latents
from .registry import register

# ---------------------------------------------------------------------------------------------
# The seed's shape terms
# ---------------------------------------------------------------------------------------------


@register(kind="shape", seed=True)
def sparsity(latents: torch.Tensor) -> torch.Tensor:
    """Mean absolute value: rewards a mostly-zero (dark) background.

    Pulls every pixel towards 0 - including the bright ones the other terms want at +1.
    """
    return torch.mean(torch.abs(latents))


@register(kind="shape", seed=True)
def binary(latents: torch.Tensor) -> torch.Tensor:
    """Squared distance to the nearer of -1 and +1: rewards pixels that are either off or on.

    Its levels are -1 and +1, so it disagrees with ``sparsity``, which wants the background at 0.
    """
    distance_from_binary = torch.min((latents - 1.0) ** 2, (latents + 1.0) ** 2)
    return torch.mean(distance_from_binary)


@register(kind="shape", seed=True)
def tv(latents: torch.Tensor) -> torch.Tensor:
    """Total variation (mean absolute neighbour difference): rewards smooth, piecewise-flat regions.

    The seed's ``dx`` is the difference along rows (dim 1) and ``dy`` along columns (dim 2).
    """
    dx = torch.abs(latents[:, 1:, :] - latents[:, :-1, :])
    dy = torch.abs(latents[:, :, 1:] - latents[:, :, :-1])
    return torch.mean(dx) + torch.mean(dy)


@register(kind="shape", seed=True)
def object_size(latents: torch.Tensor, *, threshold: float = 0.5, target: float = 0.2) -> torch.Tensor:
    """Squared gap between the bright fraction (pixels > threshold) and a target of 20%.

    Seed quirk: the hard threshold ``latents > threshold`` has zero gradient, so this term
    reports the gap but never moves a pixel. See ``soft_object_size`` for a version that does.
    """
    bright_ratio = torch.mean((latents > threshold).to(latents.dtype))
    return (bright_ratio - target) ** 2


@register(kind="shape", seed=True)
def magnitude(latents: torch.Tensor, *, minimum: float = 0.3) -> torch.Tensor:
    """Hinge on the mean absolute value: penalises images whose mean |x| falls below 0.3.

    Stops the collapse to all-zero that ``sparsity`` alone would cause.
    """
    return torch.relu(minimum - torch.mean(torch.abs(latents)))


# ---------------------------------------------------------------------------------------------
# The seed's contrastive term
# ---------------------------------------------------------------------------------------------


@register(kind="batch", seed=True)
def contrastive(latents: torch.Tensor) -> torch.Tensor:
    """Mean |cosine similarity| between different images: rewards a batch of different images.

    Works on raw values, so two images that share a uniform background at -1 already look
    alike; the cheapest way to lower it is to push backgrounds off the binary level.
    Zero (on the input's device and dtype) for a batch of one.
    """
    batch = latents.shape[0]
    if batch < 2:
        return latents.new_zeros(())
    flat_norm = F.normalize(latents.reshape(batch, -1), dim=1)
    sim_matrix = torch.matmul(flat_norm, flat_norm.T)
    mask = 1.0 - torch.eye(batch, device=latents.device, dtype=latents.dtype)
    return torch.mean(torch.abs(sim_matrix) * mask)


# ---------------------------------------------------------------------------------------------
# The seed's coherence terms (one is chosen by Config.coherence)
# ---------------------------------------------------------------------------------------------


@register(kind="coherence", seed=True)
def autocorr(latents: torch.Tensor) -> torch.Tensor:
    """Negative mean product of neighbouring pixels: rewards neighbours with the same sign.

    Seed quirk: unbounded below - doubling every pixel quadruples the reward - so it drives
    pixels to the clamp (+-1.5) rather than to the binary levels.
    """
    dx = latents[:, 1:, :] * latents[:, :-1, :]
    dy = latents[:, :, 1:] * latents[:, :, :-1]
    return -(torch.mean(dx) + torch.mean(dy))


@register(kind="coherence", seed=True)
def perimeter(latents: torch.Tensor, *, threshold: float = 0.5, temperature: float = 0.1) -> torch.Tensor:
    """Soft edge length divided by soft area: rewards compact blobs over scattered pixels.

    Seed quirk: 0 for an all-on or an all-off image, so it cannot tell those from a good blob.
    """
    binary_soft = torch.sigmoid((latents - threshold) / temperature)
    dx = torch.abs(binary_soft[:, 1:, :] - binary_soft[:, :-1, :])
    dy = torch.abs(binary_soft[:, :, 1:] - binary_soft[:, :, :-1])
    edge_length = torch.sum(dx) + torch.sum(dy)
    area = torch.sum(binary_soft) + 1e-6
    return edge_length / area


@register(kind="coherence", seed=True)
def morphological(latents: torch.Tensor) -> torch.Tensor:
    """Mean squared difference from a 3x3 closing (max-pool then min-pool): rewards gap-free blobs.

    Seed quirk: a closing fills dark gaps but keeps isolated bright pixels, so a lone bright
    speck costs nothing.
    """
    pooled = F.max_pool2d(latents.unsqueeze(1), kernel_size=3, stride=1, padding=1)
    closed = -F.max_pool2d(-pooled, kernel_size=3, stride=1, padding=1)
    return torch.mean((latents - closed.squeeze(1)) ** 2)


# ---------------------------------------------------------------------------------------------
# Seed-compatible functions: the seed notebook's names, signatures and numbers
# ---------------------------------------------------------------------------------------------

SEED_SHAPE_TERMS = ("sparsity", "binary", "tv", "object_size", "magnitude")


def create_shape_losses(latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """The seed's five shape terms of a ``[B, H, W]`` batch, as a dict name -> scalar."""
    check_latents(latent, "latent")
    return {
        "sparsity": sparsity(latent),
        "binary": binary(latent),
        "tv": tv(latent),
        "object_size": object_size(latent),
        "magnitude": magnitude(latent),
    }


def coherence_loss_autocorr(latent: torch.Tensor) -> torch.Tensor:
    """The seed's spatial-autocorrelation coherence loss (see :func:`autocorr`)."""
    return autocorr(check_latents(latent, "latent"))


def coherence_loss_perimeter(latent: torch.Tensor, threshold: float = 0.5, temperature: float = 0.1) -> torch.Tensor:
    """The seed's perimeter-to-area coherence loss (see :func:`perimeter`)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return perimeter(check_latents(latent, "latent"), threshold=threshold, temperature=temperature)


def coherence_loss_morphological(latent: torch.Tensor) -> torch.Tensor:
    """The seed's morphological-closing coherence loss (see :func:`morphological`)."""
    return morphological(check_latents(latent, "latent"))


def contrastive_shape_loss(latents: torch.Tensor) -> torch.Tensor:
    """The seed's contrastive loss (see :func:`contrastive`); zero for a batch of one."""
    return contrastive(check_latents(latents, "latents"))
