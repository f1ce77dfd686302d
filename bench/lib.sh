# shellcheck shell=bash
# Shell helpers of the bench scripts (sourced from the repository root): the environment every run gets
# (multicast off, as the GPU machines require), process-group time limits, GPU pinning, the environment record.
set -u
SECONDS=0
# On the GPU machine: the wheels the device call carries (.whl/, filled here by bench/device_wheels.sh) into
# /tmp/site, ahead of the machine's own packages; nothing in TINY (CPU smoke) mode.
if [ "${TINY:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
    { echo "bench: the carried wheels in .whl/ did not install" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  # Bytecode that later processes reuse. The 2026-12-07 GPU pipeline's log showed torchao's compile-time
  # SyntaxWarning in each of its 17 processes: the carried packages in /tmp/site (writable, installed without
  # .pyc) were compiled from source again by every stage, DVC call and eval worker, so bytecode writing was off
  # on that machine. Compiling DVC, lm-eval, datasets and transformers from source costs 3-5 s a process on
  # this 2-core machine. With writing on, the first process to import a module compiles it and the rest load
  # it. (No PYTHONPYCACHEPREFIX: it would make Python ignore the .pyc the machine's own packages ship.)
  echo "bytecode: PYTHONDONTWRITEBYTECODE was ${PYTHONDONTWRITEBYTECODE:-unset}; writing on for this call"
  unset PYTHONDONTWRITEBYTECODE
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

# group SECONDS LOG CMD...: run CMD in its own process group with output to LOG; after SECONDS kill the
# whole group (torchrun's workers too, so no orphan keeps GPU memory for the next phase).
group() {
  local limit=$1 log=$2
  shift 2
  setsid "$@" > "$log" 2>&1 &
  local pid=$! end=$((SECONDS + limit))
  while kill -0 "$pid" 2> /dev/null; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "bench: killed after ${limit}s" >> "$log"
      kill -9 -- "-$pid" 2> /dev/null
      break
    fi
    sleep 1
  done
  wait "$pid" 2> /dev/null
}

# on_gpu N CMD...: CMD with only GPU N visible (every GPU in TINY mode, which runs on the CPU).
on_gpu() {
  local gpu=$1
  shift
  if [ "${TINY:-0}" = 1 ]; then "$@"; else CUDA_VISIBLE_DEVICES=$gpu "$@"; fi
}

# environment DIR: what ran where (GPUs, torch, the carried packages, disk and memory) into DIR/environment.txt.
environment() {
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2> /dev/null || echo "no nvidia-smi"
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
    $PY -c "import liger_kernel, importlib.metadata as m; print('liger-kernel', m.version('liger-kernel'))" 2>&1 | tail -1
    $PY -c "import xformers, importlib.metadata as m; print('xformers', m.version('xformers'))" 2>&1 | tail -1
    $PY -c "import sys, transformers, pathlib as p; d = p.Path(transformers.__file__).parent; print('bytecode written:', not sys.flags.dont_write_bytecode, '| transformers ships .pyc:', any(d.glob('__pycache__/*.pyc')))"
    df -h /tmp 2> /dev/null | tail -1
    free -g 2> /dev/null | head -2
  } > "$1/environment.txt" 2>&1
  cat "$1/environment.txt"
}

# ---- phases of the acceptance scripts (accept.sh, titan.sh): each caller sets PHASES, BUDGET, DIR, WORK, PY

phase() {  # phase NAME LIMIT: true if NAME was asked for and fits the budget
  case " $PHASES " in *" $1 "*) ;; *) return 1 ;; esac
  if [ $((SECONDS + $2)) -gt $BUDGET ]; then echo "== $1 skipped: ${SECONDS}s used, needs $2s"; return 1; fi
  echo "== $1 ($(date +%T), ${SECONDS}s used)"
}

cli() {  # cli NAME LIMIT MICRO SETTINGS...: the real CLI under torchrun (NPROC ranks, 2 by default) on the synthetic
  # store $WORK/params.yaml ($DEV, $ACC, $STEPS, $LOG set by the caller); log and metrics into $DIR
  local name=$1 limit=$2 micro=$3
  shift 3
  local sets=()
  for s in $DEV "$@" pretrain.micro_batch_size=$micro pretrain.global_batch_size=$((micro * ACC * ${NPROC:-2})) \
      pretrain.max_steps=$STEPS pretrain.log_every=$LOG pretrain.checkpoint_every=$STEPS \
      pretrain.checkpoint_dir=$WORK/ckpt_$name pretrain.output=$WORK/model_$name pretrain.metrics=$WORK/$name.json; do
    sets+=(--set "$s")
  done
  echo "micro $micro acc $ACC steps $STEPS log_every $LOG: $*" > "$DIR/$name.settings"
  group "$limit" "$DIR/$name.log" $PY -m torch.distributed.run --standalone --nproc-per-node "${NPROC:-2}" \
    -m biomed_llama pretrain --params "$WORK/params.yaml" "${sets[@]}"
  cp "$WORK/$name.json" "$DIR/${name}_metrics.json" 2> /dev/null
  rm -rf "$WORK/ckpt_$name" "$WORK/model_$name"
}

capped() {  # capped GIB COMMAND...: COMMAND with each worker's GPU memory capped at GIB (bench/memcap; its
  # sitecustomize imports bench.memcap from the repository root, on PYTHONPATH above)
  BIOMED_MEM_CAP_GIB=$1 PYTHONPATH=$PWD/bench/memcap:$PYTHONPATH "${@:2}"
}
