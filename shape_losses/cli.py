"""The headless main job: ``python -m shape_losses`` (or ``shape-losses``).

``python -m shape_losses [options]`` runs the experiment (the ``run`` subcommand is the default)
and writes ``shapes.png``, ``loss_curves.png`` and ``metrics.json`` into ``--out``;
``python -m shape_losses compare [options]`` runs every coherence choice from the same noise and
writes ``compare.png`` and ``compare.json``. Term names (``--weight``, ``--coherence``) are read
from the registry when the parser is built, so a newly registered term needs no CLI edit.
Bad input ends with an argparse message and exit code 2; a run that fails (a loss turning NaN)
with a message and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import scorecard
from .config import ENGINES, PRESETS, Config, get_preset
from .metrics import shape_metrics
from .noise import initialize_latents
from .optimize import NonFiniteLossError, Result, optimize
from .plots import comparison_grid, image_grid, loss_curves, save_figure
from .registry import coherence_names, weighted_term_names


class UsageError(ValueError):
    """Bad command-line input found after parsing (reported like an argparse error, exit 2)."""


# -- argument types ------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``'32'`` -> (32, 32); ``'24x40'`` -> (24, 40)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2:
        raise argparse.ArgumentTypeError(f"expected an int or HxW (e.g. 32 or 24x40), got {text!r}")
    return size  # type: ignore[return-value]


def parse_weight(text: str) -> tuple[str, float]:
    """``'tv=0.2'`` -> ('tv', 0.2), with the name checked against the registry."""
    name, sep, value = text.partition("=")
    name = name.strip()
    valid = weighted_term_names()
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {valid}, got {text!r}")
    if name not in valid:
        hint = "; set coherence weights with --coherence-weight" if name in coherence_names() else ""
        raise argparse.ArgumentTypeError(f"unknown term {name!r}{hint}; valid names: {valid}")
    try:
        weight = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight of {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(weight) or weight < 0:
        raise argparse.ArgumentTypeError(f"weight of {name!r} must be a finite number >= 0, got {value!r}")
    return name, weight


def add_common_arguments(parser: argparse.ArgumentParser, *, batch: int = 6) -> None:
    """Options shared by every subcommand: the config, the starting noise, the output, the bar."""
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="named Config to start from (default: %(default)s)")
    parser.add_argument("--steps", type=int, help="Adam steps (default: the preset's)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--engine", choices=ENGINES, help="optimizer engine (default: the preset's)")
    parser.add_argument("--weight", action="append", type=parse_weight, default=[], metavar="NAME=VALUE",
                        help=f"set one term's weight (repeatable); NAME in {weighted_term_names()}")
    parser.add_argument("--coherence-weight", type=float, help="weight of the coherence term")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the starting noise (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=batch, help="images per batch (default: %(default)s)")
    parser.add_argument("--size", type=parse_size, default=(32, 32), metavar="N|HxW",
                        help="image size, at least 11 (default: 32)")
    parser.add_argument("--out", type=Path, default=Path("out"), metavar="DIR",
                        help="folder for the PNGs and JSON (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Config:
    """The preset with the command line's changes; a bad value raises ``UsageError``."""
    base = get_preset(args.preset)
    changes: dict[str, Any] = dict(overrides)
    for key in ("steps", "lr", "engine", "coherence_weight"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    if getattr(args, "coherence", None) is not None:
        changes["coherence"] = None if args.coherence == "none" else args.coherence
    if args.weight:
        changes["weights"] = {**base.weights, **dict(args.weight)}
    try:
        return replace(base, **changes)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def latents_from_args(args: argparse.Namespace):
    """The starting noise: ``initialize_latents(--batch, --size, seed=--seed)``."""
    try:
        return initialize_latents(args.batch, args.size, seed=args.seed)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


class Progress:
    """An ``optimize`` callback driving a tqdm bar on stderr (a no-op when ``disable``)."""

    def __init__(self, total: int, *, disable: bool = False, desc: str | None = None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, unit="step",
                        dynamic_ncols=True, leave=True)

    def __call__(self, step: int, latents: Any, terms: dict) -> None:
        self.bar.update(1)
        if step % 10 == 0 and not self.bar.disable:
            self.bar.set_postfix(loss=f"{float(terms['total']):.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _json_safe(value: Any) -> Any:
    """Non-finite floats become ``None`` so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def _run_info(args: argparse.Namespace) -> dict[str, Any]:
    return {"preset": args.preset, "seed": args.seed, "batch": args.batch, "size": list(args.size)}


def _optimize(latents, config: Config, args: argparse.Namespace, desc: str | None = None) -> Result:
    progress = Progress(config.steps, disable=args.quiet, desc=desc)
    try:
        return optimize(latents, config, callback=progress)
    finally:
        progress.close()


# -- run ---------------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coherence", choices=coherence_names() + ["none"],
                        help="coherence term, or none (default: the preset's)")
    add_common_arguments(parser)


def run_command(args: argparse.Namespace) -> int:
    """Run the experiment; write shapes.png, loss_curves.png and metrics.json."""
    config = config_from_args(args)
    latents = latents_from_args(args)
    print(config.describe())
    result = _optimize(latents, config, args)
    metrics = shape_metrics(result.latents)
    print()
    print(metrics.table())

    args.out.mkdir(parents=True, exist_ok=True)
    coherence = config.coherence or "no coherence"
    save_figure(image_grid(result.latents, title=f"{args.preset}: {coherence}, {result.steps_run} steps"),
                args.out / "shapes.png")
    save_figure(loss_curves(result), args.out / "loss_curves.png")
    _write_json(args.out / "metrics.json", {
        **_run_info(args),
        "config": config.to_dict(),
        "steps_run": result.steps_run,
        "seconds": result.seconds,
        "metrics": metrics.to_dict(),
        "final_losses": result.final_losses(),
    })
    print(f"\nwrote {args.out / 'shapes.png'}, {args.out / 'loss_curves.png'}, {args.out / 'metrics.json'}")
    return 0


# -- compare -----------------------------------------------------------------------------------


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, batch=4)


def compare_command(args: argparse.Namespace) -> int:
    """Run every coherence choice (none + each registered one) from the same noise; write compare.png/json."""
    base = config_from_args(args)
    latents = latents_from_args(args)
    choices: list[str | None] = [None, *coherence_names()]
    print(base.describe())
    results, metrics, runs = {}, {}, {}
    for choice in choices:
        label = choice or "none"
        config = replace(base, coherence=choice)
        result = _optimize(latents, config, args, desc=label)
        results[label] = result.latents
        metrics[label] = shape_metrics(result.latents)
        runs[label] = {
            "coherence": choice,
            "config": config.to_dict(),
            "metrics": metrics[label].to_dict(),
            "final_losses": result.final_losses(),
            "seconds": result.seconds,
        }

    print()
    print(comparison_table(metrics, {label: run["final_losses"]["total"] for label, run in runs.items()}))
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"Coherence comparison ({args.preset}, seed {args.seed}, {base.steps} steps)"
    save_figure(comparison_grid(results, metrics=metrics, title=title), args.out / "compare.png")
    _write_json(args.out / "compare.json", {**_run_info(args), "config": base.to_dict(), "runs": runs})
    print(f"\nwrote {args.out / 'compare.png'}, {args.out / 'compare.json'}")
    return 0


def comparison_table(metrics: dict, totals: dict[str, float] | None = None) -> str:
    """One line per run: batch means of the shape metrics (and the final total loss)."""
    header = f"{'coherence':<14} {'bright':>7} {'blobs':>6} {'binary':>7} {'compact':>8} {'IoU':>6}"
    lines = [header + (f" {'loss':>9}" if totals else "")]
    for label, m in metrics.items():
        s = m.summary()
        cells = [s["bright_fraction"], s["blobs"], s["near_binary"], s["compactness"], s["mean_iou"]]
        shown = ["n/a" if math.isnan(v) else f"{v:.2f}" for v in cells]
        line = f"{label:<14} {shown[0]:>7} {shown[1]:>6} {shown[2]:>7} {shown[3]:>8} {shown[4]:>6}"
        if totals:
            line += f" {totals[label]:>9.4f}"
        lines.append(line)
    return "\n".join(lines)


# -- dispatch ----------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]

SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {
    "run": (add_run_arguments, run_command),
    "compare": (add_compare_arguments, compare_command),
    "scorecard": (scorecard.add_arguments, scorecard.run),
    # More subcommands register here: name -> (add_arguments(parser), handler(args) -> exit code),
    # e.g. the scorecard (issue 5).
}
"""Subcommand name -> ``(add_arguments, handler)``; the handler's docstring is its help line."""

DEFAULT_COMMAND = "run"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per entry of :data:`SUBCOMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="shape-losses",
        allow_abbrev=False,
        description="Sculpt blob-like shapes out of Gaussian noise with loss functions alone. "
        f"Without a command, runs '{DEFAULT_COMMAND}' (see 'shape-losses {DEFAULT_COMMAND} -h').",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_arguments, handler) in SUBCOMMANDS.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        help_line = doc[0] if doc else None
        command = sub.add_parser(name, help=help_line, description=help_line, allow_abbrev=False)
        add_arguments(command)
        command.set_defaults(handler=handler, command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m shape_losses`` and ``shape-losses``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, DEFAULT_COMMAND)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    try:
        return int(args.handler(args))
    except UsageError as error:
        args.command_parser.print_usage(sys.stderr)
        print(f"{args.command_parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, NotImplementedError, ImportError, OSError) as error:
        print(f"shape-losses: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
