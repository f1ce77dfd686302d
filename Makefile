# The two commands of the README: `make demo` and `make test`. Both build .venv from the lock first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/cpu.lock
TORCH := $(shell grep -oE '^torch==[^ ;\\]+' $(LOCK))
STAMP := $(VENV)/.installed

.PHONY: demo test lint slurm-test install lock clean-demo sif

install: $(STAMP)

# torch first (the pinned CPU build lies on local disk; an unpinned one would pull a CUDA build),
# then every other package at its locked version with --no-deps so nothing floats, then us.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The stages call `biomed-llama` and `torchrun`: the venv's bin goes first on PATH.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro evaluate
	$(BIN)/biomed-llama show

# Lint and types (pyproject.toml: [tool.ruff], [tool.mypy]; both pinned in the lock): ruff's rules, the
# formatter's check (it changes nothing) and mypy over the package. All three run; any failure fails the target.
LINT_PATHS := biomed_llama
lint: install
	rc=0; \
	$(BIN)/ruff check $(LINT_PATHS) || rc=1; \
	$(BIN)/ruff format --check $(LINT_PATHS) || rc=1; \
	$(BIN)/mypy || rc=1; \
	exit $$rc

# Two test tiers (pyproject.toml: the `integration` marker). `make test`: the fast tier, every test
# but the integration ones (a couple of minutes on 2 cores). `make test-integration`: multi-process
# torchrun, a fresh venv, the stock lm_eval CLI, DVC runs on a copy of the checkout.
.PHONY: test-integration stage-deps
test: install
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m integration --ignore=tests/slurm

# After moving or adding modules: rewrite each dvc.yaml stage's `biomed_llama/…` deps from its
# command's import closure (tests/test_stage_deps.py fails until this is run).
stage-deps: install
	$(BIN)/python scripts/stage_deps.py --write

# The integration tier: a real two-node Slurm cluster on this machine (tests/slurm/localcluster.py)
# runs the training stages as batch jobs, from the venv and (where podman is installed) inside the
# image, which is built first from this checkout (`make image`; cached layers, about 10 s when only
# the package changed). Needs root; installs the Slurm packages when missing.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
slurm-test: install
	test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged -a -x /usr/bin/sbatch || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null; }
	if command -v podman >/dev/null; then $(MAKE) image IMAGE=$(IMAGE); fi
	BIOMED_REQUIRE_SLURM=1 BIOMED_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -s -m integration tests/slurm

clean-demo:
	rm -rf data/extracted data/tokens data/eval data/instruct models checkpoints metrics plots reports dvc.lock

# Both locks from pyproject.toml: requirements/cpu.lock (this setup, CI) and the hash-checked
# requirements/cuda.lock (the image). The solver (uv) lives in its own tool venv, never in .venv.
UV_VERSION := 0.13.9
LOCK_VENV ?= $(HOME)/.cache/biomed-llama/lock-venv
lock:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"; }
	$(PYTHON) scripts/lock.py --uv $(LOCK_VENV)/bin/uv

# The Apptainer image (needs apptainer; singularity/biomed.def says what it holds). The package
# goes in as a wheel built here; the labels record the lock hash, the version and the commit.
SIF ?= biomed.sif
sif: install
	command -v apptainer >/dev/null || { echo "make sif: apptainer not found (see README: Full reproduction on a cluster)"; exit 1; }
	rm -rf dist && $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	apptainer build --force \
	  --build-arg LOCK_SHA256=$$(sha256sum requirements/cuda.lock | cut -d' ' -f1) \
	  --build-arg VERSION=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("biomed-llama"))') \
	  --build-arg GIT_COMMIT=$$(git rev-parse HEAD) \
	  $(SIF) singularity/biomed.def

# ---- The image, built and run here with podman (issue 11; README: The image) ----
# `make image`: the CPU twin (containers/build.sh: bootstrapped Debian base, cpu.lock hash-checked).
# `make image-test`: env check inside it, then the whole demo with every stage inside it
# (launch.container: podman), compared with this checkout's host run (`make demo` first).
.PHONY: image image-test
IMAGE ?= localhost/biomed-llama:cpu
image: install
	command -v podman >/dev/null || { echo "make image: podman not found (apt-get install -y podman runc debootstrap)"; exit 1; }
	rm -rf dist && $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	IMAGE=$(IMAGE) containers/build.sh

image-test: image
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/image_test.py --image $(IMAGE)
