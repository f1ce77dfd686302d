"""Model building: deterministic init, shard-wise HF weight loading, attention backend checks."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.errors import UserError
from biomed_llama.model.attention import check_attention
from biomed_llama.model.build import build_meta_model, init_weights, llama_config, load_hf_weights
from biomed_llama.model.config import ModelConfig

CFG = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  vocab_size=100, max_position_embeddings=64)


def _materialised(config):
    model = build_meta_model(config)
    model.to_empty(device="cpu")
    return model


def test_init_is_deterministic_and_hf_like():
    config = llama_config(CFG)
    a, b = _materialised(config), _materialised(config)
    init_weights(a, 5, 0.02)
    init_weights(b, 5, 0.02)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert torch.all(a.model.norm.weight == 1)
    assert abs(a.model.embed_tokens.weight.std().item() - 0.02) < 0.003
    init_weights(b, 6, 0.02)
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)
    # rotary buffers are valid after to_empty + init
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM(config)
    assert torch.equal(a.model.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq)


def test_load_hf_directory_round_trip(tmp_path):
    from transformers import LlamaForCausalLM

    config = llama_config(CFG)
    torch.manual_seed(0)
    src = LlamaForCausalLM(config)
    src.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")  # several shards + index
    assert (tmp_path / "model.safetensors.index.json").is_file()
    base_cfg = llama_config(ModelConfig(base=str(tmp_path)))
    assert base_cfg.num_key_value_heads == 2 and base_cfg.hidden_size == 32
    dst = _materialised(base_cfg)
    load_hf_weights(dst, tmp_path)
    x = torch.randint(0, 100, (1, 12))
    with torch.no_grad():
        assert torch.equal(src(x).logits, dst(x).logits)


def test_load_rejects_wrong_shapes(tmp_path):
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(llama_config(CFG)).save_pretrained(tmp_path, safe_serialization=True)
    other = _materialised(llama_config(CFG.model_copy(update={"vocab_size": 120})))
    with pytest.raises(UserError, match=r"(lm_head|embed_tokens)\.weight has shape \(100, 32\), model \(120, 32\)"):
        load_hf_weights(other, tmp_path)
    with pytest.raises(UserError, match="no config.json"):
        llama_config(ModelConfig(base=str(tmp_path / "nowhere")))


def test_attention_backends_checked_at_start():
    cpu = torch.device("cpu")
    assert check_attention("sdpa", cpu) == "sdpa"
    for backend in ("flash_attention_2", "xformers"):
        with pytest.raises(UserError, match=f"model.attention={backend} needs a CUDA GPU"):
            check_attention(backend, cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flash_attention_2", "xformers"])
def test_gpu_backends_match_sdpa(backend):
    """Where the kernel imports, a bf16 forward agrees with SDPA (else the check's error is one clear line)."""
    dev = torch.device("cuda")
    try:
        check_attention(backend, dev)
    except UserError as e:
        assert str(e).startswith(f"model.attention={backend}") and "\n" not in str(e)
        pytest.skip(str(e))
    outs = []
    x = torch.randint(0, 100, (2, 64), device=dev, generator=torch.Generator(dev).manual_seed(0))  # one input for both
    for impl in ("sdpa", backend):
        config = llama_config(CFG.model_copy(update={"attention": impl, "hidden_size": 128, "num_heads": 2}))
        model = _materialised(config).to(dev)
        init_weights(model, 0, 0.02)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(model(x).logits.float())
    assert (outs[0] - outs[1]).abs().max().item() < 0.05
