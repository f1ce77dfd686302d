"""LR schedule identical to transformers', decay groups as HF Trainer, MFU arithmetic, config checks."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.train.config import OptimConfig
from biomed_llama.train.optim import build_optimizer, build_scheduler, param_groups, warmup_steps


def _lrs(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total,ratio,cycles", [(100, 0.03, 0.39758361765043326), (37, 0.1, 0.5), (10, 0.0, 1.3)])
def test_schedule_matches_transformers(total, ratio, cycles):
    from transformers import get_cosine_schedule_with_warmup

    cfg = OptimConfig(lr=3e-5, warmup_ratio=ratio, num_cycles=cycles)
    p = torch.nn.Parameter(torch.zeros(2, 2))
    ours = torch.optim.AdamW([p], lr=cfg.lr)
    theirs = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=cfg.lr)
    a = _lrs(ours, build_scheduler(ours, cfg, total), total)
    b = _lrs(theirs, get_cosine_schedule_with_warmup(theirs, warmup_steps(total, ratio), total, cycles), total)
    assert a == b
    if cycles < 0.5:  # the released script's num_cycles stops above zero
        assert a[-1] > 0.05 * cfg.lr


def test_warmup_steps_round_up_like_hf():
    assert warmup_steps(100, 0.03) == 3 and warmup_steps(101, 0.03) == 4 and warmup_steps(10, 0.0) == 0


def test_no_decay_on_norms_and_biases():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=50))
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(16))
    decay, skip = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = sorted(names[id(p)] for p in skip["params"])
    assert skipped == ["model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                       "model.layers.0.self_attn.q_proj.bias", "model.norm.weight"]
    assert skip["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert "model.embed_tokens.weight" in {names[id(p)] for p in decay["params"]}
    opt = build_optimizer(model, OptimConfig(betas=(0.9, 0.95), weight_decay=0.1), torch.device("cpu"))
    assert opt.defaults["betas"] == (0.9, 0.95) and not opt.defaults["fused"]


def test_flops_and_mfu():
    from biomed_llama.train.metrics import flops_per_token, mfu, peak_flops

    # LLaMA-7B: 6,738,415,616 params, 131,072,000 embedding; 32 layers × 4096 × 2048
    f = flops_per_token(6_738_415_616, 131_072_000, 32, 4096, 2048)
    assert f == 6 * 6_607_343_616 + 12 * 32 * 4096 * 2048
    assert mfu(3000.0, f, 989e12) == pytest.approx(3000 * f / 989e12)
    assert mfu(3000.0, f, None) is None and peak_flops(torch.device("cpu")) is None


def test_config_errors():
    from biomed_llama.config import validate_params
    from biomed_llama.errors import ConfigError

    with pytest.raises(ConfigError, match="micro_batch_size .3. must divide pretrain.global_batch_size .8."):
        validate_params({"pretrain": {"global_batch_size": 8, "micro_batch_size": 3}})
    with pytest.raises(ConfigError, match="num_heads"):
        validate_params({"model": {"hidden_size": 30, "num_heads": 4}})
    with pytest.raises(ConfigError, match="pretrain.packing"):
        validate_params({"pretrain": {"packing": "pack"}})


def test_mesh_shape():
    from biomed_llama.errors import ConfigError
    from biomed_llama.train.mesh import mesh_shape

    assert mesh_shape(32, 4, None) == (8, 4)  # the paper: 8 nodes × 4 GPUs
    assert mesh_shape(4, 4, 2) == (2, 2)
    with pytest.raises(ConfigError, match="does not divide"):
        mesh_shape(4, 4, 3)


@pytest.mark.parametrize("decay_all", [False, True])
def test_decay_norms_and_biases_matches_adamw_by_hand(decay_all):
    """One AdamW step by hand (first step: update = g / (|g| + eps)); with `decay_norms_and_biases` the norm
    weights and biases shrink by lr·wd as well (the released runs, HF Trainer 4.28 under FSDP)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=50))
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.randn(16))
    lr, wd, eps = 0.01, 0.1, 1e-8
    cfg = OptimConfig(lr=lr, weight_decay=wd, eps=eps, betas=(0.9, 0.95), decay_norms_and_biases=decay_all)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    for n, p in model.named_parameters():
        exempt = n.endswith(".bias") or "norm" in n
        decay = wd if (decay_all or not exempt) else 0.0
        expected = before[n] * (1 - lr * decay) - lr * grads[n] / (grads[n].abs() + eps)
        assert torch.allclose(p.detach(), expected, atol=1e-6), n
    assert len(param_groups(model, wd, decay_all)[1]["params"]) == (0 if decay_all else 4)
