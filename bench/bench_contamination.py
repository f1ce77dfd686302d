#!/usr/bin/env python
"""Throughput of the `contamination` stage on a generated corpus of realistic documents, and its projection.

Writes Pile-format train shards with scripts/make_gpu_inputs.py's generator (its `gpu` layout: PubMed
abstracts ~1.5 kB, PubMed Central papers ~30 kB, other subsets that extract drops) and the four benchmark test
sets at the paper's sizes with scripts/synth_benchmarks.py (1,273 / 1,273 / 4,183 / 1,000 items), extracts
them, then runs the stage (lm-eval's 13-gram scan) with each worker count asked for, checks that every count
gives the same bytes, and prints MB/s of extracted text and the projected time for the paper's corpus
(213 GiB of PubMed text, shared/REPRODUCTION.md) on one node of `--node-cores` cores from the rate per CPU
second of the scanning processes (the slowest worker count's), since the files are independent and each worker
scans its own; wall-clock MB/s is printed too, but on a shared machine it mostly measures the other tenants.

    python -m bench.bench_contamination --root /tmp/contam-bench --train-files 4 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PAPER_GIB = 213  # the paper's PubMed corpus (shared/REPRODUCTION.md: PubMed Abstracts + PubMed Central)


def main(argv: list[str] | None = None) -> int:
    """Generate, extract, scan with each worker count; print a JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="scratch folder (replaced)")
    ap.add_argument("--train-files", type=int, default=4, help="Pile train files of the gpu layout (~38 MB text each)")
    ap.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    ap.add_argument("--node-cores", type=int, default=16)
    args = ap.parse_args(argv)

    from scripts import make_gpu_inputs as gi
    from scripts.synth_benchmarks import write_benchmarks
    from transformers import AutoTokenizer

    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.config import validate_params
    from biomed_llama.contamination.stage import run_contamination
    from biomed_llama.data.extract import run_extract

    root = args.root.resolve()
    shutil.rmtree(root, ignore_errors=True)
    layout = {n: c for n, c in gi.PILE["gpu"].items() if n.startswith("train/")}
    for name in sorted(layout)[: args.train_files]:
        gi.write_shard((str(root), name, layout[name], gi.SEED))
    tok = AutoTokenizer.from_pretrained(str(REPO / "data/sample/tokenizer"))
    sizes = {k: v for k, v in gi.BENCH["gpu"].items() if not k.endswith("_train")}
    files = write_benchmarks(root / "bench", sizes, random.Random(gi.SEED + 1), tok)
    keys = {"medqa4": "medqa4_test", "medqa5": "medqa5_test", "medmcqa": "medmcqa_dev", "pubmedqa": "pubmedqa_labeled"}
    params = validate_params({
        "extract": {"train": [str(root / "data/pile/train/*.jsonl.zst")], "val": [], "test": [], "workers": 2,
                    "output": str(root / "extracted"), "metrics": str(root / "extract.json")},
        "eval": {"benchmarks": {keys[k]: str(p) for k, p in files.items() if k in keys}}})
    run_extract(params.extract)
    report: dict = {"runs": {}}
    first = None
    for w in (int(x) for x in args.workers.split(",")):
        cfg = params.contamination.model_copy(update={
            "input": str(root / "extracted"), "output": str(root / f"out-w{w}"), "metrics": str(root / f"m-w{w}.json")})
        t0 = time.perf_counter()
        m = run_contamination(cfg, params.eval.benchmarks, ReadersConfig(), workers=w)
        wall = time.perf_counter() - t0
        data = {p.name: p.read_bytes() for p in sorted(Path(cfg.output).iterdir()) if p.name != "manifest.json"}
        first = first or data
        report["runs"][w] = {"scan_mb_per_s": round(m["mb_per_s"], 2), "scan_s": round(m["wall_s"], 1),
                             "mb_per_cpu_s": round(m["mb_per_cpu_s"], 2), "cpu_s": round(m["cpu_s"], 1),
                             "stage_s": round(wall, 1), "identical_to_first": data == first}
        report.update(text_mb=round(m["bytes"] / 1e6, 1), docs=m["docs"], files=m["files"],
                      contaminated=m["contaminated"], short=m["short"])
    # Per core: MB per CPU second of the scanning processes (wall-clock MB/s on a shared machine mostly measures
    # the other tenants); a 16-core node runs 16 workers over independent files.
    per_core = min(r["mb_per_cpu_s"] for r in report["runs"].values())
    total = PAPER_GIB * 2**30 / 1e6
    report["projection"] = {"corpus_mb": round(total), "node_cores": args.node_cores, "mb_per_core_s": per_core,
                            "hours": round(total / (per_core * args.node_cores) / 3600, 2)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
