#!/usr/bin/env bash
# The generation rows at the real test-set sizes on one GPU (~8 min on an H200): batch 4 as released beside the
# labelled fast setting (eval.generation_speed), outputs compared, and the whole 54-cell table's evaluation time.
# Usage: bench/bench_generate.sh [--tiny] [--fast-fraction F] [--faithful-limit N] [--fast-batch B] [--seed-suite-s S];
# results under $OUT. Dependencies may come from PYTHONPATH (the wheels of requirements/bench-eval-wheels.txt unpacked
# into /tmp/site); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# No expandable segments here: the compiled decode step replays CUDA graphs.
export HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" bench/bench_generate.py "$@"
