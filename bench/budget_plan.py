"""Which activations one compiled LLaMA layer saves for backward under each `pretrain.activation_memory_budget`.

    python -m bench.budget_plan --budgets 1 0.85 0.7 0.5 [--hidden 4096 --ffn 11008 --heads 32 --seq 2048]

CPU only (≈ 20 s for the 7B layer), bf16, one decoder layer of the given width compiled as the engine compiles it
(per block). For each budget it prints the saved activation tensors (the layer's weights, which backward also keeps,
are left out) and their elements per token, so a device call only has to measure the speed of a plan already known.
On the CPU attention is SDPA's CPU kernel, not cuDNN's: the plan for the rest of the layer is the same, but where a
low budget recomputes attention the GPU's choice may differ.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch


def saved_activations(layer, model, budget: float, hidden: int, seq: int) -> list[tuple[int, ...]]:
    """Shapes of the non-parameter tensors the compiled `layer` saves for backward at `budget`."""
    import torch._functorch.config as functorch_config

    torch._dynamo.reset()
    functorch_config.activation_memory_budget = budget
    compiled = torch.compile(layer)
    x = torch.randn(1, seq, hidden, dtype=torch.bfloat16, requires_grad=True)
    pos = model.model.rotary_emb(x, torch.arange(seq)[None])
    weights = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    shapes: list[tuple[int, ...]] = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        compiled(x, position_embeddings=pos, attention_mask=None)
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.85, 0.7, 0.5])
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    args = ap.parse_args()
    from biomed_llama.model.build import build_meta_model, init_weights, llama_config
    from biomed_llama.model.config import ModelConfig

    cfg = ModelConfig(hidden_size=args.hidden, intermediate_size=args.ffn, num_layers=1, num_heads=args.heads,
                      vocab_size=512, max_position_embeddings=args.seq)
    model = build_meta_model(llama_config(cfg))
    model.to_empty(device="cpu")
    init_weights(model, 0, 0.02)
    model.to(torch.bfloat16)
    layer = model.model.layers[0]
    for budget in args.budgets:
        shapes = saved_activations(layer, model, budget, args.hidden, args.seq)
        per_token = sum(torch.Size(s).numel() for s in shapes) / args.seq
        listed = ", ".join(f"{n}× {list(s)}" for s, n in sorted(Counter(shapes).items(), key=lambda kv: -kv[1]))
        print(f"budget {budget}: {per_token:,.0f} elements per token ({per_token / args.hidden:.2f} × hidden): {listed}")


if __name__ == "__main__":
    main()
