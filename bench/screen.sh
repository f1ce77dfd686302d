#!/usr/bin/env bash
# Speed screening in ONE call on 2×H200 (≤ 9 min; device carry: .whl .bench, filled by bench/device_wheels.sh):
#   A (GPU 0): attention kernels on the 7B shape (SDPA flash / cuDNN / efficient, xformers), then the
#      engine on a 7B 8-layer slice (compile, micro 4): SDPA auto, cuDNN first, xformers (without
#      compile if it fails compiled);
#   A (GPU 1): the GPU tests (`pytest -m gpu`: kernel parity, SDPA/xformers parity, bf16 compiled run),
#      then the slice with liger's fused linear cross-entropy, with its RMSNorm+SwiGLU+RoPE, and with
#      a host sync per step (the engine before this change);
#   B (both GPUs): the full 7B training state on a 1×2 mesh: a sync save, then two async saves.
# Each phase runs in its own process group under its own time limit; results go to $OUT/screen as they
# come; the summary table is printed last. CPU smoke run at a tiny size: TINY=1 bash bench/screen.sh
cd "$(dirname "$0")/.." && source bench/lib.sh
DIR=${OUT:-/tmp}/screen
CKPT=${CKPT_DIR:-/tmp/bench_ckpt}
mkdir -p "$DIR"
if [ "${TINY:-0}" = 1 ]; then
  SLICE=tiny; FULL=tiny; COMPILE=""; ATT="--tiny"; T=(200 200 240); export OMP_NUM_THREADS=1
else
  SLICE=7b8; FULL=7b; COMPILE="--compile"; ATT=""; T=(290 290 230)
fi
EAGER="$PY -m bench.bench_pretrain run --out $DIR --shape $SLICE --steps 12 --warmup 4 --micro 4"
RUN="$EAGER $COMPILE"
environment "$DIR"
echo "== A: kernels and levers, one GPU each ($(date +%T))"
on_gpu 0 group "${T[0]}" "$DIR/gpu0.log" bash -c "
  $PY -m bench.bench_attention --out $DIR $ATT > $DIR/attention.log 2>&1
  $RUN --name s_a_sdpa_auto > $DIR/s_a_sdpa_auto.log 2>&1
  $RUN --sdpa-backend cudnn --name s_b_cudnn > $DIR/s_b_cudnn.log 2>&1
  $RUN --attention xformers --name s_c_xformers > $DIR/s_c_xformers.log 2>&1 ||
    $EAGER --attention xformers --name s_c_xformers_eager > $DIR/s_c_xformers_eager.log 2>&1" &
on_gpu 1 group "${T[1]}" "$DIR/gpu1.log" bash -c "
  $PY -m pytest -m gpu -q -p no:cacheprovider tests/model tests/train > $DIR/pytest_gpu.log 2>&1
  $RUN --sdpa-backend cudnn --kernels linear_cross_entropy --name s_d_cudnn_flce > $DIR/s_d_cudnn_flce.log 2>&1
  $RUN --sdpa-backend cudnn --kernels rms_norm,swiglu,rope --name s_e_cudnn_liger3 > $DIR/s_e_cudnn_liger3.log 2>&1
  $RUN --host-sync --name s_f_auto_hostsync > $DIR/s_f_auto_hostsync.log 2>&1" &
wait
echo "== B: checkpoint stall, full state over 2 ranks ($(date +%T), ${SECONDS}s used)"
df -h "$(dirname "$CKPT")" > "$DIR/disk.txt" 2>&1
group "${T[2]}" "$DIR/checkpoint.log" $PY -m torch.distributed.run --standalone --nproc-per-node 2 \
  -m bench.bench_checkpoint --shape $FULL --dir "$CKPT" --out "$DIR"
rm -rf "$CKPT"
echo "== done ($(date +%T), ${SECONDS}s)"
$PY -m bench.summarize_speed screen "$DIR" | tee "$DIR/summary.txt"
