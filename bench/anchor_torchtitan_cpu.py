"""CPU smoke run of the torchtitan anchor (bench/anchor_torchtitan.py): its whole training loop at a tiny width.

torchtitan 0.3.0 is written for accelerators: its device helpers name "cuda" when no accelerator is there, and
FlexAttention has no backward on the CPU. This run points those helpers at the CPU, replaces the device memory
monitor, the process-group timeout barrier and the flex kernel (by causal SDPA: the one-document block mask is
causal), then runs the anchor's `main` as the GPU machine does: config parsing, the run-time flavour, FSDP2 on a
world of one (gloo), init, the synthetic loader, the chunked loss, AdamW, the timed steps and the JSON row.
Nothing here is a speed figure. Needs torchtitan and its imports installed (bench/device_wheels.sh lists them):

    TITAN_LAYERS=2 TITAN_MICRO=2 TITAN_ACC=2 TITAN_STEPS=5 TITAN_WARMUP=2 TITAN_COMPILE=0 TITAN_CUDA_GRAPHS=0 \
        torchrun --standalone --nproc-per-node 1 -m bench.anchor_torchtitan_cpu
"""

from __future__ import annotations

import sys

import torch


def _point_torchtitan_at_the_cpu() -> None:
    from torchtitan.tools import utils

    # first, before the modules that read them at import time
    utils.device_type, utils.device_module = "cpu", torch.cpu
    utils.get_local_device = lambda: torch.device("cpu")
    import torchtitan.components.metrics as metrics
    import torchtitan.distributed.utils as dist_utils
    from torchtitan.models.common.attention import FlexAttention

    dist_utils.set_pg_timeouts = lambda *args, **kwargs: None  # a barrier with CUDA device ids

    class CpuMemory:
        device_name = "cpu"

        def get_peak_stats(self):
            return metrics.DeviceMemStats(*([0] * len(metrics.DeviceMemStats._fields)))

        def reset_peak_stats(self) -> None:
            pass

    metrics.build_device_memory_monitor = CpuMemory

    def causal_sdpa(q, k, v, *, score_mod, block_mask, scale, enable_gqa, return_aux, kernel_options):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale), None

    FlexAttention.compiled_flex_attn = staticmethod(causal_sdpa)
    for name in ("synchronize", "reset_peak_memory_stats"):
        setattr(torch.cuda, name, lambda *args: None)
    torch.cuda.max_memory_allocated = torch.cuda.max_memory_reserved = lambda *args: 0
    torch.cuda.get_device_name = lambda *args: "cpu"


if __name__ == "__main__":
    _point_torchtitan_at_the_cpu()
    from bench import anchor_torchtitan

    anchor_torchtitan.SHAPE.update(dim=256, n_heads=4, vocab=512, seq=128, multiple_of=64)
    sys.argv = [sys.argv[0], "--training.mixed_precision_param", "float32"]
    anchor_torchtitan.main()
