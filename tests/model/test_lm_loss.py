"""The trained LLaMA's weighted loss (`model/lm.py`): the plain, the compiled and HF's own loss agree, and
`pretrain.compile` turns the compiled one on (the engine then passes per-token weights to it)."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.model import lm
from biomed_llama.model.config import ModelConfig
from tests.helpers.models import trainable_model

CFG = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, vocab_size=300,
                  max_position_embeddings=64)


def _model():
    return trainable_model(CFG)


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (3, 40), generator=g)
    labels = ids.clone()
    labels[1, 25:] = -100  # a shorter sequence: per-sequence weights differ from the token mean
    targets = (labels[:, 1:] != -100).float()
    seq_w = targets / (targets.sum(1, keepdim=True) * 3)
    return ids, labels, targets / targets.sum(), seq_w


def _loss_and_grads(model, **kwargs):
    model.zero_grad(set_to_none=True)
    loss = model(**kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_token_weights_give_hf_own_loss():
    model = _model()
    ids, labels, token_w, _ = _batch()
    hf, hf_grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    ours, grads = _loss_and_grads(model, input_ids=ids, labels=labels, token_weights=token_w)
    torch.testing.assert_close(ours, hf, rtol=1e-6, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, hf_grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow  # one inductor compile on the CPU (≈ 12 s)
def test_compiled_loss_equals_the_plain_loss():
    model = _model()
    ids, labels, _, seq_w = _batch()
    plain, plain_grads = _loss_and_grads(model, input_ids=ids, labels=labels, token_weights=seq_w)
    model.compiled_loss = True
    torch._dynamo.reset()
    compiled, grads = _loss_and_grads(model, input_ids=ids, labels=labels, token_weights=seq_w)
    assert lm.compiled_weighted_cross_entropy.cache_info().currsize == 1  # built, and it did compile:
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    torch.testing.assert_close(compiled, plain, rtol=1e-6, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_compile_turns_on_the_compiled_loss_and_the_weighted_head():
    from biomed_llama.data.loader import MicroBatch
    from biomed_llama.train.config import PretrainConfig
    from biomed_llama.train.engine import _step_options
    from biomed_llama.train.mesh import DistEnv
    from biomed_llama.train.parallelize import apply_compile
    from biomed_llama.train.step import TokenMeanLoss

    model = _model()
    env = DistEnv(0, 1, 0, 1, torch.device("cpu"))
    assert not _step_options(PretrainConfig(), env, 1, model).weighted_head
    apply_compile(model)  # wraps the layers; nothing compiles until they run
    assert model.compiled_loss
    opts = _step_options(PretrainConfig(), env, 1, model)
    assert opts.weighted_head
    ids, labels, token_w, _ = _batch()
    mb = MicroBatch(input_ids=ids, labels=labels)
    inputs = TokenMeanLoss().inputs(mb, int((labels[:, 1:] != -100).sum()), opts.weighted_head)
    torch.testing.assert_close(inputs["token_weights"], token_w)
