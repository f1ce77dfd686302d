"""The benchmark side (an n-gram index of the test items) and the scan of one extracted Parquet file against it.

Memory is bounded by the benchmark side: the index holds the test items' distinct n-grams (hundreds of
thousands for the paper's benchmarks); a corpus file is read a row group at a time and only what matches
is kept (per item: the n-grams found, the first `max_doc_ids` matching documents and how many there are).
A worker process rebuilds the index once from the benchmark files (`index_for`, cached per process), so a
task carries a few paths, never the index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.contamination.ngrams import decontamination_query, item_ngrams, ngrams
from biomed_llama.eval.config import MC_TASKS
from biomed_llama.eval.formats import read_docs

TEXT_BATCH = 1024  # rows read at a time from a Parquet file (the extract shards' row-group size)


@dataclass
class Index:
    """The benchmark test items and their n-grams: item k is `items[k]` = (task, doc), with `sizes[k]` distinct
    n-grams; `gram_ids` maps an n-gram to its number, `gram_items[g]` lists the items that hold n-gram g."""

    items: list[tuple[str, dict[str, Any]]]
    sizes: list[int]
    gram_ids: dict[str, int]
    gram_items: list[list[int]]


def read_tasks(files: dict[str, str], readers: ReadersConfig) -> dict[str, list[dict[str, Any]]]:
    """Each MC task's test documents, read as prepare-eval reads them (eval/prepare.py `read_docs`: same items,
    same order, same `idx`), for `files` = {task: path} in MC_TASKS order."""
    return {task: read_docs(task, files[task], readers) for task in MC_TASKS if task in files}


def build_index(tasks: dict[str, list[dict[str, Any]]], n: int) -> Index:
    """Number every test item (tasks in order, documents in file order) and index its distinct n-grams."""
    index = Index([], [], {}, [])
    for task, docs in tasks.items():
        for doc in docs:
            k = len(index.items)
            grams = item_ngrams(decontamination_query(task, doc), n)
            index.items.append((task, doc))
            index.sizes.append(len(grams))
            for g in grams:
                gid = index.gram_ids.setdefault(g, len(index.gram_items))
                if gid == len(index.gram_items):
                    index.gram_items.append([])
                index.gram_items[gid].append(k)
    return index


def benchmark_spec(files: dict[str, str], readers: ReadersConfig, n: int) -> str:
    """What a worker needs to rebuild the index, as one (hashable, picklable) JSON string."""
    return json.dumps({"files": files, "readers": readers.model_dump(mode="json"), "n": n}, sort_keys=True)


@lru_cache(maxsize=2)
def index_for(spec: str) -> Index:
    """The index of a `benchmark_spec`, built once per process."""
    s = json.loads(spec)
    return build_index(read_tasks(s["files"], ReadersConfig.model_validate(s["readers"])), s["n"])


@dataclass(frozen=True)
class FileTask:
    """One extracted Parquet file to scan: its path, and the benchmark spec and listing limit."""

    path: str
    spec: str
    max_doc_ids: int


def scan_file(task: FileTask) -> dict[str, Any]:
    """Scan one Parquet file of extracted documents (runs in worker processes); return a JSON-able report:
    `docs`, `bytes` (UTF-8 text), `cpu_s` (this process's CPU seconds on it: a rate that a busy machine does not
    skew; never written into the stage's output) and per touched item `[item, [n-gram ids found], [doc ids], n docs]`.

    A document's id is `<source>:<line>`, the Pile file and line it was extracted from (extract's `source`,
    `line` columns), so it names the same document whatever the extract's part layout."""
    import time

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    index = index_for(task.spec)
    cpu0 = time.process_time()
    n = json.loads(task.spec)["n"]
    keys, gram_items = index.gram_ids, index.gram_items
    found: dict[int, set[int]] = {}
    docs: dict[int, list[str]] = {}
    ndocs: dict[int, int] = {}
    n_rows = n_bytes = 0
    for batch in pq.ParquetFile(task.path).iter_batches(batch_size=TEXT_BATCH, columns=["text", "source", "line"]):
        n_rows += batch.num_rows
        n_bytes += pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0
        texts = batch.column("text").to_pylist()
        for row, text in enumerate(texts):
            hit = {keys[g] for g in ngrams(text, n) if g in keys}
            if not hit:
                continue
            touched: set[int] = set()
            for g in hit:
                for k in gram_items[g]:
                    found.setdefault(k, set()).add(g)
                    touched.add(k)
            doc_id = f"{batch.column('source')[row].as_py()}:{batch.column('line')[row].as_py()}"
            for k in touched:
                ndocs[k] = ndocs.get(k, 0) + 1
                listed = docs.setdefault(k, [])
                if len(listed) < task.max_doc_ids:
                    listed.append(doc_id)
    return {
        "file": task.path,
        "docs": n_rows,
        "bytes": n_bytes,
        "cpu_s": time.process_time() - cpu0,
        "items": [[k, sorted(found[k]), docs.get(k, []), ndocs[k]] for k in sorted(ndocs)],
    }


def merge_reports(reports: list[dict[str, Any]], max_doc_ids: int) -> dict[int, dict[str, Any]]:
    """Per item, what the file reports found, combined in file (= corpus) order: the n-grams found (a union),
    the first `max_doc_ids` matching documents and their total count. The result does not depend on how the
    files were split over workers or jobs, only on their order."""
    out: dict[int, dict[str, Any]] = {}
    for r in reports:
        for k, grams, ids, count in r["items"]:
            acc = out.setdefault(k, {"grams": set(), "doc_ids": [], "n_docs": 0})
            acc["grams"].update(grams)
            acc["doc_ids"].extend(ids[: max_doc_ids - len(acc["doc_ids"])])
            acc["n_docs"] += count
    return out
