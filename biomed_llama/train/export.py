"""Export the trained (sharded) model as a Hugging Face directory with a manifest.

Every rank takes part in gathering the full state dict (offloaded to CPU, kept on rank 0 only);
rank 0 writes `config.json`, `model*.safetensors`, the tokenizer files and `manifest.json` into a
temporary folder that replaces the output only when complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from biomed_llama.fsutil import atomic_dir

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def gather_full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the full (unsharded) state dict on CPU on rank 0, empty on other ranks, as plain tensors."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # a model's state dict holds tensors only (torch types it as any state dict's values: lists, dicts, ...)
    state = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=opts))
    return {k: _plain(v) for k, v in state.items()}


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The weight itself: with `pretrain.float8` a decoder weight is torchao's float8 training wrapper
    (`WeightWithDynamicFloat8CastTensor`), which keeps its high-precision value in `_tensor`; safetensors
    writes only plain tensors."""
    if type(t) is not torch.Tensor:
        inner = getattr(t, "_tensor", None)
        if isinstance(inner, torch.Tensor):
            return inner
    return t


def export_hf(
    model,
    config,
    out: str | Path,
    *,
    tokenizer: str | Path,
    dtype: str,
    params: dict[str, Any],
    inputs: Iterable[str | Path],
    extra: dict[str, Any],
    stage: str = "pretrain",
    drop_rows: int = 0,
) -> Path | None:
    """Collective: write the HF model directory `out` from rank 0; returns `out` on rank 0, None elsewhere.

    `drop_rows`: leave out the last rows of the embeddings and LM head (`pretrain.added_tokens`, the
    training-only `[PAD]`), so the export has the vocabulary of its tokenizer."""
    from biomed_llama.model.build import VOCAB_TENSORS

    state = gather_full_state_dict(model)
    if dist.get_rank() != 0:
        dist.barrier() if dist.get_world_size() > 1 else None
        return None
    from transformers import AutoTokenizer, LlamaForCausalLM

    from biomed_llama.provenance import write_manifest

    state = {
        k: (v[:-drop_rows] if drop_rows and k in VOCAB_TENSORS else v).to(_DTYPES[dtype]).contiguous()
        for k, v in state.items()
    }
    config = config.__class__.from_dict(config.to_dict())
    config.vocab_size -= drop_rows
    config.use_cache = True  # inference default for the exported model
    config._attn_implementation = "sdpa"  # loaders pick their own kernel; xformers is ours, not HF's
    config.dtype = dtype
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    hf.load_state_dict(state, assign=True, strict=True)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
        AutoTokenizer.from_pretrained(str(tokenizer)).save_pretrained(tmp)
        write_manifest(tmp, stage=stage, params=params, inputs=inputs, extra=extra)
    if dist.get_world_size() > 1:
        dist.barrier()
    return Path(out)
