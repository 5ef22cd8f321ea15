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


def coherence_loss_perimeter(
    latent: torch.Tensor, threshold: float = 0.5, temperature: float = 0.1
) -> torch.Tensor:
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


# =============================================================================================
# Fixed terms (issue 5). New names, each fixing one flaw of a seed term; the seed terms and the
# seed-compatible functions above stay exactly as they are. PRESETS['default'] is built from these.
# =============================================================================================

LEVELS = (0.0, 1.0)
"""The two levels of the fixed terms: background 0 (dark, as ``sparsity`` wants) and shape 1."""

_BINOMIAL_3 = (1.0, 2.0, 1.0)


def _blur3(latents: torch.Tensor) -> torch.Tensor:
    """Clip to the levels [0, 1], then a 3x3 binomial blur ([1, 2, 1] x [1, 2, 1] / 16, edges
    replicated): ``[B, H, W]`` -> same.

    On a 0/1 image the blurred value crosses 0.5 right at a blob's edge, so a sigmoid of it has
    its slope there - not on the pixels deep inside or far outside a blob. The clip stops the
    terms that use it from pushing a pixel beyond a level (a pixel above 1 is as bright as a
    pixel gets; raising it further would only inflate the blurred value of its dark neighbours).
    """
    k = torch.tensor(_BINOMIAL_3, dtype=latents.dtype, device=latents.device)
    kernel = (k[:, None] * k[None, :] / 16.0).view(1, 1, 3, 3)
    padded = F.pad(latents.clamp(*LEVELS).unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel).squeeze(1)


def _soft_mask(latents: torch.Tensor, threshold: float, temperature: float) -> torch.Tensor:
    """``sigmoid((latents - threshold) / temperature)``: a differentiable "is bright" in [0, 1]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.sigmoid((latents - threshold) / temperature)


@register(kind="shape")
def binary01(latents: torch.Tensor, *, low: float = LEVELS[0], high: float = LEVELS[1]) -> torch.Tensor:
    """Mean absolute distance to the nearer of two levels, 0 (off) and 1 (on): rewards two-level images.

    Fixes the seed's ``binary``: its levels -1 and +1 disagree with ``sparsity`` (background at 0)
    and with the bright threshold 0.5 (a pixel at -1 and one at 0 are both "dark"), so the terms
    pull against each other and pixels settle between levels. Here the dark level is the
    background and the threshold 0.5 lies half-way between the levels. The distance is absolute,
    not squared, so its pull does not fade near a level: the small, steady pushes of the other
    terms (which Adam rescales to full-size steps) cannot float the background off 0.
    """
    if not low < high:
        raise ValueError(f"binary01 needs low < high, got low={low}, high={high}")
    return torch.minimum((latents - low).abs(), (latents - high).abs()).mean()


@register(kind="shape")
def soft_object_size(
    latents: torch.Tensor,
    *,
    threshold: float = 0.5,
    target: float = 0.2,
    temperature: float = 0.1,
    straight_through: bool = True,
) -> torch.Tensor:
    """Squared gap between each image's bright fraction and the target (20%), with a gradient.

    Fixes the seed's ``object_size``, whose hard threshold has zero gradient, so its weight did
    nothing. The gradient here comes from a soft fraction, the mean of
    ``sigmoid((blur(x) - threshold) / temperature)``; the 3x3 blur puts its slope on the pixels
    at blob edges (even when they sit exactly at 0 or 1), so the term grows or shrinks blobs
    instead of lifting the whole background - Adam rescales even the sigmoid's tiny tails to
    full-size steps, which would raise far-away pixels into specks. The gap is taken per image
    and then averaged, so every image, not only the batch, is pulled to the target.

    With ``straight_through=True`` (the default) the value is the honest measure - the fraction
    of pixels above the threshold, as ``metrics.shape_metrics`` counts it - and the gradient is
    the soft fraction's, scaled by that true gap; with ``False`` value and gradient are both the
    soft fraction's (a smooth function, which a gradient check can verify).
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a fraction in [0, 1], got {target}")
    soft = _soft_mask(_blur3(latents), threshold, temperature).mean(dim=(1, 2))
    if straight_through:
        hard = (latents > threshold).to(latents.dtype).mean(dim=(1, 2))
        soft = soft + (hard - soft).detach()  # value of `hard`, gradient of `soft`
    return ((soft - target) ** 2).mean()


@register(kind="batch")
def soft_iou(latents: torch.Tensor, *, threshold: float = 0.5, temperature: float = 0.1) -> torch.Tensor:
    """Mean soft intersection-over-union of the bright masks of every pair of images.

    Rewards a batch whose shapes sit in different places. Fixes the seed's ``contrastive``:
    its |cosine| on raw values counts the shared dark background as likeness, so the cheapest
    way to lower it is to push backgrounds off the binary level. Here only bright pixels count:
    the masks are ``sigmoid((blur(x) - threshold) / temperature)`` (blurred, so the gradient
    moves blob edges apart), and the measure is the same IoU ``shape_metrics`` reports.
    Zero for a batch of one.
    """
    batch = latents.shape[0]
    if batch < 2:
        return latents.new_zeros(())
    masks = _soft_mask(_blur3(latents), threshold, temperature).reshape(batch, -1)
    inter = masks @ masks.T
    area = masks.sum(dim=1)
    union = area[:, None] + area[None, :] - inter
    iou = inter / union.clamp_min(1e-12)
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=latents.device)
    return iou[off_diagonal].mean()


@register(kind="coherence")
def soft_perimeter(
    latents: torch.Tensor, *, threshold: float = 0.5, temperature: float = 0.1
) -> torch.Tensor:
    """Soft boundary length per pixel, the frame counting as background: rewards few, round blobs.

    Fixes the seed's coherence terms: ``autocorr`` is unbounded below (it pays for ever larger
    values, so pixels run to the clamp) and ``perimeter`` divides by the area (so growing the
    bright area, up to an all-on image, scores as well as a compact blob). This is the edge length
    of the soft mask ``sigmoid((x - threshold) / temperature)`` divided by the pixel count -
    bounded (0 for a blank image, at most about 2) and blind to the area, which
    ``soft_object_size`` sets - so it only asks for shorter edges: fewer, rounder blobs and no
    specks (a lone bright pixel costs 4 edges). The image is padded with background first, so a
    shape pays for its edge along the frame too; otherwise strips hugging the border are nearly
    free, and the optimizer finds them.
    """
    masks = F.pad(_soft_mask(latents, threshold, temperature), (1, 1, 1, 1))
    dx = (masks[:, 1:, :] - masks[:, :-1, :]).abs().sum(dim=(1, 2))
    dy = (masks[:, :, 1:] - masks[:, :, :-1]).abs().sum(dim=(1, 2))
    return ((dx + dy) / latents[0].numel()).mean()


@register(kind="coherence")
def open_close(latents: torch.Tensor) -> torch.Tensor:
    """Mean squared difference from a 3x3 closing plus that from a 3x3 opening: no gaps, no specks.

    Fixes the seed's ``morphological``, a closing only (max-pool then min-pool), which fills dark
    gaps but leaves an isolated bright pixel unchanged - so specks cost nothing. The opening
    (min-pool then max-pool) removes bright specks and thin spurs, so they cost here too.
    """
    x = latents.unsqueeze(1)

    def dilate(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, kernel_size=3, stride=1, padding=1)

    def erode(t: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(-t, kernel_size=3, stride=1, padding=1)

    closed = erode(dilate(x))
    opened = dilate(erode(x))
    return torch.mean((x - closed) ** 2 + (x - opened) ** 2)
