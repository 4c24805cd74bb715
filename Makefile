# The two commands: `make demo` (install, train MONet on the embedded data, evaluate with the latent
# probes, figures, report) and
# `make test` (install with dev extras, run the test suite). Both create/reuse .venv with pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-slow lint install clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/scenedecomp train --config monet-demo --overwrite $(ARGS)
	$(BIN)/scenedecomp evaluate runs/monet-demo --disentanglement --quiet
	$(BIN)/scenedecomp report runs/monet-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
