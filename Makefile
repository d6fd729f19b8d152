# Two entry points on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest bench demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ha sim bench

typecheck: venv
	$(BIN)/mypy ha sim bench cli actors

pytest: venv
	$(BIN)/pytest -q

# The whole suite: lint, types, tests. CI runs exactly this (.ci/run).
test: lint typecheck pytest

bench: venv
	$(BIN)/python -m bench sim

demo: venv
	$(BIN)/python -m sim.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
