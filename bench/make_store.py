"""A synthetic token store in the tokenize stage's on-disk contract, and a params file for the real CLI.

The store holds documents that repeat a random 32-token motif (so the loss falls within a few
steps), ids < the shape's vocabulary, written as `pubmed_abstracts/train/{tokens.bin, offsets.npy,
meta.json}` with a manifest through the package's own writer (`biomed_llama.testing`: `TokenWriter`,
as `biomed-llama tokenize` writes it). The params file is `configs/paper.yaml` with
the model replaced by a random-init shape (no base weights needed) and the data, outputs and step
budget pointed at the bench folder; the levers come as `--set` on the command line.

    python -m bench.make_store --out DIR --shape 7b --sequences 2000   # DIR/tokens, DIR/params.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from bench.bench_pretrain import SHAPES
from biomed_llama.testing import motif_docs, write_token_stores

REPO = Path(__file__).resolve().parents[1]


def params(out: Path, shape: str) -> dict:
    """configs/paper.yaml with a random-init `shape` model and every path under `out`."""
    hidden, ffn, layers, heads, vocab, seq = SHAPES[shape]
    raw = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    raw["model"].update(base=None, hidden_size=hidden, intermediate_size=ffn, num_layers=layers, num_heads=heads,
                        num_kv_heads=None, vocab_size=vocab, max_position_embeddings=seq, attention="sdpa")
    raw["pretrain"].update(tokens=str(out / "tokens"), subsets=["pubmed_abstracts"], split="train",
                           tokenizer=str(REPO / "data" / "sample" / "tokenizer"), max_seq_length=seq,
                           packing="concat", shuffle=False, progress=False, export_init=None,
                           checkpoint_dir=str(out / "ckpt"), output=str(out / "model"),
                           metrics=str(out / "metrics.json"), plots=str(out / "plots"),
                           # the released loader replays the paper's 32-GPU file-order stream: not this synthetic store
                           released_loader=None)
    return raw


def main() -> None:
    """Write the store and the params file (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--sequences", type=int, default=64, help="training sequences the store must hold")
    args = ap.parse_args()
    out = Path(args.out)
    *_, vocab, seq = SHAPES[args.shape]
    # concat packing: BOS + doc + EOS per document, so a document of seq-2 tokens fills one sequence
    write_token_stores(out / "tokens", {("pubmed_abstracts", "train"): motif_docs(args.sequences, seq - 2, vocab)},
                       vocab_size=vocab, params={"bench": "synthetic motif store", "shape": args.shape})
    (out / "params.yaml").write_text(yaml.safe_dump(params(out, args.shape), sort_keys=False))
    print(f"store: {args.sequences} sequences of {seq} tokens in {out / 'tokens'}; params: {out / 'params.yaml'}")


if __name__ == "__main__":
    main()
