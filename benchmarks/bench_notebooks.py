"""Wall time of the whole notebook suite: each ``notebooks/*.ipynb`` executed top to bottom, as CI does.

Each notebook runs in a fresh kernel through ``jupyter nbconvert --execute`` into a temporary
folder (the notebooks in the repository are not touched); the script prints each one's time
and the total.

    .venv/bin/python benchmarks/bench_notebooks.py
    .venv/bin/python benchmarks/bench_notebooks.py notebooks/04_optimize.ipynb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_notebook(path: Path, out_dir: Path, timeout: int) -> float:
    cmd = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", str(out_dir), str(path),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=path.parent)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks found")
    total = 0.0
    with tempfile.TemporaryDirectory() as out_dir:
        for path in notebooks:
            seconds = run_notebook(path.resolve(), Path(out_dir), args.timeout)
            total += seconds
            print(f"{path.name:28s} {seconds:7.1f} s", flush=True)
    print(f"{'total':28s} {total:7.1f} s")


if __name__ == "__main__":
    main()
