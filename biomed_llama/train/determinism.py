"""`pretrain.deterministic`: bitwise-repeatable training steps on one kind of GPU.

Why a switch and not the default: on CUDA several backward kernels accumulate with atomics in whatever order
the threads arrive (the embedding's scatter-add, attention's dQ, split-K matmuls) and Inductor autotunes kernels
by timing them, so two runs of the same step differ by about one bf16 rounding of the weights. That is harmless
for training but hides a real resume bug behind noise: the kill-and-resume check (bench/e2e.sh) needs the
uninterrupted and the resumed run to agree bit for bit. The deterministic kernels are slower, and an op that has
none stops the run with torch's own error (`warn_only=False`): a check that silently ran a nondeterministic
kernel would prove nothing.
"""

from __future__ import annotations

import os

import torch

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
