"""Benchmark of the pretrain engine: loss agreement across meshes, and throughput / MFU.

One rank per GPU under torchrun (gloo on CPU with `--shape tiny` for a smoke run). It uses the
engine itself: `biomed_llama.train.engine.build` (meta model → `parallelize` (AC, per-block
compile, FSDP2 on the (`replicate`, `shard`) mesh) → materialise → fused AdamW + cosine schedule,
`DistributedLoader` over a synthetic dataset of deterministic repeated motifs, so the loss moves
within a few steps), the seeded init, and the engine's trainer (`Trainer.train_step`). Writes one JSON per run
into `--out`; `summarize` prints the table.

    torchrun --nproc-per-node 4 -m bench.bench_pretrain run --shape 7b --micro 4 --compile --name 7b --out DIR
    python -m bench.bench_pretrain summarize DIR

MFU: 6·N(non-embedding) + 12·L·d·S FLOPs per token (biomed_llama.train.metrics) against
989 TFLOP/s (H100/H200 SXM dense bf16) or 312 (A100); with `--float8` the same count against the same bf16 peak
(bf16-equivalent FLOPs, so an FP8 run's MFU compares with a bf16 run's as a speed ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# name: (hidden, intermediate, layers, heads, vocab, seq)
SHAPES = {
    "tiny": (64, 172, 2, 4, 512, 64),
    "1b": (2048, 5504, 16, 16, 32000, 2048),   # ~0.94B parameters, LLaMA architecture
    "7b": (4096, 11008, 32, 32, 32000, 2048),  # LLaMA-7B
    "7b8": (4096, 11008, 8, 32, 32000, 2048),  # an 8-layer slice of LLaMA-7B (fits one GPU)
    # 16 layers: 3.5B parameters, about the training state (42 GB of DCP files) that each GPU of a 1×2 mesh
    # holds of the whole 7B (3.37B): the per-rank checkpoint stall of that mesh, measured on one GPU
    "7b16": (4096, 11008, 16, 32, 32000, 2048),
}


class MotifDataset:
    """Synthetic sequences: sequence i repeats a random 32-token motif drawn from (seed, i)."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int = 0):
        self.n, self.seq_len, self.vocab, self.seed = n, seq_len, vocab, seed

    def __len__(self) -> int:
        return self.n

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) of sequence i; labels = inputs (the model shifts them)."""
        motif = np.random.default_rng([self.seed, i]).integers(3, self.vocab, size=32)
        ids = np.resize(motif, self.seq_len).astype(np.int64)
        return ids, ids.copy()


def bench_spec(args: argparse.Namespace, world_size: int, cuda: bool):
    """The engine spec of a benchmark run: the shape, mesh and options of `args` on the synthetic data."""
    from biomed_llama.model.config import ModelConfig
    from biomed_llama.train.config import OptimConfig, PretrainConfig
    from biomed_llama.train.engine import TrainSpec

    hidden, ffn, layers, heads, vocab, seq = SHAPES[args.shape]
    mcfg = ModelConfig(hidden_size=hidden, intermediate_size=ffn, num_layers=layers, num_heads=heads,
                       vocab_size=vocab, max_position_embeddings=seq, attention=args.attention)
    global_batch = args.micro * args.acc * world_size
    cfg = PretrainConfig(max_seq_length=seq, global_batch_size=global_batch, micro_batch_size=args.micro,
                         max_steps=args.steps, shuffle=False,
                         optim=OptimConfig(lr=args.lr, warmup_ratio=0.1, num_cycles=0.5),
                         param_dtype="bfloat16" if cuda else "float32",
                         reduce_dtype=args.reduce_dtype if cuda else "float32", shard_size=args.shard,
                         reshard_after_forward=not args.no_reshard, compile=args.compile,
                         activation_checkpointing=args.ac, device="auto", loss_weighting=args.loss_weighting,
                         sdpa_backend=args.sdpa_backend, kernels=[k for k in args.kernels.split(",") if k],
                         grad_sync=args.grad_sync, activation_memory_budget=args.memory_budget,
                         gathered_layers=args.gathered_layers, float8=args.float8)
    return TrainSpec(stage="bench", seed=1234, cfg=cfg, model=mcfg,
                     dataset=lambda: (MotifDataset(global_batch * args.steps, seq, vocab), None))


def engine_step(tr):
    """One step of the engine's own trainer (`Trainer.train_step`: the loader's next batch, the normaliser's
    all-reduce, the step, the trainer's callbacks); this rank's (loss, grad norm)."""
    from biomed_llama.train.callbacks import LoopEnd

    out = tr.train_step()
    if isinstance(out, LoopEnd):  # a non-finite step the trainer did not apply
        raise SystemExit(f"bench: {out.diverged}")
    return out.loss, out.grad_norm


def run(args: argparse.Namespace) -> None:
    """Train `--steps` steps of the chosen shape/mesh/options; rank 0 writes `<out>/<name>.json`."""
    import torch
    import torch.distributed as dist

    from biomed_llama.train import metrics as M
    from biomed_llama.train.engine import build, starting_weights
    from biomed_llama.train.mesh import init_distributed, shutdown

    env = init_distributed("auto")  # the world size sets the global batch; `build` finds the group up
    cuda = env.device.type == "cuda"
    if cuda and args.mem_cap_gib:  # an 80 GB card's budget on a bigger one
        from bench.memcap import cap_gpu_memory

        cap_gpu_memory(args.mem_cap_gib, env.device)
    spec = bench_spec(args, env.world_size, cuda)
    cfg = spec.cfg
    tr = build(spec)  # the engine's own build: mesh, loader, meta model → parallelize → materialise, AdamW, schedule
    if args.eager_loss:  # the loss as before it was compiled with the blocks: HF's own for token weighting
        tr.model.compiled_loss = False
        tr.step.options.weighted_head = tr.model.weighted_loss_only
    starting_weights(tr)
    mesh, n_params, flops_tok = tr.mesh, tr.n_params, tr.flops_per_token
    losses, t0 = [], None
    for step in range(args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            dist.barrier()
            t0 = time.perf_counter()
        loss, _ = engine_step(tr)
        if env.world_size > 1:
            dist.all_reduce(loss)
        # --host-sync: read the loss every step (the engine with log_every 1); else only at the end
        losses.append(float(loss) if args.host_sync else loss)
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / (args.steps - args.warmup)
    trace = Path(args.out) / f"{args.name}.trace.json.gz" if args.trace and env.is_main else None
    kernels = _profile(tr, args, env, trace) if args.profile and cuda else None
    losses = [float(v) for v in losses]
    tok_s_dev = tr.tokens_per_step / dt / env.world_size
    peak = M.peak_flops(env.device)
    row = {
        "name": args.name, "shape": args.shape, "params": n_params, "world": env.world_size, "mesh": list(mesh.shape),
        "micro": args.micro, "acc": args.acc, "compile": args.compile, "ac": args.ac, "attention": args.attention,
        "reshard_after_forward": cfg.reshard_after_forward, "reduce_dtype": cfg.reduce_dtype,
        "memory_budget": cfg.activation_memory_budget, "gathered_layers": cfg.gathered_layers,
        "sdpa_backend": cfg.sdpa_backend, "kernels": tr.kernels, "grad_sync": cfg.grad_sync,
        "loss_weighting": cfg.loss_weighting, "float8": cfg.float8,
        "compiled_loss": bool(getattr(tr.model, "compiled_loss", False)),
        "host_sync": args.host_sync, "mem_cap_gib": args.mem_cap_gib,
        "device": torch.cuda.get_device_name(env.device) if cuda else "cpu",
        "tok_s_per_gpu": tok_s_dev, "flops_per_token": flops_tok, "flop_rate_per_gpu": tok_s_dev * flops_tok,
        "mfu": M.mfu(tok_s_dev, flops_tok, peak), "peak_mem_gib": M.memory_gib(env.device),
        # what the caching allocator held at its peak: what a memory cap (and an 80 GB card) must hold
        "peak_reserved_gib": torch.cuda.max_memory_reserved(env.device) / 2**30 if cuda else None,
        "step_s": dt, "losses": losses,
    }
    if kernels is not None:
        row["kernels_profile"] = kernels
    if env.is_main:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}.json").write_text(json.dumps(row, indent=1))
        if kernels is not None:
            from bench.kernel_profile import format_breakdown

            (out / f"{args.name}.kernels.txt").write_text(format_breakdown(kernels) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
    shutdown()


def _profile(tr, args: argparse.Namespace, env, trace: Path | None) -> dict:
    """`--profile` more steps under `torch.profiler` (after the timed ones): device time per kernel class; the
    Chrome trace of those steps into `trace` when given."""
    import torch
    from bench.kernel_profile import breakdown, device_kernels

    hidden, _, layers, _, _, seq = SHAPES[args.shape]
    # the matrix multiplies' share of the counted FLOPs: all but the attention scores' 12·L·d·S
    matmul_per_token = tr.flops_per_token - 12.0 * layers * hidden * seq
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.profile):
            engine_step(tr)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    tokens = tr.tokens_per_step / env.world_size * args.profile
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))  # a .gz name is written gzipped
    return breakdown(device_kernels(prof), wall, matmul_per_token * tokens)


def _load(out: Path, name: str) -> dict | None:
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _anchor_flops_per_token(layers: int) -> float:
    """FLOPs/token of anchor_hf.py's model (7B shape, `layers` layers), counted like the engine."""
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch

    from biomed_llama.train.metrics import flops_per_token

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=2048)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in m.parameters())
    return flops_per_token(n, m.model.embed_tokens.weight.numel(), layers, 4096, 2048)


def summarize(out: Path) -> None:
    """Print the loss comparison, the 7B throughput vs the anchor baseline, and the attention backends."""
    print(f"== pretrain benchmark ({out}) ==")
    single, hybrid = _load(out, "1b_1gpu"), _load(out, "1b_2x2")
    if single and hybrid:
        diffs = [abs(a - b) for a, b in zip(single["losses"], hybrid["losses"])]
        rel = max(d / abs(a) for d, a in zip(diffs, single["losses"]))
        ok = rel < 0.02
        print(f"[1] ~1B ({single['params'] / 1e9:.2f}B) bf16, 20 steps: 1 GPU vs 2x2 hybrid on {hybrid['device']}: "
              f"max |dloss| {max(diffs):.4f}, max rel {rel:.4f} -> {'MATCH' if ok else 'MISMATCH'} (bar: rel < 0.02)")
        print("    1gpu :", " ".join(f"{v:.3f}" for v in single["losses"]))
        print("    2x2  :", " ".join(f"{v:.3f}" for v in hybrid["losses"]))
    else:
        print("[1] missing 1b_1gpu.json or 1b_2x2.json")
    runs = sorted((json.loads(p.read_text()) for p in out.glob("7b_*.json")), key=lambda r: -r["tok_s_per_gpu"])
    anchor_file = out / "anchor_hf.json"
    anchor = None
    if anchor_file.is_file():
        a = json.loads(anchor_file.read_text())
        rows = [r for r in a["rows"] if "tok_s" in r]
        if rows:
            anchor = dict(rows[0], flop_rate=rows[0]["tok_s"] * _anchor_flops_per_token(a["layers"]), layers=a["layers"])
    print("[2] LLaMA-7B shape (32 layers, hidden 4096, seq 2048) sharded over the GPUs, engine configs:")
    for r in runs:
        ratio = f"{r['flop_rate_per_gpu'] / anchor['flop_rate']:.3f}x anchor" if anchor else "no anchor"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"    {r['name']:<22} mesh {r['mesh']} micro {r['micro']} acc {r['acc']} compile {r['compile']} "
              f"ac {r['ac']}: {r['tok_s_per_gpu']:,.0f} tok/s/GPU, MFU {mfu}, {r['peak_mem_gib'] or 0:.1f} GiB, {ratio}")
    for p in sorted(out.glob("7b_*.err")):
        print(f"    {p.stem}: failed: {p.read_text().strip().splitlines()[-1][:200] if p.read_text().strip() else '?'}")
    if anchor:
        print(f"    anchor_hf (plain HF + compile + SDPA, 1 GPU, {anchor['layers']} layers, micro {a['micro']}): "
              f"{anchor['tok_s']:,.0f} tok/s, MFU {100 * anchor['mfu_vs_989']:.1f}%, "
              f"{anchor['flop_rate'] / 1e12:.0f} TFLOP/s")
    if runs:
        best = runs[0]
        bar1 = best["mfu"] is not None and best["mfu"] >= 0.45
        bar2 = anchor is not None and best["flop_rate_per_gpu"] >= 0.95 * anchor["flop_rate"]
        print(f"    best: {best['name']}: MFU >= 45%: {'PASS' if bar1 else 'FAIL'}; "
              f">= 0.95x anchor per-GPU FLOP rate: {'PASS' if bar2 else 'FAIL' if anchor else 'n/a'}")
    print("[3] attention backends (engine, 7B 8-layer slice, 1 GPU, no compile):")
    for p in sorted(out.glob("attn_*")):
        if p.suffix == ".json":
            r = json.loads(p.read_text())
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            print(f"    {r['attention']:<18} {r['tok_s_per_gpu']:,.0f} tok/s, MFU {mfu}, "
                  f"{r['peak_mem_gib'] or 0:.1f} GiB")
        elif p.suffix == ".err":
            lines = [ln for ln in p.read_text().splitlines() if ln.startswith("error:")]
            print(f"    {p.stem[5:]:<18} not usable: {lines[-1] if lines else p.read_text().strip()[-200:]}")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `run` (its options are `bench_spec`'s; bench_checkpoint.py parses them here too) and
    `summarize`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train a few steps and record throughput/losses")
    r.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--warmup", type=int, default=3, help="steps not timed (compile, allocator)")
    r.add_argument("--micro", type=int, default=2)
    r.add_argument("--acc", type=int, default=1)
    r.add_argument("--shard", type=int, default=None, help="shard group size (default: the node's GPUs)")
    r.add_argument("--compile", action="store_true")
    r.add_argument("--ac", choices=["none", "full", "selective"], default="none")
    r.add_argument("--memory-budget", type=float, default=1.0,
                   help="with --compile: pretrain.activation_memory_budget (share of saved activations kept)")
    r.add_argument("--attention", default="sdpa")
    r.add_argument("--no-reshard", action="store_true", help="reshard_after_forward=False (ZeRO-2)")
    r.add_argument("--gathered-layers", type=int, default=0,
                   help="with resharding: pretrain.gathered_layers (the last N layers stay gathered through the step)")
    r.add_argument("--reduce-dtype", default="float32", choices=["float32", "bfloat16"])
    r.add_argument("--lr", type=float, default=3e-4)
    r.add_argument("--sdpa-backend", default="auto", choices=["auto", "cudnn", "flash", "efficient"])
    r.add_argument("--kernels", default="", help="comma-separated liger kernels (rms_norm,swiglu,rope,linear_cross_entropy)")
    r.add_argument("--grad-sync", default="last", choices=["last", "every"])
    r.add_argument("--float8", default=None, choices=["tensorwise", "rowwise"],
                   help="pretrain.float8: torchao FP8 training of the decoder's linear layers (not the paper's numerics)")
    r.add_argument("--loss-weighting", default="token", choices=["token", "sequence"])
    r.add_argument("--eager-loss", action="store_true", help="with --compile: keep the loss out of torch.compile")
    r.add_argument("--host-sync", action="store_true", help="read the loss on the host every step")
    r.add_argument("--mem-cap-gib", type=float, default=0, help="cap this process's GPU memory (0: none)")
    r.add_argument("--profile", type=int, default=0, help="then N more steps under torch.profiler (GPU): time per kernel class")
    r.add_argument("--trace", action="store_true", help="with --profile: rank 0 also writes <name>.trace.json.gz")
    r.add_argument("--name", required=True)
    r.add_argument("--out", required=True)
    s = sub.add_parser("summarize", help="print the comparison table from a run folder")
    s.add_argument("out")
    return ap


def main() -> None:
    """Run a benchmark (`run`) or print the table of a run folder (`summarize`)."""
    args = build_parser().parse_args()
    if args.cmd == "run":
        from biomed_llama.errors import UserError

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            run(args)
        except UserError as e:  # e.g. an attention backend that does not load: one line, exit 1
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
    else:
        summarize(Path(args.out))


if __name__ == "__main__":
    main()
