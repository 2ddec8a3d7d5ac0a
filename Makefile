# Two commands for a new machine:  `make demo` runs the main job, `make test` runs the checks.
# Each installs what it is missing: Debian's packages (a JDK and Maven, Python's venv
# module; PostgreSQL and Chromium for the tests), then .venv from the lock files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Python packages come only from the lock files, every file checked against its hash:
# requirements.lock (runtime, what the Dockerfile installs) and requirements-dev.lock
# (runtime + dev, the same versions; what setup installs). uv writes them because it makes
# one lock valid on every Python >= 3.11 and platform, in seconds; plain pip installs them.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# `make lock` keeps the locked versions that pyproject.toml still allows;
# `make lock LOCK_FLAGS=--upgrade` moves everything to the newest it allows.
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' $(LOCK_FLAGS)
# Beside the project's dependencies, the locks hold what installs and builds it: pip and
# pyproject.toml's build requirements.
INSTALL_TOOLS = $(PYTHON) -c 'import tomllib; \
	print("pip", *tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

.PHONY: setup lock jdk postgres browser gateway demo test test-sqlite test-postgres lint bench clean

$(STAMP): $(DEV_LOCK) pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  $(call apt_install,Python's venv module,python3-venv) || exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; \
	  echo "make: pyproject.toml wants packages $(DEV_LOCK) lacks: run make lock" >&2; exit 1; }
	touch $(STAMP)

setup: jdk $(STAMP)
	$(BIN)/python -c 'from infra.broker import ensure_jars; print("kafka jars:", ensure_jars())'

# Regenerates both lock files from pyproject.toml; the dev lock is held to the runtime
# lock's versions, so the image runs what the tests ran.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK); }
	$(INSTALL_TOOLS) | $(UV_COMPILE) pyproject.toml - -o $(LOCK)
	$(INSTALL_TOOLS) | $(UV_COMPILE) --extra dev -c $(LOCK) pyproject.toml - -o $(DEV_LOCK)

demo: setup
	$(BIN)/choreo demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy events infra schemas services
	$(BIN)/lint-imports
	$(BIN)/choreo schemas check

# Installs Debian packages: apt-get as root, through sudo otherwise, else a one-line
# error. $(1): what is missing; $(2): the packages.
define apt_install
if ! command -v apt-get >/dev/null; then \
  echo "make: $(1) missing and no apt-get here: install $(2) or the like" >&2; exit 1; \
elif [ "$$(id -u)" = 0 ]; then as_root=; \
elif command -v sudo >/dev/null; then as_root=sudo; \
else echo "make: $(1) missing: run as root, or apt-get install $(2)" >&2; exit 1; fi; \
echo "installing $(1) from Debian's packages"; \
$$as_root apt-get update -qq && \
$$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null
endef

# A JDK and Maven from Debian's packages, for the local Kafka broker (mvn fetches its jars).
# default-jdk-headless is the release's own JDK: 17 on bookworm, 21 on trixie.
jdk:
	@if ! { command -v java && command -v mvn; } >/dev/null; then \
	  $(call apt_install,a JDK and Maven,default-jdk-headless maven) || exit 1; \
	  { command -v java && command -v mvn; } >/dev/null || { \
	    echo "make: java or mvn not on PATH after installing them" >&2; exit 1; }; \
	fi

# PostgreSQL server from Debian's packages, for the suites that run on it too.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(call apt_install,PostgreSQL,postgresql) || exit 1; }

# Headless Chromium from Debian's packages, for the dashboard's browser test (Playwright
# drives it by path; its own browser download is not used).
browser:
	@test -x /usr/bin/chromium || { \
	  $(call apt_install,Chromium,chromium) || exit 1; }

# nginx from Debian's packages, for the gateway in front of the service instances (choreo up
# starts it as a plain unprivileged process; tests/integration/test_gateway.py runs it).
gateway:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  $(call apt_install,nginx,nginx) || exit 1; }

test: lint test-sqlite test-postgres

# PostgreSQL here too: the chaos test (tests/e2e/test_cluster_chaos.py) runs its instances on
# it in either pass, since a service's instances share its database.
test-sqlite: setup postgres browser gateway
	$(BIN)/pytest

# The database-backed suites again, every service and test database on PostgreSQL.
test-postgres: setup postgres browser gateway
	CHOREO_TEST_DB=postgres $(BIN)/pytest -m "not no_database" tests/integration tests/e2e

bench: setup
	$(BIN)/python -m bench

clean:
	-$(BIN)/choreo down 2>/dev/null
	-$(BIN)/choreo broker down 2>/dev/null
	rm -rf var .cache
