# One command each: `make install`, `make test`, `make demo`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	npm ci --no-audit --no-fund

test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/mypy tests/service/svc_testlib.py
	npx --no-install tsc --noEmit -p tsconfig.json

demo:
	$(BIN)/clipsearch demo
