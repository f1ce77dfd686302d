#!/usr/bin/env python3
"""The generation rows (instructed and fine-tuned) at the real test-set sizes: batch 4 as released beside the
labelled fast setting, and the whole 54-cell table's evaluation time on one GPU.

What it does, in order (one process, one GPU):
1. writes the benchmark files at their real sizes with `bench/bench_eval.py`'s writers (MedQA-USMLE 4 and 5
   options 1,273 questions each, MedMCQA validation 4,183, PubMedQA 1,000) and runs the package's
   `prepare_eval` on them;
2. builds a random-initialised LLaMA-7B-shape model (32 layers, hidden 4096, 32 heads, FFN 11008, vocab
   32000, seed 0) in bf16 on the GPU (`bench_eval.build_model`). The demo tokenizer (4,096 ids) stands in
   for LLaMA's: the output-layer rows of the ids it lacks are zeroed, so greedy tokens always decode while
   the output matmul keeps its 32,000 rows. A random model never writes EOS, so every prompt generates the
   full 128 tokens: the times are an upper bound (a trained model stops after its answer);
3. for every (suite, task) the paper profile's generation rows run (derived from `configs/paper.yaml`'s
   eval section, not listed here), calls `evaluate`'s own code (`eval/generate.py: run_generation`):
   - faithful: `eval.generation_speed` off (batch 4 in file order, as evaluation/main.py:156-159) on the
     first `--faithful-limit` items (20); its full-set time is EXTRAPOLATED (wall × items / items run);
   - fast: the labelled setting (`eval.config.FAST_GENERATION`: batch `--fast-batch`, longest first, static
     KV cache, compiled decode step) on the first `--fast-fraction` of the items (half), extrapolated alike, after
     one warm-up batch of the same shape (its compile time is reported apart and charged to every model);
   and compares the greedy outputs of the two on the items both ran (how many differ);
4. projects the whole table's evaluation time on this GPU from `configs/paper.yaml`'s eval section: every
   model's runs (`harness.plan_runs`), the fine-tunes' seed runs (`finetune.tasks.<task>.seeds`), each base
   model's seed-suite time, and this run's per-set generation times, faithful and fast. A base model's seed suite
   is `--seed-suite-s-model NAME=S`, else the packed time of a `--seed-suite-json` (bench_eval.py's output) of its
   arch (`model_arch`: gpt-neo-2.7b and biomedlm-2.7b by name, the rest LLaMA-7B), else one LLaMA-7B's
   (bench/RESULTS.md: 6.8 min on one H200, or `--seed-suite-s`): for the 2.7B rows that is the 7B fallback, an
   over-charge; the projection's table names each row's source.

GPU (one H200, ~8 min):  bash bench/bench_generate.sh        (the wheels of requirements/bench-eval-wheels.txt carried
                         in .whl/; --fast-fraction 1 --faithful-limit 48 measure more, --cells/--merge split a run)
  with the 2.7B rows' own seed suites (call A: bench/bench_eval.sh's header), call B:
                         bash bench/bench_generate.sh --fast-batch 128 --seed-suite-json bench/seed-2p7b
CPU smoke (a minute):    bash bench/bench_generate.sh --tiny (tiny model and sets; fast = batch 8, sort, static cache,
                                                              no compile on the CPU)
Results: the tables on stdout and `<out>/bench_generate.json` (written after every cell); out = $OUT if set,
else .bench/generate. Beyond the GPU machine's torch, numpy, scipy, sympy, pillow and zstandard it imports only
distributions of requirements/bench-eval-wheels.txt (transformers, lm-eval: eval/task_utils imports its sampler,
pydantic, pyyaml, jinja2, ...); `--print-deps` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_eval import ARCHS, REAL, TINY, build_model, card, imported_distributions, write_benchmarks

REPO = Path(__file__).resolve().parents[1]

PAPER = REPO / "configs/paper.yaml"
RESULTS = REPO / "bench/RESULTS.md"
# bench/RESULTS.md's row of the whole seed suite through the packed path (2026-11-30, one H200).
SEED_SUITE_ROW = re.compile(r"\*\*whole seed suite\*\*\s*\|[^|]*\|\s*\*\*([\d.]+) \(([\d.]+) min, measured\)")
TARGET_MIN = 45.0  # issue 23: the whole table on one H200 with the fast setting


# ---- what the paper profile evaluates ----

def paper_plan(path: Path = PAPER) -> dict[str, Any]:
    """The paper profile's evaluation, per model: its suites, its generation cells and its seed runs.

    `members`: the fine-tune seed runs a finetune-suite model is a folder of (its path is
    `finetune.run_paths('task', task, start).output` of a task with `seeds`), else 1."""
    from biomed_llama.config import load_params
    from biomed_llama.eval.config import GEN_SUITES
    from biomed_llama.eval.harness import plan_runs

    params = load_params(path, [])
    cfg, ft = params.eval, params.finetune
    outputs = {ft.run_paths("task", t, start).output.split("/seed-")[0]: len(ft.seeds_of(t))
               for t in ft.tasks for start in ("pretrained", "base") if start == "pretrained" or ft.base}
    models = {}
    for name, m in cfg.models.items():
        runs = [r for r in plan_runs(cfg) if r.model == name]
        models[name] = {"path": m.path, "suites": list(m.suites), "seed_suite": "seed" in m.suites,
                        "gen_cells": [f"{r.suite}.{r.task}" for r in runs if r.suite in GEN_SUITES],
                        "other_suites": sorted({r.suite for r in runs} - set(GEN_SUITES) - {"seed"}),
                        "members": outputs.get(m.path or "", 1) if "finetune" in m.suites else 1}
    cells = sorted({c for m in models.values() for c in m["gen_cells"]})
    return {"models": models, "cells": cells, "max_new_tokens": cfg.generation.max_new_tokens,
            "batch_size": cfg.generation.batch_size}


def seed_suite_seconds(override: float | None) -> tuple[float, str]:
    """The seed suite's time per 7B model: `override`, else bench/RESULTS.md's measured whole-suite row."""
    if override is not None:
        return override, "--seed-suite-s"
    m = SEED_SUITE_ROW.search(RESULTS.read_text())
    if not m:
        raise SystemExit(f"no whole-seed-suite row in {RESULTS}; pass --seed-suite-s")
    return float(m.group(1)), "bench/RESULTS.md (packed path, one H200)"


def model_arch(name: str) -> str:
    """The `bench_eval.py --arch` shape of an eval.models base model. The two 2.7B rows go by their names
    (configs/paper.yaml's and eval/config.py's `gpt-neo-2.7b`, `biomedlm-2.7b`: their folders are unset there, so there
    is no model_type to read); every other base model (llama-7b, pretrained, pmc-llama-7b) is a LLaMA-7B."""
    return name if name in ARCHS else "llama-7b"


def measured_seed_suites(path: Path) -> list[dict[str, Any]]:
    """The packed seed-suite time of each bench_eval.json in `path` (a file, or a folder: its own and its subfolders'),
    with its arch and where it ran. A file whose packed suite did not finish every cell is refused."""
    files = [path] if path.is_file() else sorted([*path.glob("bench_eval.json"), *path.glob("*/bench_eval.json")])
    if not files:
        raise SystemExit(f"--seed-suite-json {path}: no bench_eval.json there")
    out = []
    for f in files:
        d = json.loads(f.read_text())
        arch, tot = d.get("arch", "llama-7b"), d.get("summary", {})  # a bench_eval.json of before --arch: LLaMA-7B
        if not tot.get("packed_complete", tot.get("complete")):
            raise SystemExit(f"{f}: its packed seed suite did not finish every cell; rerun bench_eval.py --arch {arch}")
        gpu = ((d.get("cards") or {}).get("packed") or {}).get("gpu") or "CPU"
        note = "" if d.get("packable", True) else "; NOT packed: the stock scoring ran"
        out.append({"arch": arch, "s": tot["packed_s"], "source": f"measured, {arch} packed on {gpu} "
                                                                    f"({f.parent.name}/{f.name}{note})"})
    return out


def seed_suite_times(plan: dict[str, Any], default: tuple[float, str], measured: list[dict[str, Any]],
                     per_model: dict[str, float]) -> dict[str, tuple[float, str]]:
    """(seconds, source) of each base model's seed suite: `--seed-suite-s-model` for that model, else a
    `--seed-suite-json` of its arch (`model_arch`), else `default`, one LLaMA-7B's (bench/RESULTS.md or
    `--seed-suite-s`), which a model of another arch is charged as the labelled 7B fallback."""
    by_arch = {m["arch"]: (m["s"], m["source"]) for m in measured}
    out = {}
    for name, m in plan["models"].items():
        if not m["seed_suite"]:
            continue
        arch = model_arch(name)
        if name in per_model:
            out[name] = (per_model[name], "--seed-suite-s-model")
        elif arch in by_arch:
            out[name] = by_arch[arch]
        else:
            out[name] = default if arch == "llama-7b" else (default[0], f"7B fallback ({arch} not measured): {default[1]}")
    unknown = sorted(set(per_model) - set(out))
    if unknown:
        raise SystemExit(f"--seed-suite-s-model: {', '.join(unknown)} not a seed-suite model of the plan {sorted(out)}")
    return out


# ---- data and model ----

def make_data(work: Path, tiny: bool, device: str, dtype: str, max_new_tokens: int):
    """The benchmark files at their sizes, prepared by `prepare_eval`; the eval config of the runs and the counts."""
    from transformers import AutoTokenizer

    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.eval.config import BenchmarkFiles, EvalConfig, EvalModel, GenerationConfig
    from biomed_llama.eval.prepare import prepare_eval

    tok = AutoTokenizer.from_pretrained(REPO / "data/sample/tokenizer")
    bench = write_benchmarks(work / "bench", dict(TINY if tiny else REAL), random.Random(1234), tok)
    cfg = EvalConfig(
        benchmarks=BenchmarkFiles(medqa4_test=bench["medqa4"], medqa5_test=bench["medqa5"], medmcqa_dev=bench["medmcqa"],
                                  pubmedqa_labeled=bench["pubmedqa"]),
        output=str(work / "eval"), dtype=dtype, device=device, max_length=2048, progress=False,
        generation=GenerationConfig(max_new_tokens=max_new_tokens),
        models={"bench": EvalModel(path="in-memory", paper_row="BioMed-LLaMA-7B", suites=["instruct", "finetune"])})
    counts = prepare_eval(cfg, ReadersConfig(medmcqa_cop="1-4"))  # the generated MedMCQA counts 1-4
    return cfg, counts, tok


def generation_model(tiny: bool, device: str, vocab: int):
    """`bench_eval.build_model`, with the output rows of ids beyond the tokenizer's `vocab` zeroed (see the docstring)."""
    import torch

    model = build_model(tiny, device)
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 0  # a random row's logit is ~N(0, s); the tokenizer's ids win the argmax
    return model


# ---- the runs ----

def sync(device: str) -> None:
    """Wait for the GPU, so that a wall time holds its work."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str):
    """(result, seconds) of `fn()`, the GPU synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def run_cell(model, tok, cfg, cell: str, full: int, args, speed) -> dict[str, Any]:
    """One (suite, task): faithful on the first `--faithful-limit` items, fast (warm-up batch first) on the first
    `--fast-fraction`; walls, tokens, the outputs compared on the items both ran, full-set times extrapolated."""
    from biomed_llama.eval import generate

    suite, task = cell.split(".")
    n_faith = min(full, args.faithful_limit)
    res_f, wall_f = timed(lambda: generate.run_generation(model, tok, cfg.model_copy(update={"limit": n_faith}),
                                                          suite, task, cell), args.device)
    faith = res_f["samples"][cell]
    n_fast = min(full, max(speed.batch_size, round(full * args.fast_fraction)))
    fast_cfg = cfg.model_copy(update={"limit": n_fast if n_fast < full else None, "generation_speed": speed})
    # Warm-up: the batch of the longest prompts (the cell's own cache shape), so that compiling is measured apart.
    docs = generate.task_docs(fast_cfg, suite, task)
    example = generate.instruct_example if suite == "instruct" else generate.finetune_example
    longest = sorted(docs, key=lambda d: -len(tok(example(d, tok.eos_token)[0])["input_ids"]))
    _, warm = timed(lambda: generate.score_docs(model, tok, longest[:speed.batch_size], suite, task, fast_cfg), args.device)
    res_x, wall_x = timed(lambda: generate.run_generation(model, tok, fast_cfg, suite, task, cell), args.device)
    fast = {s["doc_id"]: s for s in res_x["samples"][cell]}
    both = [s for s in faith if s["doc_id"] in fast]
    batches_x = -(-n_fast // speed.batch_size)
    out = {"cell": cell, "full_docs": full,
           "faithful": {"docs": n_faith, "wall_s": wall_f, "full_s": wall_f * full / n_faith,
                        "extrapolated": n_faith < full, "new_tokens": sum(s["new_tokens"] for s in faith),
                        "accuracy": res_f["results"][cell]["exact_match,none"]},
           "fast": {"docs": n_fast, "wall_s": wall_x, "full_s": wall_x * full / n_fast, "extrapolated": n_fast < full,
                    "warmup_s": warm, "compile_s": max(0.0, warm - wall_x / batches_x),
                    "new_tokens": sum(s["new_tokens"] for s in fast.values()),
                    "accuracy": res_x["results"][cell]["exact_match,none"]},
           "compared": len(both),
           "outputs_differ": sum(s["output"] != fast[s["doc_id"]]["output"] for s in both),
           "prefix_agree": prefix_agreement([(s["output"], fast[s["doc_id"]]["output"]) for s in both]),
           "scores_differ": sum(s["exact_match"] != fast[s["doc_id"]]["exact_match"] for s in both),
           "tokens_differ": sum(s["new_tokens"] != fast[s["doc_id"]]["new_tokens"] for s in both)}
    for k in ("faithful", "fast"):
        out[k]["tokens_per_s"] = out[k]["new_tokens"] / out[k]["wall_s"]
    return out


def prefix_agreement(pairs: list[tuple[str, str]]) -> float:
    """Mean share of each output pair's longer text that the two share from the start (1.0: identical).

    A random-init model has small top-2 logit gaps at every step, so in bf16 one rounding difference of another
    batch shape flips one greedy token and the rest of the 128-token output diverges from there: this says
    how far the outputs agree before that happens, beside the count of outputs that differ anywhere."""
    def shared(a: str, b: str) -> float:
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return n / max(len(a), len(b), 1)

    return sum(shared(a, b) for a, b in pairs) / max(len(pairs), 1)


def fp32_check(model, tok, cfg, cell: str, n: int, batch: int, args, speed) -> dict[str, Any]:
    """The same `n` items through batch 4 and the fast setting (batch `batch`, so its padding, sorting and cache
    reset run over several batches) with the model in float32: the check that the fast path computes the same
    greedy outputs, apart from the bf16 rounding of other batch shapes. Casts `model` to float32 in place."""
    from biomed_llama.eval import generate

    model.float()
    suite, task = cell.split(".")
    base = cfg.model_copy(update={"limit": n, "dtype": "float32"})
    res_f, wall_f = timed(lambda: generate.run_generation(model, tok, base, suite, task, cell), args.device)
    fast_cfg = base.model_copy(update={"generation_speed": speed.model_copy(update={"batch_size": batch})})
    res_x, wall_x = timed(lambda: generate.run_generation(model, tok, fast_cfg, suite, task, cell), args.device)
    faith, fast = res_f["samples"][cell], {s["doc_id"]: s for s in res_x["samples"][cell]}
    return {"cell": cell, "docs": len(faith), "fast_batch": batch, "faithful_s": wall_f, "fast_s": wall_x,
            "outputs_differ": sum(s["output"] != fast[s["doc_id"]]["output"] for s in faith),
            "prefix_agree": prefix_agreement([(s["output"], fast[s["doc_id"]]["output"]) for s in faith])}


# ---- the projection ----

def project(plan: dict[str, Any], cells: dict[str, dict], seed_s: float | dict[str, tuple[float, str]],
            load_s: float = 0.0) -> dict[str, Any]:
    """Per model and in all: the seed suite (`seed_s`: one time for every base model, or per base model its
    (seconds, source) from `seed_suite_times`) plus its generation cells × its seed runs, faithful and fast (the
    fast one with its compile per cell: every model is a new one to compile for), and `load_s` per model folder
    loaded (each seed run is one)."""
    rows, missing = [], set()
    for name, m in plan["models"].items():
        gen = {"faithful": 0.0, "fast": 0.0}
        for c in m["gen_cells"]:
            if c not in cells:
                missing.add(c)
                continue
            gen["faithful"] += cells[c]["faithful"]["full_s"] * m["members"]
            gen["fast"] += (cells[c]["fast"]["full_s"] + cells[c]["fast"]["compile_s"]) * m["members"]
        suite_s, source = (seed_s[name] if isinstance(seed_s, dict) else (seed_s, "")) if m["seed_suite"] else (0.0, "")
        seed = (suite_s + load_s) if m["seed_suite"] else 0.0
        if m["gen_cells"]:
            gen = {k: v + load_s * m["members"] for k, v in gen.items()}
        rows.append({"model": name, "path": m["path"], "members": m["members"], "seed_s": seed, "seed_source": source,
                     "gen_faithful_s": gen["faithful"], "gen_fast_s": gen["fast"], "cells": m["gen_cells"],
                     "not_counted": m["other_suites"]})
    tot = {k: sum(r[k] for r in rows) for k in ("seed_s", "gen_faithful_s", "gen_fast_s")}
    tot["faithful_min"] = (tot["seed_s"] + tot["gen_faithful_s"]) / 60
    tot["fast_min"] = (tot["seed_s"] + tot["gen_fast_s"]) / 60
    return {"rows": rows, "total": tot, "missing_cells": sorted(missing), "complete": not missing,
            "target_min": TARGET_MIN, "met": not missing and tot["fast_min"] <= TARGET_MIN, "load_s": load_s}


def cell_table(cells: list[dict]) -> str:
    """The per-set table: faithful and fast wall times (measured, full set), tokens, outputs compared."""
    lines = ["| cell | docs | faithful measured (s, docs) | faithful full set (s) | fast warm-up / compile (s) | "
             "fast measured (s, docs) | fast full set (s) | speed-up | tokens/s faithful / fast | outputs differ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        f, x = c["faithful"], c["fast"]
        ext = lambda d: " (extrapolated)" if d["extrapolated"] else " (measured)"  # noqa: E731
        lines.append(f"| {c['cell']} | {c['full_docs']} | {f['wall_s']:.1f} ({f['docs']}) | {f['full_s']:.1f}{ext(f)} | "
                     f"{x['warmup_s']:.1f} / {x['compile_s']:.1f} | {x['wall_s']:.1f} ({x['docs']}) | {x['full_s']:.1f}{ext(x)} | "
                     f"{f['full_s'] / x['full_s']:.1f}x | {f['tokens_per_s']:.0f} / {x['tokens_per_s']:.0f} | "
                     f"{c['outputs_differ']} of {c['compared']} (scores {c['scores_differ']}; "
                     f"{c.get('prefix_agree', 1.0):.0%} shared from the start) |")
    return "\n".join(lines)


def projection_table(p: dict[str, Any], gpu: str) -> str:
    """The whole table's evaluation time: per model (with where its seed-suite time comes from), then in all,
    faithful beside fast."""
    lines = ["| model | seed runs | seed suite (min) | seed suite from | generation, faithful (min) | "
             "generation, fast (min) | cells |", "|---|---:|---:|---|---:|---:|---|"]
    for r in p["rows"]:
        note = f"; not in the 54 cells, not counted: {', '.join(r['not_counted'])}" if r["not_counted"] else ""
        lines.append(f"| {r['model']} | {r['members']} | {r['seed_s'] / 60:.1f} | {r.get('seed_source') or '–'} | "
                     f"{r['gen_faithful_s'] / 60:.1f} | {r['gen_fast_s'] / 60:.1f} | {', '.join(r['cells']) or '–'}{note} |")
    t = p["total"]
    lines.append(f"| **total** | | **{t['seed_s'] / 60:.1f}** | | **{t['gen_faithful_s'] / 60:.1f}** | "
                 f"**{t['gen_fast_s'] / 60:.1f}** | |")
    lines.append(f"\nwhole 54-cell table on one {gpu}: faithful (batch 4) {t['faithful_min']:.1f} min, fast "
                 f"{t['fast_min']:.1f} min (target ≤ {p['target_min']:.0f} min: {'met' if p['met'] else 'NOT met'}); "
                 f"seed suite per base model as its row says; generation from this run (upper bound: the random "
                 f"model never stops early); model loading {p['load_s']:.0f} s per model folder"
                 + (f"; MISSING cells: {', '.join(p['missing_cells'])}" if p["missing_cells"] else ""))
    return "\n".join(lines)


def warm_up(model, tok, cfg) -> None:
    """One tiny eager generation, so that the first cell does not pay the device's start-up."""
    from biomed_llama.eval import generate

    gen = cfg.generation.model_copy(update={"max_new_tokens": 2})
    generate.generate_rows(model, [tok("warm up")["input_ids"]] * 4, generate.pad_id(tok), tok.eos_token_id, gen)


def keep(report: dict[str, Any], plan: dict[str, Any], args, seed_s: dict[str, tuple[float, str]],
         t0: float) -> dict[str, Any]:
    """The projection from the cells so far (and `--merge`'s), peak memory and wall time; written to the JSON."""
    import torch

    measured = {c["cell"]: c for c in report["cells"]}
    if args.merge:  # cells of an earlier run (same card: bench_generate.json names it) fill in what this one lacks
        earlier = json.loads(args.merge.read_text())
        report["merged"] = {"file": str(args.merge), "card": earlier.get("card"),
                            "cells": [c["cell"] for c in earlier["cells"] if c["cell"] not in measured]}
        measured = {**{c["cell"]: c for c in earlier["cells"]}, **measured}
    report["projection"] = project(plan, measured, seed_s, args.load_s)
    if args.device == "cuda":
        report["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report["wall_s"] = time.perf_counter() - t0
    (args.out / "bench_generate.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke: tiny model and sets, 16 new tokens, no compile")
    ap.add_argument("--faithful-limit", type=int, default=None,
                    help="items per cell the batch-4 run takes (default 20, tiny 12); the rest is extrapolated")
    ap.add_argument("--fast-fraction", type=float, default=None,
                    help="fraction of each cell's items the fast run takes (default 0.5, tiny 1); the rest is extrapolated")
    ap.add_argument("--fast-batch", type=int, default=None, help="the fast setting's batch (default FAST_GENERATION's; tiny 8)")
    ap.add_argument("--no-compile", action="store_true", help="the fast setting without compiling the decode step")
    ap.add_argument("--fp32-check", type=int, default=None,
                    help="after the cells, this many items of finetune.medqa4 through both settings in float32 "
                         "(default 16 on CUDA, 0 tiny; 0: skip)")
    ap.add_argument("--seed-suite-s", type=float, default=None,
                    help="seconds of one 7B model's seed suite (default: bench/RESULTS.md's measured row); charged to "
                         "every base model without a time of its own (the 2.7B rows: labelled the 7B fallback)")
    ap.add_argument("--seed-suite-json", type=Path, action="append", default=[],
                    help="a bench_eval.json (or a folder of them: its own and its subfolders'): its packed seed-suite "
                         "time is charged to the base models of its arch (gpt-neo-2.7b, biomedlm-2.7b; llama-7b: "
                         "llama-7b, pretrained, pmc-llama-7b); repeatable")
    ap.add_argument("--seed-suite-s-model", action="append", default=[], metavar="NAME=SECONDS",
                    help="seconds of one base model's seed suite (an eval.models name of configs/paper.yaml); repeatable, "
                         "before --seed-suite-json")
    ap.add_argument("--load-s", type=float, default=0.0,
                    help="seconds to load one model from disk, charged to every model run (default 0: not counted)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="no new cell starts after this many seconds (default 420; tiny 1800); skipped cells are named")
    ap.add_argument("--cells", default=None,
                    help="comma-separated cells to run (e.g. instruct.medmcqa,finetune.medmcqa); default: every cell of the plan")
    ap.add_argument("--merge", type=Path, default=None,
                    help="a previous run's bench_generate.json: its cells count in the projection where this run has none "
                         "(a run split over two device calls)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / ".bench/generate")))
    ap.add_argument("--print-deps", action="store_true", help="after the run, list the distributions imported")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from biomed_llama.eval.config import FAST_GENERATION

    t0 = time.perf_counter()
    args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    args.faithful_limit = args.faithful_limit or (12 if args.tiny else 20)
    args.fast_fraction = args.fast_fraction or (1.0 if args.tiny else 0.5)
    budget = args.budget_s or (1800.0 if args.tiny else 420.0)
    # The fast batch's KV cache: about 50 GB for PubMedQA at batch 128 (7B, bf16): 128 fits a 141 GB H200, an 80 GB
    # card takes 64 (128 ran out of memory on an H100).
    big = args.device == "cuda" and torch.cuda.get_device_properties(0).total_memory > 120 * 2**30
    speed = FAST_GENERATION.model_copy(update={
        "batch_size": args.fast_batch or (8 if args.tiny else FAST_GENERATION.batch_size if big else 64),
        "compile": FAST_GENERATION.compile and args.device == "cuda" and not args.no_compile})
    if speed.compile:  # every cell's cache shape compiles once; dynamo's default limit (8) would fall back to eager
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    plan = paper_plan()
    seed_s, seed_source = seed_suite_seconds(args.seed_suite_s)
    try:
        per_model = {k: float(v) for k, v in (x.split("=", 1) for x in args.seed_suite_s_model)}
    except ValueError:
        raise SystemExit(f"--seed-suite-s-model: NAME=SECONDS, got {args.seed_suite_s_model}") from None
    seed_times = seed_suite_times(plan, (seed_s, seed_source),
                                  [m for p in args.seed_suite_json for m in measured_seed_suites(p)], per_model)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    max_new = 16 if args.tiny else plan["max_new_tokens"]
    cfg, counts, tok = make_data(work, args.tiny, args.device, "float32" if args.tiny else "bfloat16", max_new)
    print(f"data in {time.perf_counter() - t0:.1f}s: {counts}; cells {plan['cells']}", flush=True)
    model, build_s = timed(lambda: generation_model(args.tiny, args.device, len(tok)), args.device)
    _, init_s = timed(lambda: warm_up(model, tok, cfg), args.device)  # CUDA and cuBLAS start-up, not any cell's
    report: dict[str, Any] = {"card": card(), "model_build_s": build_s, "init_s": init_s, "max_new_tokens": max_new,
                              "faithful_batch": plan["batch_size"], "fast": speed.model_dump(), "seed_suite_s": seed_s,
                              "seed_suite_source": seed_source,
                              "seed_suite": {n: {"s": s_, "source": src} for n, (s_, src) in seed_times.items()},
                              "cells": [], "skipped": []}
    wanted = args.cells.split(",") if args.cells else plan["cells"]
    unknown = sorted(set(wanted) - set(plan["cells"]))
    if unknown:
        raise SystemExit(f"--cells: {', '.join(unknown)} not in the plan {plan['cells']}")
    for cell in wanted:
        if time.perf_counter() - t0 > budget:
            report["skipped"].append(cell)
            print(f"[skip] {cell}: budget of {budget:.0f}s spent", flush=True)
            continue
        task = cell.split(".")[1]
        res = run_cell(model, tok, cfg, cell, counts[f"{task}.test"], args, speed)
        report["cells"].append(res)
        print(f"[{cell}] faithful {res['faithful']['wall_s']:.1f}s/{res['faithful']['docs']} docs, fast "
              f"{res['fast']['wall_s']:.1f}s/{res['fast']['docs']} docs (warm-up {res['fast']['warmup_s']:.1f}s), "
              f"outputs differ {res['outputs_differ']}/{res['compared']}", flush=True)
        keep(report, plan, args, seed_times, t0)  # after every cell: a run cut short keeps its cells and projection
    n_check = args.fp32_check if args.fp32_check is not None else (0 if args.tiny else 16)
    if n_check:
        report["fp32_check"] = check = fp32_check(model, tok, cfg, "finetune.medqa4", n_check, 8, args, speed)
        print(f"[fp32 check] {check['cell']}: {check['outputs_differ']} of {check['docs']} outputs differ between batch 4 "
              f"and the fast setting (batch {check['fast_batch']}) in float32", flush=True)
    report = keep(report, plan, args, seed_times, t0)
    gpu = report["card"].get("gpu") or "CPU (tiny: not a projection of anything real)"
    print(cell_table(report["cells"]))
    if report.get("merged", {}).get("cells"):
        print(f"\nfrom {report['merged']['file']} (card {report['merged']['card']}): {', '.join(report['merged']['cells'])}")
    print()
    print(projection_table(report["projection"], gpu))
    print(f"\n{gpu}; torch {report['card']['torch']}, transformers {report['card']['transformers']}; model build "
          f"{build_s:.1f}s; peak {report.get('peak_mem_gib', 0):.1f} GiB; wall {report['wall_s']:.1f}s")
    if args.print_deps:
        print("imported distributions:", " ".join(imported_distributions()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
