# Two commands for a new machine:  `make demo` runs the main job, `make test` runs the checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup postgres browser demo test test-sqlite test-postgres lint bench clean

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

# PostgreSQL server from Debian's packages, for the suites that run on it too.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Headless Chromium from Debian's packages, for the dashboard's browser test (Playwright
# drives it by path; its own browser download is not used).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: lint test-sqlite test-postgres

test-sqlite: setup browser
	$(BIN)/pytest

# The database-backed suites again, every service and test database on PostgreSQL.
test-postgres: setup postgres browser
	CHOREO_TEST_DB=postgres $(BIN)/pytest -m "not no_database" tests/integration tests/e2e

bench: setup
	$(BIN)/python -m bench

clean:
	-$(BIN)/choreo down 2>/dev/null
	-$(BIN)/choreo broker down 2>/dev/null
	rm -rf var .cache
