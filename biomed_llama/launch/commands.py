"""Command lines of the training stages: local `torchrun --standalone` or a Slurm batch job.

`biomed-llama launch STAGE` (and so the DVC stages `pretrain`/`finetune`) calls `launch`; the
mode comes from params (`launch.mode`), so one DVC param switches a run between this machine and
the cluster. Building the command lines is kept apart from running them, for tests and `--dry-run`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from biomed_llama.errors import UserError
from biomed_llama.launch import slurm
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import container_prefix

STAGES = ("pretrain", "finetune")


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


def torchrun_command(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
                     extra: Sequence[str] = ()) -> Command:
    """Local mode: `torchrun --standalone --nproc-per-node N -m biomed_llama STAGE …`.

    torchrun is run as `python -m torch.distributed.run` with this interpreter, so the venv's
    torch is used even when its bin/ is not on PATH (DVC runs commands through a plain shell).
    """
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(cfg.nproc_per_node), "-m", "biomed_llama",
            *stage_args(stage, params, overrides, extra)]
    return Command(argv)


def job_torchrun(cfg: LaunchConfig, workdir: Path) -> list[str]:
    """How each node of the job starts torchrun: inside the container (the image's torchrun), or with
    this interpreter (`launch.container: none`; its venv must be at the same path on every node)."""
    prefix = container_prefix(cfg, workdir=workdir, gpu=cfg.gpus_per_node > 0)
    return [*prefix, "torchrun"] if prefix else [sys.executable, "-m", "torch.distributed.run"]


def sbatch_command(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
                   extra: Sequence[str] = (), workdir: Path | None = None) -> Command:
    """Slurm mode: `sbatch --parsable … scripts/slurm/STAGE.sbatch --set …` plus the BIOMED_* variables.

    Sizes and limits go as sbatch options (they override the script's #SBATCH defaults); what the
    script needs inside the job goes as environment (sbatch exports the submitting environment),
    the torchrun command of a node (container prefix included) as one shell-quoted variable.
    """
    stage_args(stage, params, overrides)  # validates the stage name
    opts = [f"--job-name=biomed-{stage}", f"--nodes={cfg.nnodes}", "--ntasks-per-node=1",
            f"--gpus-per-node={cfg.gpus_per_node}", f"--cpus-per-task={cfg.cpus_per_task}",
            f"--time={cfg.time}", f"--signal=B:USR1@{cfg.signal_seconds}",
            "--requeue" if cfg.requeue else "--no-requeue", "--open-mode=append",
            f"--output={cfg.log_dir}/%x-%j.out"]
    opts += [f"--{k}={v}" for k, v in (("partition", cfg.partition), ("account", cfg.account),
                                          ("qos", cfg.qos)) if v]
    script = str(Path(cfg.sbatch_dir) / f"{stage}.sbatch")
    argv = ["sbatch", "--parsable", *opts, *cfg.extra_sbatch, script,
            *(a for o in overrides for a in ("--set", o)), *extra]  # the script passes them to the stage
    env = {"BIOMED_TORCHRUN": shlex.join(job_torchrun(cfg, workdir or Path.cwd())), "BIOMED_PARAMS": str(params),
           "BIOMED_RANKS_PER_NODE": str(cfg.ranks_per_node), "BIOMED_RDZV_PORT": str(cfg.rdzv_port),
           "BIOMED_SHUTDOWN_TIMEOUT": str(cfg.shutdown_timeout), "BIOMED_REQUEUE": "1" if cfg.requeue else "0",
           "BIOMED_SHARD_PARAM": cfg.shard_param.get(stage, ""), "NCCL_DEBUG": cfg.nccl_debug}
    return Command(argv, env)


def job_log(cfg: LaunchConfig, stage: str, job_id: str) -> Path:
    """The job's log file (`--output={log_dir}/%x-%j.out`), appended to across requeues."""
    return Path(cfg.log_dir) / f"biomed-{stage}-{job_id}.out"


def build(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
          extra: Sequence[str] = ()) -> Command:
    """The command of `cfg.mode` for `stage`; `extra` arguments follow the stage's own (e.g. `--mode task`)."""
    make = torchrun_command if cfg.mode == "local" else sbatch_command
    return make(cfg, stage, params, overrides, extra)


def launch(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
           extra: Sequence[str] = ()) -> int:
    """Run `stage` as `cfg.mode` says and return its exit status (0 only when it finished).

    Local mode runs torchrun's agent in this process (`launch/local.py`: signals from DVC or the
    shell reach it directly, its workers die with it, a failure is one line with the stage's own
    exit code). Slurm mode checks the submission host, submits, then follows the job's log and
    waits for its final state across requeues; an interrupt (Ctrl-C) cancels the job.
    """
    cmd = build(cfg, stage, params, overrides, extra)
    if cfg.mode == "local":
        from biomed_llama.launch.local import run_torchrun

        return run_torchrun(cmd.argv, cmd.env, stage)
    if shutil.which("sbatch") is None:
        raise UserError("launch.mode=slurm: sbatch not found; run on a Slurm login node or set launch.mode=local")
    if cfg.container == "apptainer" and not Path(cfg.image).is_file():
        raise UserError(f"launch.image {cfg.image} not found; build it with `make sif` or pull it (README: Full reproduction on a cluster)")
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)  # Slurm does not create the log folder
    job_id = slurm.submit(cmd.argv, {**os.environ, **cmd.env})
    log = job_log(cfg, stage, job_id)
    print(f"launch: submitted {stage} as Slurm job {job_id} ({cfg.nnodes} nodes × {cfg.ranks_per_node} ranks); "
          f"log {log}", file=sys.stderr)
    try:
        job = slurm.wait_for_job(job_id, cfg.poll_seconds, log)
    except KeyboardInterrupt:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
        raise UserError(f"launch: interrupted; cancelled Slurm job {job_id}") from None
    return slurm.outcome(stage, job, log)
