# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up its own .venv with pip and installs what it needs, Debian packages included.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
DEMO_PATIENTS ?= 5000

.PHONY: demo test lint java clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[omics]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev,spark,omics]'
	@touch $@ $(VENV)/.installed-base

# Spark (the second engine the tests run on) needs a Java runtime, 17 or newer.
java:
	@if ! command -v java >/dev/null 2>&1; then \
		echo "installing a Java runtime for Spark (Debian openjdk-17-jre-headless)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	fi

demo: $(VENV)/.installed-base
	$(BIN)/medlake demo demo --patients $(DEMO_PATIENTS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

test: $(VENV)/.installed-test java lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
