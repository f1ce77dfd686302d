"""Where a training step's GPU time goes: device time per kernel class from a `torch.profiler` trace of a few steps.

Used by `bench_pretrain.py run --profile N` after its timed steps (the trace does not slow the timing). The classes
answer "why this MFU": matrix multiplies (and the rate they reach), attention, the compiler's fused element-wise
kernels, other ATen kernels, the optimizer, the other multi-tensor (`foreach`) kernels (mostly FSDP's copies into
each all-gather's input), collectives, copies; plus the wall time the GPU sat idle, the longest idle gaps, and on a
mesh how much of the collectives' time is exposed and what running beside them costs the matmuls.

Kernel names are matched by substring, first class that matches wins, in this order (the names are the ones
CUDA 12–13 libraries use on Hopper: cuBLAS `nvjet_*` / `sm90_xmma_gemm_*`, cuDNN SDPA `cudnn_generated_*sdpa*`,
FlashAttention `flash_*`, memory-efficient `fmha_*`, inductor `triton_*`).
"""

from __future__ import annotations

import bisect
import functools
from typing import Any

CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("collective", ("nccl",)),
    ("attention", ("flash", "fmha", "sdpa", "attention", "cudnn_generated")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "splitkreduce", "cublas")),
    # the fused AdamW (`FusedAdamMathFunctor` over `FusedOptimizerTensorListMetadata`) and the clip's norms; every
    # other multi-tensor kernel is FSDP's: the copy of the bf16 shards into each all-gather's input
    # (`_foreach_copy_`) and its other per-micro-batch list ops, paid per gather, not per step
    ("optimizer", ("fusedoptimizer", "fusedadam", "fused_adam", "adamw", "lpnorm")),
    ("foreach", ("multi_tensor_apply", "foreach")),
    ("compiled fused", ("triton_",)),
    ("copy", ("memcpy", "memset", "copy_kernel", "cat_", "catarray")),
)


@functools.lru_cache(maxsize=None)  # a trace has thousands of kernels but about a hundred names
def kernel_class(name: str) -> str:
    """The class of a kernel by its name (see `CLASSES`); `other` when none matches."""
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of (start, end) intervals as sorted, disjoint intervals."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def intersection_seconds(x: list[tuple[float, float]], y: list[tuple[float, float]], start: int = 0) -> float:
    """Length of the intersection of two `merged` interval lists, reading `y` from index `start` (the intervals
    before it are known to end before `x` begins)."""
    i, j = 0, start
    total = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        total += max(0.0, hi - lo)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def communication(kernels: list[tuple[str, float, float]]) -> dict[str, Any]:
    """How the collectives of a trace sit beside the compute: the time they run (`collective_s`, their union),
    the part of it no other kernel runs (`exposed_s`: the step waits on the network), and what the overlap costs the
    matrix multiplies that run beside them (collectives take SMs and memory bandwidth).

    `matmul_overlap_slowdown`: over the matmul kernels seen both beside a collective (more than half their time)
    and alone, the time the overlapped ones took over what the same kernels (by name) take alone; 1.0 means no cost.
    `matmul_overlapped_share`: the matmul time spent beside a collective.
    """
    coll = merged([(a, b) for n, a, b in kernels if kernel_class(n) == "collective"])
    comp = merged([(a, b) for n, a, b in kernels if kernel_class(n) != "collective"])
    c_s = sum(b - a for a, b in coll)
    exposed = c_s - intersection_seconds(coll, comp)
    ends = [b for _, b in coll]
    alone: dict[str, list[float]] = {}
    beside: dict[str, list[float]] = {}
    for name, a, b in kernels:
        if kernel_class(name) != "matmul":
            continue
        first = bisect.bisect_right(ends, a)  # the collectives that end after this kernel starts
        ov = intersection_seconds([(a, b)], coll, first)
        (beside if ov > 0.5 * (b - a) else alone).setdefault(name, []).append(b - a)
    both = [n for n in beside if n in alone]
    took = sum(sum(beside[n]) for n in both)
    would = sum(len(beside[n]) * sum(alone[n]) / len(alone[n]) for n in both)
    mm_total = sum(sum(v) for v in alone.values()) + sum(sum(v) for v in beside.values())
    return {
        "collective_s": c_s,
        "exposed_s": exposed,
        "matmul_overlap_slowdown": took / would if would > 0 else None,
        "matmul_overlapped_share": sum(sum(v) for v in beside.values()) / mm_total if mm_total else None,
    }


def idle_gaps(kernels: list[tuple[str, float, float]], top: int = 6) -> list[dict[str, Any]]:
    """The `top` longest stretches where no kernel ran: length, when (seconds after the first kernel), and the
    kernels either side (a host sync, a CPU-bound stretch or a wait on another rank shows here)."""
    if not kernels:
        return []
    ordered = sorted(kernels, key=lambda k: k[1])
    t0 = ordered[0][1]
    end, last = ordered[0][2], ordered[0][0]
    gaps = []
    for name, a, b in ordered[1:]:
        if a > end:
            gaps.append({"s": a - end, "at_s": end - t0, "after": last[:100], "before": name[:100]})
        if b > end:
            end, last = b, name
    return sorted(gaps, key=lambda g: -g["s"])[:top]


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) second intervals: time at least one kernel ran (streams overlap)."""
    return sum(b - a for a, b in merged(intervals))


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
        "communication": communication(kernels),
        "idle_gaps": idle_gaps(kernels),
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
    c = b.get("communication") or {}
    if c.get("collective_s"):
        slow = c["matmul_overlap_slowdown"]
        lines.append(f"collectives {c['collective_s']:.3f} s, exposed {c['exposed_s']:.3f} s "
                     f"({100 * c['exposed_s'] / b['wall_s']:.1f}% of wall); matmuls beside a collective: "
                     f"{100 * (c['matmul_overlapped_share'] or 0):.0f}% of matmul time, "
                     f"{'n/a' if slow is None else f'{slow:.2f}x'} the time alone")
    lines += [f"  gap {g['s'] * 1e3:7.2f} ms at {g['at_s']:.3f} s, after {g['after'][:60]} / before {g['before'][:60]}"
              for g in b.get("idle_gaps", [])]
    lines += [f"  {k['s'] * 1e3:9.2f} ms  {k['class']:<14} {k['name']}" for k in b["top_kernels"]]
    return "\n".join(lines)
