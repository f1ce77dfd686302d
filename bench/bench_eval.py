#!/usr/bin/env python3
"""The `seed` suite at the real benchmark sizes for a random-init LLaMA-7B-shape model: new path vs old, one call.

What it does, in order:
1. generates synthetic benchmark files in the published formats with the real sizes and realistic
   lengths: MedQA-USMLE 4 and 5 options (1,273 questions each, vignettes of ~90-240 tokens),
   MedMCQA validation (4,183 short questions), PubMedQA `ori_pqal.json` (1,000 items, abstracts
   of ~220-420 tokens), and Pile-format test text of PubMed Abstracts / PubMed Central (5 MB each;
   abstracts ~1.5 kB, papers ~30 kB), written as the extract stage's Parquet; then runs the
   package's `prepare_eval` on them, once;
2. starts two workers side by side, one per GPU, each building the same random-initialised
   LLaMA-7B-shape model (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000, seed 0)
   directly on its GPU in bf16:
   - `packed` (GPU 0): the whole suite, every document, through `evaluate`'s per-run code
     (`harness.load_lm` with `eval.backend: packed` → `set_suite` → `run_one`; the model comes
     from memory instead of a model folder, everything after that is the stage's);
   - `stock` (GPU 1): lm-eval's stock HF backend (the old path, batch 32 as bench/RESULTS.md) on
     the first `--stock-fraction` of the documents of every cell; its full-suite time is
     EXTRAPOLATED per cell (wall × all docs / docs run) and labelled so;
3. compares the two paths item by item on the documents both scored (bf16: the parity check),
   and prints one table: per cell the packed wall time, the stock measured and extrapolated
   times, and the parity figures; totals at the end.

The demo tokenizer (vocab 4096, byte-level BPE) stands in for LLaMA's; MC lengths are set in
tokens, the perplexity text in bytes (the demo tokenizer cuts ~3.1 bytes/token against LLaMA's ~4
on PubMed, so the perplexity rows carry ~25% more tokens than a real run).

GPU (2 GPUs; ~6 min):  python -m bench.bench_eval          (one GPU: the workers run one after the other)
CPU smoke (minutes):   python -m bench.bench_eval --tiny   (tiny model and sets, both paths in full)
Results: the table on stdout, `<out>/bench_eval.json`, `<out>/{packed,stock}.json` (per-cell timings and
per-item log-likelihoods), `<out>/{packed,stock}.log`; out = $OUT if set, else .bench/eval.
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


def build_model(tiny: bool, device: str):
    """A random-init LLaMA-7B-shape model in bf16 on `device` (tiny: 2 layers × 64, fp32 on CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        cfg = LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=2048)
        dtype = torch.float32
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6)
        dtype = torch.bfloat16
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 1, 2, 3  # the demo tokenizer's ids
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()




# ---- environment ----

def card() -> dict:
    """The machine: GPU name and memory, versions."""
    import torch
    import transformers

    import lm_eval

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

    args = {"pretrained": model, "tokenizer": tok, "batch_size": 8 if cfg.dtype == "float32" else 32,
            "max_length": cfg.max_length, "prefix_token_id": tok.eos_token_id}
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
    model = build_model(args.tiny, device)
    checksum = float(sum(p.float().sum() for p in list(model.parameters())[:4]))
    tok = AutoTokenizer.from_pretrained(REPO / "data/sample/tokenizer")
    lm = load_backend(args.worker, model, tok, cfg)
    out = {"path": args.worker, "card": card(), "model_build_s": time.perf_counter() - t0, "checksum": checksum,
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
        print(f"[{args.worker}] {run.key:<24} docs {out['cells'][-1]['docs']:>5}/{full:<5} "
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
            diffs += [abs(a - b) for a, b in zip(p, s)]
            rels += [abs(a - b) / max(abs(b), 1e-9) for a, b in zip(p, s)]
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
    tot = {"packed_s": sum(c["wall_s"] for c in p_cells.values()),
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
    lines = [f"| cell | docs | packed (s) | stock measured (s, docs) | stock full set (s, extrapolated) | "
             f"max abs Δll | median rel Δll | argmax agree |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
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


def spawn(args, name: str, gpu: str | None, t0: float) -> subprocess.Popen:
    """Start one worker (this script, `--worker name`) on one GPU, logging to <out>/<name>.log. It starts no
    new cell later than `DRAIN_S` before the driver's budget runs out."""
    deadline = args.budget_s - (time.perf_counter() - t0) - DRAIN_S
    cmd = [sys.executable, "-m", "bench.bench_eval", "--worker", name, "--work", str(args.work), "--out", str(args.out),
           "--stock-fraction", str(args.stock_fraction), "--deadline-s", str(deadline)] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
    return subprocess.Popen(cmd, env=env, stdout=(args.out / f"{name}.log").open("w"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, t0: float, budget_s: float) -> int:
    """Wait for a worker until the budget is spent; then stop it (its JSON keeps the cells it finished)."""
    try:
        return proc.wait(timeout=max(1.0, budget_s - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        proc.terminate()
        return proc.wait(timeout=30)


def driver(args) -> int:
    """Data once, then both workers (side by side on two GPUs), then the comparison and the table."""
    import torch

    t0 = time.perf_counter()
    args.work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    data = make_data(args.work, args.tiny, args.ppl_bytes)
    (args.work / "data.json").write_text(json.dumps(data))
    print(f"generated + prepared in {time.perf_counter() - t0:.1f}s: {data['counts']}; "
          f"perplexity tokens {data['ppl_tokens']}", flush=True)
    gpus = 0 if args.tiny else torch.cuda.device_count()
    if gpus >= 2:
        procs = [spawn(args, "packed", "0", t0), spawn(args, "stock", "1", t0)]
        codes = [finish(p, t0, args.budget_s) for p in procs]
    else:  # one GPU or CPU: one after the other
        codes = [finish(spawn(args, name, "0" if gpus else None, t0), t0, args.budget_s) for name in ("packed", "stock")]
    results = {n: json.loads((args.out / f"{n}.json").read_text()) if (args.out / f"{n}.json").exists() else {}
               for n in ("packed", "stock")}
    from biomed_llama.eval.config import EvalConfig
    from biomed_llama.eval.harness import plan_runs

    runs = plan_runs(EvalConfig(**data["cfg"]))
    keys, full = [r.key for r in runs], {r.key: data["counts"][f"{r.task}.test"] for r in runs}
    par = parity(results["packed"], results["stock"]) if results["stock"] else {}
    tot = summary(keys, results["packed"], results["stock"], par)
    report = table(keys, full, results["packed"], results["stock"], par, tot, args.stock_fraction)
    print(report)
    (args.out / "bench_eval.json").write_text(json.dumps(
        {"data": {k: v for k, v in data.items() if k != "cfg"}, "worker_exit_codes": codes, "summary": tot,
         "parity": par, "cards": {n: r.get("card") for n, r in results.items()},
         "checksums": {n: r.get("checksum") for n, r in results.items()},
         "packable": results["packed"].get("packable"), "wall_s": time.perf_counter() - t0}, indent=2))
    print(f"workers exited {codes}; model checksums {[r.get('checksum') for r in results.values()]} (must be equal); "
          f"wall {time.perf_counter() - t0:.1f}s")
    if args.print_deps:
        print("imported distributions:", " ".join(sorted({d for r in results.values() for d in r.get("deps", [])})))
    return max(codes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke size: tiny model and sets (both paths in full)")
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
    args.stock_fraction = args.stock_fraction if args.stock_fraction is not None else (1.0 if args.tiny else 0.25)
    args.budget_s = args.budget_s if args.budget_s is not None else (1800.0 if args.tiny else 510.0)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.out.mkdir(parents=True, exist_ok=True)
    return worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    sys.exit(main())
