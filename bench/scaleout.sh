#!/usr/bin/env bash
# Scale-out (issue 12) on one 4- or 8-GPU H200 host: `bash bench/scaleout.sh 4` (kind nvidia-h200-x4) or
# `bash bench/scaleout.sh 8` (nvidia-h200-x8); device carry: .whl .bench (bench/device_wheels.sh).
#   ref     : the engine on a 1×2 mesh (GPUs 0,1), the base of the scaling efficiency, beside the ~1B
#             model's 20 steps on one GPU (GPU 2: micro 2 × accumulation N = the hybrid run's global batch);
#   e_RxS   : the engine, LLaMA-7B shape, compile, micro 4, accumulation $ACC, each mesh of the host
#             (x4: 1×4, 2×2; x8: 1×8, 2×4, 4×2), with the levers of $ENGINE_FLAGS;
#   loss    : the ~1B model's 20 steps on the hybrid mesh (x4: 2×2, x8: 2×4), same data and init;
#   a_RxS   : ../shared/bench/anchor_fsdp.py at each mesh, the same micro and ACC.
# Table: tok/s/GPU, MFU, memory, scaling efficiency vs 1×2, the anchor at the same mesh, the loss check.
# The x8 set does not fit one 9-minute call: PHASES="ref engine loss" first, then PHASES="anchors".
# CPU dry run of every mesh with gloo at a tiny size: TINY=1 bash bench/scaleout.sh 8
cd "$(dirname "$0")/.." && source bench/lib.sh
N=${1:?usage: bench/scaleout.sh 4|8}
DIR=${OUT:-/tmp}/scaleout$N
PHASES=${PHASES:-ref engine loss anchors}
ACC=${ACC:-2}
ENGINE_FLAGS=${ENGINE_FLAGS:---sdpa-backend cudnn --kernels linear_cross_entropy --grad-sync every}
case $N in
  4) MESHES="1x4 2x2"; HYBRID=2x2 ;;
  8) MESHES="1x8 2x4 4x2"; HYBRID=2x4 ;;
  *) echo "bench/scaleout.sh: 4 or 8 GPUs"; exit 2 ;;
esac
mkdir -p "$DIR"
if [ "${TINY:-0}" = 1 ]; then
  S7=tiny; S1=tiny; COMPILE=""; T=240; export OMP_NUM_THREADS=1
else
  S7=7b; S1=1b; COMPILE="--compile"; T=110
fi
BENCH="-m bench.bench_pretrain run --out $DIR"
TRUN="$PY -m torch.distributed.run --standalone --nproc-per-node"
ask() { case " $PHASES " in *" $1 "*) ;; *) return 1 ;; esac; [ $((SECONDS + $2)) -le 535 ] || { echo "== $1 skipped: ${SECONDS}s used"; return 1; }; }
environment "$DIR"
if ask ref $T; then
  echo "== ref: 1×2 engine + the ~1B model on one GPU ($(date +%T))"
  on_gpu 0,1 group $T "$DIR/e_1x2.log" $TRUN 2 $BENCH --shape $S7 --steps 8 --warmup 3 --micro 4 --acc $ACC $COMPILE \
    $ENGINE_FLAGS --shard 2 --name e_1x2 &
  on_gpu 2 group $T "$DIR/l_1gpu.log" $PY $BENCH --shape $S1 --steps 20 --warmup 2 --micro 2 --acc $N --name l_1gpu &
  wait
fi
for mesh in $MESHES; do
  ask engine $T || break
  echo "== engine $mesh ($(date +%T))"
  group $T "$DIR/e_$mesh.log" $TRUN "$N" $BENCH --shape $S7 --steps 8 --warmup 3 --micro 4 --acc $ACC $COMPILE \
    $ENGINE_FLAGS --shard "${mesh#*x}" --name "e_$mesh"
done
if ask loss $T; then
  echo "== loss: the ~1B model on $HYBRID ($(date +%T))"
  group $T "$DIR/l_$HYBRID.log" $TRUN "$N" $BENCH --shape $S1 --steps 20 --warmup 2 --micro 2 --acc 1 \
    --shard "${HYBRID#*x}" --name "l_$HYBRID"
fi
for mesh in $MESHES; do
  [ "${TINY:-0}" = 1 ] && break  # the anchor needs CUDA
  ask anchors 100 || break
  echo "== anchor $mesh ($(date +%T))"
  REPL=${mesh%x*} SHARD=${mesh#*x} COMPILE=1 MICRO=4 ACC=$ACC STEPS=4 group 100 "$DIR/a_$mesh.log" \
    $TRUN "$N" "${ANCHORS:-.bench}/anchor_fsdp.py"
done
echo "== done ($(date +%T), ${SECONDS}s)"
$PY -m bench.summarize_speed scaleout "$DIR" | tee "$DIR/summary.txt"
