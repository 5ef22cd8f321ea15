"""The notebooks' packaging: pairing, stored outputs, links, seed coverage, Binder and conda files.

What nbval cannot see: that each notebook is paired with its ``.py`` and was stored executed
top to bottom; that every Colab/Binder badge and Colab install cell points at the repository
URL written once in ``pyproject.toml``; that every section of the seed notebook has a home; and
that ``environment.yml`` and ``binder/`` list the same dependencies as ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

yaml = pytest.importorskip("yaml")
jupytext = pytest.importorskip("jupytext")
from packaging.requirements import Requirement  # noqa: E402  (after the skips above)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_setup", "02_losses", "03_init", "04_optimize", "05_compare"]

SEED_SECTIONS = {
    "Shape Loss Experiment: Sculpting Objects from Noise": "01_setup",
    "Setup": "01_setup",
    "Loss Functions": "02_losses",
    "Initialize Random Noise": "03_init",
    "Configure Loss Weights": "04_optimize",
    "Run Optimization": "04_optimize",
    "Visualize Results": "04_optimize",
    "Plot Loss Curve": "04_optimize",
    "Experiment: Try Different Coherence Losses": "05_compare",
    "Coherence Loss Comparison": "05_compare",
    "Other Loss Weight Experiments": "05_compare",
    "Key Takeaway": "05_compare",
    "Advanced: Compare All Coherence Losses Side-by-Side": "05_compare",
}
"""Every heading of the seed notebook -> the notebook where that section lives. The notebook
marks the place with ``(seed: <heading>)`` in a markdown cell."""

SEED_FILE = ROOT.parent / "shared" / "seed" / "shape_loss_experiment.md"

CONDA_NAMES = {"torch": {"pytorch", "pytorch-cpu"}}
"""PyPI name -> the conda-forge names that provide it (others are the same on both)."""


def _load_script():
    spec = importlib.util.spec_from_file_location("set_repo_url", ROOT / "scripts" / "set_repo_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_repo_url = _load_script()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def _notebook(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(scope="module")
def repo_url() -> str:
    return set_repo_url.repository_url(ROOT / "pyproject.toml")


# -- pairing and stored outputs ----------------------------------------------------------------


def test_jupytext_config_pairs_notebooks_with_percent_scripts():
    config = tomllib.loads((ROOT / "jupytext.toml").read_text(encoding="utf-8"))
    formats = config["formats"].split(",")
    assert "ipynb" in formats and "py:percent" in formats
    assert "jupytext_version" in config.get("notebook_metadata_filter", "")  # no version churn in .py files


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_paired_and_in_sync(name):
    ipynb, script = ROOT / "notebooks" / f"{name}.ipynb", ROOT / "notebooks" / f"{name}.py"
    assert ipynb.is_file() and script.is_file(), f"{name} needs both .ipynb and .py"
    text = script.read_text(encoding="utf-8")
    assert "format_name: percent" in text.split("# ---", 2)[1], f"{script.name} must be in percent format"
    from_ipynb = jupytext.read(ipynb)
    from_script = jupytext.read(script)
    cells = [(c.cell_type, c.source) for c in from_ipynb.cells]
    assert cells == [(c.cell_type, c.source) for c in from_script.cells], (
        f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/*.ipynb`"
    )
    assert from_ipynb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_executed_top_to_bottom(name):
    """Every code cell ran once, in order, in one fresh kernel; no errors; images are PNG."""
    cells = _code_cells(_notebook(name))
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: re-execute it with `make notebooks`"
    outputs = [o for c in cells for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], f"{name} stored an error"
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, f"{name} shows no figure"
    assert not {"image/gif", "image/jpeg", "image/svg+xml"} & mimes, "images are PNG (nbval skips those)"
    texts = [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout"]
    assert len(texts) >= 3, f"{name} prints too few results to be a regression test"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_outputs_hold_nothing_nbval_would_trip_on(name):
    """No stderr (warnings, progress bars) and no widget except in an NBVAL_IGNORE_OUTPUT cell."""
    for cell in _code_cells(_notebook(name)):
        ignored = _source(cell).lstrip().startswith("# NBVAL_IGNORE_OUTPUT")
        for output in cell["outputs"]:
            if output["output_type"] == "stream":
                assert output["name"] != "stderr", f"{name}: stderr in stored output: {output['text']!r}"
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                assert ignored, f"{name}: a widget output needs `# NBVAL_IGNORE_OUTPUT` first in its cell"


def test_sanitize_file_masks_only_volatile_text():
    parser = __import__("configparser").ConfigParser()
    parser.read(ROOT / "notebooks" / "sanitize.cfg")
    patterns = [(parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()]
    assert patterns

    def sanitize(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    results = "total loss: first 0.525, last -7.005\n  mean    0.62   2.50    0.97\nIoU 0.43 in 1.5 s steps"
    assert sanitize(results) == results, "a sanitize pattern masks ordinary numbers"
    assert sanitize("torch         version 2.13.0+cpu") == sanitize("torch         version 2.1.0")
    assert sanitize("fast     time: 0.203 s") == sanitize("fast     time: 12.5 s")


def test_makefile_runs_strict_nbval_and_checks_pair_sync():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    nbval = re.search(r"^nbval:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "--nbval " in nbval and "--nbval-lax" not in nbval
    assert "--nbval-sanitize-with notebooks/sanitize.cfg" in nbval
    sync = re.search(r"^sync-check:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "jupytext --sync" in sync and "git diff --exit-code" in sync


# -- the repository URL, written once --------------------------------------------------------


def test_every_badge_and_install_link_uses_the_pyproject_url(repo_url):
    owner, repo = set_repo_url.owner_repo(repo_url)
    files = set_repo_url.target_files(ROOT)
    assert len([f for f in files if f.suffix == ".ipynb"]) == len(NOTEBOOKS)
    for path in files:
        for kind, found_owner, found_repo in set_repo_url.links(path.read_text(encoding="utf-8")):
            assert (found_owner, found_repo) == (owner, repo), (
                f"{path.name}: {kind} link to {found_owner}/{found_repo}"
            )
    assert set_repo_url.main(["--check"]) == 0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_badges_and_a_colab_only_install_cell(name, repo_url):
    owner, repo = set_repo_url.owner_repo(repo_url)
    nb = _notebook(name)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    badge = f"https://colab.research.google.com/github/{owner}/{repo}/blob/main/notebooks/{name}.ipynb"
    assert badge in _source(first), f"{name} must open with its own Colab badge"
    binder = f"https://mybinder.org/v2/gh/{owner}/{repo}/HEAD?urlpath=lab/tree/notebooks/{name}.ipynb"
    assert binder in _source(first), f"{name} must open with its own Binder badge"
    install = _code_cells(nb)[0]
    source = _source(install)
    assert f"shape-losses @ git+{repo_url}" in source
    assert "google.colab" in source
    assert install["outputs"] == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_runs_pip_only_on_colab_and_keeps_colabs_torch(name, repo_url, monkeypatch):
    source = _source(_code_cells(_notebook(name))[0])
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda args, **kw: calls.append(list(args)))

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, f"{name}[install]", "exec"), {})
    assert calls == [], "the install cell must do nothing outside Colab"

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, f"{name}[install]", "exec"), {})
    assert len(calls) == 1
    args = calls[0]
    assert args[:4] == [sys.executable, "-m", "pip", "install"]
    assert f"shape-losses @ git+{repo_url}" in args
    forbidden = {"-U", "--upgrade", "--force-reinstall", "--no-deps", "torch"}
    assert not forbidden & set(args), f"{args} could replace Colab's torch (or skip the dependencies)"


def test_set_repo_url_moves_every_link_to_a_fork(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    old = set_repo_url.repository_url(ROOT / "pyproject.toml")
    assert old in pyproject
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(old, "https://github.com/someone/my-fork.git"))

    assert set_repo_url.main(["--check", "--root", str(tmp_path)]) == 1
    assert set_repo_url.main(["--root", str(tmp_path)]) == 0
    assert set_repo_url.main(["--check", "--root", str(tmp_path)]) == 0
    found = []
    for path in set_repo_url.target_files(tmp_path):
        text = path.read_text(encoding="utf-8")
        found += set_repo_url.links(text)
    assert found and {(owner, repo) for _, owner, repo in found} == {("someone", "my-fork")}
    for name in NOTEBOOKS:  # still valid notebooks, with their outputs, still paired
        before, after = _notebook(name), json.loads((tmp_path / "notebooks" / f"{name}.ipynb").read_text())
        assert [c.get("outputs") for c in after["cells"]] == [c.get("outputs") for c in before["cells"]]
        pair = jupytext.read(tmp_path / "notebooks" / f"{name}.py")
        assert [c.source for c in jupytext.read(tmp_path / "notebooks" / f"{name}.ipynb").cells] == [
            c.source for c in pair.cells
        ]


# -- the seed notebook, every section of it -----------------------------------------------------


def test_seed_section_list_matches_the_seed_notebook():
    if not SEED_FILE.is_file():
        pytest.skip(f"the seed notebook is not beside this checkout ({SEED_FILE})")
    # The seed is a notebook flattened to markdown: its code cells follow "In [None]:" lines and
    # their comments start with "# ", so after the first code cell only "## "+ lines are headings.
    headings, in_code = [], False
    for line in SEED_FILE.read_text(encoding="utf-8").splitlines():
        in_code = in_code or line.startswith("In [")
        if re.match(r"#{2,6} " if in_code else r"#{1,6} ", line):
            headings.append(line.lstrip("#").strip())
    assert sorted(headings) == sorted(SEED_SECTIONS)


@pytest.mark.parametrize("heading", sorted(SEED_SECTIONS))
def test_every_seed_section_has_a_home(heading):
    name = SEED_SECTIONS[heading]
    markdown = "\n".join(_source(c) for c in _notebook(name)["cells"] if c["cell_type"] == "markdown")
    assert f"(seed: {heading})" in markdown, f"seed section {heading!r} is not marked in {name}"


# -- dependencies: pyproject, environment.yml and binder/ in step ------------------------------


def _conda_specs(path: Path) -> tuple[dict[str, str], list]:
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert env["channels"][0] == "conda-forge", f"{path}: conda-forge first"
    assert "defaults" not in env["channels"]
    specs, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep)
        specs[match.group(1).lower()] = match.group(2).replace(" ", "")
    return specs, pip


def _requirements(items: list[str]) -> dict[str, str]:
    reqs = [Requirement(item) for item in items]
    return {r.name.lower(): str(r.specifier) for r in reqs}


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_conda_environment_in_step_with_pyproject(env_file):
    project = _pyproject()["project"]
    runtime = _requirements(project["dependencies"])
    dev = _requirements(project["optional-dependencies"]["dev"])
    specs, pip = _conda_specs(ROOT / env_file)

    for name, spec in runtime.items():
        provided = [c for c in CONDA_NAMES.get(name, {name}) if c in specs]
        assert provided, f"{env_file} lacks {name} (a dependency in pyproject.toml)"
        conda = provided[0]
        assert specs[conda] == spec, f"{env_file}: {conda}{specs[conda]} vs pyproject's {name}{spec}"
    known = {c for name in runtime for c in CONDA_NAMES.get(name, {name})}
    for name, spec in specs.items():
        if name in ("python", "pip"):
            continue
        assert name in known or name in dev, f"{env_file} lists {name}, which pyproject.toml does not"
        if name in dev:
            assert spec == dev[name], f"{env_file}: {name}{spec} vs pyproject's dev extra {name}{dev[name]}"
    python = specs.get("python", "")
    minimum = project["requires-python"].removeprefix(">=")
    assert python in (f">={minimum}",) or re.fullmatch(r"=3\.\d+", python), f"{env_file}: python{python}"
    if python.startswith("=3."):
        assert tuple(map(int, python[1:].split("."))) >= tuple(map(int, minimum.split(".")))
    assert all("://" not in str(p) for p in pip), "no package index or URL in the environment"


def test_binder_installs_cpu_torch_and_the_package():
    specs, pip = _conda_specs(ROOT / "binder" / "environment.yml")
    assert "pytorch-cpu" in specs and "pytorch" not in specs, "Binder has no GPU: conda-forge's pytorch-cpu"
    post_build = ROOT / "binder" / "postBuild"
    assert post_build.stat().st_mode & stat.S_IXUSR, "binder/postBuild must be executable"
    lines = [line.strip() for line in post_build.read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert any(re.fullmatch(r"(python -m )?pip install --no-deps( --no-cache-dir)? \.", c) for c in commands)
    for path in (ROOT / "binder").iterdir():
        assert "://" not in path.read_text(encoding="utf-8"), f"{path.name}: no hard-coded index or URL"


def test_binder_links_open_jupyterlab_on_the_notebooks():
    """The README's notebook section links every notebook."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"https://mybinder\.org/v2/gh/[^/]+/[^/]+/HEAD\?urlpath=lab/tree/notebooks\)", text)
    for name in NOTEBOOKS:
        assert f"notebooks/{name}.ipynb" in text, f"the README's notebook table has no line for {name}"
    assert "make notebooks" in text


def test_repo2docker_accepts_the_binder_config(tmp_path):
    """``jupyter-repo2docker --no-build`` reads binder/ and writes the Dockerfile it would build."""
    exe = shutil.which("jupyter-repo2docker") or shutil.which(
        "jupyter-repo2docker", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.skip("jupyter-repo2docker is not installed (pip install jupyter-repo2docker)")
    shutil.copytree(ROOT / "binder", tmp_path / "binder")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    command = [exe, "--no-build", "--debug", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert 'env update -p ${NB_PYTHON_PREFIX} --file "binder/environment.yml"' in log
    assert "./binder/postBuild" in log
