# vaultflow: two commands set everything up on a fresh Debian machine with Python 3.11+.
#   make demo   back up, drop, restore and compare demo PostgreSQL, Redis, MongoDB and ClickHouse databases
#   make test   install everything, run make lint (ruff, mypy, import contracts), then every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: demo test test-fast lint lint-checks collect bench bench-fleet lock system-deps install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# The venv follows requirements.lock exactly; re-synced whenever the lock file changes.
# Bytecode is compiled at install time (--compile-bytecode, and compileall for the project's
# own packages on every install): where PYTHONDONTWRITEBYTECODE is set, as on our machines,
# Python never writes .pyc files itself, and every process - each flow run, CLI call and test
# server - would compile Prefect and its dependencies from source again (1.3 of the 2.7 CPU
# seconds `import prefect` costs).
$(VENV)/.synced: requirements.lock pyproject.toml setup.py | $(BIN)/python
	$(BIN)/uv pip sync --python $(BIN)/python --quiet --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $@

install: system-deps $(VENV)/.synced
	@$(BIN)/python -m compileall -q -j 0 vaultflow flows tasks blocks deployments bench tests >/dev/null

# Debian packages the tests and benchmark use: system PostgreSQL (second server version, and
# stock tools to compare with) and the zstd command line tool.
system-deps:
	@bash scripts/system-deps.sh

demo: install
	$(BIN)/vaultflow demo

# ruff (lint and format check), mypy on the core, import-linter contracts (pyproject.toml)
lint: install lint-checks

lint-checks:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vaultflow
	bash scripts/lint-imports.sh

# Four workers (pytest-xdist, one module per worker at a time): most tests wait on servers and
# child processes, so two cores run four at once. Tests marked serial look at machine-wide
# state (temporary directories in /tmp and TMPDIR) and run alone afterwards. Modules marked long start
# first (tests/conftest.py orders them, pyproject's addopts keeps xdist from reordering).
# Before the tests, lint runs beside one collection of every test that may write bytecode
# (lint is single-threaded; the second core is free): pytest caches each test module's
# assertion-rewritten bytecode in __pycache__, which it reads even where
# PYTHONDONTWRITEBYTECODE stops it from writing, so the four workers and the serial run each
# collect in about 5 CPU seconds instead of 11.
PYTEST := $(BIN)/pytest -q -p no:cacheprovider
test: install
	@$(MAKE) --no-print-directory -j 2 lint-checks collect
	$(PYTEST) --durations=25 -n 4 --dist loadfile -m "not serial"
	$(PYTEST) --durations=5 -m serial

collect:
	@out=$$(env -u PYTHONDONTWRITEBYTECODE $(PYTEST) --collect-only 2>&1) || { echo "$$out" | tail -40; exit 1; }

test-fast: install
	$(BIN)/pytest -q tests/unit

bench: install
	$(BIN)/python -m bench.run

# Not part of `make bench` or `make test`: 50 small targets on one worker (issue 12, fleets).
bench-fleet: install
	$(BIN)/python -m bench.fleet

lock: | $(BIN)/python
	$(BIN)/uv pip compile pyproject.toml --extra test --extra bench --extra chart --extra embedded --extra chdb --extra dev \
		--python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
