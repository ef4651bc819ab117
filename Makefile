# The single entry point. `make test` is what CI runs (.ci/run) and what the README tells you to run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SOURCES := fallbackbus tasks demo

.PHONY: install services lint typecheck test test-fast demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

services:
	./scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict $(SOURCES)

test: install services lint typecheck
	$(BIN)/pytest

demo: install services
	$(BIN)/python -m demo $(DEMO_ARGS)

bench: install services
	$(BIN)/python -m bench $(BENCH_ARGS)

test-fast: install
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
