# The two commands a new user needs (see README.md):
#   make demo   -- install what the main job needs if missing, then run the whole main job
#   make test   -- set up the environment if missing, then lint, type-check and run every test
# `make help` lists the rest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
WS     ?= data/workspace/demo
POLICY ?= alloffice

.PHONY: help demo test test-fast setup browser java lint format typecheck pytest clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

# Installs go through uv (from PyPI, into the venv): the same resolved set as pip, measured about
# 2.6x faster on a first install (87 s -> 33 s for the demo's set), which keeps `make demo` on a
# fresh machine within 3 minutes.
$(BIN)/uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

# The dev install has a stamp of its own: the demo's install also creates $(BIN)/segments, so
# keyed on that file, `make demo` then `make test` would skip the dev tools (no ruff, pytest).
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.dev-installed  ## create .venv and install the package with its dev tools

# The main job needs the package and what executes the notebooks (and `jupyter lab`, the next
# step it prints): one install, without the Spark engine (pyspark: a ~450 MB source download
# that pip builds into a wheel on a first install) and without the dev tools. `make setup`
# (and `make test`) install those too; the demo's install is then already satisfied.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[notebooks]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: $(VENV)/.demo-installed  ## run the main job in $(WS) under $(POLICY)'s policy
	$(BIN)/segments demo --workspace $(WS) --policy $(POLICY)

lint: setup  ## ruff: lint and format check
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/ruff format --check src tests benchmarks

format: setup  ## ruff: fix imports and format in place
	$(BIN)/ruff check --fix --select I src tests benchmarks notebooks
	$(BIN)/ruff format src tests benchmarks

typecheck: setup  ## mypy on src/segments and benchmarks
	$(BIN)/mypy

# The report test renders in a real headless Chromium (Debian's package); install it where
# we can (root with apt), otherwise say so — CI runs as root and must run that test.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing Debian's chromium for the browser test"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	        || echo "warning: could not install chromium; the browser test will be skipped"; \
	    else echo "note: install chromium to run the browser test"; fi; }

# The Spark engine (--engine spark) runs PySpark, which needs a Java 17+ runtime: Debian's
# default-jre-headless (or openjdk-17) where we can (root with apt), otherwise say so. CI runs
# as root, and a Spark test skipped for want of Java fails there (tests/conftest.py).
java:
	@v=$$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'); \
	if [ -n "$$v" ] && [ "$$v" -ge 17 ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's Java runtime for the Spark engine"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
	  apt-get install -y -qq default-jre-headless >/dev/null 2>&1 \
	    || apt-get install -y -qq openjdk-17-jre-headless >/dev/null 2>&1 \
	    || echo "warning: could not install a Java runtime; the Spark tests cannot run"; \
	else echo "note: install a Java 17+ runtime (Debian: default-jre-headless) for --engine spark"; fi

# Two pytest workers (pytest-xdist): run one at a time, the suite keeps one of CI's two cores
# busy (CPU time about equal to wall time). `--dist loadfile` hands each file to one worker whole:
# a notebook's cells share one kernel, a module's fixtures are built once, and the Spark tests
# (one file) start one JVM. `make test PYTEST_WORKERS=0` runs them in one process.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile

pytest: setup browser java  ## every test, notebook and doctest (plain `pytest` runs the same, serially)
	$(BIN)/python -m pytest $(XDIST)

test: lint typecheck pytest  ## what CI runs: lint, type-check, every test

test-fast: setup  ## the inner loop: no slow or browser tests, no notebooks
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not browser" tests src/segments

clean:  ## remove the demo workspace and tool caches
	rm -rf $(WS) .pytest_cache .mypy_cache .ruff_cache
