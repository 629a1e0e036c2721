# Two entry points, each doing its own set-up on a fresh machine: `make repro` and `make test`;
# `make repro-check` is CI's proof that the committed results are what this commit's code gives (exact on the
# platform that made them, within their noise on another).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST_DEBIAN := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
FMNIST_LOCAL := data/raw/FashionMNIST/raw/train-images-idx3-ubyte
export PATH := $(CURDIR)/$(BIN):$(PATH)
# torch and torchvision as a pinned pair (why: docs/development.md); `make setup TORCH=` lets pip choose.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: repro repro-check test setup data-sources plots check-plots benchmark preset grid results clean

repro: setup data-sources
	$(BIN)/dvc repro

# Every stage rerun from scratch, then compared with the commit (trustdd/experiments/repro.py): byte for byte
# (dvc.lock and metrics/) where this machine's platform is the one metrics/platform.json records; elsewhere
# every metric within a tolerance derived from the nets' spread. It prints which check it made and each difference.
repro-check: setup data-sources
	$(BIN)/dvc repro --force
	$(BIN)/python -m trustdd.experiments.repro check

# One pytest-xdist worker per core, each test on one thread (OMP_NUM_THREADS=1, which the stage processes a test
# starts inherit): the pipeline tests mostly wait on one-thread imports (torch alone takes 3 s in every stage
# process), so two of them at once fill both cores; one thread each keeps the workers from oversubscribing them.
test: setup data-sources
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist worksteal

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(strip $(TORCH)),$(BIN)/python -m pip install -q --no-cache-dir $(TORCH))
	$(BIN)/python -m pip install -q --no-cache-dir -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when it is missing and we may install it (root); otherwise the
# prepare stage explains where it looked and how to provide the files.
data-sources:
	@if [ ! -e $(FMNIST_DEBIAN) ] && [ ! -e $(FMNIST_LOCAL) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package dataset-fashion-mnist"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST not found; install dataset-fashion-mnist (as root) or see docs/data.md"; \
	  fi; \
	fi

# `dvc plots show` with Vega inline, so the page renders without network; then check it in headless Chromium.
plots: setup
	$(BIN)/python -m trustdd.experiments.plots show

check-plots: plots
	$(BIN)/python -m trustdd.experiments.plots check dvc_plots/index.html

benchmark: setup data-sources
	$(BIN)/python benchmarks/repro_time.py

# A paper-scale preset as a named DVC experiment, e.g. `make preset P=cifar10-ipc10` (list: presets/);
# `make preset P=cifar10-ipc10 SMOKE=1` first: every stage at the preset's shapes and a tiny budget, timed,
# with the full run's cost extrapolated, as a temporary experiment (docs/presets.md, "A smoke run first").
SMOKE ?=
preset: setup
	$(BIN)/python -m trustdd.experiments.presets run $(P) $(if $(strip $(SMOKE)),--smoke)

# A grid of experiments (grids/NAME.yaml) through DVC's queue, e.g. `make grid G=default J=2`; then its tables.
G ?= default
J ?= 1
grid: setup data-sources
	$(BIN)/python -m trustdd.experiments.grid $(G) --jobs $(J)
	$(BIN)/python -m trustdd.experiments.results --grid $(G) --out results/$(G)

# The README's results table, from the committed metrics/ and params.yaml (docs/results.md says how the
# grid tables under docs/results/ are made).
results: setup
	$(BIN)/python -m trustdd.experiments.results --workspace --update README.md

clean:
	rm -rf $(VENV) data dvc_plots
