# The two commands a new user needs (see README.md):
#   make demo   -- set up the environment if missing, then run the whole main job
#   make test   -- set up the environment if missing, then lint, type-check and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
WS     ?= data/workspace/demo
POLICY ?= alloffice

.PHONY: demo test setup browser lint typecheck pytest clean

$(BIN)/segments: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(BIN)/segments

setup: $(BIN)/segments

demo: setup
	$(BIN)/segments demo --workspace $(WS) --policy $(POLICY)

lint: setup
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
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

pytest: setup browser
	$(BIN)/python -m pytest --nbval-lax notebooks tests src/segments --doctest-modules

test: lint typecheck pytest

clean:
	rm -rf $(WS) .pytest_cache .mypy_cache .ruff_cache
