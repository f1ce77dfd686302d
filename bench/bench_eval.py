#!/usr/bin/env python3
"""Wall time of the `seed` suite at the real benchmark sizes, for a random-init LLaMA-7B-shape model.

What it does, in order:
1. generates synthetic benchmark files in the published formats with the real sizes and realistic
   lengths: MedQA-USMLE 4 and 5 options (1,273 questions each, vignettes of ~120-200 words),
   MedMCQA validation (4,183 short questions), PubMedQA `ori_pqal.json` (1,000 items, abstracts
   of ~200-300 words), and Pile-format test text of PubMed Abstracts / PubMed Central
   (5 MB each; abstracts ~1.5 kB, papers ~30 kB), written as the extract stage's Parquet;
2. runs `prepare_eval` on them (the package's own task rendering);
3. builds a random-initialised LLaMA-7B-shape model (hidden 4096, 32 layers, 32 heads,
   intermediate 11008, vocab 32000) directly on the GPU in bf16 and hands it to lm-eval's stock
   HFLM (no BOS, EOS prefix, max_length 2048, the package's harness settings);
4. runs every seed task zero-shot in full, and the few-shot setting (3/3/10/1) on the first
   `--few-limit` documents of each task (the full few-shot pass is ~4× the zero-shot tokens;
   the printed estimate scales the measured time up), printing wall time per task.

The demo tokenizer (vocab 4096, byte-level BPE) stands in for LLaMA's. Question lengths are set
in tokens (as LLaMA tokenizes the real sets); the perplexity text is 5 MB of bytes, which the demo
tokenizer cuts into ~3.1 bytes/token against LLaMA's ~4 on PubMed, so the perplexity timings
overstate a real run by about 25% (the token count is printed).

GPU:  python bench/bench_eval.py                  (about 6-8 minutes on one H100)
CPU:  python bench/bench_eval.py --tiny           (tiny model and sets; a smoke test, ~1-2 min)
Results: a table on stdout and `<out>/bench_eval.json` (out = $OUT if set, else .bench/eval).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("patient patients treatment therapy clinical study trial cohort risk disease cell cells protein "
         "expression gene mutation receptor inflammation infection antibiotic dose serum plasma level "
         "increased decreased significant analysis outcome mortality survival tumor cancer chronic acute "
         "syndrome diagnosis imaging biopsy renal hepatic cardiac pulmonary vascular neural immune "
         "response pathway signaling mechanism model mice human in vitro in vivo baseline follow-up "
         "months years median mean ratio interval confidence associated compared control group").split()
DRUGS = ["metformin", "lisinopril", "amoxicillin", "warfarin", "prednisone", "furosemide", "atorvastatin",
         "levothyroxine", "omeprazole", "ceftriaxone", "heparin", "insulin", "doxycycline", "propranolol"]
DIAGNOSES = ["sarcoidosis", "hypothyroidism", "infective endocarditis", "iron deficiency anemia",
             "pulmonary embolism", "rheumatoid arthritis", "nephrotic syndrome", "tuberculosis",
             "atrial fibrillation", "congestive heart failure", "gout", "lupus nephritis", "sepsis"]

REAL = {"medqa4": 1273, "medqa5": 1273, "medmcqa": 4183, "pubmedqa": 1000, "ppl_bytes": 5_000_000}
TINY = {"medqa4": 16, "medqa5": 16, "medmcqa": 24, "pubmedqa": 12, "ppl_bytes": 20_000}


def sentence(rnd: random.Random, lo: int, hi: int) -> str:
    """A pseudo-biomedical sentence of lo..hi words."""
    words = [rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def text_of(rnd: random.Random, n_words: int) -> str:
    """Sentences until about n_words words."""
    out, n = [], 0
    while n < n_words:
        s = sentence(rnd, 8, 24)
        out.append(s)
        n += s.count(" ") + 1
    return " ".join(out)


def text_tokens(rnd: random.Random, n_tokens: int, tok) -> str:
    """Sentences until about n_tokens tokens of `tok` (lengths are set in tokens: the demo tokenizer
    splits words ~1.8x finer than LLaMA's, so word counts would overstate the work)."""
    out, n = [], 0
    while n < n_tokens:
        s = sentence(rnd, 4, 10)  # short sentences: the last one overshoots the target by little
        out.append(s)
        n += len(tok.encode(" " + s, add_special_tokens=False))
    return " ".join(out)


def option(rnd: random.Random) -> str:
    """An answer option of 1-3 words (real options are mostly short noun phrases)."""
    if rnd.random() < 0.5:
        return rnd.choice(DRUGS + DIAGNOSES)
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 3)))


def write_benchmarks(root: Path, sizes: dict[str, int], rnd: random.Random, tok) -> dict[str, str]:
    """Write the four benchmark files in their published formats; return their paths.

    Lengths in tokens, as LLaMA's tokenizer sees the real sets: MedQA vignettes 90-240 (mean ~165),
    MedMCQA questions 8-35, PubMedQA abstracts 220-420 over 3-4 contexts."""
    paths = {"medqa4": root / "medqa/US/4_options/phrases_no_exclude_test.jsonl",
             "medqa5": root / "medqa/US/test.jsonl", "medmcqa": root / "medmcqa/dev.json",
             "pubmedqa": root / "pubmedqa/ori_pqal.json"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    for key, n_opt in (("medqa4", 4), ("medqa5", 5)):
        letters = "ABCDE"[:n_opt]
        with paths[key].open("w") as f:
            for _ in range(sizes[key]):
                opts = [option(rnd) for _ in letters]
                gold = rnd.randrange(n_opt)
                q = f"A {rnd.randint(18, 90)}-year-old presents. " + text_tokens(rnd, rnd.randint(90, 240), tok) + \
                    " Which of the following is the most likely diagnosis?"
                f.write(json.dumps({"question": q, "answer": opts[gold], "options": dict(zip(letters, opts)),
                                    "meta_info": "step1", "answer_idx": letters[gold]}) + "\n")
    with paths["medmcqa"].open("w") as f:
        for i in range(sizes["medmcqa"]):
            o = [option(rnd) for _ in range(4)]
            f.write(json.dumps({"id": f"bench-{i}", "question": text_tokens(rnd, rnd.randint(8, 35), tok), "opa": o[0], "opb": o[1],
                                "opc": o[2], "opd": o[3], "cop": rnd.randint(1, 4), "choice_type": "single",
                                "exp": "", "subject_name": "Medicine", "topic_name": "Bench"}) + "\n")
    pqa = {}
    for i in range(sizes["pubmedqa"]):
        n_ctx = rnd.randint(3, 4)
        ctx = [text_tokens(rnd, rnd.randint(220, 420) // n_ctx, tok) for _ in range(n_ctx)]
        d = rnd.choice(["yes", "no", "maybe"])
        pqa[str(20000000 + i)] = {"QUESTION": sentence(rnd, 8, 18)[:-1] + "?", "CONTEXTS": ctx,
                                  "LABELS": ["BACKGROUND"] * len(ctx), "MESHES": [], "YEAR": "2010",
                                  "reasoning_required_pred": d, "reasoning_free_pred": d,
                                  "final_decision": d, "LONG_ANSWER": sentence(rnd, 10, 30)}
    paths["pubmedqa"].write_text(json.dumps(pqa))
    return {k: str(v) for k, v in paths.items()}


def write_extracted(root: Path, n_bytes: int, rnd: random.Random) -> Path:
    """Pile-format PubMed test text as the extract stage writes it (Parquet + manifest), n_bytes per subset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biomed_llama.provenance import write_manifest

    out = root / "extracted"
    for slug, words in (("pubmed_abstracts", (150, 350)), ("pubmed_central", (3000, 7000))):
        texts, total = [], 0
        while total < n_bytes:
            t = text_of(rnd, rnd.randint(*words))
            texts.append(t)
            total += len(t.encode())
        d = out / slug / "test"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"text": texts, "source": ["test.jsonl.zst"] * len(texts),
                                 "line": pa.array(range(1, len(texts) + 1), pa.int64())}), d / "part-00000.parquet")
    write_manifest(out, stage="extract", params={"bench": True})
    return out


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


def card() -> dict:
    """The machine: GPU name and memory, versions."""
    import torch
    import transformers

    import lm_eval

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "lm_eval": getattr(lm_eval, "__version__", "?"), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    else:
        info["gpu"] = None
    return info


def main() -> int:
    """Generate, prepare, build, run; print wall time per task."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke size: tiny model and sets")
    ap.add_argument("--batch-size", default=None, help="lm-eval batch size (int or auto); default 32 GPU, 8 tiny")
    ap.add_argument("--few-limit", type=int, default=None, help="docs per task in the few-shot pass (default 100; 0 skips)")
    ap.add_argument("--ppl-bytes", type=int, default=None, help="bytes of text per PubMed subset (default 5 MB)")
    ap.add_argument("--only", default=None,
                    help="run only these TASK:SHOTS keys, comma-separated (e.g. medmcqa:10), to split the suite over GPUs")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / ".bench/eval")))
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from transformers import AutoTokenizer

    from biomed_llama.eval import harness
    from biomed_llama.eval.config import BenchmarkFiles, EvalConfig, EvalModel
    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.eval.prepare import prepare_eval

    sizes = dict(TINY if args.tiny else REAL)
    if args.ppl_bytes:
        sizes["ppl_bytes"] = args.ppl_bytes
    few_limit = args.few_limit if args.few_limit is not None else (4 if args.tiny else 100)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    bs = args.batch_size or ("8" if args.tiny else "32")
    bs = bs if bs == "auto" else int(bs)
    info = card()
    print("card:", json.dumps(info))

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    rnd = random.Random(1234)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(REPO / "data/sample/tokenizer")
    bench = write_benchmarks(work / "bench", sizes, rnd, tok)
    extracted = write_extracted(work, sizes["ppl_bytes"], rnd)
    cfg = EvalConfig(
        # No train files are generated: each test file is its own few-shot pool (the cost is the same).
        benchmarks=BenchmarkFiles(medqa4_test=bench["medqa4"], medqa4_train=bench["medqa4"], medqa5_test=bench["medqa5"],
                                  medqa5_train=bench["medqa5"], medmcqa_dev=bench["medmcqa"],
                                  medmcqa_train=bench["medmcqa"], pubmedqa_labeled=bench["pubmedqa"],
                                  pile_extracted=str(extracted)),
        output=str(work / "eval"), dtype="bfloat16", device=device, batch_size=bs, max_length=2048,
        models={"bench": EvalModel(path="unused", paper_row="LLaMA-7B")}, progress=False)
    counts = prepare_eval(cfg, ReadersConfig(medmcqa_cop="1-4"))  # the generated MedMCQA counts 1-4
    t_prep = time.perf_counter() - t0
    n_ppl_tokens = ppl_tokens(extracted, tok)
    print(f"generated + prepared in {t_prep:.1f}s: {counts}; perplexity tokens {n_ppl_tokens}")

    t0 = time.perf_counter()
    model = build_model(args.tiny, device)
    if device == "cuda":
        torch.cuda.synchronize()
    t_model = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e9:.2f}B params, {next(model.parameters()).dtype}, built in {t_model:.1f}s on {device}")
    lm = harness.load_lm({"pretrained": model, "tokenizer": tok, "batch_size": bs, "max_length": 2048,
                          "add_bos_token": False, "prefix_token_id": tok.eos_token_id})
    tm = harness.task_manager(Path(cfg.output) / "tasks")

    rows = []
    plan = [harness.Run("bench", "seed", t, 0) for t in harness.SUITE_TASKS["seed"]]
    if few_limit:
        plan += [harness.Run("bench", "seed", t, k) for t, k in cfg.fewshot.items()]
    if args.only:
        wanted = {tuple(k.split(":")) for k in args.only.split(",")}
        plan = [r for r in plan if (r.task, str(r.shots)) in wanted]
        if not plan:
            ap.error(f"--only {args.only} matches no task of the seed suite")
    for run in plan:
        limit = few_limit if run.shots else None
        if device == "cuda":
            torch.cuda.synchronize()
        res = harness.run_one(lm, tm, run, limit)
        n = len(res["samples"][run.lm_eval_task])
        full_n = counts[f"{run.task}.test"]
        metrics = harness.flat_metrics(run, res)
        row = {"task": run.task, "shots": run.shots, "docs": n, "wall_s": round(res["biomed_wall_s"], 2),
               "est_full_s": round(res["biomed_wall_s"] * full_n / n, 1), "metrics": metrics}
        rows.append(row)
        print(f"{run.key:<28} docs {n:>5}/{full_n:<5} wall {row['wall_s']:>8.1f}s  "
              f"(full set ≈ {row['est_full_s']:.0f}s)  " + " ".join(f"{k.split('.')[-1]}={v:.4g}" for k, v in metrics.items()),
              flush=True)
        summary = summarise(rows)
        # Written after every task, so a run cut short by a time limit still leaves its numbers.
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_eval.json").write_text(json.dumps(
            {"card": info, "sizes": sizes, "few_limit": few_limit, "batch_size": bs, "prepare_s": t_prep,
             "model_build_s": t_model, "params": n_params, "ppl_tokens": n_ppl_tokens, "runs": rows,
             **summary}, indent=2))
    s = summarise(rows)
    print(f"total eval wall {s['total_s']:.1f}s (zero-shot, full sets: {s['zero_shot_s']:.1f}s; "
          f"zero + full few-shot ≈ {s['full_estimate_s']:.0f}s)")
    return 0


def summarise(rows: list[dict]) -> dict[str, float]:
    """Total wall, zero-shot wall, and zero-shot + few-shot scaled to the full sets."""
    zero = sum(r["wall_s"] for r in rows if r["shots"] == 0)
    return {"total_s": sum(r["wall_s"] for r in rows), "zero_shot_s": zero,
            "full_estimate_s": zero + sum(r["est_full_s"] for r in rows if r["shots"])}


if __name__ == "__main__":
    sys.exit(main())
