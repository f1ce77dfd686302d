"""Attention backends: check at start that the chosen kernel imports and runs on this device.

`sdpa` and `eager` are built into transformers. `flash_attention_2` needs the flash-attn package and
an Ampere-or-newer CUDA GPU. `xformers` is registered here as a transformers attention function
that calls `xformers.ops.memory_efficient_attention` with a causal mask, the original's kernel.
Each check runs a tiny forward on the device so a broken install fails now with one clear line,
not hours into a job.
"""

from __future__ import annotations

import torch

from biomed_llama.errors import UserError

BACKENDS = ("sdpa", "flash_attention_2", "xformers", "eager")


def xformers_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, scaling: float | None = None,
                               dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal memory-efficient attention; q/k/v [batch, heads, seq, head_dim] → out [batch, seq, heads, head_dim].

    Training sequences are causal and right-padded (padding carries no targets), so the causal
    mask alone is exact and `attention_mask` is not used.
    """
    import xformers.ops as xops

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: repeat each KV head for its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    # xformers takes [batch, seq, heads, head_dim]
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    out = xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask(),
                                         p=dropout if module.training else 0.0, scale=scaling)
    return out, None


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
            raise UserError(f"model.attention=flash_attention_2 but flash-attn does not import ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); install flash-attn or use sdpa") from None
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise UserError("model.attention=flash_attention_2 needs an Ampere or newer GPU; use sdpa")
        fn = lambda q, k, v: flash_attn_func(q, k, v, causal=True)  # noqa: E731
    else:
        try:
            import xformers.ops as xops
        except Exception as e:
            raise UserError(f"model.attention=xformers but xformers does not import ({type(e).__name__}); "
                            "install xformers built for this torch or use sdpa") from None
        fn = lambda q, k, v: xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask())  # noqa: E731
    try:
        _probe(device, fn)
    except Exception as e:
        raise UserError(f"model.attention={backend} imports but fails on {torch.cuda.get_device_name(device)} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); use sdpa") from None
    if backend == "xformers":
        from transformers import AttentionInterface

        AttentionInterface.register("xformers", xformers_attention_forward)
    return backend
