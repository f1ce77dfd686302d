"""Apply activation checkpointing, per-block torch.compile and FSDP2 hybrid sharding to a LLaMA.

Order (as torchtitan): AC wraps each decoder layer, compile compiles each (wrapped) layer in place,
then `fully_shard` makes each layer, the embedding and the LM head their own FSDP unit and the root
the last one, all over the (`replicate`, `shard`) mesh with the params' mixed-precision policy.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch import nn

from biomed_llama.errors import ConfigError
from biomed_llama.train.config import PretrainConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _selective_policy():
    """Op-level selective AC policy: keep attention outputs and every second matmul, recompute the rest.

    Matmuls and attention dominate FLOPs; elementwise ops (norms, SwiGLU, rotary) are cheap to
    recompute but hold most activation memory. Saving only every other matmul halves what stays.
    """
    from torch.utils.checkpoint import CheckpointPolicy

    aten = torch.ops.aten
    save_always = {
        aten._scaled_dot_product_efficient_attention.default,
        aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_cudnn_attention.default,
    }
    counts: dict[str, int] = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        if func in save_always:
            return CheckpointPolicy.MUST_SAVE
        if func is aten.mm.default:
            # forward and recompute count separately so both make the same choice for the same mm
            key = "recompute" if ctx.is_recompute else "forward"
            counts[key] += 1
            return CheckpointPolicy.MUST_SAVE if counts[key] % 2 == 0 else CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Wrap each decoder layer for `full` or `selective` recomputation (no-op for `none`)."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    layers = model.model.layers
    for i, layer in enumerate(layers):
        if mode == "full":
            layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)
        else:
            context_fn = functools.partial(create_selective_checkpoint_contexts, _selective_policy())
            layers[i] = checkpoint_wrapper(layer, context_fn=context_fn, preserve_rng_state=False)


def apply_compile(model: nn.Module, activation_memory_budget: float = 1.0) -> None:
    """Compile each decoder layer in place (one graph per block, reused by all identical layers), and the weighted
    loss's cross-entropy (`lm.compiled_weighted_cross_entropy`: the fp32 [tokens, vocab] copies are not held).

    `activation_memory_budget` < 1 makes the partitioner keep only that share of each layer's saved activations
    and recompute the rest in backward, cheapest FLOPs first (the norms and the SwiGLU product before any
    matmul). It is functorch's process-wide setting, read when a graph is compiled (at the first forward), so it
    is set here for every graph this process compiles; the reference value 1.0 is set too, so a process that
    builds several models (the tests) does not inherit an earlier model's budget.
    """
    import torch._functorch.config as functorch_config

    functorch_config.activation_memory_budget = activation_memory_budget
    for layer in model.model.layers:
        layer.compile()
    if hasattr(model, "compiled_loss"):
        model.compiled_loss = True


def apply_fsdp(model: nn.Module, mesh, cfg: PretrainConfig) -> None:
    """`fully_shard` every layer, the embedding, the LM head and the root over `mesh`.

    The last layer and the LM head are not resharded after forward: backward needs them first,
    so resharding would only gather them again at once; nor are the last `cfg.gathered_layers` layers
    (`gathered_modules` keeps them gathered between micro batches too). With the fused loss
    (`model.fused_loss`) the LM head stays in the root unit: the loss reads its weight directly, not
    through its forward, and the root's parameters are gathered for the whole of the root's forward.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=_DTYPES[cfg.param_dtype], reduce_dtype=_DTYPES[cfg.reduce_dtype])
    # A (1, N) mesh is plain FSDP; passing the 1-D sub-mesh avoids a no-op all-reduce per gradient.
    if mesh.size(0) == 1:
        mesh = mesh["shard"]
    reshard = cfg.reshard_after_forward
    fully_shard(model.model.embed_tokens, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    layers = model.model.layers
    first_kept = len(layers) - max(1, _gathered_count(model, cfg))
    for i, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard and i < first_kept)
    if not getattr(model, "fused_loss", False):
        fully_shard(model.lm_head, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)


def _gathered_count(model: nn.Module, cfg: PretrainConfig) -> int:
    n = len(model.model.layers)
    if cfg.gathered_layers > n:
        raise ConfigError(f"pretrain.gathered_layers is {cfg.gathered_layers} but the model has {n} layers")
    return cfg.gathered_layers


def gathered_modules(model: nn.Module, cfg: PretrainConfig) -> list[nn.Module]:
    """The FSDP modules to keep gathered between the micro batches of a step: the whole model with
    `reshard_after_forward: false`, else the last `gathered_layers` decoder layers (none by default)."""
    if not cfg.reshard_after_forward:
        return [model]
    layers = list(model.model.layers)
    return layers[len(layers) - _gathered_count(model, cfg):]


def parallelize(model: nn.Module, mesh, cfg: PretrainConfig) -> nn.Module:
    """AC, then compile, then FSDP2, as the params say; returns the same (now sharded) model."""
    apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model, cfg.activation_memory_budget)
    apply_fsdp(model, mesh, cfg)
    return model
