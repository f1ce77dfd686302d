"""Attention backends: check at start that the chosen kernel imports and runs on this device.

`sdpa` and `eager` are built into transformers; `sdpa_context` picks SDPA's CUDA kernel (cuDNN,
flash or memory-efficient). `flash_attention_2` needs the flash-attn package and an Ampere-or-newer
CUDA GPU. `xformers` is registered here as a transformers attention function that calls
`xformers.ops.memory_efficient_attention` with a causal mask, the original's kernel.

xformers 0.0.35 (the newest release) ships a C++/CUDA extension built for torch 2.10 / Python 3.10
that does not load under other versions; xformers then marks every operator "not built with CUDA
support", also its `-pt` operators (`cutlassF-pt`, `fa2F@…-pt`) that only call PyTorch's own
`aten::_efficient_attention_forward` / `aten::_flash_attention_forward`. `enable_pt_operators`
lifts that mark when torch has CUDA; operators that need the missing extension still report
"operator wasn't built". Each check runs a tiny forward on the device so a broken install fails now
with one clear line, not hours into a job.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from biomed_llama.errors import UserError

# Lazy imports: xformers and flash-attn are optional CUDA packages, and transformers takes seconds: each is imported
# where it is used.

BACKENDS = ("sdpa", "flash_attention_2", "xformers", "eager")


def xformers_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal memory-efficient attention; q/k/v [batch, heads, seq, head_dim] → out [batch, seq, heads, head_dim].

    Training sequences are causal and right-padded (padding carries no targets), so the causal
    mask alone is exact and `attention_mask` is not used.
    """
    import xformers.ops as xops

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: repeat each KV head for its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    # One dtype for the three, as SDPA gets under autocast: there HF's rotary embedding leaves q and k in fp32
    # (bf16 projections times fp32 cos/sin) while v is bf16, and xformers, unlike SDPA, is not an autocast op.
    device_type = query.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else value.dtype
    # xformers takes [batch, seq, heads, head_dim]
    q, k, v = (t.transpose(1, 2).to(dtype) for t in (query, key, value))
    out = xops.memory_efficient_attention(
        q, k, v, attn_bias=xops.LowerTriangularMask(), p=dropout if module.training else 0.0, scale=scaling
    )
    return out, None


def enable_pt_operators() -> bool:
    """Let xformers dispatch to its PyTorch-kernel operators when its own extension did not load; True if changed."""
    from xformers.ops.fmha import common

    if common._built_with_cuda or torch.version.cuda is None:
        return False
    common._built_with_cuda = True  # read by `AttentionOpBase.not_supported_reasons` (xformers/ops/fmha/common.py)
    return True


def xformers_operators(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str:
    """Names of the forward/backward operators xformers picks for a causal [1, 128, 4, 128] problem on `device`."""
    import xformers.ops as xops
    from xformers.ops.fmha import _dispatch_bw, _dispatch_fw
    from xformers.ops.fmha.common import Inputs

    q = torch.randn(1, 128, 4, 128, device=device, dtype=dtype)
    inp = Inputs(query=q, key=q, value=q, attn_bias=xops.LowerTriangularMask())
    return f"{_dispatch_fw(inp, True).NAME} / {_dispatch_bw(inp, False).NAME}"


_SDPA = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def sdpa_context(choice: str, device: torch.device):
    """A context in which SDPA on CUDA tries `choice` first, then flash, then memory-efficient (no math
    fallback: an unsupported shape fails instead of silently running the slow kernel). A null context
    for `auto` and on CPU."""
    if choice == "auto" or device.type != "cuda":
        return contextlib.nullcontext()
    order = [getattr(SDPBackend, _SDPA[choice])]
    order += [getattr(SDPBackend, _SDPA[b]) for b in ("flash", "efficient") if b != choice]
    return sdpa_kernel(order, set_priority=True)


def _probe(device: torch.device, fn) -> None:
    """Run `fn(q, k, v)` on a tiny bf16/fp32 causal problem on `device`."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(1, 16, 2, 64, device=device, dtype=dtype) for _ in range(3))
    out = fn(q, k, v)
    if not torch.isfinite(out.float()).all():
        raise RuntimeError("non-finite output")


def check_attention(backend: str, device: torch.device) -> str:
    """Verify `backend` imports and runs on `device`; register it with transformers if needed; return its name.

    Raises UserError (one line) naming what is missing.
    """
    if backend not in BACKENDS:
        raise UserError(f"model.attention: unknown backend {backend!r} (choose {', '.join(BACKENDS)})")
    if backend in ("sdpa", "eager"):
        return backend
    if device.type != "cuda":
        raise UserError(f"model.attention={backend} needs a CUDA GPU (this run is on {device.type}); use sdpa")
    if backend == "flash_attention_2":
        try:
            from flash_attn import flash_attn_func
        except Exception as e:  # ImportError, or an undefined symbol from a wheel built for another torch
            raise UserError(
                f"model.attention=flash_attention_2 but flash-attn does not import ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); install flash-attn or use sdpa"
            ) from None
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise UserError("model.attention=flash_attention_2 needs an Ampere or newer GPU; use sdpa")
        fn = lambda q, k, v: flash_attn_func(q, k, v, causal=True)  # noqa: E731
    else:
        try:
            import xformers.ops as xops

            enable_pt_operators()
        except Exception as e:
            raise UserError(
                f"model.attention=xformers but xformers does not import ({type(e).__name__}); "
                "install xformers built for this torch or use sdpa"
            ) from None
        fn = lambda q, k, v: xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask())  # noqa: E731
    try:
        _probe(device, fn)
    except Exception as e:
        raise UserError(
            f"model.attention={backend} imports but fails on {torch.cuda.get_device_name(device)} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); use sdpa"
        ) from None
    if backend == "xformers":
        from transformers import AttentionInterface

        AttentionInterface.register("xformers", xformers_attention_forward)
    return backend
