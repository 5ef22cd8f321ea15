"""The scorecard: does a preset keep the seed notebook's promise, seed after seed?

The seed promises "distinct blob-like shapes, sharp boundaries between black/white, sparse
(mostly black background), each shape different", with about 20% of the pixels bright. The
scorecard turns that into four figures, checked in every image of every seed (:data:`TARGETS`):

* **sparse** - every image 17-23% bright (pixels above 0.5);
* **blobs** - 1 to 3 connected bright blobs (4-connectivity) in every image;
* **sharp** - in every image at least 95% of the pixels within 10% of the level gap of one of
  two levels (``ShapeMetrics.near_binary``);
* **different** - mean pairwise IoU of the bright masks at most 0.2 in every batch.

For each preset and each coherence choice (none and every registered coherence term, at the
preset's coherence weight) it runs ``optimize(initialize_latents(6, (32, 32), seed=s), config)``
for every seed ``s`` and reports the figures' mean and worst case and the share of images and
seeds that meet each target. ``python -m shape_losses scorecard --seeds 50 --out DIR`` prints
the table and writes it as ``scorecard.md`` and ``scorecard.json``; the notebooks call
:func:`scorecard` and :func:`to_markdown` on a few seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import check_int
from .config import ENGINES, PRESETS, Config
from .metrics import shape_metrics
from .noise import initialize_latents
from .optimize import NonFiniteLossError, optimize
from .registry import coherence_names


@dataclass(frozen=True)
class Targets:
    """The promise in figures; each holds per image (``mean_iou``: per batch)."""

    bright: tuple[float, float] = (0.17, 0.23)
    """Bright fraction (pixels above ``threshold``), inclusive range."""
    blobs: tuple[int, int] = (1, 3)
    """Number of 4-connected bright blobs, inclusive range."""
    near_binary: float = 0.95
    """Least share of pixels near one of the two levels (``ShapeMetrics.near_binary``)."""
    mean_iou: float = 0.2
    """Largest mean pairwise IoU of a batch's bright masks."""
    threshold: float = 0.5
    """What counts as a bright pixel (the seed's threshold)."""

    def describe(self) -> str:
        """One sentence stating the targets."""
        return (
            f"every image {self.bright[0]:.0%}-{self.bright[1]:.0%} bright (pixels > {self.threshold:g}); "
            f"{self.blobs[0]} to {self.blobs[1]} connected blobs (4-connectivity) in every image; "
            f"in every image at least {self.near_binary:.0%} of the pixels within 10% of the level gap "
            f"of one of two levels; mean pairwise IoU of the bright masks <= {self.mean_iou:g} per batch"
        )


TARGETS = Targets()
"""The targets of issue 5: 17-23% bright, 1-3 blobs, >= 95% near-binary, mean IoU <= 0.2."""

FIGURES = ("bright", "blobs", "near_binary", "mean_iou")
"""The four promise figures, in table order."""

BATCH_SIZE = 6
IMAGE_SIZE = (32, 32)


# -- measuring -----------------------------------------------------------------------------------


def measure_seed(
    config: Config,
    seed: int,
    *,
    batch_size: int = BATCH_SIZE,
    image_size: tuple[int, int] = IMAGE_SIZE,
    targets: Targets = TARGETS,
) -> dict[str, Any]:
    """Run ``config`` from ``initialize_latents(batch_size, image_size, seed=seed)`` and measure it.

    Returns the per-image figures (lists), the batch's mean IoU and, per figure, whether every
    image (or the batch) meets its target. A run whose loss turns NaN counts as failing all four.
    """
    latents = initialize_latents(batch_size, image_size, seed=seed)
    try:
        result = optimize(latents, config)
    except NonFiniteLossError as error:
        return {"seed": seed, "error": str(error), "ok": dict.fromkeys(FIGURES, False), "all_ok": False}
    m = shape_metrics(result.latents, threshold=targets.threshold)
    bright_ok = (m.bright_fraction >= targets.bright[0]) & (m.bright_fraction <= targets.bright[1])
    blobs_ok = (m.blobs >= targets.blobs[0]) & (m.blobs <= targets.blobs[1])
    binary_ok = m.near_binary >= targets.near_binary
    mean_iou = m.mean_iou
    iou_ok = bool(mean_iou <= targets.mean_iou) if not math.isnan(mean_iou) else True
    ok = {"bright": bool(bright_ok.all()), "blobs": bool(blobs_ok.all()),
          "near_binary": bool(binary_ok.all()), "mean_iou": iou_ok}
    return {
        "seed": seed,
        "bright": m.bright_fraction.tolist(),
        "blobs": m.blobs.tolist(),
        "near_binary": m.near_binary.tolist(),
        "mean_iou": None if math.isnan(mean_iou) else mean_iou,
        "images_ok": {"bright": int(bright_ok.sum()), "blobs": int(blobs_ok.sum()),
                      "near_binary": int(binary_ok.sum())},
        "ok": ok,
        "all_ok": all(ok.values()),
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "mean": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max())}


def score_config(
    config: Config,
    seeds: Iterable[int],
    *,
    batch_size: int = BATCH_SIZE,
    image_size: tuple[int, int] = IMAGE_SIZE,
    targets: Targets = TARGETS,
) -> dict[str, Any]:
    """The promise figures of ``config`` over ``seeds``: one scorecard row (a plain dict).

    Keys: ``bright``, ``blobs``, ``near_binary``, ``mean_iou`` - each ``{min, mean, max}`` over
    every image of every seed (``mean_iou``: over seeds); ``images_ok`` - per per-image figure,
    the share of all images meeting it; ``seeds_ok`` - per figure and for ``all`` four, the share
    of seeds where every image meets it; ``per_seed`` - each seed's worst figures; ``errors`` -
    seeds whose loss turned NaN; ``images``, ``seeds`` and ``seconds``.
    """
    start = time.perf_counter()
    runs = [measure_seed(config, s, batch_size=batch_size, image_size=image_size, targets=targets)
            for s in seeds]
    if not runs:
        raise ValueError("seeds must not be empty")
    done = [r for r in runs if "error" not in r]
    images = batch_size * len(runs)
    row: dict[str, Any] = {
        name: _stats([v for r in done for v in r[name]]) for name in ("bright", "blobs", "near_binary")
    }
    row["mean_iou"] = _stats([r["mean_iou"] for r in done if r["mean_iou"] is not None])
    row["images_ok"] = {
        name: sum(r["images_ok"][name] for r in done) / images for name in ("bright", "blobs", "near_binary")
    }
    row["seeds_ok"] = {name: sum(r["ok"][name] for r in runs) / len(runs) for name in FIGURES}
    row["seeds_ok"]["all"] = sum(r["all_ok"] for r in runs) / len(runs)
    row["per_seed"] = [
        {"seed": r["seed"], "error": r["error"]} if "error" in r else {
            "seed": r["seed"],
            "bright_min": min(r["bright"]),
            "bright_max": max(r["bright"]),
            "blobs_min": min(r["blobs"]),
            "blobs_max": max(r["blobs"]),
            "near_binary_min": min(r["near_binary"]),
            "mean_iou": r["mean_iou"],
            "all_ok": r["all_ok"],
        }
        for r in runs
    ]
    row["errors"] = [r["seed"] for r in runs if "error" in r]
    row["images"] = images
    row["seeds"] = len(runs)
    row["seconds"] = time.perf_counter() - start
    return row


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check_int(seeds, "seeds", minimum=1)
        return list(range(seeds))
    try:
        listed = list(seeds)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"seeds must be a count or an iterable of ints, got {seeds!r}") from None
    if not listed:
        raise ValueError("seeds must not be empty")
    for s in listed:
        check_int(s, "seeds[...]", minimum=0)
    return listed


def _preset_map(presets: Mapping[str, Config] | Sequence[str] | str | None) -> dict[str, Config]:
    if presets is None:
        return dict(PRESETS)
    if isinstance(presets, str):
        presets = [presets]
    if isinstance(presets, Mapping):
        chosen = dict(presets)
        for name, config in chosen.items():
            if not isinstance(config, Config):
                raise TypeError(f"presets[{name!r}] must be a Config, got {type(config).__name__}")
    else:
        chosen = {}
        for name in presets:
            if name not in PRESETS:
                raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
            chosen[name] = PRESETS[name]
    if not chosen:
        raise ValueError("presets must not be empty")
    return chosen


def _coherence_choices(config: Config, coherences: str | Sequence[str | None]) -> list[str | None]:
    """The preset's own coherence first, then the other requested choices."""
    valid: list[str | None] = [None, *coherence_names()]
    if coherences == "all":
        wanted = valid
    elif coherences == "own":
        wanted = [config.coherence]
    elif isinstance(coherences, str):
        raise ValueError(f"coherences must be 'all', 'own' or a list of names/None, got {coherences!r}")
    else:
        wanted = [config.coherence if c == "own" else None if c in (None, "none") else c for c in coherences]
        for c in wanted:
            if c not in valid:
                raise ValueError(f"unknown coherence {c!r}; valid values: {valid}")
    ordered = [config.coherence] if config.coherence in wanted else []
    return ordered + [c for c in wanted if c != config.coherence]


def scorecard(
    presets: Mapping[str, Config] | Sequence[str] | str | None = None,
    seeds: int | Iterable[int] = 50,
    *,
    coherences: str | Sequence[str | None] = "all",
    engine: str | None = None,
    targets: Targets = TARGETS,
    batch_size: int = BATCH_SIZE,
    image_size: tuple[int, int] = IMAGE_SIZE,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score presets against the promise; returns a JSON-friendly dict (see :func:`to_markdown`).

    Args:
        presets: names from ``PRESETS``, a mapping name -> ``Config``, or ``None`` for every preset.
        seeds: a count ``n`` (seeds ``0 .. n-1``) or the seeds themselves.
        coherences: ``'all'`` (none and every registered coherence, the preset's own first),
            ``'own'`` (the preset as it is), or a list of names (``None``/``'none'`` for none,
            ``'own'`` for the preset's own).
            A swapped-in coherence keeps the preset's coherence weight.
        engine: run every config with this engine (``'autograd'`` or ``'fast'``); ``None`` keeps
            each preset's own.
        targets, batch_size, image_size: the promise and the batch it is checked on (6 x 32x32).
        progress: called with a line of text after each row (e.g. ``print``).

    Returns:
        ``{"targets", "seeds", "batch_size", "image_size", "settings": {preset: config dict},
        "rows": [{"preset", "coherence", "own", "config", **score_config(...)}]}``.
    """
    chosen = _preset_map(presets)
    seed_list = _seed_list(seeds)
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or None, got {engine!r}")
    if not isinstance(targets, Targets):
        raise TypeError(f"targets must be a Targets, got {type(targets).__name__}")
    if engine is not None:
        chosen = {name: replace(config, engine=engine) for name, config in chosen.items()}

    plan = [
        (name, config, choice)
        for name, config in chosen.items()
        for choice in _coherence_choices(config, coherences)
    ]
    rows = []
    for index, (name, config, coherence) in enumerate(plan, start=1):
        run_config = config if coherence == config.coherence else replace(config, coherence=coherence)
        row = score_config(
            run_config, seed_list, batch_size=batch_size, image_size=image_size, targets=targets
        )
        rows.append({
            "preset": name,
            "coherence": coherence,
            "own": coherence == config.coherence,
            "config": run_config.to_dict(),
            **row,
        })
        if progress is not None:
            progress(
                f"[{index}/{len(plan)}] {name} x {coherence or 'none'}: all four met in "
                f"{row['seeds_ok']['all']:.0%} of {row['seeds']} seeds ({row['seconds']:.1f} s)"
            )
    return {
        "targets": asdict(targets),
        "seeds": seed_list,
        "batch_size": batch_size,
        "image_size": list(image_size),
        "settings": {name: config.to_dict() for name, config in chosen.items()},
        "rows": rows,
    }


# -- reporting -----------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _seed_range(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds))


def _worst_ok(row: Mapping[str, Any]) -> dict[str, bool]:
    """Whether the worst case of each figure meets its target (i.e. every image/seed does)."""
    return {name: row["seeds_ok"][name] == 1.0 for name in FIGURES}


def _settings_table(settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names = list(settings)
    terms: list[str] = []
    for config in settings.values():
        terms += [t for t in config["weights"] if t not in terms]
    lines = ["| setting | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for term in terms:
        cells = [_num(settings[n]["weights"].get(term), "g") if term in settings[n]["weights"] else "-"
                 for n in names]
        lines.append(f"| weight `{term}` | " + " | ".join(cells) + " |")

    def row(label: str, get: Callable[[Mapping[str, Any]], Any]) -> str:
        return f"| {label} | " + " | ".join(str(get(settings[n])) for n in names) + " |"

    lines.append(row("coherence", lambda c: f"`{c['coherence']}`" if c["coherence"] else "none"))
    lines.append(row("coherence weight", lambda c: format(c["coherence_weight"], "g")))
    for name, config in settings.items():
        for term, values in config["params"].items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"| params `{term}` ({name}) | " + " | ".join(
                shown if n == name else "" for n in names) + " |")
    lines.append(row("steps", lambda c: c["steps"]))
    lines.append(row("lr", lambda c: format(c["lr"], "g")))
    lines.append(row("clamp", lambda c: "none" if c["clamp"] is None else "[{:g}, {:g}]".format(*c["clamp"])))
    lines.append(row("engine", lambda c: c["engine"]))
    return lines


def to_markdown(data: Mapping[str, Any]) -> str:
    """The scorecard as Markdown: targets, the figures table, the shares table, the settings.

    ``data`` is what :func:`scorecard` returns (or its JSON, loaded back).
    """
    targets = Targets(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["targets"].items()})
    seeds = list(data["seeds"])
    h, w = data["image_size"]
    lines = [
        f"# Scorecard: the seed's promise over {len(seeds)} seeds",
        "",
        f"{data['batch_size']} images of {h}x{w} from `initialize_latents(seed=s)` for s in "
        f"{_seed_range(seeds)}, optimized with each preset's settings (steps, lr, engine as listed below).",
        "",
        f"**Targets**: {targets.describe()}.",
        "",
        "Each figure is given as worst case over every image of every seed (mean in brackets); "
        "✓ means every image of every seed meets the target. A coherence other than the preset's own "
        "keeps the preset's coherence weight; the preset's own coherence is in **bold**.",
        "",
        "## Figures",
        "",
        "| preset | coherence | bright fraction: min..max (mean) | blobs: min..max (mean) "
        "| near-binary: min (mean) | mean IoU: max (mean) | seeds meeting all four |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        ok = _worst_ok(row)
        coherence = row["coherence"] or "none"
        coherence = f"**{coherence}**" if row["own"] else coherence
        b, n, nb, iou = row["bright"], row["blobs"], row["near_binary"], row["mean_iou"]
        errors = f" ({len(row['errors'])} NaN runs)" if row["errors"] else ""
        lines.append(
            f"| `{row['preset']}` | {coherence} "
            f"| {_num(b['min'])}..{_num(b['max'])} ({_num(b['mean'])}) {_mark(ok['bright'])} "
            f"| {_num(n['min'], '.0f')}..{_num(n['max'], '.0f')} ({_num(n['mean'], '.2f')}) "
            f"{_mark(ok['blobs'])} "
            f"| {_num(nb['min'])} ({_num(nb['mean'])}) {_mark(ok['near_binary'])} "
            f"| {_num(iou['max'])} ({_num(iou['mean'])}) {_mark(ok['mean_iou'])} "
            f"| {row['seeds_ok']['all']:.0%}{errors} |"
        )
    lines += [
        "",
        "## Share meeting each target",
        "",
        "Images: share of all images; seeds: share of seeds in which every image (for IoU: the batch) "
        "meets it.",
        "",
        "| preset | coherence | images: bright | images: blobs | images: near-binary "
        "| seeds: bright | seeds: blobs | seeds: near-binary | seeds: IoU | seeds: all four |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        coherence = row["coherence"] or "none"
        coherence = f"**{coherence}**" if row["own"] else coherence
        im, se = row["images_ok"], row["seeds_ok"]
        lines.append(
            f"| `{row['preset']}` | {coherence} "
            f"| {im['bright']:.0%} | {im['blobs']:.0%} | {im['near_binary']:.0%} "
            f"| {se['bright']:.0%} | {se['blobs']:.0%} | {se['near_binary']:.0%} | {se['mean_iou']:.0%} "
            f"| {se['all']:.0%} |"
        )
    lines += ["", "## Settings, side by side", "", *_settings_table(data["settings"]), ""]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(data: Mapping[str, Any]) -> str:
    """The scorecard as JSON text (NaN written as null)."""
    return json.dumps(_json_safe(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


# -- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m shape_losses scorecard``."""
    parser.add_argument("--seeds", type=int, default=50, metavar="N",
                        help="number of seeds (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0, metavar="S",
                        help="seeds are S .. S+N-1 (default: %(default)s)")
    parser.add_argument("--presets", default="all", metavar="NAMES",
                        help=f"comma-separated presets, or 'all' (default); presets: {', '.join(PRESETS)}")
    parser.add_argument("--coherences", default="all", metavar="NAMES",
                        help="'all' (default: none and every registered coherence), 'own' (each preset's "
                        f"own), or comma-separated names from: own, none, {', '.join(coherence_names())}")
    parser.add_argument("--engine", choices=ENGINES, help="run every config with this engine "
                        "(default: each preset's own)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write DIR/scorecard.md and DIR/scorecard.json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _usage_error(message: str) -> Exception:
    from .cli import UsageError  # the CLI reports it as an argparse error (exit code 2)

    return UsageError(message)


def run(args: argparse.Namespace) -> int:
    """Score every preset and coherence choice against the seed's promise; print and write the table."""
    if args.seeds < 1:
        raise _usage_error(f"--seeds must be >= 1, got {args.seeds}")
    if args.first_seed < 0:
        raise _usage_error(f"--first-seed must be >= 0, got {args.first_seed}")
    presets = None if args.presets == "all" else [p.strip() for p in args.presets.split(",") if p.strip()]
    coherences: str | list[str | None] = args.coherences
    if args.coherences not in ("all", "own"):
        coherences = [c.strip() for c in args.coherences.split(",") if c.strip()]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # Validate the choices before any run starts.
    try:
        chosen = _preset_map(presets)
        for config in chosen.values():
            _coherence_choices(config, coherences)
    except (TypeError, ValueError) as error:
        raise _usage_error(str(error)) from None

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    data = scorecard(chosen, seeds, coherences=coherences, engine=args.engine,
                     progress=None if args.quiet else progress)
    text = to_markdown(data)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scorecard.md").write_text(text)
        (args.out / "scorecard.json").write_text(to_json(data))
        print(f"wrote {args.out / 'scorecard.md'}, {args.out / 'scorecard.json'}")
    return 0
