#!/usr/bin/env bash
# The paper profile end to end on one GPU, in ONE call (issue 23 item 3; device carry: .whl, filled by
# `WHEELS=e2e bash bench/device_wheels.sh`):
#   1. a scratch git + DVC copy of this checkout ($WORK; the device copy has no .git);
#   2. every raw input generated at the paper's paths (scripts/make_gpu_inputs.py: Pile shards, the 20
#      instruction sources, the benchmark files at their real test sizes, a LLaMA-format tokenizer and a
#      random-init LLaMA-format model at reduced depth, stand-ins for the other 0-shot rows' models);
#   3. params.yaml = configs/paper.yaml + configs/overlays/gpu-smoke.yaml (`biomed-llama compose`);
#   4. `dvc repro evaluate` (launch.mode local, CUDA), GPU memory sampled in the background;
#   5. a second `dvc repro evaluate` and `dvc status`: both must be no-ops;
#   6. `biomed-llama verify` on every output folder with a manifest;
#   7. the kill-and-resume check, with `pretrain.deterministic` (speed-only: same run id, same numbers): the
#      pretrain stage once uninterrupted into its own folders, once SIGKILLed (its process group) as soon as its
#      first async checkpoint is complete and then rerun: it must resume and export the same weights (sha256 of
#      model.safetensors) as the uninterrupted run. The default kernels are not bitwise repeatable on a GPU
#      (two uninterrupted runs differ by a bf16 step), so the check compares two deterministic runs;
#   8. the table: per stage wall time and peak GPU memory (sampled; and torch's peak from the training
#      stages' metrics), the checks, reports/table.md.
# PHASES (default "pipeline resume"): `pipeline` is steps 4-6 and 8, `resume` step 7.
# Results in $OUT/e2e (8 files at most come back): environment.txt, inputs.json, repro.log, repro2.log,
# verify.log, resume.log, summary.txt, table.md. Exit status 0 only when every check passed.
# CPU smoke (integration tier, tests/test_e2e.py): TINY=1 bash bench/e2e.sh — `--size cpu` inputs and
# configs/overlays/cpu-smoke.yaml composed last; the same steps, the venv's Python and DVC.
# Knobs: WORK_DIR (default .e2e-work in this checkout: git ignores it, so a second device call on the still-warm
# machine finds it), CONTINUE=1 (keep WORK_DIR's pipeline and go on where it stopped: `dvc repro` reruns only
# what is missing), GEN_ARGS (extra make_gpu_inputs.py arguments, e.g. "--hidden 4096 --heads 32 --ffn 11008"),
# OVERLAY (one more overlay composed last, e.g. to try other sizes), BUDGET (seconds, 570), PROBE=0 (no start-up probe).
cd "$(dirname "$0")/.." && source bench/lib.sh
REPO=$PWD
DIR=${OUT:-/tmp}/e2e
WORK=${WORK_DIR:-$REPO/.e2e-work}
PHASES=${PHASES:-pipeline resume}
mkdir -p "$DIR"
CONTINUE=${CONTINUE:-0}
if [ "$CONTINUE" = 1 ] && [ -e "$WORK/.dvc" ] && [ -e "$WORK/params.yaml" ]; then
  echo "e2e: continuing the pipeline in $WORK"
else
  [ "$CONTINUE" = 1 ] && echo "e2e: nothing to continue in $WORK (a fresh machine?): starting over"
  CONTINUE=0
  rm -rf "$WORK" && mkdir -p "$WORK"
fi
if [ "${TINY:-0}" = 1 ]; then
  SIZE=cpu; LAYERS="configs/overlays/gpu-smoke.yaml configs/overlays/cpu-smoke.yaml"
  BIN=$(dirname "$(command -v "${PYTHON:-python3}")"); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  SIZE=gpu; LAYERS="configs/overlays/gpu-smoke.yaml"
  BIN=/tmp/site/bin  # the carried wheels' console scripts (dvc)
fi
[ -n "${OVERLAY:-}" ] && LAYERS="$LAYERS $OVERLAY"
environment "$DIR"
if [ "${TINY:-0}" != 1 ] && [ "${PROBE:-1}" = 1 ]; then  # where a training process's start goes (each stage pays it once per process)
  $PY - >> "$DIR/environment.txt" 2>&1 <<'PYEOF'
import time
t = [("start", time.time())]
import torch; t.append(("import torch", time.time()))
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); t.append(("CUDA context", time.time()))
import transformers, transformers.models.llama.modeling_llama; t.append(("import transformers (llama)", time.time()))
try:
    import xformers.ops
except Exception as e:
    print("xformers:", type(e).__name__)
t.append(("import xformers.ops", time.time()))
import torch._inductor.compile_fx; t.append(("import inductor", time.time()))
import biomed_llama.train.finetune, biomed_llama.cli; t.append(("import biomed_llama (train, cli)", time.time()))
import torch.distributed as dist
dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=torch.device("cuda", 0))
dist.barrier(); t.append(("NCCL group of one + barrier", time.time()))
print("start-up probe (s): " + ", ".join(f"{n} {b - a:.2f}" for (_, a), (n, b) in zip(t, t[1:])))
PYEOF
  tail -1 "$DIR/environment.txt"
fi

# 1. the scratch checkout: what git tracks (or, without .git, the device copy's files less the carried ones)
if [ "$CONTINUE" = 0 ]; then
  if git rev-parse --git-dir > /dev/null 2>&1; then
    # the files git tracks or would (untracked, not ignored: a device copy's .git index can be older than its
    # files, and a module added since is then untracked there, one deleted since still listed), less the records of a pipeline run (a checkout
    # that ran the demo holds dvc.lock, metrics/, plots/, reports/, which would make the scratch copy's pipeline
    # look already run); the overlays are copied below
    git ls-files -z --cached --others --exclude-standard | grep -zvE '^(dvc\.lock|metrics/|plots/|reports/|\.e2e-work/)' |
      tar --null --ignore-failed-read -T - -cf - 2> /dev/null | tar -C "$WORK" -xf -  # (and files since deleted)
  else
    tar --exclude=./.whl --exclude=./.bench --exclude=./.venv --exclude=./.e2e-work -cf - . | tar -C "$WORK" -xf -
  fi
  cp "$REPO"/configs/overlays/*.yaml "$WORK/configs/overlays/" 2> /dev/null  # an uncommitted OVERLAY too
fi
cd "$WORK" || exit 1
# `biomed-llama` for the stages: the package of this copy, run by the Python that has the carried wheels
mkdir -p .e2e-bin
printf '#!/bin/sh\nexec %s -m biomed_llama "$@"\n' "$(command -v "$PY")" > .e2e-bin/biomed-llama
chmod +x .e2e-bin/biomed-llama
export PATH="$WORK/.e2e-bin:$BIN:$PATH" PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=e2e@localhost GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=e2e@localhost
DVC="$PY -m dvc"
if [ "$CONTINUE" = 0 ]; then
  if command -v git > /dev/null; then
    git init -q && git add -A && git commit -qm "e2e snapshot" || { echo "e2e: scratch git repo failed"; exit 1; }
  else  # a machine without git: DVC without SCM (same pipeline, nothing committed)
    echo "e2e: no git here, DVC runs with core.no_scm"; $DVC config core.no_scm true
  fi
  # hardlinks: the outputs are not copied into the cache a second time (12 model folders on a 64 GiB disk)
  { $DVC config core.analytics false && $DVC config core.site_cache_dir "$WORK/.dvc/site-cache" &&
    $DVC config cache.type hardlink,copy; } || { echo "e2e: DVC config failed"; exit 1; }
fi

BUDGET=${BUDGET:-570}  # seconds for the whole call (the device's limit is 600; the wheels install first)
[ "${TINY:-0}" = 1 ] && BUDGET=${BUDGET_TINY:-1500}  # 2 shared cores: evaluate alone takes minutes
stamp() { $PY -u -c 'import sys, time
for line in sys.stdin: sys.stdout.write(f"{time.time():.3f} {line}")'; }  # each line with its time
FAIL=()
has() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }

# 2-3. inputs and params
if [ "$CONTINUE" = 0 ]; then
  T0=$(date +%s.%N)
  $PY scripts/make_gpu_inputs.py --root . --size $SIZE --report "$DIR/inputs.json" ${GEN_ARGS:-} > "$WORK/gen.log" 2>&1 ||
    { tail -20 "$WORK/gen.log"; echo "e2e: input generation failed"; exit 1; }
  T1=$(date +%s.%N)
  biomed-llama compose configs/paper.yaml $LAYERS --out params.yaml || { echo "e2e: compose failed"; exit 1; }
  echo "inputs generated in $(python3 -c "print(round($T1 - $T0, 1))") s; free disk: $(df -h . | tail -1)"
  echo "$(date +%s.%N) e2e: inputs $T0 $T1" > "$DIR/repro.log"
else
  : > "$DIR/repro.log"
fi

# 4. the pipeline, GPU memory sampled every 0.5 s; the whole repro stops at the call's budget.
SAMPLER=""
if command -v nvidia-smi > /dev/null; then
  (while :; do echo "$(date +%s.%N) $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
     sleep 0.5; done) >> "$WORK/gpu_mem.txt" 2> /dev/null &
  SAMPLER=$!
fi
left() { local n=$((BUDGET - SECONDS - $1)); echo $((n > 1 ? n : 1)); }  # seconds left of the budget, less a reserve
repro() {  # repro TARGET: `dvc repro TARGET`, time-stamped into repro.log, within the budget
  echo "== dvc repro $1 ($(date +%T), ${SECONDS}s used)"
  timeout --signal=TERM --kill-after=20 "$(left 40)" $DVC repro "$1" 2>&1 | stamp >> "$DIR/repro.log"
  local rc=${PIPESTATUS[0]}
  echo "$(date +%s.%N) e2e: repro $1 exit $rc" >> "$DIR/repro.log"  # ends the last stage's window
  [ "$rc" = 0 ] || FAIL+=("dvc repro $1 exited $rc")
  return "$rc"
}

pipeline_phase() {  # steps 4-6
  repro evaluate

  # 5. the second repro and the status: no-ops
  echo "== second dvc repro ($(date +%T), ${SECONDS}s used)"
  { timeout "$(left 20)" $DVC repro evaluate 2>&1; echo "-- dvc status"; timeout "$(left 10)" $DVC status 2>&1; } > "$DIR/repro2.log"
  grep -q "Running stage" "$DIR/repro2.log" && FAIL+=("second repro ran a stage")
  grep -q "Data and pipelines are up to date" "$DIR/repro2.log" || FAIL+=("dvc status not clean")

  # 6. every output folder with a manifest
  echo "== verify ($(date +%T), ${SECONDS}s used)"
  : > "$DIR/verify.log"
  for m in $(find data/extracted data/tokens data/instruct data/eval models reports -name manifest.json 2> /dev/null | sort); do
    d=$(dirname "$m")
    case "$d" in models/llama-7b|models/gpt-neo-2.7b|models/biomedlm-2.7b|models/pmc-llama-7b) continue ;; esac
    if biomed-llama verify "$d" >> "$DIR/verify.log" 2>&1; then echo "ok $d" >> "$DIR/verify.log"
    else FAIL+=("verify $d"); echo "FAILED $d" >> "$DIR/verify.log"; fi
  done
  grep -c "^ok " "$DIR/verify.log" | xargs echo "verified folders:"
}

# 7. kill pretrain after its first complete async checkpoint, rerun, compare with an uninterrupted run; all three
# with deterministic kernels, each into folders of its own (the pipeline's outputs stay as DVC recorded them)
resume_phase() {
  [ -e data/tokens/manifest.json ] || repro tokenize  # its inputs, unless the pipeline made them
  echo "== resume check ($(date +%T), ${SECONDS}s used)"
  sets() {  # sets NAME: the pretrain stage's outputs under e2e-resume/NAME, deterministic kernels
    echo --set pretrain.deterministic=true --set pretrain.checkpoint_dir=e2e-resume/$1/ckpt \
      --set pretrain.output=e2e-resume/$1/model --set pretrain.export_init=e2e-resume/$1/init \
      --set pretrain.metrics=e2e-resume/$1/metrics.json --set pretrain.plots=e2e-resume/$1/plots
  }
  EVERY=$($PY -c "import yaml; print(yaml.safe_load(open('params.yaml'))['pretrain']['checkpoint_every'])")
  STEP=$(printf 'step-%08d' "$EVERY")
  rm -rf e2e-resume
  {
    echo "-- run 0: uninterrupted, deterministic kernels"
    timeout "$(left 30)" biomed-llama launch pretrain $(sets ref) > e2e-resume.0.log 2>&1
    echo "exit $?"; grep -h "new run\|step \|done\|rror" e2e-resume.0.log | tail -5
    echo "-- run 1: the same, killed (SIGKILL, its process group) once $STEP is complete"
    setsid biomed-llama launch pretrain $(sets killed) > e2e-resume.1.log 2>&1 &
    PID=$!
    while kill -0 $PID 2> /dev/null; do
      if ls e2e-resume/killed/ckpt/*/"$STEP"/checkpoint-manifest.json > /dev/null 2>&1; then
        kill -9 -- -$PID 2> /dev/null; echo "killed at $(date +%T) after $STEP"; break
      fi
      sleep 0.1
    done
    wait $PID 2> /dev/null
    grep -h "step \|new run" e2e-resume.1.log | tail -4
    [ -e e2e-resume/killed/model/model.safetensors ] && echo "run 1 finished before the kill: no resume tested"
    echo "-- run 2: the same command again"
    timeout "$(left 20)" biomed-llama launch pretrain $(sets killed) > e2e-resume.2.log 2>&1
    echo "exit $?"; grep -h "resumed from\|step \|done\|rror" e2e-resume.2.log | tail -6
    sha256sum e2e-resume/ref/model/model.safetensors e2e-resume/killed/model/model.safetensors
  } > "$DIR/resume.log" 2>&1
  grep -q "resumed from" e2e-resume.2.log || FAIL+=("pretrain did not resume")
  A=$(sha256sum e2e-resume/ref/model/model.safetensors 2> /dev/null | cut -c1-64)
  B=$(sha256sum e2e-resume/killed/model/model.safetensors 2> /dev/null | cut -c1-64)
  if [ -n "$A" ] && [ "$A" = "$B" ]; then echo "resumed weights == uninterrupted weights ($A)" | tee -a "$DIR/resume.log"
  else FAIL+=("resumed weights differ"); $PY -m bench.e2e_table diff e2e-resume/ref/model e2e-resume/killed/model >> "$DIR/resume.log" 2>&1; fi
  rm -rf e2e-resume  # its checkpoints: the disk is needed
}

# RESUME_FIRST=1: the resume check before the pipeline (a short call then measures it whatever the pipeline needs)
if [ "${RESUME_FIRST:-0}" = 1 ]; then
  has resume && resume_phase
  has pipeline && pipeline_phase
else
  has pipeline && pipeline_phase
  has resume && resume_phase
fi
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2> /dev/null

# 8. the table
if has pipeline; then
  cp reports/table.md "$DIR/table.md" 2> /dev/null || FAIL+=("no reports/table.md")
fi
$PY -m bench.e2e_table summary --log "$DIR/repro.log" --mem "$WORK/gpu_mem.txt" --root "$WORK" \
  --fail "$(printf '%s; ' "${FAIL[@]}")" --phases "$PHASES" | tee "$DIR/summary.txt"
echo "== done ($(date +%T), ${SECONDS}s)"
[ ${#FAIL[@]} = 0 ]
