"""Command lines of the training stages: local `torchrun --standalone` or Slurm `sbatch --wait`.

`biomed-llama launch STAGE` (and so the DVC stages `pretrain`/`finetune`) calls `launch`; the
mode comes from params (`launch.mode`), so one DVC param switches a run between this machine and
the cluster. Building the command lines is kept apart from running them, for tests and `--dry-run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from biomed_llama.errors import UserError
from biomed_llama.launch.config import LaunchConfig

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


def sbatch_command(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
                   extra: Sequence[str] = ()) -> Command:
    """Slurm mode: `sbatch --wait … scripts/slurm/STAGE.sbatch --set …` plus the BIOMED_* variables.

    Sizes and limits go as sbatch options (they override the script's #SBATCH defaults); what the
    script needs inside the job goes as environment (sbatch exports the submitting environment).
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
    argv = ["sbatch", "--wait", *opts, *cfg.extra_sbatch, script,
            *(a for o in overrides for a in ("--set", o)), *extra]  # the script passes them to the stage
    env = {"BIOMED_SIF": cfg.image, "BIOMED_PARAMS": str(params),
           "BIOMED_GPUS_PER_NODE": str(cfg.gpus_per_node), "BIOMED_BINDS": ",".join(cfg.binds),
           "BIOMED_RDZV_PORT": str(cfg.rdzv_port), "BIOMED_SHUTDOWN_TIMEOUT": str(cfg.shutdown_timeout),
           "BIOMED_REQUEUE": "1" if cfg.requeue else "0",
           "BIOMED_SHARD_PARAM": cfg.shard_param.get(stage, ""), "NCCL_DEBUG": cfg.nccl_debug}
    return Command(argv, env)


def build(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
          extra: Sequence[str] = ()) -> Command:
    """The command of `cfg.mode` for `stage`; `extra` arguments follow the stage's own (e.g. `--mode task`)."""
    make = torchrun_command if cfg.mode == "local" else sbatch_command
    return make(cfg, stage, params, overrides, extra)


def launch(cfg: LaunchConfig, stage: str, params: str | Path, overrides: Sequence[str] = (),
           extra: Sequence[str] = ()) -> int:
    """Run `stage` as `cfg.mode` says and return its exit status.

    Local mode replaces this process with torchrun (signals from DVC or the shell reach it
    directly). Slurm mode checks the submission host first, then waits for the job to end.
    """
    cmd = build(cfg, stage, params, overrides, extra)
    if cfg.mode == "local":
        os.execve(cmd.argv[0], cmd.argv, {**os.environ, **cmd.env})
    if shutil.which("sbatch") is None:
        raise UserError("launch.mode=slurm: sbatch not found; run on a Slurm login node or set launch.mode=local")
    if not Path(cfg.image).is_file():
        raise UserError(f"launch.image {cfg.image} not found; build it with `make sif` or pull it (README: Full reproduction on a cluster)")
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)  # Slurm does not create the log folder
    return subprocess.run(cmd.argv, env={**os.environ, **cmd.env}).returncode
