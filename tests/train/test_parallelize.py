"""`train/parallelize.py`: the compiled layers' activation memory budget (`pretrain.activation_memory_budget`)
keeps fewer activations for backward and changes no number; the config refuses it without compile. The last
`pretrain.gathered_layers` layers stay gathered between micro batches (and only those), changing no number."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.model.config import ModelConfig
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.parallelize import apply_compile
from tests.helpers.models import trainable_model

CFG = ModelConfig(hidden_size=64, intermediate_size=176, num_layers=2, num_heads=2, vocab_size=300,
                  max_position_embeddings=64)


def _compiled_model(budget: float):
    model = trainable_model(CFG)
    apply_compile(model, budget)
    return model


def _run(model):
    """Loss, gradients and the bytes of every tensor autograd saved for backward during one forward."""
    ids = torch.randint(3, 300, (2, 48), generator=torch.Generator().manual_seed(3))
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)


def test_a_budget_below_one_needs_compile():
    with pytest.raises(ValueError, match="activation_memory_budget below 1 needs pretrain.compile"):
        PretrainConfig(global_batch_size=4, micro_batch_size=2, activation_memory_budget=0.5)
    assert PretrainConfig(global_batch_size=4, micro_batch_size=2, compile=True,
                          activation_memory_budget=0.5).activation_memory_budget == 0.5


@pytest.mark.slow  # two inductor compiles of a 2-layer model on the CPU (≈ 20 s)
def test_a_lower_budget_saves_less_for_backward_and_changes_no_number():
    torch._dynamo.reset()
    full_loss, full_grads, full_saved = _run(_compiled_model(1.0))
    torch._dynamo.reset()
    low_loss, low_grads, low_saved = _run(_compiled_model(0.3))
    torch._dynamo.reset()
    import torch._functorch.config as functorch_config

    _compiled_model(1.0)  # the next model of the process gets the default back
    assert functorch_config.activation_memory_budget == 1.0
    # the layers' activations are most of what is saved (the rest: embedding, head, loss)
    assert low_saved < 0.85 * full_saved, (low_saved, full_saved)
    torch.testing.assert_close(low_loss, full_loss, rtol=1e-6, atol=1e-6)
    for name, g in low_grads.items():
        torch.testing.assert_close(g, full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture
def world_of_one():
    """The default process group of a world of one (gloo), destroyed after the test."""
    from biomed_llama.train.mesh import build_mesh, init_distributed, shutdown

    try:
        yield build_mesh(init_distributed("cpu"), None)
    finally:
        shutdown()


def _sharded_step(mesh, gathered: int):
    """Two micro batches through FSDP2 on a world of one (gloo): which layers are sharded after the first
    micro batch's backward and after the last; the loss and gradients of the step."""
    from torch.distributed.tensor import DTensor

    from biomed_llama.train.parallelize import apply_fsdp, gathered_modules
    from biomed_llama.train.step import StepOptions, _fsdp_flags

    cfg4 = CFG.model_copy(update={"num_layers": 4})
    model = trainable_model(cfg4)
    cfg = PretrainConfig(global_batch_size=4, micro_batch_size=2, gathered_layers=gathered, grad_sync="every")
    apply_fsdp(model, mesh, cfg)
    opts = StepOptions(sync_every_micro=True, keep_gathered=tuple(gathered_modules(model, cfg)))
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randint(3, 300, (2, 24), generator=gen) for _ in range(2)]
    sharded, losses = [], []
    for k, ids in enumerate(batches):
        _fsdp_flags(model, k, len(batches), opts)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
        sharded.append([isinstance(layer.mlp.up_proj.weight, DTensor) for layer in model.model.layers])
    grads = {n: p.grad.full_tensor().clone() for n, p in model.named_parameters()}
    return sharded, losses, grads


def test_gathered_layers_stay_gathered_between_micro_batches_and_change_no_number(world_of_one):
    sharded, losses, grads = _sharded_step(world_of_one, gathered=2)
    assert sharded == [[True, True, False, False], [True, True, True, True]]
    plain_sharded, plain_losses, plain_grads = _sharded_step(world_of_one, gathered=0)
    # FSDP's plain resharding: every layer (the last one too) is sharded again after its backward
    assert plain_sharded == [[True] * 4, [True] * 4]
    torch.testing.assert_close(losses, plain_losses, rtol=0, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain_grads[name], rtol=0, atol=0, msg=name)


def test_gathered_layers_need_resharding_and_at_most_the_model_s_layers(world_of_one):
    from biomed_llama.errors import ConfigError
    from biomed_llama.train.parallelize import apply_fsdp

    with pytest.raises(ValueError, match="gathered_layers applies with reshard_after_forward: true"):
        PretrainConfig(global_batch_size=4, micro_batch_size=2, reshard_after_forward=False, gathered_layers=2)
    with pytest.raises(ConfigError, match="gathered_layers is 3 but the model has 2 layers"):
        apply_fsdp(trainable_model(CFG), world_of_one,
                   PretrainConfig(global_batch_size=4, micro_batch_size=2, gathered_layers=3))
