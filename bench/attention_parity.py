"""The released attention against the speed choice: one batch through the LLaMA-7B shape, xformers vs SDPA (cuDNN).

The released runs trained with xformers' `memory_efficient_attention` and its causal `LowerTriangularMask`
(the authors' transformers fork be40569cc: `configuration_llama.py:99` defaults
`use_memory_efficient_attention=True`, `modeling_llama.py:224-234` calls it whenever the model is training;
`pretrain/train.py:71-75` and `evaluation/main.py:78` set it for training). The paper profile names it the
faithful kernel (`model.attention: xformers`) and SDPA with cuDNN first (`model.attention: sdpa`,
`pretrain.sdpa_backend: cudnn`) the labelled speed choice. This script measures what the choice changes:
the same bf16 batch through the same weights (the 7B layer shape, `--layers` decoder layers, a seeded random
init: no real weights on the machine), in training mode, once per kernel: the loss, the logit differences,
and both against an fp32 run with SDPA's math kernel (the rounding each kernel adds on its own).

    python -m bench.attention_parity                     # CUDA: 4 layers, batch 2 × 2048, bf16 (< 1 min on H100)
    python -m bench.attention_parity --out DIR           # also writes DIR/attention_parity.json

xformers runs through its PyTorch-kernel operators (`biomed_llama.model.attention.enable_pt_operators`);
a machine where it cannot run stops with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


SHAPE_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6, initializer_range=0.02)


def build_model(layers: int, seed: int, device: torch.device):
    """A LLaMA-7B-shaped model of `layers` decoder layers, seeded init, fp32 weights on `device`, training mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, tie_word_embeddings=False, use_cache=False, **SHAPE_7B)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.train()  # the fork took the xformers path only in training (modeling_llama.py:224)


def forward(model, ids: torch.Tensor, attention: str, dtype: torch.dtype, sdpa_backend: str | None):
    """Loss and logits (fp32) of one forward with `attention` (`sdpa` or `xformers`) under autocast to `dtype`;
    `sdpa_backend` (an `SDPBackend` name) is SDPA's only kernel, None leaves the choice to PyTorch."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    model.config._attn_implementation = attention
    kernel = sdpa_kernel([getattr(SDPBackend, sdpa_backend)]) if sdpa_backend else contextlib.nullcontext()
    with torch.no_grad(), kernel, torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        out = model(input_ids=ids, labels=ids)
    return float(out.loss), out.logits.float()


def compare(args) -> dict:
    """Run the batch through each kernel and return the figures."""
    from biomed_llama.model.attention import check_attention, xformers_operators

    device = torch.device("cuda")
    check_attention("xformers", device)  # registers it with transformers, or stops with one line
    model = build_model(args.layers, args.seed, device)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    ids = torch.randint(3, SHAPE_7B["vocab_size"], (args.batch, args.seq), generator=gen).to(device)
    t0 = time.perf_counter()
    runs = {
        "fp32 math (reference)": forward(model, ids, "sdpa", torch.float32, "MATH"),
        "xformers bf16 (released)": forward(model, ids, "xformers", torch.bfloat16, None),
        "sdpa cuDNN bf16 (speed)": forward(model, ids, "sdpa", torch.bfloat16, "CUDNN_ATTENTION"),
    }
    torch.cuda.synchronize()

    def diff(a: str, b: str) -> dict:
        d = (runs[a][1] - runs[b][1]).abs()
        return {"loss_diff": abs(runs[a][0] - runs[b][0]), "logit_max_abs_diff": float(d.max()),
                "logit_mean_abs_diff": float(d.mean())}

    ref, xf, cu = runs
    return {
        "device": torch.cuda.get_device_name(device), "torch": torch.__version__,
        "xformers_operators": xformers_operators(device), "shape": {"layers": args.layers, **SHAPE_7B},
        "batch": [args.batch, args.seq], "seed": args.seed, "seconds": round(time.perf_counter() - t0, 2),
        "loss": {name: loss for name, (loss, _) in runs.items()},
        "xformers_vs_sdpa_cudnn": diff(xf, cu), "xformers_vs_fp32": diff(xf, ref), "sdpa_cudnn_vs_fp32": diff(cu, ref),
        "logit_std_fp32": float(runs[ref][1].std()),
    }


def main() -> None:
    """CLI: print the figures (and write them to `--out`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4, help="decoder layers of the 7B shape (default 4)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=None, help="folder for attention_parity.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_parity: needs a CUDA GPU (xformers and cuDNN attention run only there)")
    from biomed_llama.errors import UserError

    try:
        result = compare(args)
    except UserError as e:
        sys.exit(f"attention_parity: {e}")
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "attention_parity.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
