"""Time ``optimize`` against the seed notebook's own loop: interleaved runs, medians, ratios, peak memory.

For each size ``BxHxW`` (with its number of Adam steps) it times, in the same process and
interleaved repeat by repeat so that a busy machine slows every contender alike:

* ``seed``     - the seed's loop, copied verbatim in ``tests/seed_reference.py`` (the reference);
* ``fast``     - ``optimize`` with ``replace(PRESETS['seed'], engine='fast')``: the same work;
* ``autograd`` - ``optimize`` with ``PRESETS['seed']`` (the package's readable engine);
* ``default``  - ``optimize`` with ``PRESETS['default']`` as users run it (its own terms and engine).

A ratio is the seed loop's time divided by the contender's, per repeat; the table shows the
median ratio over the repeats (>= 5) and the median milliseconds per step. Peak memory is
the peak of the memory held by tensors during a short run of each contender (torch's
profiler on a CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

Commands (from the repository root)::

    .venv/bin/python benchmarks/bench_optimize.py                       # CPU, the three standard sizes
    .venv/bin/python benchmarks/bench_optimize.py --markdown            # the table for RESULTS.md
    .venv/bin/python benchmarks/bench_optimize.py --sizes 6x32x32:300 --threads 1
    .venv/bin/python benchmarks/bench_optimize.py --device cuda --sizes 1024x128x128:20
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the seed's code, verbatim: one copy, shared with the tests
sys.path.insert(0, str(HERE.parent))

from seed_reference import seed_loop  # noqa: E402

import shape_losses as sl  # noqa: E402
from shape_losses.config import PRESETS  # noqa: E402

DEFAULT_SIZES = "6x32x32:300,64x64x64:50,256x128x128:12"
CONTENDERS = ("seed", "fast", "autograd", "default")


def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """``"6x32x32:300,256x128x128:12"`` -> [(6, 32, 32, 300), (256, 128, 128, 12)]."""
    sizes = []
    for item in text.split(","):
        shape, _, steps = item.strip().partition(":")
        b, h, w = (int(v) for v in shape.split("x"))
        sizes.append((b, h, w, int(steps or 300)))
    return sizes


def make_runner(name: str, latents: torch.Tensor, steps: int, coherence: str | None):
    """A no-argument function doing contender ``name``'s run (synchronised on CUDA)."""
    seed_cfg = dataclasses.replace(PRESETS["seed"], steps=steps, coherence=coherence)
    configs = {
        "fast": dataclasses.replace(seed_cfg, engine="fast"),
        "autograd": seed_cfg,
        "default": dataclasses.replace(PRESETS["default"], steps=steps),
    }
    sync = torch.cuda.synchronize if latents.is_cuda else (lambda: None)

    def run() -> None:
        if name == "seed":
            seed_loop(latents, coherence_type=coherence, num_steps=steps)
        else:
            sl.optimize(latents, configs[name])
        sync()

    return run


def latents_for(b: int, h: int, w: int, device: str) -> torch.Tensor:
    return sl.initialize_latents(b, (h, w), device=device, seed=0).detach()


def _walk(nodes):
    for node in nodes:
        yield node
        yield from _walk(node.children)


def peak_memory_mb(name: str, size: tuple[int, int, int, int], args: argparse.Namespace) -> float:
    """Peak growth of the memory held by tensors during a short run of contender ``name``.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: torch's profiler records every tensor
    allocation and free with the running total of allocated bytes; the peak of that total
    is the run's peak (resident-set figures are blurred by malloc arenas and thread stacks).
    """
    b, h, w, steps = size
    latents = latents_for(b, h, w, args.device)
    run = make_runner(name, latents, min(steps, 3), args.coherence)
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    totals = [
        node.extra_fields.total_allocated
        for node in _walk(prof.profiler.kineto_results.experimental_event_tree())
        if node.tag == _EventType.Allocation
    ]
    return max(totals, default=0) / 2**20


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def bench(args: argparse.Namespace) -> list[dict]:
    rows = []
    coherence = args.coherence
    for size in parse_sizes(args.sizes):
        b, h, w, steps = size
        latents = latents_for(b, h, w, args.device)
        runners = {name: make_runner(name, latents, steps, coherence) for name in args.contenders}
        for name in args.contenders:  # warm-up: lazy initialisation, allocator, MKL threads
            make_runner(name, latents, min(steps, 3), coherence)()
        times: dict[str, list[float]] = {name: [] for name in args.contenders}
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        row = {"size": f"{b}x{h}x{w}", "steps": steps}
        for name in args.contenders:
            row[f"{name}_ms"] = 1e3 * statistics.median(times[name]) / steps
            if name != "seed" and "seed" in times:
                row[f"{name}_ratio"] = statistics.median(
                    s / t for s, t in zip(times["seed"], times[name], strict=True)
                )
        if args.memory:
            for name in args.contenders:
                row[f"{name}_mb"] = peak_memory_mb(name, size, args)
        rows.append(row)
        print(format_row(row, args.contenders), flush=True)
    return rows


def format_row(row: dict, contenders) -> str:
    parts = [f"{row['size']:>12s} x{row['steps']:<4d}"]
    for name in contenders:
        part = f"{name} {row[f'{name}_ms']:8.3f} ms/step"
        if f"{name}_ratio" in row:
            part += f" ({row[f'{name}_ratio']:.2f}x)"
        if f"{name}_mb" in row:
            part += f" {row[f'{name}_mb']:.3g} MB"
        parts.append(part)
    return " | ".join(parts)


def markdown(rows: list[dict], contenders, info: dict[str, str], args: argparse.Namespace) -> str:
    lines = ["| " + " | ".join(f"{k}: {v}" for k, v in info.items()) + " |", ""]
    lines.append(f"Coherence `{args.coherence}`, {args.repeats} interleaved repeats, median; "
                 f"ratio = seed loop time / contender time (higher is faster).")
    lines.append("")
    header = ["size (BxHxW)", "steps"]
    for name in contenders:
        header.append(f"{name} ms/step")
        if name != "seed":
            header.append(f"{name} ratio")
    if args.memory:
        header += [f"{name} peak MB" for name in contenders]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = [row["size"], str(row["steps"])]
        for name in contenders:
            cells.append(f"{row[f'{name}_ms']:.3f}")
            if name != "seed":
                ratio = f"{row[f'{name}_ratio']:.2f}x"
                cells.append(f"**{ratio}**" if name == "fast" else ratio)
        if args.memory:
            cells += [f"{row[f'{name}_mb']:.3g}" for name in contenders]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"BxHxW:steps,... (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (>= 5 for the table)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--coherence", default="autocorr", help="coherence of the seed config")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"subset of {CONTENDERS}")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.contenders = [c.strip() for c in args.contenders.split(",")]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; valid: {CONTENDERS}")
    if args.coherence.lower() == "none":
        args.coherence = None
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    info = machine()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    rows = bench(args)
    if args.markdown:
        print()
        print(markdown(rows, args.contenders, info, args))


if __name__ == "__main__":
    main()
