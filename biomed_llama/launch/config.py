"""Params of how stages are launched (the `launch:` section): where training runs, which image every stage runs in."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel


class LaunchConfig(StrictModel):
    """Local `torchrun` or a Slurm batch job, and the mesh sizes the launch implies."""

    mode: Literal["local", "slurm"] = "local"
    """`local`: `torchrun --standalone` on this machine; `slurm`: a batch job of `scripts/slurm/<stage>.sbatch`, waited for."""
    nproc_per_node: int = Field(1, ge=1)
    """Worker processes per node started by torchrun: local mode's GPUs or CPU ranks (gloo); in Slurm mode
    the ranks per node of CPU-only nodes (`gpus_per_node: 0`)."""
    nnodes: int = Field(8, ge=1)
    """Slurm mode: nodes of the job; the mesh's `replicate` size (the paper: 8 nodes)."""
    gpus_per_node: int = Field(4, ge=0)
    """Slurm mode: GPUs per node, one rank each; the mesh's `shard` size (the paper: 4 × A100-80GB).
    0: CPU-only nodes, no GPU request, `nproc_per_node` ranks per node (gloo)."""
    cpus_per_task: int = Field(32, ge=1)
    """Slurm mode: CPU cores of the one task per node (data loading, torchrun, NCCL proxies)."""
    partition: str | None = None
    """Slurm partition (`--partition`); null = the cluster's default."""
    account: str | None = None
    """Slurm account to charge (`--account`); null = the user's default."""
    qos: str | None = None
    """Slurm quality of service (`--qos`); null = the default."""
    time: str = "48:00:00"
    """Wall-clock limit of one job (`--time`); longer runs continue in requeued jobs from the last checkpoint."""
    signal_seconds: int = Field(600, ge=0)
    """Send USR1 to the batch script this many seconds before the limit (`--signal=B:USR1@N`): checkpoint, requeue.
    0: no warning (`@0`); the job is then killed at its limit (SIGTERM, SIGKILL after the cluster's KillWait)."""
    shutdown_timeout: int = Field(480, ge=10)
    """Seconds torchrun gives the workers after forwarding USR1/TERM before it kills them (checkpoint time)."""
    requeue: bool = True
    """Requeue the job after the pre-limit checkpoint so training continues in the next allocation."""
    container: Literal["none", "apptainer", "podman"] = "none"
    """Where every stage runs (`biomed-llama launch STAGE`): `none` = this machine's environment;
    `apptainer` = `apptainer exec [--nv] … IMAGE`; `podman` = `podman run … IMAGE` (launch/container.py)."""
    require_locked_env: bool = False
    """Refuse to start a stage (exit 1, one line naming the packages) when the environment it would run in
    differs from its lock (`biomed-llama env check --allow-extra`: inside `image` when a container is set,
    else here). For clusters that run the image and want nothing else; off: a stage runs in whatever
    environment it finds and every manifest records that environment and its drift from the lock."""
    image: str = "biomed.sif"
    """The image: for Apptainer (and Slurm) the SIF file built by `make sif`, a path every node must
    see; for podman an image name, e.g. `localhost/biomed-llama:cpu` (built by `make image`)."""
    podman_conf: str | None = "containers/containers.conf"
    """containers.conf for `launch.container: podman` (CONTAINERS_CONF), relative to the checkout:
    the shipped file selects runc, cgroupfs and no default ulimits, which this project's machines
    need; null = podman's own configuration."""
    binds: list[str] = Field(default_factory=list)
    """Extra container bind mounts (`SRC[:DST[:OPTS]]`), e.g. the data and model folders; the checkout is always bound."""
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
    poll_seconds: float = Field(10.0, gt=0)
    """Slurm mode: seconds between two looks at the job's state (and its log) while `launch` waits for it."""
    extra_sbatch: list[str] = Field(default_factory=list)
    """Further sbatch options passed as given, e.g. `--constraint=a100` or `--exclusive`."""

    @property
    def ranks_per_node(self) -> int:
        """Slurm mode: torchrun workers per node (one per GPU; `nproc_per_node` on CPU-only nodes)."""
        return self.gpus_per_node or self.nproc_per_node

    @model_validator(mode="after")
    def _check(self) -> LaunchConfig:
        if self.signal_seconds and self.shutdown_timeout >= self.signal_seconds:
            raise ValueError(
                f"launch.shutdown_timeout ({self.shutdown_timeout}) must be below "
                f"launch.signal_seconds ({self.signal_seconds}): the checkpoint must end before the limit"
            )
        limit = time_limit_seconds(self.time)
        if limit is not None and self.signal_seconds and limit <= self.signal_seconds:
            # the warning would come at once, every requeued job would checkpoint at its start and requeue again
            raise ValueError(
                f"launch.time ({self.time} = {limit} s) must exceed launch.signal_seconds "
                f"({self.signal_seconds}): the warning comes that long before the limit"
            )
        return self


def time_limit_seconds(spec: str) -> int | None:
    """Seconds of a Slurm `--time` value (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`); None for unlimited.

    A malformed value is a ValueError naming the accepted forms.
    """
    text = spec.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"launch.time {spec!r}: expected M, M:S, H:M:S, D-H, D-H:M or D-H:M:S")
    days, first, b, c = m.groups()
    a = int(first)  # the one group the pattern always matches
    if days is not None:  # D-H[:M[:S]]
        return ((int(days) * 24 + a) * 60 + int(b or 0)) * 60 + int(c or 0)
    if c is not None:  # H:M:S (the pattern matches the third number only after a second)
        return (a * 60 + int(b or 0)) * 60 + int(c)
    return a * 60 + int(b or 0)  # M or M:S
