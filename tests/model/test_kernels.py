"""Fused kernels (liger-kernel) and SDPA kernel choice: plain modules on CPU; on a GPU, each kernel gives the
plain model's loss and gradients (fp32, tight), with both loss weightings through the fused head."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.errors import UserError
from biomed_llama.model.build import init_weights, llama_config
from biomed_llama.model.config import ModelConfig
from biomed_llama.model.kernels import KERNELS, apply_kernels

CFG = ModelConfig(hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2, vocab_size=300,
                  max_position_embeddings=64)


def _model(kernels, device):
    from biomed_llama.model.build import build_meta_model

    model = build_meta_model(llama_config(CFG))
    applied = apply_kernels(model, kernels, device)
    model.to_empty(device=device)
    init_weights(model, 0, 0.02)
    return model, applied


def _batch(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (3, 40), generator=g)
    labels = ids.clone()
    labels[1, 25:] = -100  # a shorter sequence: the two weightings differ
    targets = (labels[:, 1:] != -100).float()
    token_w = targets / targets.sum()
    seq_w = targets / (targets.sum(1, keepdim=True) * 3)
    return ids.to(device), labels.to(device), token_w.to(device), seq_w.to(device)


def test_kernels_fall_back_to_the_plain_modules_on_cpu():
    model, applied = _model(list(KERNELS), torch.device("cpu"))
    assert applied == [] and not model.fused_loss
    assert type(model.model.norm).__name__ == "LlamaRMSNorm" and type(model.model.layers[0].mlp).__name__ == "LlamaMLP"
    with pytest.raises(UserError, match="unknown kernel 'fast'"):
        apply_kernels(model, ["fast"], torch.device("cpu"))


def test_weighted_forward_equals_hf_loss_with_token_weights():
    """`token_weights` = 1/N per target gives HF's own token-mean loss (the plain head, CPU)."""
    model, _ = _model([], torch.device("cpu"))
    ids, labels, token_w, _ = _batch("cpu")
    ours = model(input_ids=ids, labels=labels, token_weights=token_w).loss
    hf = model(input_ids=ids, labels=labels).loss
    assert torch.allclose(ours, hf, atol=1e-6)


def _loss_and_grads(model, ids, labels, weights):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels, token_weights=weights).loss
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_matches_the_plain_model_on_gpu(kernel):
    pytest.importorskip("liger_kernel")
    from transformers.models.llama import modeling_llama

    dev = torch.device("cuda")
    plain, _ = _model([], dev)
    fused, applied = _model([kernel], dev)
    assert applied == [kernel]
    ids, labels, token_w, seq_w = _batch(dev)
    patched = modeling_llama.apply_rotary_pos_emb  # rope is a module global: the plain model runs transformers' own
    for weights in (token_w, seq_w):
        modeling_llama.apply_rotary_pos_emb = getattr(patched, "plain", patched)
        try:
            l0, g0 = _loss_and_grads(plain, ids, labels, weights)
        finally:
            modeling_llama.apply_rotary_pos_emb = patched
        l1, g1 = _loss_and_grads(fused, ids, labels, weights)
        assert torch.allclose(l0, l1, rtol=1e-4, atol=1e-5), (kernel, l0, l1)
        for name in g0:
            rel = (g0[name] - g1[name]).norm() / g0[name].norm().clamp(min=1e-12)
            assert rel < 1e-3, (kernel, name, float(rel))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cudnn", "flash", "efficient"])
def test_sdpa_backends_agree_on_gpu(backend):
    from biomed_llama.model.attention import sdpa_context

    dev = torch.device("cuda")
    model, _ = _model([], dev)
    ids, labels, token_w, _ = _batch(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(input_ids=ids, labels=labels, token_weights=token_w).loss
        with sdpa_context(backend, dev):
            got = model(input_ids=ids, labels=labels, token_weights=token_w).loss
    assert abs(float(ref) - float(got)) < 2e-2 * abs(float(ref))
