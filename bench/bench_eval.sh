#!/usr/bin/env bash
# The eval benchmark on the GPU machine: seed suite at real sizes, random-init LLaMA-7B shape, bf16.
# Usage: bench/bench_eval.sh [--tiny] [--batch-size N|auto] [--few-limit N]; results under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" bench/bench_eval.py "$@"
