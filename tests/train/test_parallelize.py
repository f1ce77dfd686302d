"""`train/parallelize.py`: the compiled layers' activation memory budget (`pretrain.activation_memory_budget`)
keeps fewer activations for backward and changes no number; the config refuses it without compile."""

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
