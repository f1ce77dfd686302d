#!/usr/bin/env bash
# The pretrain engine's GPU acceptance run, in ONE call on a 4-GPU node (~5 minutes, at most ~9.5):
#   [1] a ~1B LLaMA, bf16, 20 steps: 1 GPU vs the 2x2 hybrid mesh over 4 GPUs (NCCL), losses compared;
#   [2] the LLaMA-7B shape (32 layers, hidden 4096, seq 2048) sharded over 4 GPUs (two configs), beside
#       the project's baseline .bench/anchor_hf.py (plain HF + torch.compile + SDPA, 8-layer slice, 1 GPU);
#   [3] each attention backend (sdpa, flash_attention_2, xformers) that loads, timed on one GPU.
# Phase A runs three one-GPU engine jobs side by side (GPUs 0, 2, 3); the anchor then runs alone;
# B and C use all four GPUs.
# Results: $OUT/pretrain_bench/*.json (+ *.err, *.log) and the summary printed at the end.
# Smoke test on CPU at a tiny size: TINY=1 bash bench/gpu_pretrain.sh
set -u
SECONDS=0
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DIR=${OUT:-/tmp}/pretrain_bench
mkdir -p "$DIR"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
RUN="$PY -m bench.bench_pretrain run --out $DIR"
TR="$PY -m torch.distributed.run --standalone --nproc-per-node 4 -m bench.bench_pretrain run --out $DIR"
if [ "${TINY:-0}" = 1 ]; then
  S1=tiny; S7=tiny; S8=tiny; COMPILE=""; export OMP_NUM_THREADS=1; T=300
  gpu() { shift; env "$@"; }
else
  S1=1b; S7=7b; S8=7b8; COMPILE="--compile"; T=140
  gpu() { local d=$1; shift; env CUDA_VISIBLE_DEVICES=$d "$@"; }
fi
echo "== phase A: one-GPU engine jobs side by side ($(date +%T))"
gpu 0 timeout $T $RUN --shape $S1 --steps 20 --warmup 2 --micro 2 --acc 4 --name 1b_1gpu > "$DIR/1b_1gpu.log" 2>&1 &
gpu 2 timeout $T $RUN --shape $S8 --steps 8 --micro 4 --attention sdpa --name attn_sdpa > "$DIR/attn_sdpa.log" 2>&1 \
  || mv "$DIR/attn_sdpa.log" "$DIR/attn_sdpa.err" &
( for b in flash_attention_2 xformers; do
    gpu 3 timeout $T $RUN --shape $S8 --steps 8 --micro 4 --attention $b --name attn_$b > "$DIR/attn_$b.log" 2>&1 \
      || mv "$DIR/attn_$b.log" "$DIR/attn_$b.err"
  done ) &
wait
if [ "${TINY:-0}" != 1 ]; then
  echo "== phase A2: the anchor baseline alone on one GPU ($(date +%T))"
  gpu 0 VARIANTS=sdpa:1 LAYERS=8 OUT="$DIR" timeout 140 $PY .bench/anchor_hf.py > "$DIR/anchor_hf.log" 2>&1
fi
echo "== phase B: 2x2 hybrid mesh, 4 ranks ($(date +%T))"
timeout $T $TR --shape $S1 --steps 20 --warmup 2 --micro 2 --acc 1 --shard 2 --name 1b_2x2 > "$DIR/1b_2x2.log" 2>&1 \
  || tail -5 "$DIR/1b_2x2.log"
echo "== phase C: 7B shape over 4 GPUs ($(date +%T))"
timeout $T $TR --shape $S7 --steps 8 --warmup 3 --micro 4 --acc 1 $COMPILE --name 7b_micro4 > "$DIR/7b_micro4.log" 2>&1 \
  || { tail -3 "$DIR/7b_micro4.log"; cp "$DIR/7b_micro4.log" "$DIR/7b_micro4.err"; }
if [ $((SECONDS + T)) -lt 580 ] || [ "${TINY:-0}" = 1 ]; then  # a second config only if it fits the call
  timeout $T $TR --shape $S7 --steps 8 --warmup 3 --micro 2 --acc 2 $COMPILE --name 7b_micro2_acc2 > "$DIR/7b_micro2_acc2.log" 2>&1 \
    || { tail -3 "$DIR/7b_micro2_acc2.log"; cp "$DIR/7b_micro2_acc2.log" "$DIR/7b_micro2_acc2.err"; }
else
  echo "skipping 7b_micro2_acc2: ${SECONDS}s used"
fi
echo "== done ($(date +%T))"
$PY -m bench.bench_pretrain summarize "$DIR" | tee "$DIR/summary.txt"
