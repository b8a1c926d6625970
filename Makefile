# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up its own .venv with pip and installs what it needs, Debian packages included.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
DEMO_PATIENTS ?= 5000

.PHONY: demo test lint debs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[omics]'
	@touch $@

# torch: the CPU build that lies on this disk, for the GPU kernels' device-agnostic path;
# an unpinned torch would pull a CUDA build of several GB.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,spark,omics,gpu]'
	@touch $@ $(VENV)/.installed-base

# Debian packages the tests use (Java for Spark, plink2, borg...): scripts/ says which.
debs:
	@bash scripts/install_debian_packages.sh

demo: $(VENV)/.installed-base
	$(BIN)/medlake demo demo --patients $(DEMO_PATIENTS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

test: $(VENV)/.installed-test debs lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
