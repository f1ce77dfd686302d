#!/usr/bin/env bash
# Speed acceptance in ONE call on 2×H200 (≤ 9 min; device carry: .whl .bench, filled by bench/device_wheels.sh):
#   loss      : 50 steps of a 7B 8-layer slice, same data and init, today's settings (GPU 0) vs the new
#               levers (GPU 1): the curves must agree within bf16 noise;
#   cli_best  : `biomed-llama pretrain` (configs/paper.yaml, a random-init 7B, a synthetic token store)
#               under torchrun on a 1×2 mesh with the best settings ($BEST_SET, micro $MICRO_BEST);
#   anchor_m6 : ../shared/bench/anchor_fsdp.py, REPL=1 SHARD=2 COMPILE=1 MICRO=6, the same ACC;
#   cli_cap   : the CLI again within an 80 GiB budget per GPU ($CAP_SET, micro $MICRO_CAP; the cap is
#               torch.cuda.set_per_process_memory_fraction, set in each worker by bench/memcap);
#   anchor_m4 : the anchor at MICRO=4; anchor_m5 at MICRO=5.
#   cli_node  : (only when asked) an 80 GB card of a node of NODE_GPUS (4, as the seed's cluster had), EMULATED on
#               1×2: the fp32 weights, gradients and AdamW moments (16 B × 6.74e9 = 100.4 GiB) sharded over NODE_GPUS
#               instead of 2 leave 100.4 × (1/2 − 1/NODE_GPUS) GiB more per GPU (25.1 for 4, 37.7 for 8), so the cap is
#               80 GiB plus that; compute per GPU is the same, communication is 1×2's, not 1×NODE_GPUS's.
# Phases run in the order cli_best, anchor_m6, cli_cap, anchor_m4, anchor_m5, loss, each in its own process group under its own limit, and only while the
# call's $BUDGET s (535) allow (PHASES="cli_cap anchor_m4" runs the ones skipped in a second call). Results go to
# $OUT/accept as they come; the summary against the targets is printed last.
# ACC is the accumulation of every run (CLI and anchors alike). At ACC=8 a 7B step of micro 8 takes ~10 s, so raise the
# limits: CLI_LIMIT, CAP_LIMIT, ANCHOR_LIMIT (seconds per phase) and BUDGET (the whole call's, under the call's 600).
# CPU smoke run at a tiny size (no anchors): TINY=1 bash bench/accept.sh
cd "$(dirname "$0")/.." && source bench/lib.sh
DIR=${OUT:-/tmp}/accept
WORK=${WORK_DIR:-/tmp/accept_work}
PHASES=${PHASES:-loss cli_best anchor_m6 anchor_m4 cli_cap}
LOSS_LIMIT=${LOSS_LIMIT:-120}
BUDGET=${BUDGET:-535} CLI_LIMIT=${CLI_LIMIT:-170} CAP_LIMIT=${CAP_LIMIT:-150} ANCHOR_LIMIT=${ANCHOR_LIMIT:-110}
ACC=${ACC:-2} STEPS=${STEPS:-12} LOG=${LOG:-3} MICRO_BEST=${MICRO_BEST:-8} MICRO_CAP=${MICRO_CAP:-3} CAP_GIB=${CAP_GIB:-80}
MICRO_NODE=${MICRO_NODE:-4} NODE_GPUS=${NODE_GPUS:-4}
NODE_GIB=$(python3 -c "print(round($CAP_GIB + 100.4 * (1 / 2 - 1 / $NODE_GPUS), 1))")
# the levers kept (bench/RESULTS.md): cuDNN attention, gradients reduced every micro batch (the unsharded ones of
# `last` stall the allocator near a full card), no fused LM head (the compiled loss comes with compile)
LEVERS="pretrain.sdpa_backend=cudnn pretrain.kernels=[] pretrain.grad_sync=every pretrain.activation_checkpointing=none"
BEST_SET=${BEST_SET:-$LEVERS pretrain.reshard_after_forward=false}
CAP_SET=${CAP_SET:-$LEVERS pretrain.reshard_after_forward=true}
NODE_SET=${NODE_SET:-$LEVERS pretrain.reshard_after_forward=false}
# the loss check: old (today's engine before the levers) vs new, on the same data and init
OLD_LEVERS=${OLD_LEVERS:-}
NEW_LEVERS=${NEW_LEVERS:---sdpa-backend cudnn --grad-sync every}
mkdir -p "$DIR"
rm -rf "$WORK"
if [ "${TINY:-0}" = 1 ]; then
  SHAPE=tiny; SLICE=tiny; COMPILE=""; export OMP_NUM_THREADS=1
  DEV="pretrain.device=cpu pretrain.param_dtype=float32 pretrain.reduce_dtype=float32 pretrain.compile=false"
else
  SHAPE=7b; SLICE=7b8; COMPILE="--compile"; DEV=""
fi
environment "$DIR"
$PY -m bench.make_store --out "$WORK" --shape $SHAPE --sequences $((MICRO_BEST * ACC * 2 * STEPS + 16)) > "$DIR/store.log" 2>&1

anchor() {  # anchor NAME LIMIT MICRO: the shared plain-FSDP2 baseline at the same mesh and accumulation
  [ "${TINY:-0}" = 1 ] && { echo "anchor needs CUDA (TINY)" > "$DIR/$1.log"; return; }
  REPL=1 SHARD=2 COMPILE=1 MICRO=$3 ACC=$ACC STEPS=4 group "$2" "$DIR/$1.log" \
    $PY -m torch.distributed.run --standalone --nproc-per-node 2 "${ANCHORS:-.bench}/anchor_fsdp.py"
}

phase cli_best "$CLI_LIMIT" && cli cli_best "$CLI_LIMIT" "$MICRO_BEST" $BEST_SET
phase anchor_m6 "$ANCHOR_LIMIT" && anchor anchor_m6 "$ANCHOR_LIMIT" 6
phase cli_cap "$CAP_LIMIT" && capped "$CAP_GIB" cli cli_cap "$CAP_LIMIT" "$MICRO_CAP" $CAP_SET
phase cli_node "$CAP_LIMIT" && capped "$NODE_GIB" cli cli_node "$CAP_LIMIT" "$MICRO_NODE" $NODE_SET \
  && echo "emulated node of $NODE_GPUS GPUs, cap $NODE_GIB GiB" >> "$DIR/cli_node.settings"
phase anchor_m4 "$ANCHOR_LIMIT" && anchor anchor_m4 "$ANCHOR_LIMIT" 4
phase anchor_m5 "$ANCHOR_LIMIT" && anchor anchor_m5 "$ANCHOR_LIMIT" 5
if phase loss "$LOSS_LIMIT"; then
  RUN="$PY -m bench.bench_pretrain run --out $DIR --shape $SLICE --steps 50 --warmup 2 --micro 4 --acc 2 $COMPILE"
  on_gpu 0 group "$LOSS_LIMIT" "$DIR/loss_old.log" $RUN $OLD_LEVERS --name loss_old &
  on_gpu 1 group "$LOSS_LIMIT" "$DIR/loss_new.log" $RUN $NEW_LEVERS --name loss_new &
  wait
fi
echo "== done ($(date +%T), ${SECONDS}s)"
$PY -m bench.summarize_speed accept "$DIR" | tee "$DIR/summary.txt"
