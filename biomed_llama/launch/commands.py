"""Command lines of the stages: here (`torchrun --standalone` for training on several ranks, `python -m
biomed_llama` for the others and for one rank) or, for the training stages, a Slurm batch job.

`biomed-llama launch STAGE` (every DVC stage's command) calls `launch`. The params choose how:
`launch.mode` switches the training stages between this machine and the cluster, and
`launch.container` runs any local stage inside the image (launch/container.py). Building the
command lines is kept apart from running them, for tests and `--dry-run`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biomed_llama.env_check import require_locked
from biomed_llama.errors import UserError
from biomed_llama.launch import slurm
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import container_prefix
from biomed_llama.launch.local import TORCHRUN_MODULE, run_torchrun

# Training stages run under torchrun (one process per GPU; one rank: the stage's own process) or Slurm; the others
# are one process.
TRAIN_STAGES = ("pretrain", "finetune")
DATA_STAGES = ("extract", "tokenize", "instruct-mix", "prepare-eval", "contamination", "evaluate")
STAGES = TRAIN_STAGES + DATA_STAGES
# Stages that use a GPU when the machine has one (the container then gets it: --nv / CDI).
GPU_STAGES = ("pretrain", "finetune", "evaluate")


@dataclass(frozen=True)
class Command:
    """A command line and the environment variables it adds to the current environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def stage_args(stage: str, params: str | Path, overrides: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """`STAGE --params P --set … EXTRA…`: the stage command every rank runs (overrides and extra args passed on unchanged)."""
    if stage not in STAGES:
        raise UserError(f"launch: unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return [stage, "--params", str(params), *(a for o in overrides for a in ("--set", o)), *extra]


def host_has_gpu() -> bool:
    """Whether this machine has an NVIDIA driver loaded (its control device exists)."""
    return Path("/dev/nvidiactl").exists()


def torchrun_command(
    cfg: LaunchConfig,
    stage: str,
    params: str | Path,
    overrides: Sequence[str] = (),
    extra: Sequence[str] = (),
    *,
    workdir: Path | None = None,
) -> Command:
    """Local mode: `torchrun --standalone --nproc-per-node N -m biomed_llama STAGE …` for a training
    stage of N > 1 ranks, `python -m biomed_llama STAGE …` for the others; inside `launch.container`'s image if set.

    Python runs as this interpreter, so the venv's torch is used even when its bin/ is not on PATH
    (DVC runs commands through a plain shell); inside an image it is the image's `python`.

    One rank (`nproc_per_node: 1`) runs the stage as one process, without torchrun: the stage then makes its
    own world of one (`train/mesh.py`, an in-process store, no rendezvous) and computes exactly what the
    torchrun worker would. torchrun's agent would be a second process that imports torch and opens a TCP
    rendezvous before the worker starts: 1.5 s of a tiny 2-step `launch pretrain` on a 2-core CPU machine
    (6.2 s -> 4.7 s); a stage pays it once, the paper profile nine times on one GPU (not yet measured there).
    """
    args = stage_args(stage, params, overrides, extra)
    prefix = container_prefix(cfg, workdir=workdir or Path.cwd(), gpu=stage in GPU_STAGES and host_has_gpu())
    python = "python" if prefix else sys.executable
    if stage in TRAIN_STAGES and cfg.nproc_per_node > 1:
        argv = [
            python,
            "-m",
            TORCHRUN_MODULE,
            "--standalone",
            "--nproc-per-node",
            str(cfg.nproc_per_node),
            "-m",
            "biomed_llama",
            *args,
        ]
    else:
        argv = [python, "-m", "biomed_llama", *args]
    return Command([*prefix, *argv])


def job_torchrun(cfg: LaunchConfig, workdir: Path) -> list[str]:
    """How each node of the job starts torchrun: inside the container (the image's torchrun), or with
    this interpreter (`launch.container: none`; its venv must be at the same path on every node)."""
    prefix = container_prefix(cfg, workdir=workdir, gpu=cfg.gpus_per_node > 0)
    return [*prefix, "torchrun"] if prefix else [sys.executable, "-m", TORCHRUN_MODULE]


def sbatch_command(
    cfg: LaunchConfig,
    stage: str,
    params: str | Path,
    overrides: Sequence[str] = (),
    extra: Sequence[str] = (),
    workdir: Path | None = None,
) -> Command:
    """Slurm mode: `sbatch --parsable … scripts/slurm/STAGE.sbatch --set …` plus the BIOMED_* variables.

    Sizes and limits go as sbatch options (they override the script's #SBATCH defaults); what the
    script needs inside the job goes as environment (sbatch exports the submitting environment),
    the torchrun command of a node (container prefix included) as one shell-quoted variable.
    """
    stage_args(stage, params, overrides)  # validates the stage name
    opts = [
        f"--job-name=biomed-{stage}",
        f"--nodes={cfg.nnodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={cfg.gpus_per_node}",
        f"--cpus-per-task={cfg.cpus_per_task}",
        f"--time={cfg.time}",
        f"--signal=B:USR1@{cfg.signal_seconds}",
        "--requeue" if cfg.requeue else "--no-requeue",
        "--open-mode=append",
        f"--output={cfg.log_dir}/%x-%j.out",
    ]
    opts += [f"--{k}={v}" for k, v in (("partition", cfg.partition), ("account", cfg.account), ("qos", cfg.qos)) if v]
    script = str(Path(cfg.sbatch_dir) / f"{stage}.sbatch")
    argv = [
        "sbatch",
        "--parsable",
        *opts,
        *cfg.extra_sbatch,
        script,
        *(a for o in overrides for a in ("--set", o)),
        *extra,
    ]  # the script passes them to the stage
    env = {
        "BIOMED_TORCHRUN": shlex.join(job_torchrun(cfg, workdir or Path.cwd())),
        "BIOMED_PARAMS": str(params),
        "BIOMED_RANKS_PER_NODE": str(cfg.ranks_per_node),
        "BIOMED_RDZV_PORT": str(cfg.rdzv_port),
        "BIOMED_SHUTDOWN_TIMEOUT": str(cfg.shutdown_timeout),
        "BIOMED_REQUEUE": "1" if cfg.requeue else "0",
        "BIOMED_SHARD_PARAM": cfg.shard_param.get(stage, ""),
        "NCCL_DEBUG": cfg.nccl_debug,
    }
    return Command(argv, env)


def job_log(cfg: LaunchConfig, stage: str, job_id: str) -> Path:
    """The job's log file (`--output={log_dir}/%x-%j.out`), appended to across requeues."""
    return Path(cfg.log_dir) / f"biomed-{stage}-{job_id}.out"


def build(
    cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (), extra: Sequence[str] = ()
) -> Command:
    """The command of `cfg.mode` for `stage`; `extra` arguments follow the stage's own (e.g. `--mode task`).

    Only training stages go to Slurm; the others always run here (inside the image if one is set).
    """
    make = sbatch_command if cfg.mode == "slurm" and stage in TRAIN_STAGES else torchrun_command
    return make(cfg, stage, params, overrides, extra)


def require_container(cfg: LaunchConfig) -> None:
    """One-line UserError unless `launch.container`'s runtime and image are there (nothing for `none`)."""
    if cfg.container == "none":
        return
    if shutil.which(cfg.container) is None:
        hint = (
            "apt-get install podman runc" if cfg.container == "podman" else "see README: Full reproduction on a cluster"
        )
        raise UserError(
            f"launch.container={cfg.container}: {cfg.container} not found ({hint}), or set launch.container: none"
        )
    if cfg.container == "apptainer":
        found = Path(cfg.image).is_file()
    else:
        env = {**os.environ, **({"CONTAINERS_CONF": str(Path(cfg.podman_conf).resolve())} if cfg.podman_conf else {})}
        found = subprocess.run(["podman", "image", "exists", cfg.image], env=env).returncode == 0
    if not found:
        build_with = "make sif" if cfg.container == "apptainer" else "make image"
        raise UserError(f"launch.image {cfg.image} not found for {cfg.container}; build it with `{build_with}`")


def require_locked_env(cfg: LaunchConfig, stage: str) -> None:
    """`launch.require_locked_env`: refuse (one line) unless the environment `stage` runs in matches its lock.

    Without a container that is this process's environment; with one it is the image's, so the check
    runs there (`biomed-llama env check --allow-extra` through the same prefix as the stage). Slurm mode
    checks on the submission host: with the image, the same image the nodes run.
    """
    if not cfg.require_locked_env:
        return
    if cfg.container == "none":
        require_locked()
        return
    prefix = container_prefix(cfg, workdir=Path.cwd(), gpu=False)
    done = subprocess.run([*prefix, "biomed-llama", "env", "check", "--allow-extra"], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UserError(
            f"launch.require_locked_env: {stage} not started: inside {cfg.image}, {why}; "
            f"or set launch.require_locked_env: false"
        )


def launch(
    cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (), extra: Sequence[str] = ()
) -> int:
    """Run `stage` as `cfg.mode` says and return its exit status (0 only when it finished).

    A training stage of several ranks run here without a container runs torchrun's agent in this process
    (`launch/local.py`: signals from DVC or the shell reach it directly, its workers die with it, a
    failure is one line with the stage's own exit code). Any other local stage (a training stage of one
    rank among them: it prints its own one line and exit code), and a training stage inside
    `launch.container`'s image, replaces this process with its command (the stage, or the
    container runtime that starts it). Slurm mode checks the submission host, submits, then follows
    the job's log and waits for its final state across requeues; an interrupt (Ctrl-C) cancels the job.
    """
    cmd = build(cfg, stage, params, overrides, extra)
    if cmd.argv[0] != "sbatch":
        require_container(cfg)
        require_locked_env(cfg, stage)
        if TORCHRUN_MODULE in cmd.argv and cfg.container == "none":
            return run_torchrun(cmd.argv, cmd.env, stage)
        os.execvpe(cmd.argv[0], cmd.argv, {**os.environ, **cmd.env})
    if shutil.which("sbatch") is None:
        raise UserError("launch.mode=slurm: sbatch not found; run on a Slurm login node or set launch.mode=local")
    if cfg.container == "apptainer" and not Path(cfg.image).is_file():
        raise UserError(
            f"launch.image {cfg.image} not found; build it with `make sif` or pull it (README: Full reproduction on a cluster)"
        )
    require_locked_env(cfg, stage)
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)  # Slurm does not create the log folder
    job_id = slurm.submit(cmd.argv, {**os.environ, **cmd.env})
    log = job_log(cfg, stage, job_id)
    print(
        f"launch: submitted {stage} as Slurm job {job_id} ({cfg.nnodes} nodes × {cfg.ranks_per_node} ranks); log {log}",
        file=sys.stderr,
    )
    try:
        job = slurm.wait_for_job(job_id, cfg.poll_seconds, log)
    except KeyboardInterrupt:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
        raise UserError(f"launch: interrupted; cancelled Slurm job {job_id}") from None
    return slurm.outcome(stage, job, log)
