"""Plots: what each figure holds, labels that really show, and the Pillow fast path."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import shape_losses as sl


@pytest.fixture(scope="module")
def result():
    x = sl.initialize_latents(3, (12, 12), seed=0)
    return sl.optimize(x, replace(sl.PRESETS["seed"], steps=6))


def _image_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.images]


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_image_grid(result):
    fig = sl.image_grid(result.latents, title="after", ncols=2)
    axes = _image_axes(fig)
    assert isinstance(fig, Figure) and len(axes) == 3
    assert [ax.get_title() for ax in axes] == ["#1", "#2", "#3"]
    assert fig.get_suptitle() == "after"
    np.testing.assert_allclose(axes[1].images[0].get_array(), result.latents[1].numpy(), rtol=1e-6)
    assert axes[0].images[0].get_clim() == (-1.5, 1.5)
    assert len(fig.axes) == 4  # 2 x 2 grid, the spare panel hidden
    assert not fig.axes[3].axison


def test_image_grid_accepts_results_arrays_and_titles(result):
    fig = sl.image_grid(result, titles=["a", "b", "c"], vmin=0, vmax=1)
    assert [ax.get_title() for ax in _image_axes(fig)] == ["a", "b", "c"]
    assert len(_image_axes(sl.image_grid(result.latents.numpy() > 0.5, vmin=0, vmax=1))) == 3


def test_figures_are_not_left_in_pyplot_and_render_in_notebooks(result):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = sl.image_grid(result.latents)
    assert plt.get_fignums() == before  # nothing for the caller to close
    assert _png(fig._repr_png_()).size[0] > 100  # shows as PNG even without pyplot's inline hook


def test_loss_curves_one_panel_per_term(result):
    fig = sl.loss_curves(result)
    panels = [ax for ax in fig.axes if ax.lines]
    names = [name for name, _ in result.config.active_terms()] + ["total"]
    assert len(panels) == len(names)
    assert [ax.get_title().split(" ")[0] for ax in panels] == names
    assert "x2" in panels[names.index("autocorr")].get_title()  # the weight is shown
    total = panels[-1].lines[0]
    np.testing.assert_allclose(total.get_ydata(), result.history["total"])
    np.testing.assert_array_equal(total.get_xdata(), np.arange(6))


def test_loss_curves_from_a_history_dict_and_chosen_terms(result):
    fig = sl.loss_curves(result.history, terms=["binary", "total"])
    assert [ax.get_title() for ax in fig.axes if ax.lines] == ["binary", "total"]
    with pytest.raises(ValueError, match="nope"):
        sl.loss_curves(result, terms=["nope"])
    with pytest.raises(TypeError, match="history"):
        sl.loss_curves([1, 2, 3])


def test_comparison_grid_has_visible_row_labels(result):
    labels = ["none", "autocorr", "a longer label"]
    runs = {label: result.latents for label in labels}
    fig = sl.comparison_grid(runs, metrics=True, title="compare")
    fig.canvas.draw()
    rows = np.array(fig.axes).reshape(len(labels), -1)
    assert rows.shape[1] == 3
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    for label, ax in zip(labels, rows[:, 0], strict=True):
        assert ax.get_ylabel() == label
        text = ax.yaxis.label
        assert ax.axison and text.get_visible()  # the seed's axis('off') hid exactly this
        box = text.get_window_extent(renderer)
        assert box.width > 0 and figure_box.x0 <= box.x0 and box.x1 <= ax.get_window_extent(renderer).x0
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    captions = [t.get_text() for ax in rows[:, -1] for t in ax.texts]
    assert len(captions) == 3 and all("blobs" in c for c in captions)
    for ax in rows[:, -1]:
        box = ax.texts[0].get_window_extent(renderer)
        assert box.x1 <= figure_box.x1 + 1  # the caption fits in the figure


def test_comparison_grid_with_given_metrics_and_without(result):
    metrics = {"a": sl.shape_metrics(result.latents), "b": sl.shape_metrics(result.latents[:2])}
    fig = sl.comparison_grid({"a": result, "b": result.latents[:2]}, metrics=metrics, ncols=2)
    assert len(fig.axes) == 4
    assert not [t for ax in sl.comparison_grid({"a": result}).axes for t in ax.texts]
    with pytest.raises(ValueError, match="'b'"):
        sl.comparison_grid({"a": result, "b": result}, metrics={"a": metrics["a"]})
    with pytest.raises(TypeError, match="results"):
        sl.comparison_grid({})


def test_to_png_bytes_layout_and_gray_levels():
    x = torch.zeros(5, 4, 6)
    x[0] = 1.5  # white
    x[1] = -1.5  # black
    x[2, 0, 0] = 9.0  # clipped to white
    x[3] = float("nan")  # shown black
    image = _png(sl.to_png_bytes(x, scale=3, ncols=2, gap=1))
    assert image.size == (2 * 6 * 3 + 1, 3 * 4 * 3 + 2 * 1)  # (width, height): 3 rows of 2
    pixels = np.asarray(image.convert("RGB"))
    assert (pixels[:12, :18] == 255).all()  # tile 1
    assert (pixels[:12, 19:] == 0).all()  # tile 2
    assert (pixels[13:25, :18][3:, :] == 128).all() and (pixels[13:16, :3] == 255).all()  # tile 3
    assert (pixels[13:25, 19:] == 0).all()  # tile 4 (NaN)
    gap = pixels[:12, 18]
    assert (gap == gap[0]).all() and len(set(gap[0].tolist())) > 1  # a colour, not a gray


def test_to_png_bytes_defaults(result):
    image = _png(sl.to_png_bytes(result.latents))
    assert image.size == (3 * 12 * 4 + 2 * 2, 12 * 4)
    with pytest.raises(ValueError, match="vmin"):
        sl.to_png_bytes(result.latents, vmin=1, vmax=0)
    with pytest.raises(ValueError, match="scale"):
        sl.to_png_bytes(result.latents, scale=0)


def test_save_figure(tmp_path, result):
    path = sl.save_figure(sl.image_grid(result.latents), tmp_path / "deep" / "grid.png")
    assert path.exists() and _png(path.read_bytes()).size[0] > 100
    with pytest.raises(TypeError, match="Figure"):
        sl.save_figure("not a figure", tmp_path / "x.png")


@pytest.mark.parametrize("fn", [sl.image_grid, sl.to_png_bytes, lambda x: sl.comparison_grid({"a": x})])
def test_plots_reject_bad_latents(fn):
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        fn(torch.zeros(8, 8))
    with pytest.raises(TypeError):
        fn("images")
