"""The tug-of-war between loss terms: each term's own gradient, measured during a run.

The total loss is a weighted sum, so each step's gradient is a sum of the terms' gradients. When
two terms pull a pixel in opposite directions, the one with the larger gradient wins that pixel
- and Adam, which rescales every pixel's step to about ``lr``, follows the sign of the *sum*, not
its size. :func:`gradient_norms` takes a run apart: every ``every`` steps it computes, by
autograd and for each term separately, the weighted gradient ``weight * d(term)/d(latents)``
at the current images, and records

* ``norms`` - its L2 norm (how hard the term pulls, all pixels together);
* ``against_rest`` - the cosine between it and the sum of the other terms' gradients
  (negative: the term is fighting the others; near 0: they act on different things);
* ``dominant`` - the share of pixels where this term's gradient is the largest in size (where
  it decides the direction Adam moves the pixel).

For the seed preset it shows the flaws of issue 5 at work: ``object_size`` has a gradient of
exactly zero (a hard threshold); the unbounded ``autocorr`` decides most pixels and keeps pushing
them out to the clamp, against ``binary`` (towards +-1) and ``sparsity`` (towards 0), whose
gradients point the opposite way. Run it on ``PRESETS['default']`` for the contrast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._checks import check_int, check_latents
from .config import Config
from .optimize import check_run_args, optimize
from .registry import get_term


@dataclass
class GradientNorms:
    """Per-term gradient measures along a run (see the module docstring).

    Attributes:
        steps: the number of updates done before each measurement (0 = the starting images).
        norms: term name -> L2 norm of ``weight * d(term)/d(latents)`` at each measured step.
        total: L2 norm of the summed gradient (what the optimizer sees) at each measured step.
        against_rest: term name -> cosine between its gradient and the sum of the others' (NaN
            when either is zero).
        dominant: term name -> share of pixels where its gradient is the largest in size (pixels
            where every gradient is zero count for no term).
        weights: term name -> the weight it has in the config.
        config: the run's ``Config``.
    """

    steps: list[int]
    norms: dict[str, list[float]]
    total: list[float]
    against_rest: dict[str, list[float]]
    dominant: dict[str, list[float]]
    weights: dict[str, float]
    config: Config = field(repr=False)

    @property
    def terms(self) -> list[str]:
        """The terms, in the config's summation order (coherence last)."""
        return list(self.norms)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per term: mean and final gradient norm, mean cosine against the rest, mean dominant share."""

        def mean(values: list[float]) -> float:
            finite = [v for v in values if not math.isnan(v)]
            return float(np.mean(finite)) if finite else math.nan

        return {
            name: {
                "mean_norm": mean(self.norms[name]),
                "final_norm": self.norms[name][-1],
                "mean_against_rest": mean(self.against_rest[name]),
                "mean_dominant": mean(self.dominant[name]),
            }
            for name in self.terms
        }

    def table(self, digits: int = 3) -> str:
        """A text table, one row per term: weight, mean/final gradient norm, cosine, dominance."""

        def num(v: float) -> str:
            return "n/a" if math.isnan(v) else f"{v:.{digits}g}"

        width = max([len(t) for t in self.terms] + [4])
        lines = [f"{'term':<{width}} {'weight':>7} {'mean |g|':>9} {'final |g|':>9} "
                 f"{'cos(rest)':>9} {'dominant':>8}"]
        for name, s in self.summary().items():
            lines.append(
                f"{name:<{width}} {self.weights[name]:>7g} {num(s['mean_norm']):>9} "
                f"{num(s['final_norm']):>9} {num(s['mean_against_rest']):>9} {s['mean_dominant']:>8.0%}"
            )
        mean_total = float(np.mean(self.total))
        lines.append(f"{'total':<{width}} {'':>7} {num(mean_total):>9} {num(self.total[-1]):>9}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (NaN becomes None)."""

        def clean(values: list[float]) -> list[float | None]:
            return [None if math.isnan(v) else v for v in values]

        return {
            "steps": list(self.steps),
            "weights": dict(self.weights),
            "norms": {k: clean(v) for k, v in self.norms.items()},
            "total": clean(self.total),
            "against_rest": {k: clean(v) for k, v in self.against_rest.items()},
            "dominant": {k: clean(v) for k, v in self.dominant.items()},
            "config": self.config.to_dict(),
        }

    def plot(self, *, title: str | None = None, log: bool = True) -> Any:
        """A figure: gradient norm per term over the run (left) and cosine against the rest (right)."""
        from .plots import ShapeFigure

        fig = ShapeFigure(figsize=(11, 3.6))
        ax_norm, ax_cos = fig.subplots(1, 2)
        for name in self.terms:
            values = [v if v > 0 else math.nan for v in self.norms[name]] if log else self.norms[name]
            label = name if any(v > 0 for v in self.norms[name]) else f"{name} (zero gradient)"
            ax_norm.plot(self.steps, values, label=label, linewidth=1.8)
            ax_cos.plot(self.steps, self.against_rest[name], label=name, linewidth=1.8)
        ax_norm.plot(self.steps, self.total, label="sum", color="black", linestyle="--", linewidth=1.2)
        if log:
            ax_norm.set_yscale("log")
        ax_norm.set_xlabel("step")
        ax_norm.set_ylabel("|weight x gradient|")
        ax_norm.set_title("How hard each term pulls")
        ax_norm.legend(fontsize=8)
        ax_cos.axhline(0.0, color="grey", linewidth=0.8)
        ax_cos.set_ylim(-1.05, 1.05)
        ax_cos.set_xlabel("step")
        ax_cos.set_ylabel("cosine with the other terms' sum")
        ax_cos.set_title("Who fights whom (< 0: against the rest)")
        for ax in (ax_norm, ax_cos):
            ax.grid(True, alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def term_gradients(latents: torch.Tensor, config: Config) -> dict[str, torch.Tensor]:
    """``weight * d(term)/d(latents)`` for every active term of ``config``, each by its own autograd.

    A term whose value does not depend on the pixels (the seed's hard-threshold ``object_size``)
    gets an all-zero gradient - which is the point: its weight cannot move anything.
    """
    check_latents(latents, "latents", finite=True)
    if not isinstance(config, Config):
        raise TypeError(f"config must be a shape_losses.Config, got {type(config).__name__}")
    grads = {}
    for name, weight in config.active_terms():
        x = latents.detach().clone().requires_grad_(True)
        value = get_term(name).fn(x, **config.term_params(name))
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value, x, allow_unused=True)
            grad = torch.zeros_like(x) if grad is None else grad.detach()
        else:
            grad = torch.zeros_like(x)
        grads[name] = grad * weight
    return grads


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float((a * b).sum()) / (na * nb)


def gradient_norms(
    latents: torch.Tensor,
    config: Config | None = None,
    *,
    every: int = 10,
) -> GradientNorms:
    """Run ``optimize(latents, config)`` and measure each term's gradient every ``every`` steps.

    The run itself is the ordinary one (any engine); the measurements are taken on the images
    the optimizer has reached - before step 1, after every ``every``-th update, and at the end -
    with :func:`term_gradients`, so they are exactly the pulls the next step is made of.

    Args:
        latents: starting images ``[B, H, W]`` (not modified).
        config: the run's settings; ``PRESETS['default']`` when ``None``.
        every: measure every this many steps (>= 1).
    """
    config = check_run_args(latents, config)
    check_int(every, "every", minimum=1)

    names = [name for name, _ in config.active_terms()]
    steps: list[int] = []
    norms: dict[str, list[float]] = {n: [] for n in names}
    against: dict[str, list[float]] = {n: [] for n in names}
    dominant: dict[str, list[float]] = {n: [] for n in names}
    total: list[float] = []

    def measure(step: int, images: torch.Tensor) -> None:
        grads = term_gradients(images, config)
        stacked = torch.stack([grads[n] for n in names])  # [T, B, H, W]
        summed = stacked.sum(dim=0)
        size = stacked.abs()
        winner = size.argmax(dim=0)
        moving = size.amax(dim=0) > 0
        pixels = float(summed.numel())
        steps.append(step)
        total.append(float(summed.norm()))
        for index, name in enumerate(names):
            norms[name].append(float(stacked[index].norm()))
            against[name].append(_cosine(stacked[index], summed - stacked[index]))
            dominant[name].append(float(((winner == index) & moving).sum()) / pixels)

    measure(0, latents)

    def callback(step: int, images: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        if step % every == 0 or step == config.steps:
            measure(step, images)

    optimize(latents, config, callback=callback)
    return GradientNorms(
        steps=steps,
        norms=norms,
        total=total,
        against_rest=against,
        dominant=dominant,
        weights=dict(config.active_terms()),
        config=config,
    )
