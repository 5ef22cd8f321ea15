"""The explorer in the kernel (no browser): controls, runs, cancellation, errors, export.

Small batches and few steps keep these quick. Every check compares the explorer's state with
a fresh, independent ``optimize`` of the settings the test itself chose, so nothing depends
on particular seeds or numbers.
"""

from __future__ import annotations

import io
import random
import time

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from PIL import Image

import shape_losses as sl
from shape_losses.config import PRESETS, Config
from shape_losses.explorer import SINGLE_THREAD_NUMEL, Explorer, frames_gif, grid_png, loss_curves_png
from shape_losses.registry import coherence_names, register, unregister, weighted_term_names

SMALL = {"batch_size": 3, "image_size": 16, "steps": 30}


@pytest.fixture
def make():
    """Build explorers with small defaults; close them (and their worker threads) afterwards."""
    built = []

    def build(**kwargs):
        ex = Explorer(**{**SMALL, "background": False, **kwargs})
        built.append(ex)
        return ex

    yield build
    for ex in built:
        ex.close()


@pytest.fixture
def temp_term():
    """Register temporary terms for one test, removed afterwards."""
    names = []

    def add(name, fn, kind="shape"):
        register(name, kind=kind)(fn)
        names.append(name)
        return name

    yield add
    for name in names:
        unregister(name)


@pytest.fixture
def temp_preset():
    saved = dict(PRESETS)
    yield PRESETS
    PRESETS.clear()
    PRESETS.update(saved)


def expected(config: Config, seed: int, batch_size: int, image_size: int) -> sl.Result:
    """A fresh synchronous run of exactly these settings, independent of the explorer.

    The explorer runs batches this small on one torch thread (the rounding of some kernels
    depends on the thread count), so this does too.
    """
    assert batch_size * image_size**2 <= SINGLE_THREAD_NUMEL
    x = sl.initialize_latents(batch_size, (image_size, image_size), seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sl.optimize(x, config)
    finally:
        torch.set_num_threads(threads)


def _descendants(widget):
    found = [widget]
    for child in getattr(widget, "children", ()):
        found.extend(_descendants(child))
    return found


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def assert_shows(ex: Explorer, result: sl.Result) -> None:
    """The explorer shows ``result``: same config, same images, and image bytes and metrics of them."""
    assert ex.error is None, ex.message.value
    assert ex.result.config == result.config
    # Same settings and seed give the same images; kernels may round differently by a few ulp
    # when another thread is busy, so compare to well below any visible or measured difference.
    torch.testing.assert_close(ex.result.latents, result.latents, rtol=0, atol=1e-5)
    assert ex.image_bytes == grid_png(ex.result.latents)
    assert ex.image.value == ex.image_bytes
    metrics = sl.shape_metrics(ex.result.latents)
    assert np.array_equal(ex.metrics.bright_fraction, metrics.bright_fraction)
    assert np.array_equal(ex.metrics.blobs, metrics.blobs)
    assert np.array_equal(ex.metrics.pairwise_iou, metrics.pairwise_iou)


# -- the widget and its controls --------------------------------------------------------------


def test_explorer_returns_one_widget():
    built = sl.explorer(run=False, background=False, **SMALL)
    try:
        assert isinstance(built, widgets.VBox) and isinstance(built, Explorer)
        assert repr(built) == "<shape_losses explorer: preset 'default', 3 images of 16x16 (live widget)>"
        assert built.weight_sliders["binary"] in _descendants(built)
    finally:
        built.close()


def test_every_registered_term_and_preset_has_a_control(make):
    ex = make(run=False)
    assert list(ex.weight_sliders) == weighted_term_names()
    options = [value for _, value in ex.controls["coherence"].options]
    assert options == [None, *coherence_names()]
    assert list(ex.controls["preset"].options) == list(PRESETS)
    for slider in ex.weight_sliders.values():
        assert slider.continuous_update is False


def test_a_new_term_and_preset_appear_without_ui_changes(make, temp_term, temp_preset):
    temp_term("explorer_test_shape", lambda latents: latents.mean() ** 2)
    temp_term("explorer_test_coherence", lambda latents: latents.std(), kind="coherence")
    temp_preset["explorer_test_preset"] = Config(weights={"binary": 1.0}, coherence=None, steps=10)
    ex = make(run=False)
    assert "explorer_test_shape" in ex.weight_sliders
    assert "explorer_test_coherence" in [v for _, v in ex.controls["coherence"].options]
    assert "explorer_test_preset" in ex.controls["preset"].options


def test_preset_switch_and_reset_restore_the_preset_exactly(make, temp_preset):
    temp_preset["explorer_test_preset"] = Config(
        weights={"tv": 0.3, "binary": 1.5}, coherence="perimeter", coherence_weight=0.7, steps=20, lr=0.05
    )
    ex = make()
    ex.controls["preset"].value = "explorer_test_preset"
    preset = PRESETS["explorer_test_preset"]
    assert ex.config == preset
    assert ex.weight_sliders["sparsity"].value == 0.0
    assert_shows(ex, expected(preset, 0, SMALL["batch_size"], SMALL["image_size"]))

    ex.weight_sliders["binary"].value = 0.2
    ex.controls["coherence"].value = None
    assert ex.config != preset
    ex.controls["reset"].click()
    assert ex.config == preset
    assert_shows(ex, expected(preset, 0, SMALL["batch_size"], SMALL["image_size"]))


# -- runs follow the controls -----------------------------------------------------------------


def test_changing_controls_changes_result_image_and_metrics(make):
    ex = make(seed=3)
    before = ex.image_bytes
    assert_shows(ex, expected(ex.config, 3, 3, 16))

    ex.weight_sliders["sparsity"].value = 1.7
    assert ex.result.config.weights["sparsity"] == 1.7
    assert_shows(ex, expected(ex.config, 3, 3, 16))
    assert ex.image_bytes != before

    before = ex.image_bytes
    ex.controls["seed"].value = 4
    assert_shows(ex, expected(ex.config, 4, 3, 16))
    assert ex.image_bytes != before

    ex.controls["coherence"].value = None
    assert ex.result.config.coherence is None
    assert "autocorr" not in ex.result.history
    assert_shows(ex, expected(ex.config, 4, 3, 16))

    ex.controls["batch_size"].value = 5
    ex.controls["image_size"].value = 20
    assert tuple(ex.result.latents.shape) == (5, 20, 20)
    assert ex.metrics.batch_size == 5
    assert png_size(ex.image_bytes) == png_size(grid_png(torch.zeros(5, 20, 20)))
    assert_shows(ex, expected(ex.config, 4, 5, 20))

    ex.controls["steps"].value = 40
    ex.controls["lr"].value = 0.05
    assert ex.result.steps_run == 40 and ex.result.config.lr == 0.05
    assert_shows(ex, expected(ex.config, 4, 5, 20))


def test_set_applies_several_controls_with_one_run(make):
    ex = make()
    shown = len(ex.runs)
    ex.set(weights={"binary": 0.4, "tv": 0.9}, seed=7, coherence="morphological", steps=20)
    assert len(ex.runs) == shown + 1
    assert ex.config.weights["binary"] == 0.4 and ex.config.coherence == "morphological"
    assert_shows(ex, expected(ex.config, 7, 3, 16))
    with pytest.raises(ValueError, match="lr"):
        ex.set(lr=50.0)
    with pytest.raises(ValueError, match="coherence"):
        ex.set(coherence="no_such_term")
    with pytest.raises(ValueError, match="no_such_control"):
        ex.set(no_such_control=1)
    with pytest.raises(ValueError, match="weight"):
        ex.set(weights={"no_such_term": 1.0})


def test_auto_run_off_waits_for_the_run_button(make):
    ex = make(auto_run=False)
    first = ex.result
    ex.weight_sliders["binary"].value = 0.3
    assert ex.result is first
    assert "Run" in ex.status.value
    ex.controls["run"].click()
    assert ex.result is not first
    assert_shows(ex, expected(ex.config, 0, 3, 16))


def test_new_seed_button_moves_to_the_next_seed(make):
    ex = make(seed=5)
    ex.controls["new_seed"].click()
    assert ex.controls["seed"].value == 6
    assert_shows(ex, expected(ex.config, 6, 3, 16))


# -- responsiveness: changes never queue up ---------------------------------------------------


def test_rapid_changes_end_in_exactly_the_last_state(make):
    ex = make(background=True, steps=60)
    ex.wait()
    rng = random.Random()
    names = list(ex.weight_sliders)
    final = {"weights": {}, "seed": 0, "coherence": ex.controls["coherence"].value, "steps": 60}
    for _ in range(50):
        kind = rng.choice(["weight", "seed", "coherence", "steps"])
        if kind == "weight":
            name, value = rng.choice(names), round(rng.uniform(0, 3), 2)
            ex.weight_sliders[name].value = value
            final["weights"][name] = value
        elif kind == "seed":
            final["seed"] = ex.controls["seed"].value = rng.randrange(1000)
        elif kind == "coherence":
            final["coherence"] = ex.controls["coherence"].value = rng.choice([None, *coherence_names()])
        else:
            final["steps"] = ex.controls["steps"].value = rng.choice([20, 40, 60])
    assert ex.wait(timeout=120)

    base = PRESETS["default"]
    weights = dict(base.weights)
    weights.update(final["weights"])
    weights = {n: w for n, w in weights.items() if n in base.weights or w > 0}
    config = Config(
        weights=weights, coherence=final["coherence"], coherence_weight=base.coherence_weight,
        steps=final["steps"], lr=base.lr, clamp=base.clamp, params=base.params, engine=base.engine,
    )
    assert ex.config == config  # the settings of the last change (equality ignores the terms' order)
    # The run is of the explorer's config: its terms in the sliders' order. The same weights in
    # another order sum the gradient in another order, and a config as rough as these random
    # ones can carry that last-bit difference into visible pixels.
    assert_shows(ex, expected(ex.config, final["seed"], 3, 16))
    assert ex.runs[-1].outcome == "shown"
    assert ex.runs[-1].generation == max(r.generation for r in ex.runs)


def test_a_change_stops_the_run_in_progress(make):
    ex = make(background=True, steps=2000, image_size=64, batch_size=8, run=False)
    ex.controls["seed"].value = 11  # starts a long run ...
    deadline = time.monotonic() + 60
    while ex.progress.value == 0 and ex.running and time.monotonic() < deadline:
        time.sleep(0.005)
    ex.set(steps=20)  # ... which this change stops
    assert ex.wait(timeout=120)
    outcomes = {r.generation: r for r in ex.runs}
    long_run = outcomes[max(outcomes) - 1]
    assert long_run.outcome == "cancelled"
    assert long_run.steps_run < 2000
    assert_shows(ex, expected(ex.config, 11, 8, 64))


# -- errors are shown, not raised -------------------------------------------------------------


def test_a_raising_term_is_shown_and_the_widget_keeps_working(make, temp_term):
    def explorer_test_boom(latents):
        raise RuntimeError("boom from a test term")

    temp_term("explorer_test_boom", explorer_test_boom)
    ex = make()
    good = ex.image_bytes
    ex.weight_sliders["explorer_test_boom"].value = 1.0  # must not raise
    assert isinstance(ex.error, RuntimeError)
    assert "boom from a test term" in ex.message.value
    assert "explorer_test_boom" in ex.message.value
    assert ex.image_bytes == good
    assert ex.runs[-1].outcome == "error"

    ex.weight_sliders["explorer_test_boom"].value = 0.0
    assert ex.error is None and ex.message.value == ""
    assert_shows(ex, expected(ex.config, 0, 3, 16))


def test_errors_in_the_background_worker_are_shown_too(make, temp_term):
    temp_term("explorer_test_nan", lambda latents: latents.sum() * float("nan"))
    ex = make(background=True)
    ex.wait()
    ex.weight_sliders["explorer_test_nan"].value = 2.0
    ex.wait()
    assert isinstance(ex.error, sl.NonFiniteLossError)
    assert "explorer_test_nan" in ex.message.value
    ex.weight_sliders["explorer_test_nan"].value = 0.0
    ex.wait()
    assert_shows(ex, expected(ex.config, 0, 3, 16))


def test_a_value_out_of_range_is_shown(make):
    ex = make()
    good = ex.image_bytes
    ex.controls["seed"].value = -1
    assert isinstance(ex.error, ValueError)
    assert "seed" in ex.message.value
    assert ex.image_bytes == good
    ex.controls["seed"].value = 2
    assert_shows(ex, expected(ex.config, 2, 3, 16))


def test_construction_checks_its_arguments():
    with pytest.raises(ValueError, match="preset"):
        Explorer("no_such_preset", run=False)
    with pytest.raises(ValueError, match="batch_size"):
        Explorer(batch_size=0, run=False)
    with pytest.raises(ValueError, match="image_size"):
        Explorer(image_size=5, run=False)
    with pytest.raises(TypeError, match="seed"):
        Explorer(seed=1.5, run=False)


def test_nothing_is_printed(make, capsys):
    ex = make()
    ex.weight_sliders["binary"].value = 0.5
    ex.controls["seed"].value = -3
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


# -- animation and export ---------------------------------------------------------------------


def test_frames_scrubber_and_export(make, tmp_path):
    ex = make(frames=10)
    frames = ex.result.frames
    assert len(frames) == len(ex.result.frame_steps) >= 2
    assert torch.equal(frames[0], sl.initialize_latents(3, (16, 16), seed=0).detach())
    assert torch.equal(frames[-1], ex.result.latents)
    frame = ex.controls["frame"]
    assert frame.max == ex.controls["play"].max == len(frames) - 1
    assert frame.value == frame.max
    last = ex.frame_image.value
    frame.value = 0
    assert ex.frame_image.value != last

    png = ex.export_png(tmp_path)
    assert png.read_bytes() == ex.image_bytes
    gif = ex.export_gif(tmp_path / "sub")
    with Image.open(gif) as image:
        assert image.format == "GIF"
        assert image.n_frames == len(frames)

    ex.controls["export_dir"].value = str(tmp_path / "clicked")
    ex.controls["save_gif"].click()
    assert (tmp_path / "clicked" / gif.name).exists()
    assert "data:image/gif;base64," in ex.downloads.value


def test_renderers():
    x = torch.linspace(-2, 2, 6 * 12 * 12).reshape(6, 12, 12)
    with Image.open(io.BytesIO(grid_png(x))) as image:
        pixels = np.asarray(image.convert("L"))
        assert image.size[0] > image.size[1]  # 3 columns, 2 rows
    assert pixels.min() == 0 and pixels.max() == 255
    curves = loss_curves_png({"a": [3.0, 2.0, 1.0], "total": [1.0, 0.5, 0.2]}, {"a": 2.0})
    assert png_size(curves)[0] > 0
    with pytest.raises(ValueError, match="frame_steps"):
        frames_gif(torch.zeros(3, 2, 12, 12), [0, 1])
