"""The argv prefix that runs a command inside the job's container (`launch.container`).

The submitting side renders it (`biomed-llama launch`) and passes it to the Slurm job, so the sbatch
scripts carry no container logic of their own: they put this prefix in front of torchrun.
"""

from __future__ import annotations

from pathlib import Path

from biomed_llama.errors import ConfigError
from biomed_llama.launch.config import LaunchConfig


def container_prefix(cfg: LaunchConfig, *, workdir: Path, gpu: bool) -> list[str]:
    """`apptainer exec [--nv] --bind WORKDIR [--bind B…] --pwd WORKDIR IMAGE` for Apptainer; [] for `none`.

    `workdir` (the checkout) is mounted at the same path and is the working directory, so relative
    params paths mean the same inside; `gpu` adds the host's NVIDIA driver and devices (`--nv`).
    """
    if cfg.container == "none":
        return []
    if cfg.container == "apptainer":
        binds = [a for spec in [str(workdir), *cfg.binds] for a in ("--bind", spec)]
        return ["apptainer", "exec", *(["--nv"] if gpu else []), *binds, "--pwd", str(workdir), cfg.image]
    raise ConfigError(f"launch.container={cfg.container}: this build runs jobs with `none` or `apptainer` only")
