"""``optimize``: Adam over the pixels, as in the seed notebook - no neural network."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import check_int, check_latents
from .config import PRESETS, Config
from .registry import get_term

STOP = True
"""Return this (or anything truthy) from an ``optimize`` callback to stop the run early."""

Callback = Callable[[int, torch.Tensor, dict[str, Any]], Any]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite during ``optimize``; names the term and the step."""

    def __init__(self, term: str, step: int):
        super().__init__(f"loss term {term!r} became NaN or infinite at step {step}")
        self.term = term
        self.step = step


@dataclass
class Result:
    """What ``optimize`` returns.

    Attributes:
        latents: the final images, detached, ``[B, H, W]``.
        history: term name -> per-step values (floats), plus ``'total'``; each value is the
            loss *before* that step's update, as the seed notebook recorded it.
        frames: snapshots ``[T, B, H, W]`` (CPU) taken every ``record_every`` steps, the
            initial and the final images included; empty when ``record_every=0``.
        frame_steps: the number of updates done before each frame.
        config: the ``Config`` of the run.
        steps_run: updates actually done (fewer than ``config.steps`` if a callback stopped it).
        seconds: wall time of the run.
    """

    latents: torch.Tensor
    history: dict[str, list[float]]
    frames: torch.Tensor
    frame_steps: list[int]
    config: Config
    steps_run: int
    seconds: float = field(default=0.0, repr=False)

    @property
    def stopped_early(self) -> bool:
        return self.steps_run < self.config.steps

    def final_losses(self) -> dict[str, float]:
        """The last recorded value of every term and of the total."""
        return {name: values[-1] for name, values in self.history.items() if values}


def _terms_autograd(
    x: torch.Tensor, plan: list[tuple[str, float, Any, dict]]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Compute every term and the weighted total, then backpropagate (the reference engine)."""
    values = [fn(x, **params) for _, _, fn, params in plan]
    total = 0
    for value, (_, weight, _, _) in zip(values, plan, strict=True):
        total += value * weight
    if isinstance(total, torch.Tensor) and total.requires_grad:
        total.backward()
    else:  # no terms, or none that depends on x: the step does nothing
        total = x.new_tensor(float(total))
        x.grad = torch.zeros_like(x)
    return values, total


def optimize(
    latents: torch.Tensor,
    config: Config | None = None,
    *,
    callback: Callback | None = None,
    record_every: int = 0,
) -> Result:
    """Sculpt ``latents`` ``[B, H, W]`` by Adam on the weighted sum of the config's loss terms.

    Each step, as in the seed: zero the gradient, compute every term, sum ``term * weight``
    (in the config's order, coherence last), backpropagate, take an Adam step, clamp.
    The input tensor is never modified.

    Args:
        latents: starting images, e.g. from ``initialize_latents``; must be finite.
        config: the run's settings; ``PRESETS['default']`` when ``None``.
        callback: called after every step as ``callback(step, latents, terms)`` with the step
            number (1-based), the current images (detached) and the terms' values before the
            step, ``'total'`` included: floats on the CPU, 0-d tensors on an accelerator (so
            that no step waits for the device); ``float(value)`` reads either. Returning
            ``STOP`` (any truthy value) ends the run early.
        record_every: keep a snapshot every this many steps in ``Result.frames`` (0: none).

    Raises:
        NonFiniteLossError: a term became NaN or infinite; names the term and the step.
    """
    config = check_run_args(latents, config, callback, record_every)
    if config.engine == "fast":
        from .fast import optimize_fast

        return optimize_fast(latents, config, callback=callback, record_every=record_every)

    start = time.perf_counter()
    names = [name for name, _ in config.active_terms()]
    plan = [
        (name, weight, get_term(name).fn, config.term_params(name)) for name, weight in config.active_terms()
    ]

    x = latents.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr)
    history = torch.empty(config.steps, len(names) + 1, dtype=torch.float64, device=x.device)
    frames, frame_steps = [], []
    if record_every:
        frames.append(x.detach().cpu().clone())
        frame_steps.append(0)

    steps_run = 0
    for step in range(config.steps):
        optimizer.zero_grad()
        values, total = _terms_autograd(x, plan)
        optimizer.step()
        if config.clamp is not None:
            with torch.no_grad():
                x.clamp_(*config.clamp)
        row = torch.stack([v.detach().to(torch.float64) for v in values] + [total.detach().to(torch.float64)])
        history[step] = row
        steps_run = step + 1
        _check_finite(row, names, step)

        if record_every and steps_run % record_every == 0:
            frames.append(x.detach().cpu().clone())
            frame_steps.append(steps_run)
        if callback is not None:
            values = row.tolist() if x.device.type == "cpu" else row.unbind()
            terms = dict(zip(names + ["total"], values, strict=True))
            if callback(steps_run, x.detach(), terms):
                break

    return finish(x, history, names, frames, frame_steps, config, steps_run, record_every, start)


def check_run_args(
    latents: torch.Tensor, config: Config | None, callback: Callback | None = None, record_every: int = 0
) -> Config:
    """Check a run's arguments at the boundary; returns the config (``PRESETS['default']`` for ``None``)."""
    if config is None:
        config = PRESETS["default"]
    if not isinstance(config, Config):
        raise TypeError(f"config must be a shape_losses.Config, got {type(config).__name__}")
    check_latents(latents, "latents", finite=True)
    check_int(record_every, "record_every", minimum=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    return config


def _check_finite(row: torch.Tensor, names: list[str], step: int) -> None:
    """Raise ``NonFiniteLossError`` for the first non-finite term (one host sync per step)."""
    finite = torch.isfinite(row)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise NonFiniteLossError((names + ["total"])[bad], step)


def finish(
    x: torch.Tensor,
    history: torch.Tensor,
    names: list[str],
    frames: list[torch.Tensor],
    frame_steps: list[int],
    config: Config,
    steps_run: int,
    record_every: int,
    start: float,
) -> Result:
    """Assemble a ``Result``: history to floats in one transfer, last frame added if missing."""
    if record_every and (not frame_steps or frame_steps[-1] != steps_run):
        frames.append(x.detach().cpu().clone())
        frame_steps.append(steps_run)
    table = history[:steps_run].cpu().tolist()
    keys = names + ["total"]
    hist = {key: [row[i] for row in table] for i, key in enumerate(keys)}
    stacked = torch.stack(frames) if frames else torch.empty(0, *x.shape, dtype=x.dtype)
    return Result(
        latents=x.detach().clone(),
        history=hist,
        frames=stacked,
        frame_steps=frame_steps,
        config=config,
        steps_run=steps_run,
        seconds=time.perf_counter() - start,
    )
