"""Measures of whether shapes formed: brightness, blobs, binariness, compactness, diversity.

All measures work on the bright mask ``latents > threshold`` (the seed's own definition of a
bright pixel). Blobs are 4-connected components found by ``scipy.ndimage.label``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ._checks import check_latents, check_real

BINARY_TOLERANCE = 0.1
"""A pixel is near-binary when within this fraction of the level gap of one of the two levels."""


@dataclass(frozen=True)
class ShapeMetrics:
    """Per-image arrays (length B) and batch summaries of :func:`shape_metrics`.

    Attributes:
        bright_fraction: share of pixels above the threshold.
        blobs: number of 4-connected bright components.
        near_binary: share of pixels within 10% of the level gap of the dark or bright level
            (the median of the pixels below / above the threshold).
        compactness: area-weighted mean isoperimetric quotient 4*pi*A/P^2 of the blobs, with P
            the number of exposed pixel edges (a square scores pi/4 = 0.785; specks and
            ragged shapes score lower); NaN for an image without blobs.
        pairwise_iou: ``[B, B]`` intersection-over-union of the bright masks (1 on the diagonal).
        threshold: the threshold used.
    """

    bright_fraction: np.ndarray
    blobs: np.ndarray
    near_binary: np.ndarray
    compactness: np.ndarray
    pairwise_iou: np.ndarray
    threshold: float

    @property
    def batch_size(self) -> int:
        return len(self.bright_fraction)

    @property
    def mean_iou(self) -> float:
        """Mean IoU over distinct pairs (NaN for a batch of one): lower is more diverse."""
        b = self.batch_size
        if b < 2:
            return math.nan
        return float(self.pairwise_iou[~np.eye(b, dtype=bool)].mean())

    def summary(self) -> dict[str, float]:
        """Batch means (and the worst IoU), as plain floats."""
        iou = self.pairwise_iou[~np.eye(self.batch_size, dtype=bool)]
        return {
            "bright_fraction": float(self.bright_fraction.mean()),
            "blobs": float(self.blobs.mean()),
            "near_binary": float(self.near_binary.mean()),
            "compactness": (
                float(np.nanmean(self.compactness)) if np.isfinite(self.compactness).any() else math.nan
            ),
            "mean_iou": self.mean_iou,
            "max_iou": float(iou.max()) if iou.size else math.nan,
        }

    def to_dict(self) -> dict:
        """JSON-friendly: per-image lists, the IoU matrix and the summary (NaN becomes None)."""

        def clean(values):
            return [None if isinstance(v, float) and math.isnan(v) else v for v in values]

        return {
            "threshold": self.threshold,
            "per_image": {
                "bright_fraction": clean(self.bright_fraction.tolist()),
                "blobs": self.blobs.tolist(),
                "near_binary": clean(self.near_binary.tolist()),
                "compactness": clean(self.compactness.tolist()),
            },
            "pairwise_iou": self.pairwise_iou.tolist(),
            "summary": {k: (None if math.isnan(v) else v) for k, v in self.summary().items()},
        }

    def table(self, digits: int = 2) -> str:
        """A compact text table: one row per image, then the batch mean and the diversity."""
        fmt = f"{{:.{digits}f}}"

        def num(v: float) -> str:
            return "n/a" if math.isnan(v) else fmt.format(v)

        lines = [f"{'image':>6} {'bright':>7} {'blobs':>6} {'binary':>7} {'compact':>8}"]
        for i in range(self.batch_size):
            lines.append(
                f"{i + 1:>6} {num(self.bright_fraction[i]):>7} {int(self.blobs[i]):>6d} "
                f"{num(self.near_binary[i]):>7} {num(self.compactness[i]):>8}"
            )
        s = self.summary()
        lines.append(
            f"{'mean':>6} {num(s['bright_fraction']):>7} {num(s['blobs']):>6} "
            f"{num(s['near_binary']):>7} {num(s['compactness']):>8}"
        )
        lines.append(f"pairwise IoU: mean {num(s['mean_iou'])}, max {num(s['max_iou'])}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _near_binary(image: np.ndarray, mask: np.ndarray) -> float:
    dark, bright = image[~mask], image[mask]
    if dark.size == 0 or bright.size == 0:  # one level only: every pixel near it counts
        level = float(np.median(image))
        return float(np.mean(np.abs(image - level) <= BINARY_TOLERANCE))
    low, high = float(np.median(dark)), float(np.median(bright))
    tolerance = BINARY_TOLERANCE * (high - low)
    near = np.minimum(np.abs(image - low), np.abs(image - high)) <= tolerance
    return float(near.mean())


def _compactness(labels: np.ndarray, count: int) -> float:
    if count == 0:
        return math.nan
    padded = np.pad(labels, 1)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(float)
    perimeters = np.zeros(count + 1)
    for axis in (0, 1):
        a = padded
        b = np.roll(padded, 1, axis=axis)
        edges = a != b
        np.add.at(perimeters, a[edges], 1)
        np.add.at(perimeters, b[edges], 1)
    perimeters = perimeters[1:]
    quotient = 4 * math.pi * areas / perimeters**2
    return float(np.sum(quotient * areas) / np.sum(areas))


def shape_metrics(latents: torch.Tensor, threshold: float = 0.5) -> ShapeMetrics:
    """Measure a batch ``[B, H, W]`` (a tensor or array): see :class:`ShapeMetrics`."""
    if isinstance(latents, np.ndarray):
        latents = torch.from_numpy(latents)
    check_latents(latents, "latents", finite=True)
    threshold = check_real(threshold, "threshold")
    images = latents.detach().cpu().double().numpy()
    masks = images > threshold

    bright, blobs, near, compact = [], [], [], []
    for image, mask in zip(images, masks, strict=True):
        labels, count = ndimage.label(mask)
        bright.append(float(mask.mean()))
        blobs.append(count)
        near.append(_near_binary(image, mask))
        compact.append(_compactness(labels, count))

    flat = masks.reshape(len(masks), -1).astype(np.int64)
    inter = flat @ flat.T
    area = flat.sum(axis=1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    return ShapeMetrics(
        bright_fraction=np.array(bright),
        blobs=np.array(blobs, dtype=int),
        near_binary=np.array(near),
        compactness=np.array(compact),
        pairwise_iou=iou,
        threshold=threshold,
    )
