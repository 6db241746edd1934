# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make train   install, then run the main job on the embedded default (a SYNTHETIC cohort)
#   make test    install, then lint, type-check and run the tests
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: install train test lint clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# Bytecode compiled once at install: with PYTHONDONTWRITEBYTECODE set (as on this project's
# machines) every command would otherwise recompile MLflow and friends (2-3x its start).
$(BIN)/inflamrx: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(BIN)/inflamrx

data/synthetic.csv: | install
	$(BIN)/inflamrx simulate --n 2000 --seed 0 --out $@

train: install data/synthetic.csv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/inflamrx train --config configs/default.yaml

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
