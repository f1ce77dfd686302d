"""Params of the base model: a Hugging Face LLaMA directory, or the shape of a random init.

Next to the model code that reads it (`build.llama_config`); nothing here knows about training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

AttentionBackend = Literal["sdpa", "flash_attention_2", "xformers", "eager"]


class ModelConfig(StrictModel):
    """The base model: a HF LLaMA directory, or a tiny random init built from these shape params."""

    base: str | None = None
    """A Hugging Face LLaMA directory (config.json + safetensors), e.g. `models/llama-7b`; null builds a random init from the shape below."""
    base_external: bool = False
    """True when `base` was made by no stage here (the downloaded LLaMA-7B): it has no manifest, so pretrain reads it
    only with this opt-in and records the hash of each of its files; false refuses a `base` without a manifest."""
    hidden_size: int = Field(64, ge=8)
    """Width of the residual stream (random init only; a `base` directory brings its own)."""
    intermediate_size: int = Field(172, ge=8)
    """Width of the SwiGLU MLP (random init only)."""
    num_layers: int = Field(2, ge=1)
    """Number of decoder layers (random init only)."""
    num_heads: int = Field(4, ge=1)
    """Attention heads (random init only); must divide hidden_size."""
    num_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; null = num_heads (LLaMA-7B)."""
    vocab_size: int | None = None
    """Vocabulary size; null = `len(tokenizer)` of `tokenize.tokenizer` (random init only)."""
    max_position_embeddings: int = Field(2048, ge=1)
    """Longest position the rotary embedding is configured for (random init only)."""
    rms_norm_eps: float = Field(1e-6, gt=0)
    """Epsilon of RMSNorm (random init only)."""
    rope_theta: float = Field(10000.0, gt=0)
    """Rotary embedding base (random init only)."""
    initializer_range: float = Field(0.02, gt=0)
    """Std of the normal init of linear and embedding weights (random init only)."""
    attention: AttentionBackend = "sdpa"
    """Attention kernel: `sdpa` (PyTorch), `flash_attention_2` (flash-attn package), `xformers` (memory-efficient, causal; the original's choice) or `eager`."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.num_heads ({self.num_heads}) must divide model.hidden_size ({self.hidden_size})")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"model.num_kv_heads ({kv}) must divide model.num_heads ({self.num_heads})")
        return self
