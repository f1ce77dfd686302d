#!/usr/bin/env python3
"""The `seed` suite at the real benchmark sizes for a random-init model of a base row's shape: new path vs old, one call.

What it does, in order:
1. generates synthetic benchmark files in the published formats with the real sizes and realistic
   lengths: MedQA-USMLE 4 and 5 options (1,273 questions each, vignettes of ~90-240 tokens),
   MedMCQA validation (4,183 short questions), PubMedQA `ori_pqal.json` (1,000 items, abstracts
   of ~220-420 tokens), and Pile-format test text of PubMed Abstracts / PubMed Central (5 MB each;
   abstracts ~1.5 kB, papers ~30 kB), written as the extract stage's Parquet; then runs the
   package's `prepare_eval` on them, once;
2. per `--arch` (comma-separated; `ARCHS` below gives each shape's published config and where it comes from),
   two workers, each building the same random-initialised model of that shape (seed 0) directly on its GPU in bf16:
   - `llama-7b` (default): LLaMA-7B (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000), the shape
     of the llama-7b, pretrained and pmc-llama-7b rows;
   - `gpt-neo-2.7b`: GPT-Neo 2.7B (GPTNeo, 32 layers × 2560, 20 heads, global/local attention alternating with
     window 256, vocab 50257, 2,048 positions; 2.65B parameters);
   - `biomedlm-2.7b`: BioMedLM (GPT-2, 32 layers × 2560, 20 heads, vocab 28896, 1,024 positions, so max_length
     1,024 as `evaluate` caps it; 2.59B parameters);
   and the two workers:
   - `packed`: the whole suite, every document, through `evaluate`'s per-run code
     (`harness.load_lm` with `eval.backend: packed` → `set_suite` → `run_one`; the model comes
     from memory instead of a model folder, everything after that is the stage's);
   - `stock`: lm-eval's stock HF backend (the old path, batch 32 as bench/RESULTS.md) on
     the first `--stock-fraction` of the documents of every cell; its full-suite time is
     EXTRAPOLATED per cell (wall × all docs / docs run) and labelled so.
   The workers run in one lane per GPU, the packed ones first: one arch on 2 GPUs, packed on GPU 0 beside stock
   on GPU 1; two archs on 2 GPUs, each arch on its own GPU (packed, then stock); on one GPU one after the other;
3. per arch, compares the two paths item by item on the documents both scored (bf16: the parity check),
   and prints one table: per cell the packed wall time, the stock measured and extrapolated
   times, and the parity figures; totals at the end.

The demo tokenizer (vocab 4096, byte-level BPE) stands in for every arch's (its ids are valid in each vocabulary,
whose embedding and output head keep their full size); MC lengths are set in tokens, the perplexity text in bytes
(the demo tokenizer cuts ~3.1 bytes/token against LLaMA's ~4 on PubMed, GPT-2's and BioMedLM's own BPE about as
many or more, so the perplexity rows carry ~25% more tokens than a real run: an upper bound).

GPU (2 GPUs; ~6 min):  python -m bench.bench_eval          (one GPU: the workers run one after the other)
The 2.7B base rows:    bash bench/bench_eval.sh --arch gpt-neo-2.7b,biomedlm-2.7b --stock-fraction 0.1
                       (bench_eval.sh's header: the device call, and what bench_generate.py does with the result)
CPU smoke (minutes):   python -m bench.bench_eval --tiny   (tiny model of the --arch and sets, both paths in full)
Results: the tables on stdout; per arch `bench_eval.json` (arch, parameters, max_length, per-cell walls of both
paths, totals, parity, the card), `{packed,stock}.json` (per-cell timings and per-item log-likelihoods),
`{packed,stock}.log`, under out (one arch) or out/<arch>/ (several); out = $OUT if set, else .bench/eval.
Runs with its dependencies on PYTHONPATH (e.g. wheels unpacked into /tmp/site): torch, transformers,
lm-eval, pyarrow, pydantic and what they import (requirements/bench-eval-wheels.txt lists the wheels the
GPU machine lacks); `--print-deps` lists the distributions it imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.synth_benchmarks import text_of, write_benchmarks  # the writer make_gpu_inputs.py uses too

REPO = Path(__file__).resolve().parents[1]

# A worker starts no new cell later than this before the budget ends (the longest stock cell at 25% ran ~80 s on an H100).
DRAIN_S = 100.0
REAL = {"medqa4": 1273, "medqa5": 1273, "medmcqa": 4183, "pubmedqa": 1000, "ppl_bytes": 5_000_000}
TINY = {"medqa4": 16, "medqa5": 16, "medmcqa": 24, "pubmedqa": 12, "ppl_bytes": 20_000}


def write_extracted(root: Path, n_bytes: int, rnd: random.Random) -> Path:
    """Pile-format PubMed test text as the extract stage writes it (its Parquet writer + manifest, through
    `biomed_llama.testing`), n_bytes per subset."""
    from biomed_llama import testing

    tree = {}
    for slug, words in (("pubmed_abstracts", (150, 350)), ("pubmed_central", (3000, 7000))):
        texts, total = [], 0
        while total < n_bytes:
            t = text_of(rnd, rnd.randint(*words))
            texts.append(t)
            total += len(t.encode())
        tree[(slug, "test")] = [texts]
    return testing.write_extracted(root / "extracted", tree, source="test.jsonl.zst", params={"bench": True})


def ppl_tokens(extracted: Path, tok) -> dict[str, int]:
    """Tokens of each subset's test text under `tok` (the work the perplexity tasks do)."""
    import pyarrow.parquet as pq

    out = {}
    for d in sorted(extracted.iterdir()):
        if d.is_dir():
            texts = pq.read_table(d / "test/part-00000.parquet", columns=["text"]).column("text").to_pylist()
            out[d.name] = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    return out


# The model shapes `--arch` builds (random init, bf16 on the GPU; `--tiny`: 2 layers × 64, float32 on the CPU), each
# the published architecture of the base rows it times (bench_generate.py charges a base model its arch's seed suite):
# - llama-7b: LLaMA-7B (hidden 4096, 32 layers, 32 heads, FFN 11008, vocab 32000, RMSNorm eps 1e-6): llama-7b,
#   pretrained (BioMed-LLaMA-7B) and pmc-llama-7b are this shape;
# - gpt-neo-2.7b: EleutherAI/gpt-neo-2.7B's config.json (copies: huggingface.co/ktangri/gpt-neo-demo/blob/main/config.json,
#   huggingface.co/allenai/bhaskara/blob/main/config.json, both `_name_or_path: EleutherAI/gpt-neo-2.7B`): GPTNeo,
#   32 layers, hidden 2560, 20 heads, FFN 4 × hidden (intermediate_size null), attention_types [[global, local], 16]
#   with window 256, vocab 50257, 2048 positions, gelu_new, layer-norm eps 1e-5;
# - biomedlm-2.7b: stanford-crfm/BioMedLM's config.json (copies: huggingface.co/raidium/MQG,
#   huggingface.co/lavenderhaze/icd10llm, `_name_or_path: stanford-crfm/BioMedLM`; the model card: 2560 wide,
#   20 heads, 32 layers, vocab 28,896, sequence 1,024): GPT-2, n_layer 32, n_embd 2560, n_head 20, n_inner null
#   (4 × n_embd), vocab 28896, n_positions 1024, gelu_new, scale_attn_by_inverse_layer_idx true.
# The demo tokenizer (4,096 ids, byte-level BPE like GPT-2's) stands in for every arch's: its ids lie inside each
# vocabulary, whose embedding and output matmul keep their full size. Its BOS/EOS/pad ids (1, 2, 3) are set.
ARCHS = ("llama-7b", "gpt-neo-2.7b", "biomedlm-2.7b")


def arch_config(arch: str, tiny: bool):
    """The transformers config and model class of `arch` (tiny: the same architecture, 2 layers × 64)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig, LlamaForCausalLM

    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}  # the demo tokenizer's
    if arch == "llama-7b":
        cfg = (LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=2048, **ids) if tiny else
               LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6, **ids))
        cls = LlamaForCausalLM
    elif arch == "gpt-neo-2.7b":
        w, layers, heads, vocab = (64, 2, 4, 4096) if tiny else (2560, 32, 20, 50257)
        cfg = GPTNeoConfig(vocab_size=vocab, hidden_size=w, num_layers=layers, num_heads=heads, intermediate_size=None,
                           attention_types=[[["global", "local"], layers // 2]], window_size=256,
                           max_position_embeddings=2048, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                           embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0, **ids)
        cls = GPTNeoForCausalLM
    elif arch == "biomedlm-2.7b":
        w, layers, heads, vocab = (64, 2, 4, 4096) if tiny else (2560, 32, 20, 28896)
        cfg = GPT2Config(vocab_size=vocab, n_embd=w, n_layer=layers, n_head=heads, n_inner=None, n_positions=1024,
                         activation_function="gelu_new", layer_norm_epsilon=1e-5, scale_attn_by_inverse_layer_idx=True,
                         **ids)
        cls = GPT2LMHeadModel
    else:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    return cfg, cls


def build_model(tiny: bool, device: str, arch: str = "llama-7b"):
    """A random-init model of `arch` (default the LLaMA-7B shape) in bf16 on `device` (tiny: float32 on the CPU)."""
    import torch

    cfg, cls = arch_config(arch, tiny)
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


# ---- environment ----

def card() -> dict:
    """The machine: GPU name and memory, versions."""
    import lm_eval
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "lm_eval": getattr(lm_eval, "__version__", "?"), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1))
    else:
        info["gpu"] = None
    return info


def imported_distributions() -> list[str]:
    """`name==version` of every installed distribution whose modules this process imported."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    names = {d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
    return sorted(f"{n}=={metadata.version(n)}" for n in names)


# ---- step 1: data (driver) ----

def make_data(work: Path, tiny: bool, ppl_bytes: int | None) -> dict:
    """Generate the benchmark files and the Pile test text, run prepare_eval; return the eval config and counts."""
    from transformers import AutoTokenizer

    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.eval.config import BenchmarkFiles, EvalConfig, EvalModel
    from biomed_llama.eval.prepare import prepare_eval

    sizes = dict(TINY if tiny else REAL)
    sizes["ppl_bytes"] = ppl_bytes or sizes["ppl_bytes"]
    rnd = random.Random(1234)
    tok = AutoTokenizer.from_pretrained(REPO / "data/sample/tokenizer")
    bench = write_benchmarks(work / "bench", sizes, rnd, tok)
    extracted = write_extracted(work, sizes["ppl_bytes"], rnd)
    cfg = EvalConfig(
        # No train files are generated: each test file is its own few-shot pool (the cost is the same).
        benchmarks=BenchmarkFiles(medqa4_test=bench["medqa4"], medqa4_train=bench["medqa4"], medqa5_test=bench["medqa5"],
                                  medqa5_train=bench["medqa5"], medmcqa_dev=bench["medmcqa"],
                                  medmcqa_train=bench["medmcqa"], pubmedqa_labeled=bench["pubmedqa"],
                                  pile_extracted=str(extracted)),
        output=str(work / "eval"), dtype="float32" if tiny else "bfloat16", max_length=2048,
        token_budget=8192 if tiny else 32768, models={"bench": EvalModel(path="in-memory", paper_row="LLaMA-7B")},
        progress=False)
    counts = prepare_eval(cfg, ReadersConfig(medmcqa_cop="1-4"))  # the generated MedMCQA counts 1-4
    return {"cfg": cfg.model_dump(mode="json"), "sizes": sizes, "counts": counts,
            "ppl_tokens": ppl_tokens(extracted, tok)}


# ---- step 2: one worker per path ----

def cell_items(res: dict, task: str) -> dict[str, list[float]]:
    """Per document, the log-likelihood of each request (MC: one per choice; perplexity: one per document)."""
    out = {}
    for s in res["samples"][task]:
        out[str(s["doc_id"])] = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
    return out


def load_backend(path: str, model, tok, cfg) -> object:
    """The backend `evaluate` builds for `eval.backend` (packed) or the old stock HFLM, on an in-memory model."""
    from biomed_llama.eval import harness

    # eval.max_length capped at a learned position table, as `harness.hf_model_args` caps it (BioMedLM: 1,024)
    table = harness.config_positions(model.config.to_dict())
    args = {"pretrained": model, "tokenizer": tok, "batch_size": 8 if cfg.dtype == "float32" else 32,
            "max_length": min(cfg.max_length, table or cfg.max_length), "prefix_token_id": tok.eos_token_id}
    return harness.load_lm(args, "packed" if path == "packed" else "stock", cfg.token_budget)


def worker(args) -> int:
    """Build the model on this process's device, run every seed cell (stock: a fraction of each), write JSON."""
    import torch
    from transformers import AutoTokenizer

    from biomed_llama.eval import harness
    from biomed_llama.eval.config import EvalConfig

    data = json.loads((args.work / "data.json").read_text())
    cfg = EvalConfig(**data["cfg"])
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    t0 = time.perf_counter()
    model = build_model(args.tiny, device, args.arch)
    checksum = float(sum(p.float().sum() for p in list(model.parameters())[:4]))
    tok = AutoTokenizer.from_pretrained(REPO / "data/sample/tokenizer")
    lm = load_backend(args.worker, model, tok, cfg)
    out = {"path": args.worker, "arch": args.arch, "params": sum(p.numel() for p in model.parameters()),
           "model_type": model.config.model_type, "max_length": lm.max_length, "card": card(),
           "model_build_s": time.perf_counter() - t0, "checksum": checksum,
           "packable": getattr(lm, "packable", None), "cells": [], "items": {}}
    tm = harness.task_manager(Path(cfg.output) / "tasks")
    deadline = time.perf_counter() + args.deadline_s
    for run in harness.plan_runs(cfg):
        full = data["counts"][f"{run.task}.test"]
        n = full if args.worker == "packed" else max(1, round(full * args.stock_fraction))
        if time.perf_counter() > deadline:
            out["cells"].append({"key": run.key, "full_docs": full, "skipped": "deadline"})
            continue
        harness.set_suite(lm, run.suite)
        if device == "cuda":
            torch.cuda.synchronize()
        res = harness.run_one(lm, tm, run, None if n == full else n)
        out["cells"].append({"key": run.key, "docs": len(res["samples"][run.lm_eval_task]), "full_docs": full,
                             "wall_s": res["biomed_wall_s"], "metrics": harness.flat_metrics(run, res)})
        out["items"][run.key] = cell_items(res, run.lm_eval_task)
        print(f"[{args.arch} {args.worker}] {run.key:<24} docs {out['cells'][-1]['docs']:>5}/{full:<5} "
              f"wall {res['biomed_wall_s']:8.1f}s", flush=True)
        (args.out / f"{args.worker}.json").write_text(json.dumps(out))  # after every cell: a cut run keeps its numbers
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["deps"] = imported_distributions()
    (args.out / f"{args.worker}.json").write_text(json.dumps(out))
    return 0


# ---- step 3: compare and report (driver) ----

def parity(packed: dict, stock: dict) -> dict[str, dict]:
    """Per cell, over the documents both paths scored: |Δ log-likelihood| per request, and argmax agreement."""
    out = {}
    for key, s_items in stock["items"].items():
        p_items = packed["items"].get(key, {})
        diffs, rels, same, docs = [], [], 0, 0
        for doc, s in s_items.items():
            p = p_items.get(doc)
            if p is None:
                continue
            docs += 1
            diffs += [abs(a - b) for a, b in zip(p, s, strict=False)]
            rels += [abs(a - b) / max(abs(b), 1e-9) for a, b in zip(p, s, strict=False)]
            same += max(range(len(p)), key=lambda i: (p[i], -i)) == max(range(len(s)), key=lambda i: (s[i], -i))
        if docs:
            out[key] = {"docs": docs, "requests": len(diffs), "max_abs": max(diffs), "median_abs": statistics.median(diffs),
                        "max_rel": max(rels), "median_rel": statistics.median(rels), "argmax_agree": same / docs}
    return out


def summary(keys: list[str], packed: dict, stock: dict, par: dict) -> dict:
    """Totals over the planned cells `keys`: packed measured, stock extrapolated to the full sets (and its
    measured part), parity overall; `complete` says whether both paths finished every cell."""
    p_cells = {c["key"]: c for c in packed.get("cells", []) if "wall_s" in c}
    s_cells = {c["key"]: c for c in stock.get("cells", []) if "wall_s" in c}
    s_full = {k: c["wall_s"] * c["full_docs"] / c["docs"] for k, c in s_cells.items()}
    complete = all(k in p_cells for k in keys) and all(k in s_cells for k in keys)
    tot = {"packed_s": sum(c["wall_s"] for c in p_cells.values()), "packed_complete": all(k in p_cells for k in keys),
           "stock_measured_s": sum(c["wall_s"] for c in s_cells.values()),
           "stock_extrapolated_s": sum(s_full.values()), "complete": complete}
    tot["speedup"] = tot["stock_extrapolated_s"] / tot["packed_s"] if tot["packed_s"] else None
    if par:
        mc = [v for k, v in par.items() if not k.startswith("seed.pubmed_")]
        tot["parity"] = {"max_abs": max(v["max_abs"] for v in par.values()),
                         "max_rel": max(v["max_rel"] for v in par.values()),
                         "worst_median_rel": max(v["median_rel"] for v in par.values()),
                         "mc_argmax_agree": (sum(v["argmax_agree"] * v["docs"] for v in mc) / sum(v["docs"] for v in mc))
                         if mc else None}
    return tot


def table(keys: list[str], full: dict[str, int], packed: dict, stock: dict, par: dict, tot: dict,
          fraction: float) -> str:
    """The printed report: one row per planned cell (`full`: its document count), totals, parity."""
    p_cells = {c["key"]: c for c in packed.get("cells", [])}
    s_cells = {c["key"]: c for c in stock.get("cells", [])}
    lines = ["| cell | docs | packed (s) | stock measured (s, docs) | stock full set (s, extrapolated) | "
             "max abs Δll | median rel Δll | argmax agree |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in keys:
        c, s, p = p_cells.get(key, {}), s_cells.get(key, {}), par.get(key, {})
        pw = f"{c['wall_s']:.1f}" if "wall_s" in c else c.get("skipped", "not run")
        sm = f"{s['wall_s']:.1f} ({s['docs']})" if "wall_s" in s else s.get("skipped", "not run")
        sx = f"{s['wall_s'] * s['full_docs'] / s['docs']:.1f}" if "wall_s" in s else "–"
        pa = (f"{p['max_abs']:.3g} | {p['median_rel']:.2e} | {p['argmax_agree']:.3f}" if p else "– | – | –")
        lines.append(f"| {key} | {full[key]} | {pw} | {sm} | {sx} | {pa} |")
    lines.append(f"| **total** | | **{tot['packed_s']:.1f}** (measured, every document) | {tot['stock_measured_s']:.1f} "
                 f"| **{tot['stock_extrapolated_s']:.1f}** (extrapolated from the first {fraction:.0%} of each cell) "
                 f"| | | |")
    sp = f"{tot['speedup']:.2f}x" if tot.get("speedup") else "–"
    lines.append(f"\nspeed-up (stock extrapolated / packed measured): {sp}; "
                 f"packed suite {tot['packed_s'] / 60:.2f} min (target ≤ 10 min); complete: {tot['complete']}")
    if "parity" in tot:
        q = tot["parity"]
        lines.append(f"parity over the documents both paths scored: max |Δ| {q['max_abs']:.3g}, max rel {q['max_rel']:.2e}, "
                     f"worst cell median rel {q['worst_median_rel']:.2e}, MC argmax agreement {q['mc_argmax_agree']}")
    return "\n".join(lines)


def arch_out(args, arch: str) -> Path:
    """Where one arch's worker files and bench_eval.json go: `--out` itself for one arch, `<out>/<arch>/` for several."""
    out = args.out if len(args.archs) == 1 else args.out / arch
    out.mkdir(parents=True, exist_ok=True)
    return out


def spawn(args, arch: str, name: str, gpu: str | None, t0: float) -> subprocess.Popen:
    """Start one worker (this script, `--worker name --arch arch`) on one GPU, logging to <out>/<name>.log. It starts
    no new cell later than `DRAIN_S` before the driver's budget runs out."""
    out = arch_out(args, arch)
    deadline = args.budget_s - (time.perf_counter() - t0) - DRAIN_S
    cmd = [sys.executable, "-m", "bench.bench_eval", "--worker", name, "--arch", arch, "--work", str(args.work),
           "--out", str(out), "--stock-fraction", str(args.stock_fraction), "--deadline-s", str(deadline)]
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
    return subprocess.Popen(cmd + (["--tiny"] if args.tiny else []), env=env, stdout=(out / f"{name}.log").open("w"),
                            stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, t0: float, budget_s: float) -> int:
    """Wait for a worker until the budget is spent; then stop it (its JSON keeps the cells it finished)."""
    try:
        return proc.wait(timeout=max(1.0, budget_s - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        proc.terminate()
        return proc.wait(timeout=30)


def run_workers(args, gpus: int, t0: float) -> dict[str, int | None]:
    """Every (arch, path) worker, the packed ones first, dealt in turn onto one lane per GPU (the CPU: one lane); a
    lane runs its workers one after the other. One arch on two GPUs: packed on GPU 0 beside stock on GPU 1; two archs
    on two GPUs: each arch on its own GPU, packed then stock; one GPU: every packed suite before any stock fraction.
    A worker due in the budget's last `DRAIN_S` seconds is not started (None). Exit codes by `<arch>.<path>`."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(arch, name) for name in ("packed", "stock") for arch in args.archs]
    lanes = max(1, min(gpus, len(jobs)))
    codes: dict[str, int | None] = {}

    def lane(i: int) -> None:
        for arch, name in jobs[i::lanes]:
            late = args.budget_s - (time.perf_counter() - t0) <= DRAIN_S
            codes[f"{arch}.{name}"] = None if late else finish(spawn(args, arch, name, str(i) if gpus else None, t0),
                                                               t0, args.budget_s)

    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lane, range(lanes)))
    return codes


def report_arch(args, arch: str, data: dict, codes: dict[str, int | None], t0: float) -> None:
    """One arch's comparison: the table on stdout, `<out>/bench_eval.json` (arch, parameters, per-cell walls, totals)."""
    from biomed_llama.eval.config import EvalConfig
    from biomed_llama.eval.harness import plan_runs

    out = arch_out(args, arch)
    results = {n: json.loads((out / f"{n}.json").read_text()) if (out / f"{n}.json").exists() else {}
               for n in ("packed", "stock")}
    runs = plan_runs(EvalConfig(**data["cfg"]))
    keys, full = [r.key for r in runs], {r.key: data["counts"][f"{r.task}.test"] for r in runs}
    par = parity(results["packed"], results["stock"]) if results["stock"] else {}
    tot = summary(keys, results["packed"], results["stock"], par)
    p = results["packed"] or results["stock"]
    head = {"arch": arch, "params": p.get("params"), "model_type": p.get("model_type"), "max_length": p.get("max_length"),
            "packable": results["packed"].get("packable")}
    n = head["params"] or 0
    print(f"\n## {arch}: {f'{n / 1e9:.2f}B' if n >= 1e8 else f'{n / 1e6:.2f}M'} parameters ({head['model_type']}), max_length "
          f"{head['max_length']}, packed backend packs: {head['packable']}; {(p.get('card') or {}).get('gpu') or 'CPU'}")
    print(table(keys, full, results["packed"], results["stock"], par, tot, args.stock_fraction))
    mine = {n: codes.get(f"{arch}.{n}") for n in ("packed", "stock")}
    (out / "bench_eval.json").write_text(json.dumps(
        {**head, "data": {k: v for k, v in data.items() if k != "cfg"}, "worker_exit_codes": mine, "summary": tot,
         "cells": {n: r.get("cells", []) for n, r in results.items()}, "parity": par,
         "cards": {n: r.get("card") for n, r in results.items()},
         "checksums": {n: r.get("checksum") for n, r in results.items()}, "wall_s": time.perf_counter() - t0}, indent=2))
    print(f"workers exited {mine} (None: not started, the budget spent); model checksums "
          f"{[r.get('checksum') for r in results.values()]} (must be equal)")
    if args.print_deps:
        print("imported distributions:", " ".join(sorted({d for r in results.values() for d in r.get("deps", [])})))


def driver(args) -> int:
    """Data once, then the workers (one lane per GPU), then per arch the comparison and the table."""
    import torch

    t0 = time.perf_counter()
    args.work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    data = make_data(args.work, args.tiny, args.ppl_bytes)
    (args.work / "data.json").write_text(json.dumps(data))
    print(f"generated + prepared in {time.perf_counter() - t0:.1f}s: {data['counts']}; "
          f"perplexity tokens {data['ppl_tokens']}", flush=True)
    codes = run_workers(args, 0 if args.tiny else torch.cuda.device_count(), t0)
    for arch in args.archs:
        report_arch(args, arch, data, codes, t0)
    print(f"wall {time.perf_counter() - t0:.1f}s")
    return max([c for c in codes.values() if c is not None], default=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke size: tiny model and sets (both paths in full)")
    ap.add_argument("--arch", default="llama-7b",
                    help=f"model shape(s), comma-separated, of {', '.join(ARCHS)} (default llama-7b); several: one "
                         "data set, each arch's files under <out>/<arch>/")
    ap.add_argument("--stock-fraction", type=float, default=None,
                    help="fraction of each cell's documents the stock path runs (default 0.25; tiny 1.0)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock budget of the whole call (default 510 s, so that unpacking the wheels fits in a "
                         "10-minute device call; tiny 1800); workers start no new "
                         "cell in its last DRAIN_S seconds and are stopped at its end, the table then shows what finished")
    ap.add_argument("--ppl-bytes", type=int, default=None, help="bytes of text per PubMed subset (default 5 MB)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / ".bench/eval")))
    ap.add_argument("--print-deps", action="store_true", help="after the run, list the distributions imported")
    ap.add_argument("--worker", choices=["packed", "stock"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline-s", type=float, default=1e9, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.archs = list(dict.fromkeys(a.strip() for a in args.arch.split(",") if a.strip()))
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown or not args.archs or (args.worker and len(args.archs) != 1):
        ap.error(f"--arch: {args.arch!r}: one or more of {', '.join(ARCHS)} (a worker takes one)")
    args.arch = args.archs[0]
    args.stock_fraction = args.stock_fraction if args.stock_fraction is not None else (1.0 if args.tiny else 0.25)
    args.budget_s = args.budget_s if args.budget_s is not None else (1800.0 if args.tiny else 510.0)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.out.mkdir(parents=True, exist_ok=True)
    return worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    sys.exit(main())
