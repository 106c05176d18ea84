# ddrepro — every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DDREPRO_PROGRESS ?= 0
IPC ?= 50
T ?= sas/embedded/table6
# long runs stream their cells' output to the terminal, with plain-text progress lines from ddrepro.core.progress
# (a line per ~10 % of a loop or 30 s: pool batches, Minimax steps, student epochs) instead of a still cell counter
LOG_PAPERMILL := DDREPRO_PROGRESS=log $(BIN)/papermill --log-output --no-progress-bar

.PHONY: help install data demo lab docs docs-deps test test-all check-clean nbtest pytest pytest-slow bench zoo table figures clean-runs

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python data  ## venv + package with dev extras + Fashion-MNIST + the Jupyter kernel "ddrepro" (idempotent)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name ddrepro --display-name "Python (ddrepro)" >/dev/null

data:  ## Fashion-MNIST from Debian (dataset-fashion-mnist) when it is missing
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install -y dataset-fashion-mnist' or pass -p data_root"; fi

demo: install  ## the embedded default end to end: SAS on Fashion-MNIST (IPC=$(IPC)) -> runs/
	mkdir -p runs
	$(LOG_PAPERMILL) nbs/run_sas.ipynb runs/run_sas_ipc$(IPC).ipynb -p ipc $(IPC)

LAB_PORT ?= 8888
lab: install  ## JupyterLab on 127.0.0.1:$(LAB_PORT) at the repository root, kernel "Python (ddrepro)"
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser --ServerApp.root_dir="$(CURDIR)" \
		--MappingKernelManager.default_kernel_name=ddrepro $$([ "$$(id -u)" = 0 ] && echo --allow-root)

docs-deps:  ## Debian packages for the docs site and browser tests (libjs-mathjax, chromium, chromium-driver)
	@missing=$$(for p in libjs-mathjax chromium chromium-driver; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then echo "docs deps: present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	else echo "missing Debian packages: run 'sudo apt-get install -y $$missing'"; fi

docs: install docs-deps  ## documentation site -> _docs/ (sphinx -W, stored notebook outputs, local MathJax)
	$(BIN)/python docs/build.py --out _docs

check-clean:  ## notebooks clean and the export in sync (both must be no-ops)
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	@git diff --quiet -- nbs ddrepro || { echo "nbdev_clean/nbdev_export changed files:"; git --no-pager diff --stat -- nbs ddrepro; exit 1; }

nbtest:  ## run every API notebook (flags gpu/slow/hub skipped); run notebooks are tested by pytest
	DDREPRO_EVAL_CACHE=off $(BIN)/nbdev_test --n_workers 2 --skip_file_re '^(run_|make_figures|[_.])'

pytest:  ## the test suite but the `slow` tests (papermill smoke runs, browser tests, benchmark smoke runs)
	$(BIN)/pytest -q -ra --durations=15 tests

pytest-slow:  ## only the `slow` tests (each over ~30 s on 2 cores; about 20 min in all)
	$(BIN)/pytest -q -ra --runslow -m slow --durations=25 tests

test: install docs-deps check-clean nbtest pytest  ## install, then the checks and every test but the slow ones (under 20 min on 2 cores)

test-all: test pytest-slow  ## `make test`, then the slow tests (what CI runs when its time allows)

bench: install  ## speed benchmarks (ratios printed side by side)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

zoo: install  ## retrain the embedded model zoo (both generations) from scratch on CPU (about 1.5 h on 2 cores) and rewrite its manifest
	mkdir -p runs/zoo
	$(LOG_PAPERMILL) nbs/04_zoo.ipynb runs/zoo/04_zoo.ipynb -p retrain True

table: install  ## run every cell of a paper table and redraw it: make table T=sas/table6
	$(BIN)/ddrepro-table $(T)

figures: install  ## redraw every figure/table from run records, then rewrite the gallery figures/README.md
	$(BIN)/papermill nbs/make_figures.ipynb runs/make_figures.ipynb

clean-runs:  ## delete runs/ (executed notebooks, pools, records)
	rm -rf runs
