"""Fused Triton kernels of liger-kernel (a maintained library) for the LLaMA modules, CUDA only.

`apply_kernels(model, names, device)` runs on the meta model before it is sharded:
- `rms_norm`: every `LlamaRMSNorm` becomes a `LigerRMSNorm` (casting mode "llama": fp32 statistics,
  the normalised value cast back before the weight, as HF's module); the parameter keeps its name.
- `swiglu`: every `LlamaMLP` becomes a `LigerSwiGLUMLP` (same `gate_proj/up_proj/down_proj`).
- `rope`: transformers' `apply_rotary_pos_emb` of the llama module calls liger's kernel for CUDA
  tensors and the original for any other (a module global, so the dispatch is per call).
- `linear_cross_entropy`: the weighted loss of `lm.TrainableLlamaForCausalLM` uses liger's fused linear
  cross-entropy (the parallelizer then keeps the LM head in the root FSDP unit).
liger has no CPU path: on CPU nothing is applied and the plain modules run (the caller says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from biomed_llama.errors import UserError

if TYPE_CHECKING:
    from biomed_llama.model.lm import TrainableLlamaForCausalLM

# Lazy imports: liger-kernel is an optional CUDA package and transformers takes seconds: both are imported where used.

KERNELS = ("rms_norm", "swiglu", "rope", "linear_cross_entropy")


def _liger():
    try:
        import liger_kernel.transformers as lk
    except Exception as e:  # ImportError, or triton missing / built for another torch
        raise UserError(
            f"pretrain.kernels needs liger-kernel, which does not import ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''}); install it or set pretrain.kernels: []"
        ) from None
    return lk


def _replace_norms(model: nn.Module, lk) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "LlamaRMSNorm":
                with torch.device("meta"):
                    setattr(
                        parent,
                        name,
                        lk.LigerRMSNorm(
                            child.get_parameter("weight").shape[0], eps=child.variance_epsilon, casting_mode="llama"
                        ),
                    )


def _replace_mlps(model: nn.Module, lk) -> None:
    for layer in model.get_submodule("model.layers").children():
        with torch.device("meta"):
            layer.mlp = lk.LigerSwiGLUMLP(model.config)


def _patch_rope(lk) -> None:
    from transformers.models.llama import modeling_llama

    plain = modeling_llama.apply_rotary_pos_emb
    if getattr(plain, "_biomed_dispatch", False):
        return

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        if q.is_cuda:
            return lk.liger_rotary_pos_emb(q, k, cos, sin, *args, **kwargs)
        return plain(q, k, cos, sin, *args, **kwargs)

    # Marks on the function object itself, where transformers' module attribute keeps them.
    apply_rotary_pos_emb._biomed_dispatch = True  # type: ignore[attr-defined]
    apply_rotary_pos_emb.plain = plain  # type: ignore[attr-defined]  # transformers' own, for parity checks
    modeling_llama.apply_rotary_pos_emb = apply_rotary_pos_emb


def apply_kernels(model: TrainableLlamaForCausalLM, names: list[str], device: torch.device) -> list[str]:
    """Swap in the named liger kernels on `device` (CUDA); return those applied ([] on CPU: plain modules)."""
    unknown = sorted(set(names) - set(KERNELS))
    if unknown:
        raise UserError(f"pretrain.kernels: unknown kernel {unknown[0]!r} (choose from {', '.join(KERNELS)})")
    if not names or device.type != "cuda":
        return []
    lk = _liger()
    if "rms_norm" in names:
        _replace_norms(model, lk)
    if "swiglu" in names:
        _replace_mlps(model, lk)
    if "rope" in names:
        _patch_rope(lk)
    if "linear_cross_entropy" in names:
        model.fused_loss = True
    return [n for n in KERNELS if n in names]
