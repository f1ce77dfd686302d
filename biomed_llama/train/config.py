"""Params of the base model and of continued pretraining."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

AttentionBackend = Literal["sdpa", "flash_attention_2", "xformers", "eager"]


class ModelConfig(StrictModel):
    """The base model: a HF LLaMA directory, or a tiny random init built from these shape params."""

    base: Optional[str] = None
    """A Hugging Face LLaMA directory (config.json + safetensors), e.g. `models/llama-7b`; null builds a random init from the shape below."""
    hidden_size: int = Field(64, ge=8)
    """Width of the residual stream (random init only; a `base` directory brings its own)."""
    intermediate_size: int = Field(172, ge=8)
    """Width of the SwiGLU MLP (random init only)."""
    num_layers: int = Field(2, ge=1)
    """Number of decoder layers (random init only)."""
    num_heads: int = Field(4, ge=1)
    """Attention heads (random init only); must divide hidden_size."""
    num_kv_heads: Optional[int] = None
    """Key/value heads for grouped-query attention; null = num_heads (LLaMA-7B)."""
    vocab_size: Optional[int] = None
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
    def _check(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.num_heads ({self.num_heads}) must divide model.hidden_size ({self.hidden_size})")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"model.num_kv_heads ({kv}) must divide model.num_heads ({self.num_heads})")
        return self


class PretrainConfig(StrictModel):
    """Continued pretraining hyperparameters, sharding and checkpointing."""

    tokens: str = "data/tokens"
    """The tokenize stage's output folder (`<subset-slug>/<split>/tokens.bin` + manifest.json)."""
    subsets: list[str] = Field(default_factory=lambda: ["pubmed_abstracts", "pubmed_central"], min_length=1)
    """Subset slugs under `tokens` to train on, concatenated in this order before shuffling."""
    split: str = "train"
    """Which split of each subset to read."""
    tokenizer: str = "data/sample/tokenizer"
    """Tokenizer directory copied into the exported model (the base model's for the paper profile)."""
    max_seq_length: int = Field(128, ge=2)
    """Tokens per training sequence (2048 in the paper)."""
    packing: Literal["truncate", "concat"] = "concat"
    """`truncate`: one document per sequence, BOS + text + EOS cut to max_seq_length and padded (the released loader); `concat`: BOS + text + EOS documents joined and cut into full sequences."""
    shuffle: bool = True
    """Shuffle sequences with a seeded permutation (same order for any world size); false reads in file order like the original."""
    global_batch_size: int = Field(8, ge=1)
    """Sequences per optimizer step over all ranks (2048 in the paper); = micro × accumulation × data-parallel size."""
    micro_batch_size: int = Field(2, ge=1)
    """Sequences per rank per forward/backward; the code derives gradient accumulation from it."""
    max_steps: Optional[int] = Field(None, ge=1)
    """Optimizer steps; null = one epoch (every full global batch of the data once)."""
    lr: float = Field(3.0e-5, gt=0)
    """Peak learning rate (README 3e-5; released multi-node script 1e-5)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (paper: 0.9, 0.95)."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon (HF Trainer default)."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay; norms and biases get none (as HF Trainer)."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """Fraction of steps of linear warmup (warmup steps = ceil(ratio × steps), as HF Trainer)."""
    num_cycles: float = Field(0.39758361765043326, ge=0)
    """Cosine cycles after warmup (released script: 0.3975…, which stops above 0; 0.5 decays to 0)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Clip the global gradient norm (over all shards) to this."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA with NCCL when a GPU is visible, else CPU with gloo."""
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the sharded parameters (fp32 master weights are kept either way); bf16 for the paper."""
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of gradient reduce-scatter/all-reduce (the original reduced in bf16)."""
    shard_size: Optional[int] = Field(None, ge=1)
    """Ranks per shard group of the (replicate, shard) mesh; null = the GPUs of one node (LOCAL_WORLD_SIZE)."""
    reshard_after_forward: bool = True
    """Free gathered parameters after forward (ZeRO-3); false keeps them to backward (ZeRO-2, the original's SHARD_GRAD_OP)."""
    compile: bool = False
    """`torch.compile` each decoder layer."""
    activation_checkpointing: Literal["none", "full", "selective"] = "none"
    """Recompute activations in backward: every layer whole (`full`), or keep matmul/attention outputs and recompute the rest (`selective`)."""
    log_every: int = Field(1, ge=1)
    """Log a line (and a loss row) every this many steps."""
    checkpoint_every: int = Field(1000, ge=1)
    """Save a distributed checkpoint every this many steps (3000 in the released script)."""
    keep_checkpoints: int = Field(3, ge=1)
    """Keep only the newest this many checkpoints of the run's own folder (other runs' folders are never pruned)."""
    checkpoint_dir: str = "checkpoints/pretrain"
    """Root of run folders `<run_id>/step-NNNNNNNN/`; `run_id` fingerprints seed, model, numeric params, steps and the data's content. A rerun with the same params and data resumes from the newest complete checkpoint of its folder; other params or data start fresh in a new folder, leaving the others untouched."""
    output: str = "models/pretrained"
    """The exported HF model directory (safetensors + tokenizer + config + manifest)."""
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the exported weights."""
    export_init: Optional[str] = None
    """Also export the starting weights (the random init, or `model.base`) before training as a HF directory
    here, e.g. `models/base` (the demo's stand-in for the untrained LLaMA-7B row of the eval table); null: don't."""
    metrics: str = "metrics/pretrain.json"
    """Final metrics JSON (DVC metrics)."""
    plots: str = "plots/pretrain"
    """Folder of `loss.tsv` (step, loss, lr, grad_norm) for DVC plots."""
    progress: bool = True
    """Show a rich progress bar on rank 0."""

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"pretrain.micro_batch_size ({self.micro_batch_size}) must divide "
                             f"pretrain.global_batch_size ({self.global_batch_size})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"pretrain.betas must lie in [0, 1) (got {list(self.betas)})")
        return self
