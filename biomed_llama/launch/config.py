"""Params of how stages are launched (the `launch:` section): where training runs, which image every stage runs in."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel


class LaunchConfig(StrictModel):
    """Local `torchrun` or Slurm `sbatch --wait`, and the mesh sizes the launch implies."""

    mode: Literal["local", "slurm"] = "local"
    """`local`: `torchrun --standalone` on this machine; `slurm`: `sbatch --wait scripts/slurm/<stage>.sbatch`."""
    nproc_per_node: int = Field(1, ge=1)
    """Local mode: worker processes (GPUs, or CPU ranks with gloo) started by torchrun."""
    nnodes: int = Field(8, ge=1)
    """Slurm mode: nodes of the job; the mesh's `replicate` size (the paper: 8 nodes)."""
    gpus_per_node: int = Field(4, ge=1)
    """Slurm mode: GPUs per node, one rank each; the mesh's `shard` size (the paper: 4 × A100-80GB)."""
    cpus_per_task: int = Field(32, ge=1)
    """Slurm mode: CPU cores of the one task per node (data loading, torchrun, NCCL proxies)."""
    partition: Optional[str] = None
    """Slurm partition (`--partition`); null = the cluster's default."""
    account: Optional[str] = None
    """Slurm account to charge (`--account`); null = the user's default."""
    qos: Optional[str] = None
    """Slurm quality of service (`--qos`); null = the default."""
    time: str = "48:00:00"
    """Wall-clock limit of one job (`--time`); longer runs continue in requeued jobs from the last checkpoint."""
    signal_seconds: int = Field(600, ge=60)
    """Send USR1 to the batch script this many seconds before the limit (`--signal=B:USR1@N`): checkpoint, requeue."""
    shutdown_timeout: int = Field(480, ge=10)
    """Seconds torchrun gives the workers after forwarding USR1/TERM before it kills them (checkpoint time)."""
    requeue: bool = True
    """Requeue the job after the pre-limit checkpoint so training continues in the next allocation."""
    container: Literal["none", "apptainer", "podman"] = "none"
    """Where every stage runs (`biomed-llama launch STAGE`): `none` = this machine's environment;
    `apptainer` = `apptainer exec [--nv] … IMAGE`; `podman` = `podman run … IMAGE` (launch/container.py)."""
    image: str = "biomed.sif"
    """The image: for Apptainer (and Slurm) the SIF file built by `make sif`, a path every node must
    see; for podman an image name, e.g. `localhost/biomed-llama:cpu` (built by `make image`)."""
    podman_conf: Optional[str] = "containers/containers.conf"
    """containers.conf for `launch.container: podman` (CONTAINERS_CONF), relative to the checkout:
    the shipped file selects runc, cgroupfs and no default ulimits, which this project's machines
    need; null = podman's own configuration."""
    binds: list[str] = Field(default_factory=list)
    """Extra `apptainer --bind` specs (`SRC[:DST[:OPTS]]`), e.g. the data and model folders; the checkout is always bound."""
    rdzv_port: int = Field(29500, ge=1024, le=65535)
    """TCP port of the c10d rendezvous on the first node of the job."""
    nccl_debug: Literal["VERSION", "WARN", "INFO", "TRACE"] = "WARN"
    """`NCCL_DEBUG` inside the job (INFO shows the transports chosen, e.g. whether InfiniBand is used)."""
    sbatch_dir: str = "scripts/slurm"
    """Folder of the `<stage>.sbatch` scripts."""
    log_dir: str = "logs/slurm"
    """Folder of the job logs (`<job-name>-<job-id>.out`, appended across requeues)."""
    shard_param: dict[str, str] = Field(default_factory=lambda: {"pretrain": "pretrain.shard_size"})
    """Per stage, the param that receives the mesh's `shard` size (GPUs per node) as `--set KEY=G`;
    a stage without an entry uses its trainer's default (one node's GPUs), which is the same mesh."""
    extra_sbatch: list[str] = Field(default_factory=list)
    """Further sbatch options passed as given, e.g. `--constraint=a100` or `--exclusive`."""

    @model_validator(mode="after")
    def _check(self) -> "LaunchConfig":
        if self.shutdown_timeout >= self.signal_seconds:
            raise ValueError(f"launch.shutdown_timeout ({self.shutdown_timeout}) must be below "
                             f"launch.signal_seconds ({self.signal_seconds}): the checkpoint must end before the limit")
        return self
