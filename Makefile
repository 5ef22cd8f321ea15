# Everything runs from .venv, created on first use. torch is pinned by constraints.txt
# (a CPU build on this kind of machine); pyproject keeps it loose so Colab's torch is reused.
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: install demo test unit nbval sync-check lint lab notebooks app bench repo-url clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make demo: run the experiment headless; PNGs and metrics JSON land in ./out
demo: install
	$(BIN)/python -m shape_losses --out out

## make test: everything CI runs - lint, unit tests, notebook pair sync, strict nbval
test: install lint unit sync-check nbval

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/python -m pytest tests

sync-check: install
	$(BIN)/jupytext --sync $(NOTEBOOKS)
	git diff --exit-code -- notebooks/

nbval: install
	$(BIN)/python -c "import matplotlib.pyplot"  # builds matplotlib's font cache outside the checked cells
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks/

## make lab: JupyterLab on the notebooks
lab: install
	$(BIN)/jupyter lab notebooks/

## make app: the live explorer as a web app (Voila, code hidden) on http://127.0.0.1:8866 (PORT=... to change)
PORT ?= 8866
app: install
	$(BIN)/voila --no-browser --Voila.ip=127.0.0.1 --port=$(PORT) app/explorer.ipynb

## make notebooks: re-execute every notebook in place (refreshes nbval's reference) and re-sync pairs
notebooks: install
	$(BIN)/jupytext --sync $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False $(NOTEBOOKS)
	$(BIN)/jupytext --sync $(NOTEBOOKS)

## make repo-url: after changing [project.urls] Repository in pyproject.toml (a fork), rewrite every badge and install cell
repo-url: install
	$(BIN)/python scripts/set_repo_url.py

## make bench: the engine benchmark (ratios against the seed's loop) and the explorer's latency
bench: install
	$(BIN)/python benchmarks/bench_optimize.py --threads 1 --markdown
	$(BIN)/python benchmarks/explorer_latency.py

clean:
	rm -rf $(VENV) out .pytest_cache
