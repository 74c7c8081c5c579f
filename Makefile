# One command each: `make install`, `make test`, `make demo`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-locked test lint demo bench lock

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	npm ci --no-audit --no-fund

# The same environment from the lock file (requirements/dev.txt: every version and hash pinned).
install-locked:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	npm ci --no-audit --no-fund

# Two test processes (pytest-xdist), each file's tests in one of them (its module fixtures
# built once): the suite mostly waits on the servers, workers and browsers it starts.
test:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/mypy tests/service/svc_testlib.py
	npx --no-install tsc --noEmit -p tsconfig.json

demo:
	$(BIN)/clipsearch demo

# The lock files (requirements/*.txt, hashes included) the container images install from:
# `make lock` after changing dependencies (needs uv: `pipx install uv` or `pip install uv`);
# `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest release. Where
# download.pytorch.org is not reachable, give the CPU torch wheel another way:
# `make lock LOCK_TORCH_CPU="--find-links /opt/wheels"`.
UV ?= uv
LOCK_FLAGS ?=
LOCK_TORCH_CPU ?= --extra-index-url https://download.pytorch.org/whl/cpu
LOCK := $(UV) pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--generate-hashes --index-url https://pypi.org/simple --index-strategy unsafe-best-match \
	--custom-compile-command "make lock" --quiet $(LOCK_FLAGS)

lock:
	$(LOCK) --extra server -c requirements/torch-cpu.txt $(LOCK_TORCH_CPU) -o requirements/server-cpu.txt
	$(LOCK) requirements/cuda.in --extra server --extra gpu -c requirements/torch-cuda.txt \
		--no-emit-package faiss-cpu -o requirements/server-cuda.txt
	$(LOCK) --extra dev -c requirements/torch-cpu.txt $(LOCK_TORCH_CPU) -o requirements/dev.txt
