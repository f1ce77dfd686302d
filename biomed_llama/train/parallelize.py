"""Apply FP8 training (opt-in), activation checkpointing, per-block torch.compile and FSDP2 hybrid sharding to a LLaMA.

Order (as torchtitan): the float8 conversion swaps the decoder layers' linear layers first (it must see plain
`nn.Linear`s, and compile must see the float8 ones), AC wraps each decoder layer, compile compiles each
(wrapped) layer in place, then `fully_shard` makes each layer, the embedding and the LM head their own FSDP unit
and the root the last one, all over the (`replicate`, `shard`) mesh with the params' mixed-precision policy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict

import torch
from torch import nn

from biomed_llama.errors import ConfigError
from biomed_llama.model.lm import TrainableLlamaForCausalLM
from biomed_llama.train.config import PretrainConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM, `model.model.layers` (HF LLaMA's layout: `LlamaForCausalLM.model` is the
    `LlamaModel`, whose `layers` is an `nn.ModuleList`), typed (`nn.Module`'s attribute access is a union)."""
    layers = model.get_submodule("model.layers")
    assert isinstance(layers, nn.ModuleList), f"model.model.layers is a {type(layers).__name__}, not a ModuleList"
    return layers


def token_embedding(model: nn.Module) -> nn.Module:
    """The token embedding of a causal LM, `model.model.embed_tokens` (HF LLaMA's layout), typed."""
    return model.get_submodule("model.embed_tokens")


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
    # with `pretrain.float8` the decoder's projections are FP8 matmuls (`_scaled_mm`): counted like bf16 ones
    matmuls = {aten.mm.default, aten._scaled_mm.default}
    counts: dict[str, int] = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        if func in save_always:
            return CheckpointPolicy.MUST_SAVE
        if func in matmuls:
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

    layers = decoder_layers(model)
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
    for layer in decoder_layers(model):
        layer.compile()
    if isinstance(model, TrainableLlamaForCausalLM):  # the one model class with the compiled loss
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
    fully_shard(token_embedding(model), mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    layers = decoder_layers(model)
    first_kept = len(layers) - max(1, _gathered_count(model, cfg))
    for i, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard and i < first_kept)
    if not getattr(model, "fused_loss", False):
        fully_shard(model.get_submodule("lm_head"), mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)


def _gathered_count(model: nn.Module, cfg: PretrainConfig) -> int:
    n = len(decoder_layers(model))
    if cfg.gathered_layers > n:
        raise ConfigError(f"pretrain.gathered_layers is {cfg.gathered_layers} but the model has {n} layers")
    return cfg.gathered_layers


def gathered_modules(model: nn.Module, cfg: PretrainConfig) -> list[nn.Module]:
    """The FSDP modules to keep gathered between the micro batches of a step: the whole model with
    `reshard_after_forward: false`, else the last `gathered_layers` decoder layers (none by default)."""
    if not cfg.reshard_after_forward:
        return [model]
    layers = list(decoder_layers(model))
    return layers[len(layers) - _gathered_count(model, cfg) :]


FLOAT8_MIN_CAPABILITY = (8, 9)
"""FP8 tensor cores: Ada (SM 8.9) and Hopper (9.0) or newer; torchao's float8 matmuls need them."""


def check_float8(recipe: str | None, device: torch.device) -> None:
    """Refuse `pretrain.float8` in one line where it cannot run: on the CPU, without torchao, before SM 8.9."""
    if recipe is None:
        return
    if device.type != "cuda":
        raise ConfigError(
            f"pretrain.float8: {recipe} needs a CUDA GPU of compute capability 8.9 or newer "
            f"(H100/H200/L40S); this run is on {device.type}. Set pretrain.float8: null"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FLOAT8_MIN_CAPABILITY:
        raise ConfigError(
            f"pretrain.float8: {recipe} needs compute capability 8.9 or newer (FP8 tensor cores); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}. "
            f"Set pretrain.float8: null"
        )
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"pretrain.float8: {recipe} needs torchao (pip install torchao); "
            f"it is not installed. Set pretrain.float8: null"
        ) from None


def float8_config(recipe: str, emulate: bool = False):
    """torchao's `Float8LinearConfig` for `recipe`. `tensorwise`: one dynamic scale per tensor (cuBLAS FP8
    matmul) and the FSDP2 all-gathers in float8 too (half the bytes of bf16; each weight cast to float8 once per
    gather, not once per use); `rowwise`: one scale per row (CUTLASS matmul), closer to bf16, slower, its
    weights gathered in bf16. `emulate` runs the float8 matmuls in high precision (the CPU tests)."""
    from torchao.float8 import Float8LinearConfig

    if recipe == "tensorwise":
        return Float8LinearConfig(enable_fsdp_float8_all_gather=True, emulate=emulate)
    cfg = Float8LinearConfig.from_recipe_name(recipe)
    return dataclasses.replace(cfg, emulate=emulate) if emulate else cfg


def _float8_filter(module: nn.Module, fqn: str) -> bool:
    """The linear layers of the decoder layers only (q/k/v/o, gate/up/down): the LM head stays in bf16, as
    torchtitan's float8 recipes leave the output projection (its logits feed the loss), and the FP8 matmul
    needs both weight dimensions divisible by 16."""
    if not isinstance(module, nn.Linear) or ".layers." not in f".{fqn}":
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def apply_float8(model: nn.Module, recipe: str, emulate: bool = False) -> list[str]:
    """Swap the decoder layers' `nn.Linear`s for torchao's `Float8Linear` (dynamic scaling, `recipe`); returns
    the names of the converted modules. Must run before compile and FSDP (as torchtitan's converters do)."""
    from torchao.float8 import convert_to_float8_training

    converted: list[str] = []

    def pick(module: nn.Module, fqn: str) -> bool:
        keep = _float8_filter(module, fqn)
        if keep:
            converted.append(fqn)
        return keep

    convert_to_float8_training(model, config=float8_config(recipe, emulate), module_filter_fn=pick)
    if recipe == "rowwise":
        # compiled rowwise scaling rounds its casts as eager does only with this inductor setting (pytorch#150859;
        # torchtitan 0.3.0 sets it for its rowwise recipe too: components/quantization/float8.py)
        import torch._inductor.config as inductor_config

        inductor_config.emulate_precision_casts = True
    return converted


def _precompute_float8_scales_after_each_update(model: nn.Module) -> None:
    """With float8 all-gathers: compute every float8 weight's scale at once (one fused amax over all of them,
    `precompute_float8_dynamic_scale_for_fsdp`) instead of one reduction per weight inside each all-gather, once
    per update, as torchtitan's float8 converter does after its optimizer step. Here the step of this model's
    optimizer only marks the scales stale and the model's next forward computes them: the optimizer is built
    after `parallelize` (so the mark is the global optimizer post-step hook, kept to this model's optimizer by its
    parameters, removed with the model), and a step that precedes a checkpoint load (DCP's state-dict init takes a
    step on empty weights) must not leave scales of the weights it replaced."""
    import weakref

    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    ref, stale = weakref.ref(model), [True]
    first = id(next(model.parameters()))

    def mark(optimizer, args, kwargs):
        if ref() is not None and any(id(p) == first for group in optimizer.param_groups for p in group["params"]):
            stale[0] = True

    def before_forward(module, args):
        if stale[0]:
            precompute_float8_dynamic_scale_for_fsdp(module)
            stale[0] = False

    # removed when the model goes (not from inside the hook: the hooks' dict is being iterated then)
    weakref.finalize(model, register_optimizer_step_post_hook(mark).remove)
    model.register_forward_pre_hook(before_forward, prepend=True)


def parallelize(model: nn.Module, mesh, cfg: PretrainConfig) -> nn.Module:
    """FP8 (when asked), AC, then compile, then FSDP2, as the params say; returns the same (now sharded) model."""
    if cfg.float8 is not None:
        check_float8(cfg.float8, torch.device(mesh.device_type))
        apply_float8(model, cfg.float8)
    apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model, cfg.activation_memory_budget)
    apply_fsdp(model, mesh, cfg)
    if cfg.float8 == "tensorwise":
        _precompute_float8_scales_after_each_update(model)
    return model
