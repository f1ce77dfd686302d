#!/usr/bin/env bash
# Issue 26 on ONE GPU (H100 80GB or H200), in one or more calls of <= 9.5 min (carry .whl .bench; bench/device_wheels.sh
# fills .whl with torchtitan 0.3.0, torchao 0.18.0 and what their training paths import, besides the earlier wheels).
# Phases (PHASES, run in this order, default all; each in its own process group under its own limit, and only when
# the limit fits what is left of the call's BUDGET s (570; each run of cap3, fp8 and a titan retry checks again), so a
# later call runs the rest with PHASES=...). Durations are estimates from bench/RESULTS.md's one-GPU runs (startup
# ≈ 15-25 s, compile ≈ 45-60 s cold and much less from inductor's cache for a repeated shape, a 16-layer micro-8
# step ≈ 1.2 s and an 8-layer one ≈ 0.65 s on an H200; an H100 a little slower):
#   titan   (≈ 6 min on an H200 with 16 layers, ≈ 4.5 min on an H100 with 8; limits T_CLI 220 + T_TITAN 200):
#           `biomed-llama pretrain` with configs/paper.yaml's per-card settings for a 141 GB card (micro 8, no
#           resharding, cuDNN attention, grad_sync every, compile, no AC, async checkpoint at the last step) against
#           torchtitan 0.3.0 (bench/anchor_torchtitan.py: its FSDP2, per-block compile of model and loss, no AC,
#           FlexAttention, chunked loss (on torch 2.11 with the anchor's mend of its norm/LM-head FSDP group), CUDA
#           graphs) at the same LAYERS (16 on a card of > 100 GiB, else 8), micro
#           MICRO 8 and accumulation ACC 2, STEPS 10 (steady: steps 3-9 for the CLI, the last holding its checkpoint;
#           steps 4-10 for torchtitan); CAP_GIB caps both (bench/memcap) for "equal memory"; if torchtitan fails, it is
#           retried once with TITAN_RETRY (default: its partial_dtensor SPMD backend, no CUDA graphs, its plain
#           cross-entropy over the whole logits, which leaves the norm/LM-head group's forward whole; TITAN_AC=selective
#           too if the first ran out of memory), the first failure kept in titan_first.log; the result row names its
#           loss, SPMD backend and CUDA graphs;
#   tests   (≈ 90 s; limit T_TESTS 150): the FP8 GPU test (`pytest -k float8 tests/train/test_gpu_pretrain.py`: bf16 vs
#           tensorwise and rowwise through the whole pretrain path, compiled); the CPU float8 tests run in CI;
#   cap3    (≈ 4-5.5 min; limit T_CAP 130 per run): the 80 GiB setting three times. One GPU emulates a GPU of the 1x2
#           mesh: the 16-layer 7B (3.5B parameters: about the training state one rank of 1x2 holds, 3.37B) at micro
#           CAP_MICRO 8 (16 layers x 8 sequences hold what 32 layers x micro 4 hold), accumulation CAP_ACC 8 (64
#           sequences per step, the paper run's per-GPU batch), the profile's 80 GiB levers (reshard, budget 0.7, 6
#           layers kept gathered, grad_sync every, bf16 reduce, cuDNN), capped at CAP80 80 GiB; no communication;
#   fp8     (≈ 3 min; limit T_FP8 120 per run): the 7B 8-layer slice (bench_pretrain.py, compile, micro FP8_MICRO 8 x
#           acc 2, cuDNN, no resharding): bf16 vs `pretrain.float8` for each recipe in FP8_RECIPES (tensorwise), MFU in
#           bf16-equivalent FLOPs (the same count against the bf16 peak); target >= 1.25x;
#   fp8loss (≈ 3.5 min; limit T_FP8LOSS 150 per run): 200 steps of the 8-layer slice, same data and init, bf16 vs FP8
#           (the first of FP8_RECIPES), micro 2 x acc 2, lr 3e-4: the smoothed relative difference (bar 1%);
#   attn    (≈ 3 min; limits 60 + T_ATTN 120 per run): attention kernels (bench_attention.py), then the engine on
#           the 7B 8-layer slice (micro 4 x acc 2, compile, bf16): cuDNN SDPA vs xformers' memory-efficient attention
#           (its PyTorch-kernel operators), same batch; target: xformers within 3%.
# Calls (each <= 10 min, BUDGET 570 s): PHASES="titan tests"; PHASES="cap3 fp8"; then PHASES="fp8loss attn".
# Results go to $OUT/titan as they come; `summarize_speed.py titan` prints the tables last.
# CPU smoke run (tiny shapes, no torchtitan/FP8/xformers runs): TINY=1 PYTHON=.venv/bin/python bash bench/titan.sh
cd "$(dirname "$0")/.." && source bench/lib.sh
DIR=${OUT:-/tmp}/titan
WORK=${WORK_DIR:-/tmp/titan_work}
PHASES=${PHASES:-titan tests cap3 fp8 fp8loss attn}
BUDGET=${BUDGET:-570}
T_TESTS=${T_TESTS:-150} T_CLI=${T_CLI:-220} T_TITAN=${T_TITAN:-200} T_FP8=${T_FP8:-120} T_FP8LOSS=${T_FP8LOSS:-150}
T_ATTN=${T_ATTN:-120} T_CAP=${T_CAP:-130}
MICRO=${MICRO:-8} ACC=${ACC:-2} STEPS=${STEPS:-10} LOG=${LOG:-1} CAP_GIB=${CAP_GIB:-0}
FP8_MICRO=${FP8_MICRO:-8} FP8_RECIPES=${FP8_RECIPES:-tensorwise}
CAP_MICRO=${CAP_MICRO:-8} CAP_ACC=${CAP_ACC:-8} CAP80=${CAP80:-80}
TITAN_RETRY=${TITAN_RETRY:-TITAN_SPMD=partial_dtensor TITAN_CUDA_GRAPHS=0 TITAN_LOSS=full}
export NPROC=1
mkdir -p "$DIR"
rm -rf "$WORK"
if [ "${TINY:-0}" = 1 ]; then
  LAYERS=2; SHAPE=tiny; SLICE=tiny; CAPSHAPE=tiny; COMPILE=""; STEPS=4; export OMP_NUM_THREADS=1
  DEV="pretrain.device=cpu pretrain.param_dtype=float32 pretrain.reduce_dtype=float32 pretrain.compile=false"
else
  gib=$($PY -c "import torch; print(int(torch.cuda.get_device_properties(0).total_memory / 2**30))")
  LAYERS=${LAYERS:-$([ "$gib" -gt 100 ] && echo 16 || echo 8)}
  SHAPE=$(case $LAYERS in 32) echo 7b ;; 8|16) echo "7b$LAYERS" ;; *) echo "bench: LAYERS 8, 16 or 32" >&2; exit 2 ;; esac) || exit 2
  SLICE=7b8; CAPSHAPE=7b16; COMPILE="--compile"; DEV=""
fi
environment "$DIR"
echo "layers $LAYERS micro $MICRO acc $ACC steps $STEPS cap ${CAP_GIB:-0} GiB" | tee "$DIR/titan.settings"
run_bench() {  # run_bench NAME LIMIT ARGS...: bench_pretrain.py on one GPU (its own process group), JSON into $DIR
  local name=$1 limit=$2
  shift 2
  group "$limit" "$DIR/$name.log" $PY -m bench.bench_pretrain run --out "$DIR" --name "$name" "$@"
}
maybe_cap() {  # maybe_cap COMMAND...: under the CAP_GIB cap when one is set
  if [ "${CAP_GIB:-0}" != 0 ]; then capped "$CAP_GIB" "$@"; else "$@"; fi
}

if phase titan $((T_CLI + T_TITAN)); then
  $PY -m bench.make_store --out "$WORK" --shape "$SHAPE" --sequences $((MICRO * ACC * STEPS + 16)) > "$DIR/store.log" 2>&1
  # the paper profile's per-card settings on a 141 GB card (configs/paper.yaml; bench/accept.sh's BEST_SET)
  maybe_cap cli cli_card "$T_CLI" "$MICRO" pretrain.sdpa_backend=cudnn "pretrain.kernels=[]" pretrain.grad_sync=every \
    pretrain.activation_checkpointing=none pretrain.reshard_after_forward=false
  if [ "${TINY:-0}" = 1 ]; then
    echo "torchtitan needs CUDA (TINY)" > "$DIR/titan.log"
  else
    titan() {  # titan LOG ENV...: torchtitan's trainer under torchrun on one GPU
      local log=$1
      shift
      maybe_cap group "$T_TITAN" "$log" env TITAN_LAYERS="$LAYERS" TITAN_MICRO="$MICRO" TITAN_ACC="$ACC" \
        TITAN_STEPS="$STEPS" TITAN_DUMP="$WORK/titan" "$@" \
        $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m bench.anchor_torchtitan
    }
    titan "$DIR/titan.log"
    if ! grep -q '"tok_s_per_gpu"' "$DIR/titan.log" && phase titan "$T_TITAN" > /dev/null; then
      mv "$DIR/titan.log" "$DIR/titan_first.log"
      retry=$TITAN_RETRY
      grep -qi "out of memory" "$DIR/titan_first.log" && retry="$retry TITAN_AC=selective"
      echo "== titan: retried with $retry ($(date +%T), ${SECONDS}s used)"
      # shellcheck disable=SC2086
      titan "$DIR/titan.log" $retry
    fi
  fi
fi

if phase tests "$T_TESTS"; then
  group "$T_TESTS" "$DIR/pytest_fp8.log" $PY -m pytest -q -p no:cacheprovider -k float8 tests/train/test_gpu_pretrain.py
fi

if phase cap3 "$T_CAP"; then  # each run checks the budget again: a call may hold fewer than 3
  CAPRUN=(--shape $CAPSHAPE --steps 5 --warmup 2 --micro "$CAP_MICRO" --acc "$CAP_ACC" --sdpa-backend cudnn
          --grad-sync every --reduce-dtype bfloat16 --memory-budget 0.7 --gathered-layers 6 $COMPILE)
  [ "${TINY:-0}" = 1 ] && CAPRUN=(--shape tiny --steps 4 --warmup 2 --micro 2 --acc 2 --grad-sync every --gathered-layers 1)
  for i in 1 2 3; do
    phase cap3 "$T_CAP" > /dev/null && run_bench "c80_$i" "$T_CAP" "${CAPRUN[@]}" --mem-cap-gib "$CAP80"
  done
fi

if phase fp8 $((T_FP8 * 2)); then
  FP8RUN=(--shape $SLICE --steps 10 --warmup 4 --micro "$FP8_MICRO" --acc 2 --sdpa-backend cudnn --grad-sync every
          --no-reshard $COMPILE)
  run_bench f_bf16 "$T_FP8" "${FP8RUN[@]}"
  for recipe in $FP8_RECIPES; do
    [ "${TINY:-0}" = 1 ] && { echo "error: float8 needs an FP8 GPU (TINY)" > "$DIR/f_$recipe.log"; continue; }
    phase fp8 "$T_FP8" > /dev/null && run_bench "f_$recipe" "$T_FP8" "${FP8RUN[@]}" --float8 "$recipe"
  done
fi

if phase fp8loss $((T_FP8LOSS * 2)); then
  recipe=${FP8_RECIPES%% *}
  LOSSRUN=(--shape $SLICE --steps 200 --warmup 2 --micro 2 --acc 2 --sdpa-backend cudnn --lr 3e-4 $COMPILE)
  [ "${TINY:-0}" = 1 ] && LOSSRUN=(--shape tiny --steps 20 --warmup 2 --micro 2 --acc 2)
  run_bench l_bf16 "$T_FP8LOSS" "${LOSSRUN[@]}"
  if [ "${TINY:-0}" = 1 ]; then echo "error: float8 needs an FP8 GPU (TINY)" > "$DIR/l_fp8.log"
  else run_bench l_fp8 "$T_FP8LOSS" "${LOSSRUN[@]}" --float8 "$recipe"; fi
fi

if phase attn $((60 + T_ATTN * 2)); then
  ATT=""; [ "${TINY:-0}" = 1 ] && ATT="--tiny"
  group 60 "$DIR/attention.log" $PY -m bench.bench_attention --out "$DIR" $ATT
  ATTRUN=(--shape $SLICE --steps 8 --warmup 3 --micro 4 --acc 2 --grad-sync every --no-reshard $COMPILE)
  run_bench a_cudnn "$T_ATTN" "${ATTRUN[@]}" --attention sdpa --sdpa-backend cudnn
  [ "${TINY:-0}" = 1 ] || run_bench a_xformers "$T_ATTN" "${ATTRUN[@]}" --attention xformers
fi

echo "== done ($(date +%T), ${SECONDS}s)"
$PY -m bench.summarize_speed titan "$DIR" | tee "$DIR/summary.txt"
