"""The one GPU memory cap of the bench runs: an 80 GB card's budget on a bigger one.

Two ways in, one helper: `python -m bench.bench_pretrain run --mem-cap-gib G` calls `cap_gpu_memory` in its own
process; the real CLI under torchrun gets it from `sitecustomize.py` beside this file (bench/lib.sh `capped`
puts this folder on PYTHONPATH), which calls `cap_from_env` in every worker before the CLI starts.
`torch.cuda.set_per_process_memory_fraction` makes the caching allocator fail (after freeing its cache) past
the cap, as a smaller card would.
"""

from __future__ import annotations

import os

ENV = "BIOMED_MEM_CAP_GIB"
"""The environment variable `cap_from_env` reads: the cap in GiB per GPU (unset or empty: no cap)."""


def cap_fraction(gib: float, total_bytes: int) -> float:
    """The share of a card of `total_bytes` that `gib` GiB is (1.0 when the card is not bigger than the cap)."""
    return min(1.0, gib * 2**30 / total_bytes)


def cap_gpu_memory(gib: float, device) -> None:
    """Cap this process's memory on CUDA `device` (an index or a torch.device) at `gib` GiB."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(cap_fraction(gib, total), device)


def cap_from_env() -> None:
    """In a torchrun worker (LOCAL_RANK set) with `BIOMED_MEM_CAP_GIB` set and CUDA present: cap its GPU."""
    if os.environ.get(ENV) and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            cap_gpu_memory(float(os.environ[ENV]), int(os.environ["LOCAL_RANK"]))
