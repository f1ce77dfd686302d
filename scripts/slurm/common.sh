# shellcheck shell=bash
# Shared body of pretrain.sbatch and finetune.sbatch (sourced, never run by itself).
#
# One Slurm task per node; each task runs `$BIOMED_TORCHRUN …`, and the torchrun agents meet at a
# c10d rendezvous on the job's first node. Mesh: replicate = nodes, shard = ranks of a node (FSDP2
# shards inside a node, replicates across nodes).
#
# Inputs (environment; `biomed-llama launch STAGE` sets them from params.yaml's `launch:`):
#   BIOMED_TORCHRUN       how a node starts torchrun, shell-quoted: the container prefix (if any) and
#                         torchrun, e.g. `apptainer exec --nv --bind … biomed.sif torchrun`,
#                         `env CONTAINERS_CONF=… podman run --rm --network host --pid host … IMAGE torchrun`
#                         or `/shared/checkout/.venv/bin/python -m torch.distributed.run` (default torchrun)
#   BIOMED_PARAMS         params file                               (default params.yaml)
#   BIOMED_RANKS_PER_NODE ranks per node (default $SLURM_GPUS_ON_NODE, else 1)
#   BIOMED_RDZV_PORT      rendezvous port on the first node        (default 29500)
#   BIOMED_SHARD_PARAM    param that gets the shard size, e.g. pretrain.shard_size (empty: none)
#   BIOMED_SHUTDOWN_TIMEOUT  seconds workers get to checkpoint after USR1 (default 480)
#   BIOMED_REQUEUE        1: requeue the job after the pre-limit checkpoint (default 1)
#   BIOMED_DRY_RUN        non-empty: print the srun command line and exit (tests, debugging)
# Arguments after the script name go to the stage command (e.g. --set pretrain.optim.lr=1e-5).
#
# NCCL: the image carries NCCL (the nvidia-nccl wheel of the lock) and the InfiniBand verbs
# libraries (libibverbs1, ibverbs-providers, librdmacm1); apptainer passes the host's /dev and
# these variables into the container. NCCL_DEBUG=INFO prints the transport chosen ("NET/IB" when
# InfiniBand is used, "NET/Socket" when it fell back to TCP). Set NCCL_IB_HCA (e.g. mlx5) or
# NCCL_SOCKET_IFNAME (e.g. ib0, eth0) before sbatch where the cluster's docs ask for them; they
# are passed through unchanged.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}

# The srun … torchrun command line of one stage, into the array BIOMED_CMD.
biomed_build_command() {
    local stage=$1
    shift
    local params=${BIOMED_PARAMS:-params.yaml}
    local ranks=${BIOMED_RANKS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
    local port=${BIOMED_RDZV_PORT:-29500}
    local grace=${BIOMED_SHUTDOWN_TIMEOUT:-480}
    local nnodes=${SLURM_NNODES:?run this inside a Slurm job (sbatch)}
    local cpus=${SLURM_CPUS_PER_TASK:-1}
    # USR1 is forwarded to the workers (checkpoint before the limit), not only the default four.
    local signals=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
    local head
    head=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?}" | head -n 1)
    # The launcher quoted it with Python's shlex.join (POSIX shell words): eval rebuilds the words.
    local torchrun=()
    eval "torchrun=(${BIOMED_TORCHRUN:-torchrun})"
    local mesh=()
    if [[ -n ${BIOMED_SHARD_PARAM:-} ]]; then
        mesh=(--set "$BIOMED_SHARD_PARAM=$ranks")
    fi
    # The node's cores shared by its ranks (torchrun would set 1 thread per worker otherwise).
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cpus / ranks > 0 ? cpus / ranks : 1))}
    # Each node's task first logs where it runs and how (the container prefix, or the venv's
    # python), then execs torchrun, so srun's signals reach the same pid (podman, which passes
    # them on to torchrun inside its container).
    # shellcheck disable=SC2016  # the node's shell expands these, not this one
    local announce='echo "biomed-llama: node $SLURMD_NODENAME task $SLURM_PROCID runs: ${BIOMED_TORCHRUN:-torchrun}" >&2; exec "$@"'
    # srun does not inherit the job's --cpus-per-task (Slurm ≥ 22.05): pass it on explicitly.
    BIOMED_CMD=(srun --nodes "$nnodes" --ntasks-per-node 1 --cpus-per-task "$cpus"
        --kill-on-bad-exit=1 --cpu-bind=none bash -c "$announce" biomed-node
        "${torchrun[@]}" --nnodes "$nnodes" --nproc-per-node "$ranks"
        --rdzv-backend c10d --rdzv-endpoint "$head:$port" --rdzv-id "${SLURM_JOB_ID:?}"
        --signals-to-handle "$signals" --shutdown-timeout "$grace"
        -m biomed_llama "$stage" --params "$params" "${mesh[@]}" "$@")
}

# USR1 reaches the batch shell ${launch.signal_seconds} before the time limit (--signal=B:USR1@N),
# or by hand with `scancel --batch --signal=USR1 JOB`: forward it to the job step (srun → torchrun
# → workers, which save a checkpoint and exit) and requeue the job once the step has ended.
biomed_on_usr1() {
    echo "biomed-llama: USR1 at $(date -u +%FT%TZ): checkpointing (job $SLURM_JOB_ID)" >&2
    BIOMED_REQUEUE_NOW=1
    if [[ -n $BIOMED_STEP_PID ]]; then
        kill -USR1 "$BIOMED_STEP_PID" 2>/dev/null || true
    fi
}

# Run a stage: build the command, run the step in the background so the trap can fire, wait for
# it (wait returns early on a trapped signal, so wait again), then requeue if USR1 came and the
# stage did not finish.
biomed_run_stage() {
    biomed_build_command "$@"
    if [[ -n ${BIOMED_DRY_RUN:-} ]]; then
        printf '%q ' "${BIOMED_CMD[@]}"
        printf '\n'
        return 0
    fi
    echo "biomed-llama: job $SLURM_JOB_ID start $(date -u +%FT%TZ) restart ${SLURM_RESTART_COUNT:-0}" \
        "on $SLURM_JOB_NODELIST: $1" >&2
    BIOMED_REQUEUE_NOW=0
    BIOMED_STEP_PID=
    trap biomed_on_usr1 USR1
    "${BIOMED_CMD[@]}" &
    BIOMED_STEP_PID=$!
    local rc=0
    while true; do
        wait "$BIOMED_STEP_PID" && rc=0 || rc=$?
        kill -0 "$BIOMED_STEP_PID" 2>/dev/null || break
    done
    if [[ $rc != 0 && $BIOMED_REQUEUE_NOW == 1 && ${BIOMED_REQUEUE:-1} == 1 ]]; then
        echo "biomed-llama: step ended (exit $rc) after USR1; requeueing job $SLURM_JOB_ID" >&2
        scontrol requeue "$SLURM_JOB_ID"
        return 0
    fi
    echo "biomed-llama: job $SLURM_JOB_ID step ended, exit $rc" >&2
    return "$rc"
}
