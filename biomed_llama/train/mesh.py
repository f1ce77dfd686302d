"""Process group and the 2-D (`replicate`, `shard`) device mesh.

Under `torchrun` the usual env vars (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) are set; a
plain `biomed-llama pretrain` without them runs as a world of one through an in-memory store.
GPUs use NCCL for tensors on the device and gloo for the small CPU-side collectives.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from biomed_llama.errors import ConfigError, UserError

# `pretrain.deterministic`: bitwise-repeatable steps on one kind of GPU. Why a switch and not the default: on CUDA
# several backward kernels accumulate with atomics in whatever order the threads arrive (the embedding's
# scatter-add, attention's dQ, split-K matmuls) and Inductor autotunes kernels by timing them, so two runs of the
# same step differ by about one bf16 rounding of the weights. Harmless for training, but it hides a real resume bug
# behind noise: the kill-and-resume check (bench/e2e.sh) needs the uninterrupted and the resumed run to agree bit
# for bit. The deterministic kernels are slower, and an op that has none stops the run with torch's own error
# (`warn_only=False`): a check that silently ran a nondeterministic kernel would prove nothing.
# cuBLAS picks its reduction split per workspace; a fixed workspace config makes it repeatable
# (https://docs.nvidia.com/cuda/cublas/#results-reproducibility). Read when the cuBLAS handle is created,
# so it must be in the environment before the first matmul on the GPU.
CUBLAS_WORKSPACE = ":4096:8"


def use_deterministic_kernels(enabled: bool) -> None:
    """Turn deterministic kernels on (or leave torch's defaults when `enabled` is false).

    Sets `CUBLAS_WORKSPACE_CONFIG` (unless the user set one), `torch.use_deterministic_algorithms(True)`,
    cuDNN's deterministic flag with its autotuner off, and Inductor's deterministic mode (no benchmark-chosen
    kernels whose numerics differ), where this torch has it."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    from torch._inductor import config as inductor_config

    if hasattr(inductor_config, "deterministic"):
        inductor_config.deterministic = True


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank/size, rank/size within its node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the one that logs, writes metrics and exports)."""
        return self.rank == 0


def pick_device(pref: str, local_rank: int) -> torch.device:
    """Resolve `auto|cpu|cuda` to this rank's device; `cuda` without a GPU is a UserError."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("pretrain.device=cuda but no CUDA GPU is visible")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto", timeout_min: int = 60) -> DistEnv:
    """Initialise the default process group (once) and return this rank's DistEnv."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = pick_device(device_pref, local_rank)
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=timeout_min)
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
        else:  # not under torchrun: a world of one, no network rendezvous
            if world != 1:
                raise UserError("WORLD_SIZE > 1 needs MASTER_ADDR/MASTER_PORT; launch with torchrun")
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, local_world, device)


def mesh_shape(world_size: int, local_world_size: int, shard_size: int | None) -> tuple[int, int]:
    """(replicate, shard) sizes: shard over `shard_size` ranks (default: one node), replicate the rest."""
    shard = shard_size or local_world_size
    if shard > world_size or world_size % shard:
        raise ConfigError(f"pretrain.shard_size={shard} does not divide the world size {world_size}")
    return world_size // shard, shard


def build_mesh(env: DistEnv, shard_size: int | None):
    """The 2-D DeviceMesh named (`replicate`, `shard`) that FSDP2 shards over (HSDP when replicate > 1)."""
    from torch.distributed.device_mesh import init_device_mesh

    shape = mesh_shape(env.world_size, env.local_world_size, shard_size)
    return init_device_mesh(env.device.type, shape, mesh_dim_names=("replicate", "shard"))


def all_reduce_cpu(values: list[float]) -> list[float]:
    """Sum a few numbers over all ranks through a CPU tensor (gloo; no GPU sync); without a process group, `values`."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def shutdown() -> None:
    """Destroy the default process group if one is up."""
    if dist.is_initialized():
        dist.destroy_process_group()
