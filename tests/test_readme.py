"""The README's Python examples run as written (with fewer steps, to stay quick)."""

import re
from dataclasses import replace
from pathlib import Path

import matplotlib
import pytest

import shape_losses as sl
from shape_losses.registry import unregister

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, monkeypatch):
    matplotlib.use("Agg")
    code = python_blocks()[index]
    # The examples use the presets' full step counts; 20 steps prove the same calls work.
    monkeypatch.setattr(sl, "PRESETS", {k: replace(v, steps=20) for k, v in sl.PRESETS.items()})
    before = set(sl.TERMS)
    try:
        exec(compile(code, f"README block {index}", "exec"), {})
    finally:
        for name in set(sl.TERMS) - before:
            unregister(name)
