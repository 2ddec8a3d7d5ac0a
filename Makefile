# Two commands for a new machine:  `make demo` runs the main job, `make test` runs the checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/python -c 'from infra.broker import ensure_jars; print("kafka jars:", ensure_jars())'

demo: setup
	$(BIN)/choreo demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy events infra schemas services
	$(BIN)/lint-imports
	$(BIN)/choreo schemas check

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench

clean:
	-$(BIN)/choreo down 2>/dev/null
	-$(BIN)/choreo broker down 2>/dev/null
	rm -rf var .cache
