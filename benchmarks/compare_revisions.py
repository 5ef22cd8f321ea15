"""``optimize`` of this checkout against the package as it was at another git revision.

Extracts ``shape_losses/`` at ``--base`` (``git archive``) into a temporary folder under another
name, imports both, and runs the same preset on the same starting images with each, alternating,
in one process - so that the machine's changing speed hits both alike. Prints the median time
of each and the median of the per-pair ratios (base / this checkout: above 1, this checkout is
faster), and how far the final images differ (float32 runs of the fast engine drift by rounding).

    .venv/bin/python benchmarks/compare_revisions.py --base HEAD~3
    .venv/bin/python benchmarks/compare_revisions.py --base v0.1 --preset seed --pairs 20 --image-size 64
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import shape_losses as sl

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "shape_losses_base"


def import_revision(rev: str, into: Path):
    """``shape_losses`` as it was at ``rev``, imported as :data:`ALIAS` (its imports are relative)."""
    archive = into / "package.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "shape_losses"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "shape_losses").rename(into / ALIAS)
    sys.path.insert(0, str(into))
    return importlib.import_module(ALIAS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1)")
    parser.add_argument("--preset", default="default", help="preset to run with both (default: default)")
    parser.add_argument("--pairs", type=int, default=30, help="alternating pairs of runs (default: 30)")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, the steadiest)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        base = import_revision(args.base, Path(tmp))
        base_config, config = base.PRESETS[args.preset], sl.get_preset(args.preset)
        x = sl.initialize_latents(args.batch_size, (args.image_size,) * 2, seed=0)
        for _ in range(2):  # warm up both
            base.optimize(x, base_config)
            sl.optimize(x, config)
        base_s, new_s = [], []
        for _ in range(args.pairs):
            start = time.perf_counter()
            base_run = base.optimize(x, base_config)
            base_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            new_run = sl.optimize(x, config)
            new_s.append(time.perf_counter() - start)

    ratio = statistics.median(b / n for b, n in zip(base_s, new_s, strict=True))
    shape = f"{args.batch_size}x{args.image_size}x{args.image_size}"
    print(f"preset {args.preset!r}, {shape}, {config.steps} steps, {args.pairs} pairs")
    print(f"torch threads: {args.threads}")
    print(f"{args.base}: median {statistics.median(base_s) * 1e3:.1f} ms; "
          f"this checkout: median {statistics.median(new_s) * 1e3:.1f} ms; "
          f"ratio (base / this checkout) {ratio:.3f}")
    difference = (base_run.latents - new_run.latents).abs().max().item()
    print(f"largest pixel difference between the final images: {difference:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
