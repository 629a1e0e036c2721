# Two entry points, each doing its own set-up on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST_DEBIAN := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
FMNIST_LOCAL := data/raw/FashionMNIST/raw/train-images-idx3-ubyte
export PATH := $(CURDIR)/$(BIN):$(PATH)
# torch and torchvision are pinned as a pair that these machines keep as local wheels (/opt/pypi-more), so the
# several GB of CUDA packages are not downloaded (and cached) again: a download of the newest build once filled
# CI's disk. The CUDA build is the one that works: PyPI's torchvision needs it, even to run on a CPU.
# Elsewhere the same pin comes from PyPI; `make setup TORCH=` lets pip choose any torch pyproject.toml admits.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: repro test setup data-sources plots check-plots benchmark preset clean

repro: setup data-sources
	$(BIN)/dvc repro

test: setup data-sources
	$(BIN)/python -m pytest -q

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
	    echo "Fashion-MNIST not found; install dataset-fashion-mnist (as root) or see README 'Data'"; \
	  fi; \
	fi

# `dvc plots show` with Vega inline, so the page renders without network; then check it in headless Chromium.
plots: setup
	$(BIN)/python -m trustdd.plots show

check-plots: plots
	$(BIN)/python -m trustdd.plots check dvc_plots/index.html

benchmark: setup data-sources
	$(BIN)/python benchmarks/repro_time.py

# A paper-scale preset as a named DVC experiment, e.g. `make preset P=cifar10-ipc10` (list: presets/).
preset: setup
	$(BIN)/python -m trustdd.presets run $(P)

clean:
	rm -rf $(VENV) data dvc_plots
