#!/usr/bin/env bash
# The eval benchmark on the GPU machine (2 GPUs, one call, ~6 min): the full seed suite through the packed
# path on GPU 0, the stock lm-eval path on a quarter of it on GPU 1, item parity, one table.
# Usage: bench/bench_eval.sh [--tiny] [--stock-fraction F] [--deadline-s S]; results under $OUT.
# Dependencies may come from PYTHONPATH (e.g. wheels unpacked into /tmp/site); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
exec "$PYTHON" -m bench.bench_eval "$@"
