#!/usr/bin/env bash
# The seed-suite benchmark on the GPU machine, one call: per arch the whole suite at the real sizes through the packed
# path, lm-eval's stock path on a fraction of it, item parity, one table (bench/bench_eval.py's docstring).
# Usage: bench/bench_eval.sh [--tiny] [--arch A[,B]] [--stock-fraction F] [--budget-s S]; results under $OUT
# (default .bench/eval); on the GPU machine the wheels of requirements/bench-eval-wheels.txt travel in .whl/ (bench/lib.sh
# unpacks them into /tmp/site); --tiny (the CPU smoke) uses this checkout's .venv, or PYTHON.
# The wheels, here before the device calls (the device call's carry: [".whl"]), as bench/device_wheels.sh fetches:
#   rm -rf .whl && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl -r requirements/bench-eval-wheels.txt
#   LLaMA-7B (2 GPUs, ~6 min: packed on GPU 0 beside stock on GPU 1):   bash bench/bench_eval.sh
#   The two 2.7B base rows (issue 23 item 6, call A; budget 510 s, so one device call of at most 9.5 min):
#       bash bench/bench_eval.sh --arch gpt-neo-2.7b,biomedlm-2.7b --stock-fraction 0.1
#     On 2 GPUs each arch runs on its own GPU, its packed suite then the stock path on its first 10%; on one GPU both
#     packed suites come first (~4-5 min each is the estimate, not measured), the stock fractions in what is left. A
#     packed suite the budget cut shows `deadline` in its table and is refused by bench_generate.py: rerun that arch
#     alone (--arch biomedlm-2.7b). Back come $OUT/<arch>/bench_eval.json (arch, parameters, per-cell walls, totals),
#     workers.tgz (each worker's per-item JSON and log), bench_eval.txt (stdout), environment.txt.
#   Call B, on one H200, right after A on the same warm machine (it is handed back after 30 s idle, too soon to copy
#   A's files here and back): A writes into the ignored .bench/eval, which a warm machine keeps between calls when
#   .bench is not carried (carry [".whl"] only), and hands a copy back:
#       A: OUT=.bench/eval bash bench/bench_eval.sh --arch gpt-neo-2.7b,biomedlm-2.7b --stock-fraction 0.1; \
#          cp -r .bench/eval/. "$OUT"/
#       B: bash bench/bench_generate.sh --fast-batch 128 --seed-suite-json .bench/eval
#     If the machine went back in between, copy A's <arch>/bench_eval.json files to bench/seed-2p7b/<arch>/ here (an
#     untracked file travels with the working tree; commit them as the measurement's record) and run B with
#     --seed-suite-json bench/seed-2p7b. The projection then charges GPT-Neo and BioMedLM their own seed suites (its
#     table names each row's source).
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
for a in "$@"; do [ "$a" = --tiny ] && TINY=1; done
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export TINY PYTHON
# shellcheck source=bench/lib.sh
source bench/lib.sh
export HF_DATASETS_OFFLINE=1
DIR=${OUT:-.bench/eval}
mkdir -p "$DIR"
[ "$TINY" = 1 ] || environment "$DIR" > /dev/null
rc=0
"$PY" -m bench.bench_eval "$@" | tee "$DIR/bench_eval.txt" || rc=$?
# Several archs: the workers' files of <out>/<arch>/ into one archive, so that what a device call brings back (8 files
# at most) holds every arch's bench_eval.json.
shopt -s nullglob
files=("$DIR"/*/packed.* "$DIR"/*/stock.*)
if [ ${#files[@]} -gt 0 ]; then
  tar czf "$DIR/workers.tgz" -C "$DIR" "${files[@]#"$DIR"/}" && rm -f "${files[@]}"
fi
exit $rc
