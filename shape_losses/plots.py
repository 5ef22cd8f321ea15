"""Pictures of a run: image grids, per-term loss curves, the coherence comparison, fast PNGs.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``: nothing is
shown, nothing is left open in pyplot's figure list, and a figure that is the last expression of
a notebook cell displays once (these figures carry their own PNG repr). Save one with
:func:`save_figure`. :func:`to_png_bytes` skips matplotlib altogether (Pillow only) for live
updates, where a figure per frame would be too slow.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ._checks import check_int, check_real

CMAP = "gray"
VMIN, VMAX = -1.5, 1.5
"""The seed's display range (also its clamp range), so plots of different runs compare."""


class ShapeFigure(Figure):
    """A ``Figure`` on an Agg canvas that renders itself as PNG in Jupyter, even when pyplot was
    never imported (``fig.canvas.draw()`` works too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        super().__init__(*args, **kwargs)
        FigureCanvasAgg(self)

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=self.dpi)
        return buffer.getvalue()


def _images(latents: Any, name: str = "latents") -> np.ndarray:
    """``[B, H, W]`` float array from a tensor, an array, or anything with ``.latents`` (a Result)."""
    if hasattr(latents, "latents") and not isinstance(latents, (torch.Tensor, np.ndarray)):
        latents = latents.latents
    if isinstance(latents, torch.Tensor):
        latents = latents.detach().cpu().to(torch.float64).numpy()
    if not isinstance(latents, np.ndarray):
        raise TypeError(f"{name} must be a tensor or array of shape [B, H, W], got {type(latents).__name__}")
    if latents.ndim != 3 or 0 in latents.shape:
        hint = " (add a batch dimension: x[None])" if latents.ndim == 2 else ""
        raise ValueError(f"{name} must have shape [B, H, W] with B, H, W >= 1, got {latents.shape}{hint}")
    if latents.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers or booleans, got dtype {latents.dtype}")
    return latents.astype(np.float64, copy=False)


def _range(vmin: float, vmax: float) -> tuple[float, float]:
    vmin, vmax = check_real(vmin, "vmin"), check_real(vmax, "vmax")
    if not vmin < vmax:
        raise ValueError(f"vmin must be < vmax, got vmin={vmin}, vmax={vmax}")
    return vmin, vmax


def _columns(count: int, ncols: int | None) -> int:
    if ncols is None:
        return min(count, 6)
    return min(check_int(ncols, "ncols", minimum=1), count)


def _hide_frame(ax: Any) -> None:
    """Hide the ticks but keep the axis labels (``axis('off')`` would hide those too).

    The spines stay, thin and gray, so that neighbouring white images remain apart.
    """
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.6")
        spine.set_linewidth(0.8)


def image_grid(
    latents: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    vmin: float = VMIN,
    vmax: float = VMAX,
    title: str | None = None,
) -> Figure:
    """A grid of the images of a batch ``[B, H, W]`` (tensor, array or Result), in grayscale.

    Args:
        titles: one per image; default ``#1 .. #B``, matching the rows of ``ShapeMetrics.table()``.
        ncols: images per row (default: up to 6).
        vmin, vmax: the gray range; fixed (the seed's +-1.5) so grids of different runs compare.
        title: a title over the whole grid.
    """
    images = _images(latents)
    vmin, vmax = _range(vmin, vmax)
    count = len(images)
    if titles is None:
        titles = [f"#{i + 1}" for i in range(count)]
    elif isinstance(titles, str) or len(titles) != count:
        raise ValueError(f"titles must be a sequence of {count} strings (one per image), got {titles!r}")
    cols = _columns(count, ncols)
    rows = math.ceil(count / cols)
    fig = ShapeFigure(figsize=(1.7 * cols, 1.7 * rows + (0.35 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < count:
            ax.imshow(images[i], cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(str(titles[i]), fontsize=9)
            _hide_frame(ax)
        else:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def loss_curves(history_or_result: Any, *, terms: Sequence[str] | None = None) -> Figure:
    """One small panel per loss term, plus the weighted total, against the step.

    Terms have very different scales (``autocorr`` is negative, ``object_size`` tiny), so each
    gets its own y axis. Pass a ``Result`` (panel titles then show each term's weight) or its
    ``history`` dict name -> per-step values; ``terms`` picks and orders the panels.
    """
    weights: dict[str, float] = {}
    history = history_or_result
    if hasattr(history_or_result, "history"):
        history = history_or_result.history
        config = getattr(history_or_result, "config", None)
        if config is not None:
            weights = dict(config.active_terms())
    if not isinstance(history, Mapping) or not history:
        raise TypeError(
            f"history_or_result must be a Result or a non-empty dict name -> values, got {history!r}"
        )
    if terms is None:
        terms = [k for k in history if k != "total"] + (["total"] if "total" in history else [])
    else:
        if isinstance(terms, str):
            terms = [terms]
        unknown = [t for t in terms if t not in history]
        if unknown or not terms:
            raise ValueError(f"terms must name recorded terms {list(history)}, got {list(terms)}")
    cols = min(len(terms), 4)
    rows = math.ceil(len(terms) / cols)
    fig = ShapeFigure(figsize=(2.9 * cols, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, terms, strict=False):
        values = np.asarray(history[name], dtype=float)
        ax.plot(np.arange(len(values)), values, linewidth=1.5, color="k" if name == "total" else "C0")
        label = name if name not in weights else f"{name} (x{weights[name]:g})"
        ax.set_title(label, fontsize=9, fontweight="bold" if name == "total" else "normal")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(values):
            ax.annotate(f"{values[-1]:.4g}", xy=(1, 1), xycoords="axes fraction", ha="right", va="bottom",
                        fontsize=7, color="0.35")
    for ax in axes.flat[len(terms):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    return fig


def _caption(metrics: Any) -> str:
    s = metrics.summary()

    def num(key: str, fmt: str) -> str:
        value = s.get(key, math.nan)
        return "n/a" if value is None or math.isnan(value) else format(value, fmt)

    return (
        f"blobs {num('blobs', '.1f')}\nbright {num('bright_fraction', '.2f')}\n"
        f"binary {num('near_binary', '.2f')}\nIoU {num('mean_iou', '.2f')}"
    )


def comparison_grid(
    results: Mapping[str, Any],
    *,
    metrics: Mapping[str, Any] | bool | None = None,
    ncols: int | None = None,
    vmin: float = VMIN,
    vmax: float = VMAX,
    title: str | None = None,
) -> Figure:
    """One row per run, labelled on the left: the seed's coherence comparison, with labels that show.

    Args:
        results: row label -> batch ``[B, H, W]`` (tensor, array or Result); rows in this order.
        metrics: row label -> ``ShapeMetrics``, printed as a short caption right of each row;
            ``True`` computes them with ``shape_metrics``; ``None`` for no captions.
        ncols: images shown per row (default: all of the largest batch).
    """
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results must be a non-empty mapping label -> latents, got {results!r}")
    batches = {str(label): _images(value, f"results[{label!r}]") for label, value in results.items()}
    vmin, vmax = _range(vmin, vmax)
    if metrics is True:
        from .metrics import shape_metrics

        metrics = {label: shape_metrics(torch.from_numpy(images)) for label, images in batches.items()}
    elif metrics is not None and metrics is not False:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping label -> ShapeMetrics, True or None, got {metrics!r}")
        metrics = {str(k): v for k, v in metrics.items()}
        missing = [label for label in batches if label not in metrics]
        if missing:
            raise ValueError(f"metrics has no entry for rows {missing}; rows: {list(batches)}")
    else:
        metrics = None
    cols = _columns(max(len(b) for b in batches.values()), ncols)
    rows = len(batches)
    fig = ShapeFigure(
        figsize=(1.6 * cols + 0.6 + (1.3 if metrics else 0), 1.6 * rows + (0.45 if title else 0)),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, (label, images) in enumerate(batches.items()):
        for col, ax in enumerate(axes[row]):
            if col < len(images):
                ax.imshow(images[col], cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
                _hide_frame(ax)
            else:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(label, fontsize=11, fontweight="bold")
        if metrics:
            axes[row, -1].text(1.08, 0.5, _caption(metrics[label]), transform=axes[row, -1].transAxes,
                               ha="left", va="center", fontsize=8, family="monospace")
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def to_png_bytes(
    latents: Any,
    *,
    vmin: float = VMIN,
    vmax: float = VMAX,
    scale: int = 4,
    ncols: int | None = None,
    gap: int = 2,
) -> bytes:
    """A PNG of the batch as a grid, straight from the array with Pillow (no matplotlib).

    Fast enough for a live view refreshed every few steps. Pixels are mapped linearly from
    ``[vmin, vmax]`` to black..white (clipped; NaN shows black), each enlarged to
    ``scale x scale`` with no smoothing, laid out ``ncols`` per row and separated by ``gap``
    pixels of a dark blue that no gray value can be mistaken for.
    """
    from PIL import Image

    images = _images(latents)
    vmin, vmax = _range(vmin, vmax)
    scale = check_int(scale, "scale", minimum=1)
    gap = check_int(gap, "gap", minimum=0)
    count, height, width = images.shape
    cols = _columns(count, ncols)
    rows = math.ceil(count / cols)
    gray = np.nan_to_num((images - vmin) / (vmax - vmin), nan=0.0)
    gray = (np.clip(gray, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if scale > 1:
        gray = gray.repeat(scale, axis=1).repeat(scale, axis=2)
    tile_h, tile_w = height * scale, width * scale
    canvas = np.empty((rows * tile_h + (rows - 1) * gap, cols * tile_w + (cols - 1) * gap, 3), np.uint8)
    canvas[:] = (30, 40, 80)
    for i in range(count):
        top, left = (i // cols) * (tile_h + gap), (i % cols) * (tile_w + gap)
        canvas[top:top + tile_h, left:left + tile_w] = gray[i, :, :, None]
    buffer = io.BytesIO()
    Image.fromarray(canvas, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, parent folders created); returns the path."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=check_int(dpi, "dpi", minimum=1), facecolor="white")
    return path
