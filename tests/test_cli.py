"""The CLI end to end into a temporary folder, and its answers to bad input."""

from __future__ import annotations

import io
import json
import math
import runpy
import sys
from contextlib import redirect_stdout
from dataclasses import replace

import pytest
from PIL import Image

import shape_losses as sl
from shape_losses.cli import SUBCOMMANDS, build_parser, config_from_args, main

FAST = ["--steps", "20", "--batch", "2", "--size", "16", "--quiet"]


def _png_ok(path) -> None:
    assert path.exists()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 200


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One CLI run shared by the tests that only read its output."""
    out = tmp_path_factory.mktemp("run")
    capture = io.StringIO()
    with redirect_stdout(capture):
        code = main([*FAST, "--seed", "5", "--out", str(out)])
    return out, code, capture.getvalue()


def test_run_writes_pngs_and_metrics(run_dir):
    out, code, stdout = run_dir
    assert code == 0
    _png_ok(out / "shapes.png")
    _png_ok(out / "loss_curves.png")
    data = json.loads((out / "metrics.json").read_text())
    assert {"config", "metrics", "final_losses", "preset", "seed", "batch", "size", "steps_run"} <= set(data)
    assert data["config"]["steps"] == 20 and data["steps_run"] == 20 and data["size"] == [16, 16]
    assert data["config"] == replace(sl.PRESETS["default"], steps=20).to_dict()
    cfg = sl.PRESETS["default"]
    assert set(data["final_losses"]) == {name for name, _ in cfg.active_terms()} | {"total"}
    assert len(data["metrics"]["per_image"]["blobs"]) == 2 and "summary" in data["metrics"]
    assert "Loss weights:" in stdout and "pairwise IoU" in stdout and "shapes.png" in stdout


def test_run_result_is_the_api_result(run_dir):
    """The CLI runs exactly ``optimize(initialize_latents(batch, size, seed=seed), config)``."""
    out, _, stdout = run_dir
    data = json.loads((out / "metrics.json").read_text())
    x = sl.initialize_latents(2, (16, 16), seed=5)
    result = sl.optimize(x, replace(sl.PRESETS["default"], steps=20))
    assert data["final_losses"]["total"] == pytest.approx(result.final_losses()["total"], rel=1e-6)
    metrics = sl.shape_metrics(result.latents)
    assert data["metrics"] == json.loads(json.dumps(metrics.to_dict()))
    assert metrics.table() in stdout


def test_run_options_reach_the_config(tmp_path):
    args = [*FAST, "--out", str(tmp_path), "--coherence", "perimeter", "--weight", "tv=0.3",
            "--weight", "binary=0", "--lr", "0.05", "--coherence-weight", "1.5", "--size", "12x14"]
    assert main(args) == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    cfg = data["config"]
    assert cfg["coherence"] == "perimeter" and cfg["coherence_weight"] == 1.5 and cfg["lr"] == 0.05
    assert cfg["weights"]["tv"] == 0.3 and cfg["weights"]["binary"] == 0.0
    assert data["size"] == [12, 14] and len(data["metrics"]["pairwise_iou"]) == 2


@pytest.mark.parametrize(
    "args, changes",
    [
        ([], {}),
        (["--coherence", "none"], {"coherence": None}),
        (["--preset", "seed", "--steps", "7", "--engine", "fast"], {"steps": 7, "engine": "fast"}),
    ],
)
def test_options_on_top_of_the_preset(args, changes):
    parsed = build_parser().parse_args(["run", *args])
    assert config_from_args(parsed) == replace(sl.get_preset(parsed.preset), **changes)


def test_compare_runs_every_coherence_from_the_same_noise(tmp_path, capsys):
    args = ["compare", "--steps", "10", "--batch", "2", "--size", "12", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "compare.png")
    data = json.loads((tmp_path / "compare.json").read_text())
    labels = ["none", *sl.coherence_names()]
    assert list(data["runs"]) == labels
    x = sl.initialize_latents(2, (12, 12), seed=3)
    for label, run in data["runs"].items():
        coherence = None if label == "none" else label
        assert run["coherence"] == coherence and run["config"]["coherence"] == coherence
        expected = sl.optimize(x, replace(sl.PRESETS["default"], steps=10, coherence=coherence))
        assert run["final_losses"]["total"] == pytest.approx(expected.final_losses()["total"], rel=1e-6)
        assert {"metrics", "final_losses"} <= set(run) and "summary" in run["metrics"]
    captured = capsys.readouterr()
    assert captured.err.count("10/10") == len(labels)  # a progress bar per run, on stderr
    lines = captured.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("coherence") and "bright" in line)
    assert [line.split()[0] for line in lines[header + 1:header + 1 + len(labels)]] == labels


def test_a_registered_term_works_from_the_cli(tmp_path, temp_term):
    temp_term("_cli_term", lambda latents, *, scale=1.0: scale * latents.square().mean())
    temp_term("_cli_coherence", lambda latents: -latents.std(), kind="coherence")
    args = [*FAST, "--steps", "5", "--out", str(tmp_path)]
    assert main([*args, "--weight", "_cli_term=1.5", "--coherence", "_cli_coherence"]) == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["config"]["weights"]["_cli_term"] == 1.5 and "_cli_term" in data["final_losses"]
    assert data["config"]["coherence"] == "_cli_coherence"
    assert main(["compare", *args]) == 0
    assert "_cli_coherence" in json.loads((tmp_path / "compare.json").read_text())["runs"]


def test_a_loss_turning_nan_exits_1(tmp_path, temp_term, capsys):
    temp_term("_cli_nan", lambda latents: latents.mean() * math.nan)
    assert main([*FAST, "--weight", "_cli_nan=1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "_cli_nan" in err and "step 0" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, word",
    [
        (["--coherence", "smooth"], "autocorr"),
        (["--weight", "bogus=1"], "sparsity"),
        (["--weight", "autocorr=1"], "coherence-weight"),
        (["--weight", "tv"], "NAME=VALUE"),
        (["--weight", "tv=abc"], "number"),
        (["--weight", "tv=-1"], ">= 0"),
        (["--preset", "best"], "seed"),
        (["--engine", "jax"], "autograd"),
        (["--steps", "-1"], "steps"),
        (["--steps", "ten"], "int"),
        (["--lr", "0"], "lr"),
        (["--coherence-weight", "-2"], "coherence_weight"),
        (["--batch", "0"], "batch_size"),
        (["--seed", "-3"], "seed"),
        (["--size", "8"], "11"),
        (["--size", "32x"], "HxW"),
        (["--no-such-option"], "unrecognized"),
        (["compare", "--coherence", "autocorr"], "unrecognized"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, args, word):
    assert main([*args, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and word in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_subcommand_table():
    assert {"run", "compare"} <= set(SUBCOMMANDS)
    for add_arguments, handler in SUBCOMMANDS.values():
        assert callable(add_arguments) and callable(handler) and handler.__doc__


def test_python_dash_m(monkeypatch, capsys):
    """``python -m shape_losses`` is wired to ``main`` (run in-process through runpy)."""
    monkeypatch.setattr(sys, "argv", ["shape_losses", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("shape_losses", run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "compare" in out and "run" in out
