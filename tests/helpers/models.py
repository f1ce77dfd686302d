"""A tiny random-initialised LLaMA saved as a Hugging Face folder (what the stages read and write)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO

DEMO_TOKENIZER = REPO / "data" / "sample" / "tokenizer"


def make_tiny_model(dest: Path, tokenizer: Path = DEMO_TOKENIZER, manifest: bool = True, seed: int = 0) -> Path:
    """A random-init LlamaForCausalLM (hidden 32, 2 layers, init `seed`) + `tokenizer`, saved as safetensors in `dest`,
    with a manifest as a stage's export has (`manifest=False`: as a downloaded model, which stages read only
    with the `external` opt-in)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    if manifest:
        from biomed_llama.provenance import write_manifest

        write_manifest(dest, stage="test-model", params={"seed": seed})
    return dest


def trainable_model(cfg, seed: int = 0, std: float = 0.02):
    """The engine's trainable LLaMA for a `ModelConfig`, built on the meta device, materialised on the CPU and
    initialised as the engine does (`init_weights`), without sharding."""
    from biomed_llama.model.build import build_meta_model, init_weights, llama_config

    model = build_meta_model(llama_config(cfg))
    model.to_empty(device="cpu")
    init_weights(model, seed, std)
    return model
