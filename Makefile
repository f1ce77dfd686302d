# The two commands of the README: `make demo` and `make test`. Both build .venv from the lock first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/cpu.lock
TORCH := $(shell grep -E '^torch==' $(LOCK))
STAMP := $(VENV)/.installed

.PHONY: demo test install lock clean-demo sif

install: $(STAMP)

# torch first (the pinned CPU build lies on local disk; an unpinned one would pull a CUDA build),
# then every other package at its locked version with --no-deps so nothing floats, then us.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: install
	$(BIN)/dvc repro evaluate
	$(BIN)/biomed-llama show

test: install
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf data/extracted data/tokens data/eval data/instruct models checkpoints metrics plots reports dvc.lock
