"""bench/budget_plan.py: what a compiled layer saves for backward, weights left out, shrinks with the budget."""

from __future__ import annotations


import pytest
import torch

from bench import budget_plan as B


@pytest.mark.slow  # two inductor compiles of one small layer on the CPU (≈ 5 s)
def test_saved_activations_leave_out_the_weights_and_shrink_with_the_budget(monkeypatch):
    import torch._functorch.config as functorch_config

    from biomed_llama.model.config import ModelConfig
    from tests.helpers.models import trainable_model

    monkeypatch.setattr(functorch_config, "activation_memory_budget", 1.0)  # restored after the test
    hidden, ffn, seq = 64, 176, 32
    cfg = ModelConfig(hidden_size=hidden, intermediate_size=ffn, num_layers=1, num_heads=2, vocab_size=64,
                      max_position_embeddings=seq)
    model = trainable_model(cfg).to(torch.bfloat16)
    layer = model.model.layers[0]
    full = B.saved_activations(layer, model, 1.0, hidden, seq)
    low = B.saved_activations(layer, model, 0.5, hidden, seq)
    weight_shapes = {tuple(p.shape) for p in layer.parameters()} | {tuple(p.t().shape) for p in layer.parameters() if p.dim() == 2}
    assert not weight_shapes & set(full), "a weight was counted as an activation"
    assert (seq, ffn) in full  # the FFN activations are there at budget 1
    size = lambda shapes: sum(torch.Size(s).numel() for s in shapes)  # noqa: E731
    assert size(low) < size(full)
