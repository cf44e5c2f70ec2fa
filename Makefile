# The two commands a new user needs (see README.md):
#   make demo   -- set up the environment if missing, then run the whole main job
#   make test   -- set up the environment if missing, then lint, type-check and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
WS     ?= data/workspace
POLICY ?= alloffice

.PHONY: demo test setup lint typecheck pytest notebooks clean

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

pytest: setup
	$(BIN)/python -m pytest --nbval-lax notebooks tests src/segments --doctest-modules

test: lint typecheck pytest

clean:
	rm -rf $(WS) .pytest_cache .mypy_cache .ruff_cache
