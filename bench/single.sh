#!/usr/bin/env bash
# What one GPU can settle of issue 15, in ONE call on a single H200 (≤ 9.5 min; carry .whl .bench).
# Phases (PHASES, default "ckpt tests profile"):
#   ckpt: the checkpoint cost per rank: `bench_checkpoint.py` on one GPU with the 16-layer 7B shape (3.5B params,
#      42 GB of DCP files: the training state each GPU of a 1×2 mesh holds of the whole 7B), compiled, micro
#      CK_MICRO (default 4): a sync save, then two async saves through `HostStager`, training on while written;
#   tests: the GPU tests (`pytest -m gpu`: HostStager on CUDA, async save + resume on CUDA, kernel / backend parity);
#   profile: a 7B 8-layer slice (compile, micro 4), then 3 steps under torch.profiler: device time per kernel class;
#   half: the 16-layer shape on one GPU at the 1×2 run's per-GPU batch (micro 8, acc 2, compile): the engine with
#      2 steps profiled (HALF_VARIANTS: "reshard" and/or "keep", i.e. reshard_after_forward=False), and
#      `anchor_fsdp.py` (LAYERS=16, one rank) at the same batch, in this call.
#   mesh (2 GPUs): the whole 7B over a 1×2 mesh, bench_pretrain with 2 steps profiled, one run per variant in
#      MESH_VARIANTS (default "m8 m8+last cap3"), then `anchor_fsdp.py` (REPL=1 SHARD=2, micro 4, acc 2) in the same
#      call. A variant is a base and '+'-joined changes: m8 = micro 8 × acc 2, cuDNN, no reshard, bf16 reduce (the paper
#      profiles'), gradients reduced every micro batch; capN = micro N, reshard, within an 80 GiB cap; +last = reduce
#      after the last micro batch only; +keep = no reshard; +f32 = fp32 reduce; +eager = the loss outside torch.compile;
#      +seq = per-sequence loss weighting; +nchK = NCCL_MAX_NCHANNELS=K (fewer SMs for the collectives);
#      +protoP = NCCL_PROTO=P (Simple, LL128: NCCL picks LL for the 1×2 gathers); +bX = activation memory budget X of
#      the compiled layers (recompute to fit a bigger micro batch); +accN = accumulation N; +gN = with resharding, the
#      last N layers kept gathered through the step (pretrain.gathered_layers); +uN = micro N; +nocap = no memory cap.
#      The profiles say how much of the collectives is exposed and what overlapping them costs the matmuls;
#      MESH_STEPS / MESH_WARMUP (8 / 3) set the steps per run; MESH_TRACE=<variant> also writes that run's Chrome
#      trace (rank 0); MESH_ANCHOR=0 skips the anchor.
# On 2 GPUs the whole 7B over a 1×2 mesh: CK_SHAPE=7b CK_NPROC=2 PHASES=ckpt (81 GB of files).
# The 16-layer checkpoint shape falls back to the 8-layer slice when the checkpoint disk has < 50 GB free (said in the log).
# CPU smoke run: TINY=1 bash bench/single.sh
cd "$(dirname "$0")/.." && source bench/lib.sh
DIR=${OUT:-/tmp}/single
CKPT=${CKPT_DIR:-/tmp/bench_ckpt}
mkdir -p "$DIR"
if [ "${TINY:-0}" = 1 ]; then
  CK_SHAPE=tiny; SLICE=tiny; HALF=tiny; HALF_MICRO=2; MESH=tiny; COMPILE=""; T=(200 200 200); export OMP_NUM_THREADS=1
else
  free_gb=$(df -BG --output=avail "$(dirname "$CKPT")" | tail -1 | tr -dc 0-9)
  CK_SHAPE=${CK_SHAPE:-7b16}
  [ "$CK_SHAPE" != 7b16 ] || [ "$free_gb" -ge 50 ] || { CK_SHAPE=7b8; echo "only ${free_gb} GB free: checkpoint shape 7b8"; }
  SLICE=7b8; HALF=7b16; HALF_MICRO=8; MESH=7b; COMPILE="--compile"; T=("${CK_LIMIT:-300}" 110 140)
fi
environment "$DIR"
PHASES=${PHASES:-ckpt tests profile}
if [[ " $PHASES " == *" ckpt "* ]]; then
  echo "== ckpt: checkpoint cost, $CK_SHAPE on ${CK_NPROC:-1} rank(s) ($(date +%T))"
  group "${T[0]}" "$DIR/checkpoint.log" $PY -m torch.distributed.run --standalone --nproc-per-node "${CK_NPROC:-1}" \
    -m bench.bench_checkpoint --shape $CK_SHAPE --micro "${CK_MICRO:-4}" $COMPILE --dir "$CKPT" --out "$DIR"
  rm -rf "$CKPT"
fi
if [[ " $PHASES " == *" tests "* ]]; then
  echo "== tests: GPU tests ($(date +%T), ${SECONDS}s used)"
  group "${T[1]}" "$DIR/pytest_gpu.log" $PY -m pytest -m gpu -q -p no:cacheprovider tests/model tests/train
fi
if [[ " $PHASES " == *" profile "* ]]; then
  echo "== profile: slice step profile ($(date +%T), ${SECONDS}s used)"
  group "${T[2]}" "$DIR/p_slice.log" $PY -m bench.bench_pretrain run --out "$DIR" --shape $SLICE --steps 10 \
    --warmup 4 --micro 4 $COMPILE --profile 3 --name p_slice
fi
if [[ " $PHASES " == *" half "* ]]; then
  echo "== half: $HALF engine vs anchor, micro 8 acc 2, one GPU ($(date +%T), ${SECONDS}s used)"
  for variant in ${HALF_VARIANTS:-reshard}; do  # reshard: FSDP's default; keep: reshard_after_forward=False
    flags=""; [ "$variant" = keep ] && flags="--no-reshard"
    group "${T[2]}" "$DIR/p_half_$variant.log" $PY -m bench.bench_pretrain run --out "$DIR" --shape $HALF --steps 8 \
      --warmup 3 --micro "$HALF_MICRO" --acc 2 $COMPILE $flags --profile 2 --name "p_half_$variant"
  done
  [ "${TINY:-0}" = 1 ] || group "${T[2]}" "$DIR/a_half.log" env REPL=1 SHARD=1 LAYERS=16 MICRO="$HALF_MICRO" ACC=2 \
    COMPILE=1 STEPS=6 $PY -m torch.distributed.run --standalone --nproc-per-node 1 .bench/anchor_fsdp.py
fi
if [[ " $PHASES " == *" mesh "* ]]; then
  for variant in ${MESH_VARIANTS:-m8 m8+last cap3}; do
    envs=(); IFS=+ read -r -a parts <<< "$variant"
    for part in "${parts[@]}"; do
      case $part in  # later flags win (argparse keeps the last)
        m8) flags="--micro 8 --acc 2 --no-reshard --sdpa-backend cudnn --grad-sync every --reduce-dtype bfloat16" ;;
        cap[0-9]) flags="--micro ${part#cap} --acc 2 --sdpa-backend cudnn --grad-sync every --reduce-dtype bfloat16 --mem-cap-gib 80" ;;
        last) flags="$flags --grad-sync last" ;;
        keep) flags="$flags --no-reshard" ;;
        f32) flags="$flags --reduce-dtype float32" ;;
        eager) flags="$flags --eager-loss" ;;
        seq) flags="$flags --loss-weighting sequence" ;;
        nch[0-9]*) envs+=("NCCL_MAX_NCHANNELS=${part#nch}") ;;
        proto*) envs+=("NCCL_PROTO=${part#proto}") ;;
        b[0-9]*) flags="$flags --memory-budget ${part#b}" ;;
        acc[0-9]*) flags="$flags --acc ${part#acc}" ;;
        g[0-9]*) flags="$flags --gathered-layers ${part#g}" ;;
        u[0-9]*) flags="$flags --micro ${part#u}" ;;
        nocap) flags="$flags --mem-cap-gib 0" ;;
        *) echo "bench: unknown mesh variant part '$part'" >&2; exit 2 ;;
      esac
    done
    echo "== mesh: $MESH 1x2 $variant ($(date +%T), ${SECONDS}s used)"
    group "${MESH_LIMIT:-150}" "$DIR/p_mesh_$variant.log" env "${envs[@]}" $PY -m torch.distributed.run --standalone \
      --nproc-per-node 2 -m bench.bench_pretrain run --out "$DIR" --shape $MESH --steps "${MESH_STEPS:-8}" \
      --warmup "${MESH_WARMUP:-3}" $COMPILE $flags --profile 2 $([ "$variant" = "${MESH_TRACE:-}" ] && echo --trace) --name "p_mesh_$variant"
  done
  [ "${TINY:-0}" = 1 ] || [ "${MESH_ANCHOR:-1}" = 0 ] || group 120 "$DIR/a_mesh.log" env REPL=1 SHARD=2 MICRO=4 ACC=2 COMPILE=1 STEPS=4 \
    $PY -m torch.distributed.run --standalone --nproc-per-node 2 .bench/anchor_fsdp.py
fi
echo "== done ($(date +%T), ${SECONDS}s)"
$PY -m bench.summarize_speed single "$DIR" | tee "$DIR/summary.txt"
