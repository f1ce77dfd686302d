#!/usr/bin/env bash
# The generation rows at the real test-set sizes on one GPU (~8 min on an H200): batch 4 as released beside the
# labelled fast setting (eval.generation_speed), outputs compared, and the whole 54-cell table's evaluation time.
# Usage: bench/bench_generate.sh [--tiny] [--fast-fraction F] [--faithful-limit N] [--fast-batch B] [--cells C,..]
#        [--merge earlier.json] [--seed-suite-s S] [--seed-suite-json P]... [--seed-suite-s-model NAME=S]...;
#        results under $OUT (default .bench/generate).
# Issue 23 item 6, call B (one H200), right after call A timed the 2.7B base rows' seed suites into .bench/eval on the
# same warm machine (bench/bench_eval.sh's header; else their <arch>/bench_eval.json copied to bench/seed-2p7b/ here):
#        bash bench/bench_generate.sh --fast-batch 128 --seed-suite-json .bench/eval
# GPT-Neo and BioMedLM are then charged their own packed seed suites, the LLaMA-7B rows bench/RESULTS.md's 7B figure;
# the projection's table names each row's source (a 2.7B row without one: "7B fallback").
# On the GPU machine the wheels of requirements/bench-eval-wheels.txt travel in .whl/ (bench/lib.sh unpacks them into
# /tmp/site); --tiny (the CPU smoke) uses this checkout's .venv, or PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
for a in "$@"; do [ "$a" = --tiny ] && TINY=1; done
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export TINY PYTHON
# shellcheck source=bench/lib.sh
source bench/lib.sh
# The compiled decode step replays CUDA graphs: the default allocator, not lib.sh's expandable segments.
unset PYTORCH_CUDA_ALLOC_CONF
export HF_DATASETS_OFFLINE=1
exec "$PY" -m bench.bench_generate "$@"
