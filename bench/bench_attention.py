"""Attention kernels on the LLaMA-7B shape: causal forward + backward time per backend, and agreement.

Backends: SDPA with only its flash / cuDNN / memory-efficient kernel enabled, and xformers'
`memory_efficient_attention` (its PyTorch-kernel operators, `model.attention.enable_pt_operators`).
Each is timed with CUDA events (median of `--iters` after warm-up) on q/k/v [batch, heads, seq, dim]
bf16, and its output compared with the math reference in fp32. Writes `<out>/attention.json`.

    python -m bench.bench_attention --out DIR            # CUDA: batch 4, 32 heads, seq 2048, dim 128
    python -m bench.bench_attention --out DIR --tiny     # CPU smoke run (SDPA math vs default only)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F



def _time(fn, iters: int) -> float:
    """Median milliseconds of fn() (CUDA events; wall clock on CPU)."""
    import statistics
    import time

    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def _sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return run


def _xformers():
    import xformers.ops as xops

    from biomed_llama.model.attention import enable_pt_operators

    enable_pt_operators()

    def run(q, k, v):  # xformers takes [batch, seq, heads, dim]
        out = xops.memory_efficient_attention(*(t.transpose(1, 2) for t in (q, k, v)),
                                              attn_bias=xops.LowerTriangularMask())
        return out.transpose(1, 2)

    return run


def measure(name: str, fn, q, k, v, ref, iters: int) -> dict:
    """Forward and forward+backward time of `fn`, and its max abs difference from `ref`."""
    try:
        out = fn(q, k, v)
        err = (out.float() - ref).abs().max().item()
        grad = torch.randn_like(out)
        fwd = _time(lambda: fn(q, k, v), iters)
        fwd_bwd = _time(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), grad), iters)
        return {"backend": name, "fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd, "max_abs_err": err}
    except Exception as e:  # a backend that does not run here: say why, in one line
        return {"backend": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    b, h, s, d = (4, 32, 2048, 128) if cuda else (1, 2, 64, 16)
    q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    ref = F.scaled_dot_product_attention(*(t.double() for t in (q, k, v)), is_causal=True).float()
    backends = {"sdpa-math": _sdpa("MATH")}
    if cuda:
        backends.update({"sdpa-flash": _sdpa("FLASH_ATTENTION"), "sdpa-cudnn": _sdpa("CUDNN_ATTENTION"),
                         "sdpa-efficient": _sdpa("EFFICIENT_ATTENTION")})
    rows = [measure(n, fn, q, k, v, ref, args.iters) for n, fn in backends.items()]
    if cuda:
        try:
            from biomed_llama.model.attention import xformers_operators

            fn = _xformers()
            rows.append({**measure("xformers", fn, q, k, v, ref, args.iters), "operators": xformers_operators(q.device)})
        except Exception as e:
            rows.append({"backend": "xformers", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
    flops = 4 * b * h * s * s * d / 2  # causal: half of QK^T and PV
    for r in rows:
        if "fwd_ms" in r:
            r["fwd_tflops"] = flops / r["fwd_ms"] / 1e9
            r["fwd_bwd_tflops"] = 3.5 * flops / r["fwd_bwd_ms"] / 1e9  # backward ≈ 2.5× forward
    info = {"shape": [b, h, s, d], "dtype": str(dtype), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "attention.json").write_text(json.dumps(info, indent=1))
    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
