"""Benchmark the tokenize stage against a plain `datasets.map(batched=True, num_proc=N)` baseline.

Both tokenize the same Parquet input (a synthetic PubMed-like corpus built from the committed
sample's sentences, ~24 MB by default) with the same tokenizer, append EOS to every document and
write their outputs to disk; the ids must be identical. For each N the variants run interleaved,
`--repeats` times, and the best time counts (the machine may be shared: contention only slows).

    .venv/bin/python -m bench.bench_tokenize [--mb 24] [--repeats 2] [--workers 1 2]

What is timed: ours = `tokenize_tree` (read Parquet, tokenize, write tokens.bin/offsets.npy, incl.
starting the worker pool); baseline = `Dataset.map` over a Dataset already loaded from the same
Parquet files (its Arrow cache write included, its loading not).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from biomed_llama.data.tokenize import SplitInput, load_tokenizer_spec, tokenize_tree

REPO = Path(__file__).resolve().parents[1]
PUBMED = ("PubMed Abstracts", "PubMed Central")


def sample_sentences(pattern: str) -> list[str]:
    """The sentences of the PubMed records of the committed sample corpus."""
    import zstandard

    sentences: list[str] = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        with zstandard.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    if rec["meta"]["pile_set_name"] in PUBMED:
                        sentences += [s for s in re.split(r"(?<=[.!?])\s+", rec["text"]) if s]
                except (ValueError, KeyError, TypeError):
                    continue  # the sample holds a few deliberately bad records
    if not sentences:
        raise SystemExit(f"no PubMed records in {pattern}; run scripts/make_sample.py")
    return sentences


def build_corpus(sentences: list[str], target_mb: float, seed: int) -> list[str]:
    """Documents of randomly drawn sentences: mostly abstract-sized, every 8th paper-sized."""
    rng = np.random.default_rng(seed)
    docs, size = [], 0
    while size < target_mb * 1e6:
        n = int(rng.integers(150, 400)) if len(docs) % 8 == 7 else int(rng.integers(4, 14))
        doc = " ".join(sentences[i] for i in rng.integers(0, len(sentences), n))
        docs.append(doc)
        size += len(doc.encode())
    return docs


def write_input(docs: list[str], folder: Path, rows_per_file: int) -> list[Path]:
    """Write the corpus as extract-style Parquet shards `part-NNNNN.parquet` (column `text`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    files = []
    for k in range(0, len(docs), rows_per_file):
        files.append(folder / f"part-{k // rows_per_file:05d}.parquet")
        pq.write_table(pa.table({"text": pa.array(docs[k:k + rows_per_file], pa.string())}), files[-1])
    return files


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children: robust to other users' load."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_ours(split: SplitInput, spec, out: Path, workers: int, batch_size: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Time this stage's path; return (seconds, ids, per-document lengths)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    tokenize_tree([split], spec, out, workers=workers, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    store = out / split.slug / split.split
    ids = np.fromfile(store / "tokens.bin", dtype=json.loads((store / "meta.json").read_text())["dtype"])
    return seconds, ids, np.diff(np.load(store / "offsets.npy"))


def _baseline_fn(batch, tok):
    """The usual tokenize function of `datasets.map`: HF tokenizer without special tokens, + EOS."""
    eos = tok.eos_token_id
    return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}


def run_baseline(ds, tok, workers: int, batch_size: int, tag: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Time `ds.map(batched=True, num_proc=workers)`; return (seconds, ids, per-document lengths)."""
    import pyarrow.compute as pc

    start = time.perf_counter()
    out = ds.map(_baseline_fn, fn_kwargs={"tok": tok}, batched=True, batch_size=batch_size, num_proc=workers,
                 remove_columns=ds.column_names, load_from_cache_file=False, new_fingerprint=tag)
    seconds = time.perf_counter() - start
    col = out.data.column("input_ids").combine_chunks()
    return seconds, pc.list_flatten(col).to_numpy(), pc.list_value_length(col).to_numpy()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print MB/s per variant and the ratio; exit 1 if any ids differ."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=24.0, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--repeats", type=int, default=2, help="runs per variant (best counts)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="values of N")
    ap.add_argument("--batch-size", type=int, default=1000, help="documents per tokenizer call (both)")
    ap.add_argument("--tokenizer", default=str(REPO / "data/sample/tokenizer"))
    ap.add_argument("--sample", default=str(REPO / "data/sample/pile/**/*.jsonl.zst"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    docs = build_corpus(sample_sentences(args.sample), args.mb, args.seed)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        files = write_input(docs, tmp / "extracted" / "pubmed" / "train", rows_per_file=2000)
        split = SplitInput("pubmed", "train", tuple(files))
        spec = load_tokenizer_spec(args.tokenizer)
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        ds = datasets.Dataset.from_parquet([str(f) for f in files], cache_dir=str(tmp / "hf-cache"))
        print(f"corpus: {len(docs):,} documents, {mb:.1f} MB in {len(files)} Parquet files; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machine: contention only slows)")
        best: dict[tuple[str, int], float] = {}
        best_cpu: dict[tuple[str, int], float] = {}
        for rep in range(args.repeats):
            for n in args.workers:
                variants = [("ours", lambda: run_ours(split, spec, tmp / "out", n, args.batch_size)),
                            ("datasets.map", lambda: run_baseline(ds, tok, n, args.batch_size, f"bench-{rep}-{n}"))]
                results = {}
                for name, fn in variants if rep % 2 == 0 else variants[::-1]:
                    cpu0 = cpu_seconds()
                    seconds, ids, lengths = fn()
                    cpu = cpu_seconds() - cpu0
                    results[name] = (ids, lengths)
                    best[name, n] = min(best.get((name, n), float("inf")), seconds)
                    best_cpu[name, n] = min(best_cpu.get((name, n), float("inf")), cpu)
                    print(f"  run {rep + 1} N={n} {name:>12}: {seconds:6.2f} s  {mb / seconds:6.2f} MB/s  "
                          f"{cpu / mb:5.2f} CPU-s/MB  load {os.getloadavg()[0]:.1f}", flush=True)
                (a_ids, a_len), (b_ids, b_len) = results["ours"], results["datasets.map"]
                if not (np.array_equal(a_len, b_len) and np.array_equal(a_ids.astype(np.int64), b_ids.astype(np.int64))):
                    print(f"FAIL: token ids differ between ours and datasets.map at N={n}")
                    return 1
        print(f"\nidentical token ids: yes ({len(a_ids):,} tokens); best of {args.repeats} runs each")
        print(f"{'N':>3} {'ours MB/s':>10} {'map MB/s':>10} {'ratio':>7} {'ours CPU-s/MB':>14} {'map CPU-s/MB':>13}")
        for n in args.workers:
            ours, base = mb / best["ours", n], mb / best["datasets.map", n]
            cpu_ours, cpu_base = best_cpu["ours", n] / mb, best_cpu["datasets.map", n] / mb
            print(f"{n:>3} {ours:>10.2f} {base:>10.2f} {ours / base:>6.2f}x {cpu_ours:>14.2f} {cpu_base:>13.2f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
