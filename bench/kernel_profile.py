"""Where a training step's GPU time goes: device time per kernel class from a `torch.profiler` trace of a few steps.

Used by `bench_pretrain.py run --profile N` after its timed steps (the trace does not slow the timing). The classes
answer "why this MFU": matrix multiplies (and the rate they reach), attention, the compiler's fused element-wise
kernels, other ATen kernels, the optimizer, collectives, copies; plus the wall time the GPU sat idle.

Kernel names are matched by substring, first class that matches wins, in this order (the names are the ones
CUDA 12–13 libraries use on Hopper: cuBLAS `nvjet_*` / `sm90_xmma_gemm_*`, cuDNN SDPA `cudnn_generated_*sdpa*`,
FlashAttention `flash_*`, memory-efficient `fmha_*`, inductor `triton_*`).
"""

from __future__ import annotations

from typing import Any

CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("collective", ("nccl",)),
    ("attention", ("flash", "fmha", "sdpa", "attention", "cudnn_generated")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "splitkreduce", "cublas")),
    ("optimizer", ("multi_tensor_apply", "fused_adam", "adamw", "foreach")),
    ("compiled fused", ("triton_",)),
    ("copy", ("memcpy", "memset", "copy_kernel", "cat_", "catarray")),
)


def kernel_class(name: str) -> str:
    """The class of a kernel by its name (see `CLASSES`); `other` when none matches."""
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) second intervals: time at least one kernel ran (streams overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def breakdown(kernels: list[tuple[str, float, float]], wall_s: float, matmul_flops: float) -> dict[str, Any]:
    """Summary of the (kernel name, start s, end s) events of a trace covering `wall_s` seconds of training.

    `matmul_flops`: the FLOPs the matrix multiplies of those steps must do (6·(N − embedding) per token), which
    with their device time gives the rate they ran at. Class shares are of the summed kernel time (kernels on
    different streams overlap, e.g. FSDP's copies beside compute); `idle_share` is of the wall time no kernel ran.
    """
    by_class: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for name, a, b in kernels:
        cls = kernel_class(name)
        by_class[cls] = by_class.get(cls, 0.0) + (b - a)
        by_name[name] = by_name.get(name, 0.0) + (b - a)
    summed = sum(by_class.values())
    busy = busy_seconds([(a, b) for _, a, b in kernels])
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:15]
    mm = by_class.get("matmul", 0.0)
    return {
        "wall_s": wall_s,
        "device_busy_s": busy,
        "kernel_sum_s": summed,
        "idle_share": max(0.0, 1.0 - busy / wall_s) if wall_s > 0 else None,
        "share_of_kernel_time": {k: v / summed for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])}
        if summed else {},
        "seconds": by_class,
        "matmul_share_of_wall": mm / wall_s if wall_s > 0 else None,
        "matmul_tflops": matmul_flops / mm / 1e12 if mm > 0 else None,
        "top_kernels": [{"name": n[:160], "s": s, "class": kernel_class(n)} for n, s in top],
    }


def device_kernels(prof) -> list[tuple[str, float, float]]:
    """(name, start s, end s) of every device-side kernel / copy of a finished `torch.profiler.profile`; the
    user annotations the trace also puts on the device timeline (e.g. `Optimizer.step#AdamW.step`) are left out,
    since they span kernels already counted."""
    from torch.autograd import DeviceType

    return [(e.name, e.time_range.start / 1e6, e.time_range.end / 1e6) for e in prof.events()
            if e.device_type == DeviceType.CUDA and not e.is_user_annotation and e.time_range.end > e.time_range.start]


def format_breakdown(b: dict[str, Any]) -> str:
    """A few readable lines of a `breakdown`."""
    shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in b["share_of_kernel_time"].items())
    rate = f"{b['matmul_tflops']:.0f} TFLOP/s" if b["matmul_tflops"] else "n/a"
    idle = f"{100 * b['idle_share']:.1f}%" if b["idle_share"] is not None else "n/a"
    lines = [f"wall {b['wall_s']:.3f} s: device busy {b['device_busy_s']:.3f} s (idle {idle}), kernel time summed "
             f"over streams {b['kernel_sum_s']:.3f} s; matmuls {100 * (b['matmul_share_of_wall'] or 0):.1f}% of "
             f"wall at {rate}",
             f"share of kernel time: {shares}"]
    lines += [f"  {k['s'] * 1e3:9.2f} ms  {k['class']:<14} {k['name']}" for k in b["top_kernels"]]
    return "\n".join(lines)
