"""The live explorer: every knob of a run as a control, re-running the optimization as you move it.

The seed notebook tells a learner to "go back and edit the weights cell" and re-run by hand.
``explorer()`` turns each knob into a widget instead::

    import shape_losses as sl
    sl.explorer()            # in a notebook cell: one widget, controls left, views right

What it shows: the image grid (PNG bytes rendered straight from the array with Pillow, so an
update costs a millisecond, not a matplotlib figure), one small loss curve per term, the metrics
table, a progress bar, and a ``Play`` + slider scrubber over snapshots of the run, so the noise
can be watched turning into shapes; the result can be saved as a PNG and the frames as a GIF.

Only core ipywidgets are used (what Colab, JupyterLab, Notebook 7, VS Code and Voila all render).

How it stays responsive: a control change does not run the optimization inside the widget
callback (that would block the kernel, so the next slider move would queue behind it). It
hands the new settings to one background worker thread and bumps a generation counter; the
run in progress sees the counter change in its ``optimize`` callback and returns ``STOP``.
So changes never queue up: after any burst of changes, the state shown is the last one's.
``Explorer(background=False)`` runs synchronously instead (deterministic, for tests), and
``Explorer.wait()`` blocks until the background worker is idle.

Errors (a registered term that raises, a seed out of range, a non-finite loss) are shown inside
the widget as a message; the previous images stay and the widget keeps working.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import json
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ._checks import check_int
from .config import ENGINES, PRESETS, Config, get_preset
from .metrics import ShapeMetrics, shape_metrics
from .noise import MIN_SIZE, initialize_latents
from .optimize import STOP, Result, optimize
from .plots import to_png_bytes
from .registry import TERMS, coherence_names, get_term, weighted_term_names

__all__ = ["Explorer", "RunRecord", "explorer", "frames_gif", "grid_png", "loss_curves_png"]

MAX_BATCH = 16
MAX_IMAGE_SIZE = 96
_SLIDER_TOOLTIP = "tooltip" if widgets.FloatSlider.class_traits().get("tooltip") else "description_tooltip"
"""Sliders call it ``description_tooltip`` in ipywidgets 7 (what Colab ships) and ``tooltip`` in 8."""

MAX_STEPS = 2000
PREVIEW_SECONDS = 0.3
"""During a run longer than this, the image is refreshed this often, so a slow run is watchable."""
_RUN_CONTROLS = ("coherence", "coherence_weight", "steps", "lr", "engine", "seed", "batch_size", "image_size")
"""Controls (besides the weight sliders) whose change starts a new run."""
SINGLE_THREAD_NUMEL = 1 << 16
"""Batches up to this many pixels run on one torch thread. Their tensors are too small for
intra-op parallelism to pay, and on a busy 2-core machine OpenMP threads waiting for each other
made a 30-step run 30x slower (4 s instead of 0.14 s)."""
PROGRESS_SECONDS = 0.1
"""The progress bar is updated at most this often (each update is a message to the browser)."""

_CURVE_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


# ---------------------------------------------------------------------------------------------
# Rendering: straight from arrays with Pillow (about a millisecond for the default batch)
# ---------------------------------------------------------------------------------------------


def _auto_scale(height: int, width: int) -> int:
    """Upscaling factor that makes a tile about 128 px (1 for large images, at most 8)."""
    return max(1, min(8, 128 // max(height, width)))


def _grid_columns(batch: int) -> int:
    """Columns of the grid: 3 as in the seed's 2x3 figure, more for big batches."""
    return min(batch, max(3, math.ceil(math.sqrt(batch))))


def grid_png(latents: torch.Tensor | np.ndarray) -> bytes:
    """PNG bytes of a batch ``[B, H, W]`` as a grid of grey tiles (-1.5 black, +1.5 white, as in the seed).

    ``plots.to_png_bytes`` with the explorer's layout: 3 columns as in the seed's figure and
    tiles of about 128 px (nearest-neighbour upscaling keeps the pixels crisp). Rendered with
    Pillow straight from the array - about a millisecond for 6 images of 32x32, so the
    explorer can redraw on every change.
    """
    _, height, width = latents.shape
    return to_png_bytes(latents, scale=_auto_scale(height, width), ncols=_grid_columns(latents.shape[0]))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: the bytes go over a local socket
    return buffer.getvalue()


@functools.lru_cache(maxsize=4)
def _font(size: int = 11) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's data (it has the x and arrow glyphs), else Pillow's default."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: a fixed bitmap font
            return ImageFont.load_default()


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def loss_curves_png(
    history: Mapping[str, list[float]],
    weights: Mapping[str, float] | None = None,
    *,
    panel: tuple[int, int] = (190, 78),
    columns: int = 3,
) -> bytes:
    """PNG bytes of one small curve per term (``'total'`` first), each on its own y-scale.

    The terms live on very different scales (``autocorr`` is negative and unbounded), so one
    shared axis would flatten most of them; a panel per term shows each one's shape, with its
    weight, its first and last value. Drawn with Pillow: a few milliseconds.
    """
    weights = weights or {}
    names = (["total"] if "total" in history else []) + [n for n in history if n != "total"]
    names = [n for n in names if len(history[n]) > 0] or names[:1]
    pw, ph = panel
    rows = max(1, math.ceil(len(names) / columns))
    image = Image.new("RGB", (columns * pw, rows * ph), "white")
    draw = ImageDraw.Draw(image)
    font = _font(11)
    for k, name in enumerate(names):
        r, c = divmod(k, columns)
        x0, y0 = c * pw, r * ph
        values = np.asarray(history[name], dtype=np.float64)
        title = name if name not in weights else f"{name} \u00d7{weights[name]:g}"
        draw.text((x0 + 6, y0 + 2), title, fill=(0, 0, 0), font=font)
        color = (0, 0, 0) if name == "total" else _CURVE_COLORS[k % len(_CURVE_COLORS)]
        left, right, top, bottom = x0 + 6, x0 + pw - 8, y0 + 17, y0 + ph - 16
        draw.rectangle((left, top, right, bottom), outline=(220, 220, 220))
        finite = values[np.isfinite(values)]
        if values.size == 0 or finite.size == 0:
            draw.text((left + 4, top + 4), "no values", fill=(120, 120, 120), font=font)
            continue
        lo, hi = float(finite.min()), float(finite.max())
        span = hi - lo if hi > lo else 1.0
        n = values.size
        idx = np.unique(np.linspace(0, n - 1, min(n, right - left)).round().astype(int))
        xs = left + (idx / max(n - 1, 1)) * (right - left)
        ys = bottom - (np.clip(values[idx], lo, hi) - lo) / span * (bottom - top)
        if idx.size == 1:
            draw.ellipse((xs[0] - 2, ys[0] - 2, xs[0] + 2, ys[0] + 2), fill=color)
        else:
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=color, width=2)
        caption = f"{_fmt(float(values[0]))} \u2192 {_fmt(float(values[-1]))}"
        draw.text((left, bottom + 2), caption, fill=(80, 80, 80), font=font)
    return _png(image)


def _frame_image(frame: torch.Tensor | np.ndarray, caption: str) -> Image.Image:
    """One animation frame: the grid with a caption strip below it."""
    grid = Image.open(io.BytesIO(grid_png(frame))).convert("RGB")
    strip = 16
    canvas = Image.new("RGB", (grid.width, grid.height + strip), "white")
    canvas.paste(grid, (0, 0))
    ImageDraw.Draw(canvas).text((4, grid.height + 2), caption, fill=(0, 0, 0), font=_font(11))
    return canvas


def _frame_caption(step: int, total: int) -> str:
    return f"step {step} of {total}"


def frames_gif(
    frames: torch.Tensor | np.ndarray,
    frame_steps: list[int],
    *,
    total_steps: int | None = None,
    duration_ms: int = 80,
) -> bytes:
    """GIF bytes of a run's snapshots ``[T, B, H, W]``, each captioned with its step; loops forever.

    The last frame is held for a second, so the final shapes are seen before the loop restarts.
    """
    frames = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"frames must have shape [T, B, H, W] with T >= 1, got {frames.shape}")
    if len(frame_steps) != len(frames):
        raise ValueError(f"frame_steps has {len(frame_steps)} entries for {len(frames)} frames")
    total = frame_steps[-1] if total_steps is None else total_steps
    images = [_frame_image(f, _frame_caption(s, total)) for f, s in zip(frames, frame_steps, strict=True)]
    durations = [duration_ms] * (len(images) - 1) + [1000]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The explorer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """Everything one run needs, read from the controls in the kernel's main thread."""

    config: Config
    seed: int
    batch_size: int
    image_size: int
    record_every: int
    generation: int = 0
    requested_at: float = 0.0


@dataclass(frozen=True)
class RunRecord:
    """What became of one requested run (``Explorer.runs`` keeps the last 200).

    ``outcome`` is ``'shown'`` (its result is on screen), ``'cancelled'`` (a newer change
    stopped it), ``'superseded'`` (it finished, but a newer change had arrived) or ``'error'``.
    """

    generation: int
    outcome: str
    steps_run: int
    seconds: float
    error: str | None = None


def _weight_max() -> float:
    """Upper end of the weight sliders: 10, or twice the largest weight of any preset."""
    weights = [w for cfg in PRESETS.values() for w in [*cfg.weights.values(), cfg.coherence_weight]]
    largest = max(weights, default=0.0)
    return float(max(10.0, math.ceil(2 * largest)))


def _term_in_traceback(exc: BaseException) -> str | None:
    """Name of the registered term whose code raised ``exc`` (deepest match), if any."""
    codes = {term.fn.__code__: name for name, term in TERMS.items() if hasattr(term.fn, "__code__")}
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        found = codes.get(frame.f_code, found)
    return found


def _section(title: str) -> widgets.HTML:
    return widgets.HTML(f"<b>{html.escape(title)}</b>", layout=widgets.Layout(margin="8px 0 0 0"))


class Explorer(widgets.VBox):
    """The explorer widget and its state; ``shape_losses.explorer(...)`` builds one.

    It *is* a widget (a ``VBox``): display it, or leave it last in a cell. Beyond that:

    Attributes:
        weight_sliders: term name -> ``FloatSlider``, one per registered shape/batch term.
        controls: the other controls by name: ``preset``, ``reset``, ``coherence``,
            ``coherence_weight``, ``steps``, ``lr``, ``engine``, ``seed``, ``new_seed``,
            ``batch_size``, ``image_size``, ``run``, ``auto_run``, ``play``, ``frame``,
            ``export_dir``, ``save_png``, ``save_gif``.
        image, curves, frame_image: ``ipywidgets.Image`` views; metrics_view, message,
            status, downloads: ``HTML`` views; progress: ``IntProgress``.
        result: the ``Result`` on screen (``None`` before the first run).
        metrics: its ``ShapeMetrics``.
        image_bytes: the PNG bytes of the result on screen.
        image_time: ``time.perf_counter()`` when ``image_bytes`` last changed.
        error: the exception shown in the message area, or ``None``.
        runs: ``RunRecord`` of the recent runs.
    """

    def __init__(
        self,
        preset: str = "default",
        *,
        batch_size: int = 6,
        image_size: int = 32,
        seed: int = 0,
        steps: int | None = None,
        frames: int = 40,
        auto_run: bool = True,
        background: bool = True,
        run: bool = True,
        export_dir: str | Path = "out/explorer",
    ) -> None:
        start = get_preset(preset)
        check_int(batch_size, "batch_size", minimum=1)
        if batch_size > MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        check_int(image_size, "image_size", minimum=MIN_SIZE)
        if image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be between {MIN_SIZE} and {MAX_IMAGE_SIZE}, got {image_size}")
        check_int(seed, "seed", minimum=0)
        if steps is not None:
            check_int(steps, "steps", minimum=0)
            if steps > MAX_STEPS:
                raise ValueError(f"steps must be between 0 and {MAX_STEPS}, got {steps}")
        self._frames_wanted = check_int(frames, "frames", minimum=1)
        if not isinstance(export_dir, (str, Path)):
            raise TypeError(f"export_dir must be a path, got {export_dir!r}")

        self.background = bool(background)
        self.result: Result | None = None
        self.metrics: ShapeMetrics | None = None
        self.image_bytes: bytes = b""
        self.image_time: float = 0.0
        self.error: BaseException | None = None
        self.runs: deque[RunRecord] = deque(maxlen=200)
        self._request_shown: _Request | None = None
        self._recording: tuple[torch.Tensor, list[int], int] = (torch.empty(0), [], 0)
        """Frames, their steps and the run's total steps, replaced in one assignment (read by two threads)."""
        self._initial_cache: tuple[tuple[int, int, int], torch.Tensor] | None = None
        self._muted = False
        self._stale = False
        self._generation = 0
        self._pending: _Request | None = None
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

        self._build_controls(start, preset, batch_size, image_size, seed, auto_run, str(export_dir))
        self._build_views()
        super().__init__(children=self._layout(), layout=widgets.Layout(width="100%"))
        self.add_class("shape-losses-explorer")
        self._apply(start)
        if steps is not None:
            self._muted = True
            self.controls["steps"].value = steps
            self._muted = False
        self._connect()
        if run:
            self._request()

    # -- construction --------------------------------------------------------------------------

    def _build_controls(self, start, preset, batch_size, image_size, seed, auto_run, export_dir) -> None:
        wide = widgets.Layout(width="98%")
        style = {"description_width": "120px"}
        wmax = _weight_max()
        self.weight_sliders: dict[str, widgets.FloatSlider] = {}
        for name in weighted_term_names():
            slider = widgets.FloatSlider(
                value=0.0, min=0.0, max=wmax, step=0.01, description=name, readout_format=".2f",
                continuous_update=False, style=style, layout=wide,
            )
            setattr(slider, _SLIDER_TOOLTIP, get_term(name).doc)
            slider.add_class(f"sl-weight-{name}")
            self.weight_sliders[name] = slider

        c: dict[str, widgets.Widget] = {}
        c["preset"] = widgets.Dropdown(options=list(PRESETS), value=preset, description="preset", style=style)
        c["reset"] = widgets.Button(
            description="Reset to preset", tooltip="Set every control back to the preset's values"
        )
        c["coherence"] = widgets.Dropdown(
            options=[("none", None)] + [(n, n) for n in coherence_names()],
            value=None, description="coherence", style=style, layout=wide,
        )
        c["coherence_weight"] = widgets.FloatSlider(
            value=0.0, min=0.0, max=wmax, step=0.01, description="coherence weight",
            readout_format=".2f", continuous_update=False, style=style, layout=wide,
        )
        c["steps"] = widgets.IntSlider(
            value=start.steps, min=0, max=max(MAX_STEPS, start.steps), step=10, description="steps",
            continuous_update=False, style=style, layout=wide,
        )
        lrs = [math.log10(cfg.lr) for cfg in PRESETS.values()]
        c["lr"] = widgets.FloatLogSlider(  # 1e-4 .. 1, widened to hold every preset's lr
            value=start.lr, base=10, min=min(-4, math.floor(min(lrs))), max=max(0, math.ceil(max(lrs))),
            step=0.05, description="learning rate",
            readout_format=".3g", continuous_update=False, style=style, layout=wide,
        )
        c["engine"] = widgets.Dropdown(
            options=list(ENGINES), value=start.engine, description="engine", style=style
        )
        c["seed"] = widgets.IntText(
            value=seed, description="seed", style=style, layout=widgets.Layout(width="230px")
        )
        c["new_seed"] = widgets.Button(
            description="New noise", tooltip="Next seed", layout=widgets.Layout(width="100px")
        )
        c["batch_size"] = widgets.IntSlider(
            value=batch_size, min=1, max=MAX_BATCH, description="images", continuous_update=False,
            style=style, layout=wide,
        )
        c["image_size"] = widgets.IntSlider(
            value=image_size, min=MIN_SIZE, max=MAX_IMAGE_SIZE, description="image size",
            continuous_update=False, style=style, layout=wide,
        )
        c["run"] = widgets.Button(description="Run", button_style="primary", icon="play")
        c["auto_run"] = widgets.ToggleButton(
            value=bool(auto_run), description="auto-run", icon="refresh",
            tooltip="Re-run the optimization whenever a control changes",
        )
        c["play"] = widgets.Play(value=0, min=0, max=0, step=1, interval=120, description="play")
        c["frame"] = widgets.IntSlider(value=0, min=0, max=0, description="frame", continuous_update=True)
        c["export_dir"] = widgets.Text(
            value=export_dir, description="folder", style={"description_width": "50px"}
        )
        c["save_png"] = widgets.Button(description="Save PNG", icon="download")
        c["save_gif"] = widgets.Button(description="Save GIF", icon="film")
        for name, control in c.items():
            control.add_class(f"sl-{name.replace('_', '-')}")
        widgets.jslink((c["play"], "value"), (c["frame"], "value"))
        self.controls = c

    def _build_views(self) -> None:
        self.image = widgets.Image(format="png", value=b"")
        self.image.add_class("sl-image")
        self.curves = widgets.Image(format="png", value=b"")
        self.frame_image = widgets.Image(format="png", value=b"")
        self.frame_image.add_class("sl-frame-image")
        self.metrics_view = widgets.HTML(value="")
        self.message = widgets.HTML(value="")
        self.message.add_class("sl-message")
        self.status = widgets.HTML(value="")
        self.status.add_class("sl-status")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="220px"))
        self.downloads = widgets.HTML(value="")

    def _layout(self) -> list[widgets.Widget]:
        c = self.controls
        left = widgets.VBox(
            [
                _section("Preset"),
                widgets.HBox([c["preset"], c["reset"]]),
                _section("Loss weights"),
                *self.weight_sliders.values(),
                _section("Coherence"),
                c["coherence"],
                c["coherence_weight"],
                _section("Optimizer"),
                c["steps"],
                c["lr"],
                c["engine"],
                _section("Starting noise"),
                widgets.HBox([c["seed"], c["new_seed"]]),
                c["batch_size"],
                c["image_size"],
                widgets.HBox([c["run"], c["auto_run"]], layout=widgets.Layout(margin="10px 0 0 0")),
            ],
            layout=widgets.Layout(width="400px", min_width="340px", padding="0 12px 0 0"),
        )
        wrap = {"flex_flow": "row wrap", "align_items": "flex-start"}
        shapes = widgets.HBox([self.image, self.metrics_view], layout=widgets.Layout(**wrap))
        natural = widgets.Layout(align_items="flex-start")  # keep images at their own size, unstretched
        animation = widgets.VBox([widgets.HBox([c["play"], c["frame"]]), self.frame_image], layout=natural)
        export = widgets.VBox(
            [
                widgets.HTML("Save the result as a PNG and the animation as a GIF (in the folder, "
                             "relative to the kernel's working directory), or download them from the links."),
                widgets.HBox([c["export_dir"], c["save_png"], c["save_gif"]]),
                self.downloads,
            ]
        )
        tabs = widgets.Tab(
            children=[shapes, widgets.VBox([self.curves], layout=natural), animation, export],
        )
        for index, title in enumerate(("Shapes", "Loss curves", "Animation", "Export")):
            tabs.set_title(index, title)  # works on ipywidgets 7 (Colab) and 8
        right = widgets.VBox(
            [widgets.HBox([self.progress, self.status]), self.message, tabs],
            layout=widgets.Layout(flex="1 1 480px", min_width="360px"),
        )
        header = widgets.HTML(
            "<b>Shape-loss explorer</b> &mdash; move a control and the pixels are optimized again "
            "from the same noise; only the loss functions shape them."
        )
        body = widgets.HBox([left, right], layout=widgets.Layout(**wrap))
        return [header, body]

    def _connect(self) -> None:
        c = self.controls
        for slider in self.weight_sliders.values():
            slider.observe(self._on_change, names="value")
        for name in _RUN_CONTROLS:
            c[name].observe(self._on_change, names="value")
        c["preset"].observe(self._on_preset, names="value")
        c["auto_run"].observe(self._on_auto_run, names="value")
        c["frame"].observe(self._on_frame, names="value")
        c["run"].on_click(lambda _: self._request())
        c["reset"].on_click(lambda _: self.reset())
        c["new_seed"].on_click(lambda _: self._next_seed())
        c["save_png"].on_click(lambda _: self._export_clicked("png"))
        c["save_gif"].on_click(lambda _: self._export_clicked("gif"))

    # -- reading and writing the controls --------------------------------------------------------

    def _apply(self, cfg: Config) -> None:
        """Set every optimization control to ``cfg``'s values, without triggering runs."""
        self._muted = True
        try:
            for name, slider in self.weight_sliders.items():
                slider.value = float(cfg.weights.get(name, 0.0))
            c = self.controls
            c["coherence"].value = cfg.coherence
            c["coherence_weight"].value = cfg.coherence_weight
            c["steps"].value = cfg.steps
            c["lr"].value = cfg.lr
            c["engine"].value = cfg.engine
        finally:
            self._muted = False

    @property
    def config(self) -> Config:
        """The ``Config`` the controls describe now (raises ``ValueError`` if it is invalid).

        Its weights are the preset's terms in the preset's order (so that the sum is done in
        the same order and resetting gives back exactly the preset), then every other term whose
        slider is above 0. Clamp and per-term parameters come from the preset.
        """
        base = get_preset(self.controls["preset"].value)
        sliders = self.weight_sliders
        weights = {name: sliders[name].value for name in base.weights if name in sliders}
        for name, slider in self.weight_sliders.items():
            if name not in weights and slider.value > 0:
                weights[name] = slider.value
        c = self.controls
        return Config(
            weights=weights,
            coherence=c["coherence"].value,
            coherence_weight=c["coherence_weight"].value,
            steps=c["steps"].value,
            lr=c["lr"].value,
            clamp=base.clamp,
            params=base.params,
            engine=c["engine"].value,
        )

    def _read_request(self) -> _Request:
        config = self.config
        c = self.controls
        seed = check_int(c["seed"].value, "seed", minimum=0)
        record_every = max(1, math.ceil(config.steps / self._frames_wanted)) if config.steps else 1
        return _Request(config, seed, c["batch_size"].value, c["image_size"].value, record_every)

    def set(self, *, weights: Mapping[str, float] | None = None, **values: Any) -> None:
        """Set several controls at once, then run once (if auto-run is on).

        ``weights`` maps term names to slider values; the other keywords name controls
        (``preset``, ``coherence``, ``coherence_weight``, ``steps``, ``lr``, ``engine``,
        ``seed``, ``batch_size``, ``image_size``, ``auto_run``). A ``preset`` is applied first.

        Raises:
            ValueError: an unknown name, or a value outside a slider's range or a dropdown's options.
        """
        settable = ("preset", *_RUN_CONTROLS, "auto_run")
        for name in values:
            if name not in settable:
                raise ValueError(f"unknown control {name!r}; settable: {list(settable)} (and weights=...)")
        weights = dict(weights or {})
        for name in weights:
            if name not in self.weight_sliders:
                raise ValueError(f"no weight slider for {name!r}; terms: {list(self.weight_sliders)}")
        pending = [(self.weight_sliders[n], f"weights[{n!r}]", v) for n, v in weights.items()]
        pending += [(self.controls[n], n, v) for n, v in values.items() if n != "preset"]
        for control, label, value in pending:
            _check_control_value(control, label, value)
        if "preset" in values:
            _check_control_value(self.controls["preset"], "preset", values["preset"])
        self._muted = True
        try:
            if "preset" in values:
                self.controls["preset"].value = values["preset"]
                self._apply(get_preset(values["preset"]))
            for control, _, value in pending:
                control.value = value
        finally:
            self._muted = False
        self._changed()

    def reset(self) -> None:
        """Set every control back to the selected preset's values, then run (if auto-run is on)."""
        self._apply(get_preset(self.controls["preset"].value))
        self._changed()

    # -- events ---------------------------------------------------------------------------------

    def _on_change(self, change: dict) -> None:
        if not self._muted:
            self._changed()

    def _changed(self) -> None:
        if self.controls["auto_run"].value:
            self._request()
        else:
            self._stale = True
            self.status.value = "settings changed &mdash; press <b>Run</b>"

    def _on_preset(self, change: dict) -> None:
        if self._muted:
            return
        self._apply(get_preset(change["new"]))
        self._changed()

    def _on_auto_run(self, change: dict) -> None:
        if change["new"] and self._stale and not self._muted:
            self._request()

    def _next_seed(self) -> None:
        seed = self.controls["seed"].value
        self.controls["seed"].value = seed + 1 if isinstance(seed, int) and seed >= 0 else 0

    def _on_frame(self, change: dict) -> None:
        self._show_frame(change["new"])

    def _show_frame(self, index: int) -> None:
        frames, steps, total = self._recording
        if len(frames) == 0:
            self.frame_image.value = b""
            return
        index = min(max(int(index), 0), len(frames) - 1)
        self.frame_image.value = _png(_frame_image(frames[index], _frame_caption(steps[index], total)))

    # -- running ------------------------------------------------------------------------------

    def _request(self) -> None:
        """Read the controls and start a run; a run in progress is told to stop."""
        self._stale = False
        with self._cond:  # a finishing run checks the generation and shows its image under this lock
            self._generation += 1
            generation = self._generation
            try:
                request = self._read_request()
            except (ValueError, TypeError) as exc:  # an invalid setting: say so, keep the last images
                self._show_error(exc, "This setting cannot run")
                self.runs.append(RunRecord(generation, "error", 0, 0.0, f"{type(exc).__name__}: {exc}"))
                return
        request = replace(request, generation=generation, requested_at=time.perf_counter())
        if not self.background:
            self._execute(request)
            return
        with self._cond:
            if self._closed:
                return
            self._pending = request
            self._cond.notify_all()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="shape-losses-explorer", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        """The background worker: run the latest request, forever, until closed."""
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                request, self._pending = self._pending, None
                self._busy = True
            try:
                self._execute(request)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._show_error(exc)
            finally:
                with self._cond:
                    self._busy = self._pending is not None
                    self._cond.notify_all()

    def run(self) -> Result | None:
        """Run now with the controls' settings and wait for it; returns the result (``None`` on error).

        Errors are shown in the widget, not raised, exactly as for a slider move.
        """
        self._request()
        self.wait()
        return self.result if self.error is None else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is pending or in progress; ``False`` if ``timeout`` (seconds) passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    @property
    def running(self) -> bool:
        """True while a background run is pending or in progress."""
        with self._cond:
            return self._pending is not None or self._busy

    def _initial(self, request: _Request) -> torch.Tensor:
        key = (request.seed, request.batch_size, request.image_size)
        if self._initial_cache is None or self._initial_cache[0] != key:
            latents = initialize_latents(request.batch_size, (request.image_size,) * 2, seed=request.seed)
            self._initial_cache = (key, latents.detach())
        return self._initial_cache[1]

    def _execute(self, request: _Request) -> None:
        """One run: optimize with a callback that stops when a newer change arrives; show the result."""
        steps = request.config.steps
        started = time.perf_counter()
        marks = {"progress": started, "preview": started}
        self.progress.max = max(steps, 1)
        self.progress.value = 0
        self.progress.bar_style = ""
        self.status.value = f"running {steps} steps&hellip;"

        def callback(step: int, latents: torch.Tensor, terms: dict) -> bool:
            if request.generation != self._generation:
                return STOP
            now = time.perf_counter()
            if now - marks["progress"] >= PROGRESS_SECONDS:
                marks["progress"] = now
                self.progress.value = step
            if now - marks["preview"] >= PREVIEW_SECONDS:
                marks["preview"] = now
                self.image.value = grid_png(latents)
            return False

        threads = torch.get_num_threads()
        try:
            latents = self._initial(request)
            if latents.numel() <= SINGLE_THREAD_NUMEL:
                torch.set_num_threads(1)  # per OS thread with OpenMP; restored below
            result = optimize(latents, request.config, callback=callback, record_every=request.record_every)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, never raised into the kernel
            seconds = time.perf_counter() - started
            with self._cond:
                current = request.generation == self._generation
                if current:
                    self._show_error(exc)
            if current:
                error = f"{type(exc).__name__}: {exc}"
                self.runs.append(RunRecord(request.generation, "error", 0, seconds, error))
            else:  # a newer change arrived first: this run's error no longer matters
                self.runs.append(RunRecord(request.generation, "cancelled", 0, seconds))
            return
        finally:
            torch.set_num_threads(threads)
        png = grid_png(result.latents)
        with self._cond:  # so that a change arriving now cannot be overwritten by this older run
            current = request.generation == self._generation
            if current:
                self._publish_image(request, result, png)
        if not current:
            outcome = "cancelled" if result.stopped_early else "superseded"
            self.runs.append(RunRecord(request.generation, outcome, result.steps_run, result.seconds))
            return
        self._publish_rest(request, result)
        self.runs.append(RunRecord(request.generation, "shown", result.steps_run, result.seconds))

    def _publish_image(self, request: _Request, result: Result, png: bytes) -> None:
        """Show a finished run's image first: that is what the learner is waiting for."""
        self.result = result
        self.image_bytes = png
        self.image.value = png
        self.image_time = time.perf_counter()
        self._request_shown = request
        self.error = None
        self.message.value = ""

    def _publish_rest(self, request: _Request, result: Result) -> None:
        """Then the metrics, curves, animation frames and status line."""
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.metrics = shape_metrics(result.latents)
        self.metrics_view.value = self._metrics_html(self.metrics)
        self.curves.value = loss_curves_png(result.history, dict(result.config.active_terms()))
        self._recording = (result.frames, list(result.frame_steps), result.config.steps)
        last = max(len(result.frames) - 1, 0)
        c = self.controls
        c["play"].playing = False
        for name in ("frame", "play"):
            c[name].max = last
            c[name].value = last
        self._show_frame(last)
        self.downloads.value = ""
        cfg = result.config
        self.status.value = (
            f"{result.steps_run} steps in {result.seconds:.2f} s &middot; engine {html.escape(cfg.engine)} "
            f"&middot; seed {request.seed}"
        )

    @staticmethod
    def _metrics_html(metrics: ShapeMetrics) -> str:
        legend = (
            "bright: share of pixels &gt; 0.5 &middot; blobs: connected bright regions &middot; "
            "binary: share of pixels near the dark or bright level &middot; compact: 4&pi;A/P&sup2; "
            "(a square scores 0.79) &middot; IoU: overlap between images (lower = more diverse)"
        )
        return (
            "<div style='margin-left:12px'><pre style='font-size:12px;line-height:1.3;margin:0'>"
            f"{html.escape(metrics.table())}</pre>"
            f"<div style='font-size:11px;line-height:1.35;color:#555;max-width:330px;margin-top:6px'>"
            f"{legend}</div></div>"
        )

    def _show_error(self, exc: BaseException, title: str = "The run failed") -> None:
        """Show ``exc`` as a readable message in the widget (the previous images stay)."""
        self.error = exc
        term = _term_in_traceback(exc)
        where = f" in loss term <code>{html.escape(term)}</code>" if term else ""
        name = type(exc).__name__
        self.message.value = (
            "<div style='border-left:4px solid #c0392b;background:#fdecea;padding:6px 10px;margin:4px 0'>"
            f"<b>{html.escape(title)}{where}</b>: {html.escape(name)}: {html.escape(str(exc))}<br>"
            "<span style='font-size:11px'>The images below are from the last run that worked; "
            "change a control to try again.</span></div>"
        )
        self.progress.bar_style = "danger"
        self.status.value = "error"

    # -- export ---------------------------------------------------------------------------------

    def _export_name(self, suffix: str) -> str:
        request = self._request_shown
        key = json.dumps(
            [request.config.to_dict(), request.seed, request.batch_size, request.image_size], sort_keys=True
        )
        return f"shapes-seed{request.seed}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.{suffix}"

    def _export_path(self, folder: str | Path | None, suffix: str) -> Path:
        if self.result is None:
            raise RuntimeError("nothing to export yet: no run has finished")
        folder = Path(self.controls["export_dir"].value if folder is None else folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / self._export_name(suffix)

    def export_png(self, folder: str | Path | None = None) -> Path:
        """Write the result's image grid as a PNG into ``folder`` (default: the folder box); returns it."""
        path = self._export_path(folder, "png")
        path.write_bytes(self.image_bytes)
        return path

    def gif_bytes(self) -> bytes:
        """The recorded frames of the result on screen as GIF bytes (noise turning into shapes)."""
        if self.result is None:
            raise RuntimeError("nothing to export yet: no run has finished")
        frames, steps, total = self._recording
        return frames_gif(frames, steps, total_steps=total)

    def export_gif(self, folder: str | Path | None = None) -> Path:
        """Write the recorded frames as an animated GIF into ``folder``; returns the path."""
        path = self._export_path(folder, "gif")
        path.write_bytes(self.gif_bytes())
        return path

    def _export_clicked(self, kind: str) -> None:
        try:
            if kind == "png":
                path, data, mime = self.export_png(), self.image_bytes, "image/png"
            else:
                data = self.gif_bytes()
                path, mime = self._export_path(None, "gif"), "image/gif"
                path.write_bytes(data)
        except Exception as exc:  # noqa: BLE001 - e.g. an unwritable folder: show it
            self._show_error(exc)
            return
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        link = (
            f"<p>Saved <code>{html.escape(str(path))}</code> &middot; "
            f"<a download='{html.escape(path.name)}' href='{url}'>download {html.escape(path.name)}</a></p>"
        )
        self.downloads.value = link

    # -- lifecycle ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        """Short and stable (the text shown where widgets don't render, and in saved notebooks)."""
        c = getattr(self, "controls", None)
        if not c:
            return "<shape_losses explorer>"
        size = c["image_size"].value
        return (
            f"<shape_losses explorer: preset {c['preset'].value!r}, {c['batch_size'].value} images of "
            f"{size}x{size} (live widget)>"
        )

    def close(self) -> None:
        """Stop the background worker and close every widget of the explorer."""
        if not hasattr(self, "_cond"):  # __init__ failed before the state existed
            super().close()
            return
        with self._cond:
            self._closed = True
            self._generation += 1
            self._pending = None
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)
        for widget in _descendants(self):
            if widget is not self:
                widget.close()
        super().close()


def _descendants(widget: widgets.Widget) -> list[widgets.Widget]:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found.extend(_descendants(child))
    return found


def _check_control_value(control: widgets.Widget, label: str, value: Any) -> None:
    """``ValueError`` when ``value`` is outside a slider's range or not among a dropdown's options."""
    if isinstance(control, widgets.Dropdown):
        options = [o[1] if isinstance(o, tuple) else o for o in control.options]
        if value not in options:
            raise ValueError(f"{label} must be one of {options}, got {value!r}")
    elif isinstance(control, widgets.FloatLogSlider):
        low, high = control.base**control.min, control.base**control.max
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{label} must be a number between {low:g} and {high:g}, got {value!r}")
    elif hasattr(control, "min") and hasattr(control, "max"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not control.min <= value <= control.max:
            raise ValueError(f"{label} must be between {control.min} and {control.max}, got {value!r}")
        if isinstance(control, widgets.IntSlider) and value != int(value):
            raise ValueError(f"{label} must be an integer, got {value!r}")
    elif isinstance(control, widgets.IntText):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{label} must be an integer, got {value!r}")
    elif isinstance(control, widgets.ToggleButton):
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be True or False, got {value!r}")


def explorer(
    preset: str = "default",
    *,
    batch_size: int = 6,
    image_size: int = 32,
    seed: int = 0,
    steps: int | None = None,
    frames: int = 40,
    auto_run: bool = True,
    background: bool = True,
    run: bool = True,
    export_dir: str | Path = "out/explorer",
) -> Explorer:
    """The live explorer: one widget with a control for every knob of a run.

    Controls (read from the term registry and ``PRESETS`` when it is built, so a newly
    registered term or preset appears with no UI change): a weight slider per term, the
    coherence term and its weight, steps, learning rate, engine, seed, batch size and image
    size; a preset dropdown with reset; Run and auto-run. Views: the image grid, loss curves,
    metrics, an animation of the run, PNG/GIF export.

    Args:
        preset: the ``PRESETS`` entry to start from.
        batch_size, image_size, seed: the starting noise (``initialize_latents``).
        steps: override the preset's number of steps (e.g. fewer, for a slow machine).
        frames: about how many snapshots to record for the animation.
        auto_run: re-run whenever a control changes (otherwise press Run).
        background: run in a worker thread so the kernel stays responsive (``False``: run
            synchronously inside the control's callback - deterministic, for tests).
        run: start the first run right away.
        export_dir: default folder for the Save buttons.

    Returns:
        An :class:`Explorer`, which is an ``ipywidgets.VBox``: display it.
    """
    return Explorer(
        preset, batch_size=batch_size, image_size=image_size, seed=seed, steps=steps, frames=frames,
        auto_run=auto_run, background=background, run=run, export_dir=export_dir,
    )
