"""Build the LLaMA model: config from params or a HF directory, meta-device construction,
deterministic initialisation and shard-by-shard loading of HF safetensors.

Nothing here knows about process groups: parameters may be plain tensors or DTensors (after
`fully_shard`); both init and load fill only the local shard, computed from the DTensor's
placements, so a 7B model never exists in full on any rank.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from biomed_llama.errors import UserError
from biomed_llama.model.config import ModelConfig

# Lazy imports: transformers (seconds) and torch.distributed.tensor (about a second) are imported where they are used:
# a CPU run without sharding never loads the latter.

# Wrapper prefixes that activation checkpointing / torch.compile put into parameter names.
_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.")


def llama_config(cfg: ModelConfig, vocab_size: int | None = None):
    """Return the `LlamaConfig`: read from `cfg.base`, or built from the shape params (vocab from the tokenizer)."""
    from transformers import LlamaConfig

    if cfg.base:
        path = Path(cfg.base)
        if not (path / "config.json").is_file():
            raise UserError(f"model.base={cfg.base}: no config.json there (expected a HF LLaMA directory)")
        config = LlamaConfig.from_pretrained(path)
        if config.model_type != "llama":
            raise UserError(f"model.base={cfg.base} is a {config.model_type!r} model, not llama")
    else:
        vocab = cfg.vocab_size or vocab_size
        if vocab is None:
            raise UserError("model.vocab_size is null and no tokenizer gave a vocabulary size")
        config = LlamaConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
            vocab_size=vocab,
            max_position_embeddings=cfg.max_position_embeddings,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            initializer_range=cfg.initializer_range,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=None,
        )
    config._attn_implementation = cfg.attention
    config.use_cache = False
    return config


def build_meta_model(config) -> nn.Module:
    """Construct the trainable LLaMA (`lm.TrainableLlamaForCausalLM`, a `LlamaForCausalLM`) on the meta device (no memory)."""
    from biomed_llama.model.lm import TrainableLlamaForCausalLM

    if config.tie_word_embeddings:
        # A tied lm_head would share a parameter across two FSDP units; LLaMA-7B does not tie.
        raise UserError("tied input/output embeddings are not supported by the pretrain engine")
    with torch.device("meta"):
        model = TrainableLlamaForCausalLM(config)
    return model


def clean_name(name: str) -> str:
    """Parameter name without activation-checkpoint / compile wrapper parts (the HF state-dict key)."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def _local_slices(param: torch.Tensor) -> tuple[slice, ...] | None:
    """For a DTensor, the slices of the global tensor its local shard holds; None for a plain tensor."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if not isinstance(param, DTensor):
        return None
    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    return tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if hasattr(param, "to_local") else param


def _param_seed(seed: int, name: str) -> int:
    # crc32 of the clean name: the same stream for a parameter whatever the world size or wrapping.
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int, std: float) -> None:
    """Initialise like HF LLaMA (normal(0, std) matrices, ones for norms), deterministically per parameter.

    Each parameter's full value comes from its own generator seeded by (seed, name), generated on
    the parameter's device one parameter at a time, and only the local shard is kept: the result
    is identical for any world size or mesh.
    """
    for name, param in model.named_parameters():
        key = clean_name(name)
        local = _local(param)
        if key.endswith("norm.weight"):
            local.fill_(1.0)
            continue
        gen = torch.Generator(device=local.device).manual_seed(_param_seed(seed, key))
        full = torch.empty(param.shape, dtype=torch.float32, device=local.device).normal_(0.0, std, generator=gen)
        sl = _local_slices(param)
        local.copy_(full[sl] if sl is not None else full)
    reset_rotary(model)


@torch.no_grad()
def reset_rotary(model: nn.Module) -> None:
    """Recompute rotary `inv_freq` buffers (non-persistent, so `to_empty` leaves them garbage)."""
    for module in model.modules():
        if type(module).__name__.endswith("RotaryEmbedding") and hasattr(module, "inv_freq"):
            fresh = type(module)(module.config)
            module.get_buffer("inv_freq").copy_(fresh.get_buffer("inv_freq"))
            if hasattr(module, "original_inv_freq"):
                module.get_buffer("original_inv_freq").copy_(fresh.get_buffer("original_inv_freq"))


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"model.base={path}: no *.safetensors files (convert .bin weights with save_pretrained first)")
    return files


# The vocabulary-sized tensors that `added_rows` extends (LLaMA does not tie them).
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def _with_mean_rows(full: torch.Tensor, added: int) -> torch.Tensor:
    """`full` with `added` rows appended, each the fp32 mean of its rows (the original's modeling_utils.py:31-35)."""
    mean = full.float().mean(dim=0, keepdim=True)
    return torch.cat([full.float(), mean.expand(added, -1)])


@torch.no_grad()
def load_hf_weights(model: nn.Module, path: str | Path, added_rows: int = 0) -> None:
    """Fill the (possibly sharded) parameters of `model` from a HF safetensors directory.

    Reads one tensor at a time and, through safetensors' lazy slicing, only the rows of this
    rank's shard; a missing or misshapen tensor is a UserError. Rotary buffers are recomputed.
    With `added_rows` the model's embeddings and LM head have that many rows more than the file's:
    those two are read whole and extended by the mean of their rows (`pretrain.added_tokens`).
    """
    path = Path(path)
    params = {clean_name(n): p for n, p in model.named_parameters()}
    seen: set[str] = set()
    for file in _safetensors_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is no dict: it has keys(), not iteration)
                if key not in params:
                    if "rotary_emb" in key:  # old conversions stored inv_freq; it is recomputed
                        continue
                    raise UserError(f"{file.name}: tensor {key} has no parameter in the model")
                param, part = params[key], f.get_slice(key)
                shape = tuple(part.get_shape())
                extend = added_rows if key in VOCAB_TENSORS else 0
                if (shape[0] + extend, *shape[1:]) != tuple(param.shape):
                    raise UserError(
                        f"{file.name}: {key} has shape {shape}, model {tuple(param.shape)}"
                        + (f" ({extend} added rows)" if extend else "")
                    )
                sl = _local_slices(param)
                if extend:
                    full = _with_mean_rows(part[:], extend)
                    value = full[sl] if sl is not None else full
                else:
                    value = part[sl] if sl is not None else part[:]
                local = _local(param)
                local.copy_(value.to(device=local.device, dtype=local.dtype))
                seen.add(key)
    missing = sorted(set(params) - seen)
    if missing:
        raise UserError(
            f"model.base={path}: no weights for {missing[0]}"
            + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    reset_rotary(model)


def count_params(model: nn.Module) -> tuple[int, int]:
    """Return (all parameters, embedding parameters) of the global model (DTensor shapes are global)."""
    total = embed = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if clean_name(name).endswith("embed_tokens.weight"):
            embed += p.numel()
    return total, embed
