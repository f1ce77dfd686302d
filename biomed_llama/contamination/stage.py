"""Stage `contamination`: which benchmark test items the pretraining corpus holds (lm-eval's 13-gram overlap).

Flow (the same for one process, many processes, or many Slurm jobs; the layout of `data/extract.py`):

1. `plan_files` lists the extracted Parquet files of the scanned subsets and split, subsets in the
   configured order, each folder's parts sorted: the corpus order.
2. `scan.scan_file` scans ONE file against the benchmark n-gram index and returns a JSON report;
   workers (`data/workers.map_ordered`) get whole files. With `--num-shards N`, job i scans files
   i, i+N, … into `<output>.parts/shard-i-of-N/` (`plan.json`, `reports.json`, manifest), and
   `contamination-merge` combines all parts.
3. `finish` merges the reports in file order (`scan.merge_reports`) and writes, per task,
   `<task>.json` (one verdict per test item, in file order) and `summary.json`, then the manifest.

Because the merge depends only on the file order, the output is byte-identical for any worker count
and for any number of jobs + merge. Every file written is JSON; nothing is pickled to disk (lm-eval's
own decontamination caches its lookups with pickle: not used).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.contamination.config import ContaminationConfig
from biomed_llama.contamination.scan import FileTask, benchmark_spec, index_for, merge_reports, scan_file
from biomed_llama.data.workers import map_ordered
from biomed_llama.errors import ConfigError, UserError
from biomed_llama.eval.config import MC_TASKS, BenchmarkFiles
from biomed_llama.eval.formats import MC_FILES
from biomed_llama.fsutil import atomic_dir, atomic_write_json, sha256_file
from biomed_llama.provenance import require_verified, write_manifest
from biomed_llama.stage_metrics import write_metrics

PARTS_SUFFIX = ".parts"
SUMMARY = "summary.json"
# What `dvc metrics show` lists: contaminated and clean items per task (the count behind each clean cell of the
# table); shares, sizes and speed go to the details file.
HEADLINE = ("contaminated", "clean")


def test_files(benchmarks: BenchmarkFiles) -> dict[str, str]:
    """{task: test file} of the four MC tasks (the files `evaluate` scores, through prepare-eval)."""
    return {task: getattr(benchmarks, MC_FILES[task][0]) for task in MC_TASKS}


def plan_files(cfg: ContaminationConfig) -> list[str]:
    """The extracted Parquet files to scan, in corpus order (subsets as configured, parts sorted)."""
    files: list[str] = []
    for slug in cfg.subsets:
        folder = Path(cfg.input) / slug / cfg.split
        if not folder.is_dir():
            raise UserError(
                f"contamination: no folder {folder} (contamination.subsets / split): run `biomed-llama "
                f"extract` first, or name a subset folder of {cfg.input}"
            )
        files += sorted(p.as_posix() for p in folder.glob("part-*.parquet"))
    return files


def data_params(cfg: ContaminationConfig, benchmarks: BenchmarkFiles, readers: ReadersConfig) -> dict[str, Any]:
    """Everything that decides the output bytes: the section less its speed-only keys, the test files (with
    their sha256, so a part made against other benchmark files is refused by the merge) and the readers."""
    files = test_files(benchmarks)
    return {
        "contamination": cfg.model_dump(mode="json", exclude=set(cfg.SPEED_ONLY)),
        "benchmarks": {t: {"path": p, "sha256": sha256_file(p)} for t, p in files.items()},
        "readers": readers.model_dump(mode="json"),
    }


def _check_sharding(workers: int, num_shards: int, shard_index: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    if num_shards < 1:
        raise ConfigError(f"--num-shards must be >= 1 (got {num_shards})")
    if not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index must be in 0..{num_shards - 1} (got {shard_index})")


def _scan(cfg: ContaminationConfig, spec: str, files: list[str], workers: int) -> list[dict[str, Any]]:
    index_for(spec)  # read the benchmark files here first: a bad record stops the stage before any worker starts
    return map_ordered(
        scan_file, [FileTask(f, spec, cfg.max_doc_ids) for f in files], workers, "contamination: scanning"
    )


def item_verdicts(spec: str, merged: dict[int, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one record per test item in file order: its n-grams, those found, the overlap (found / all),
    contaminated (any found: lm-eval's rule), `short` (fewer words than n: no n-gram, never contaminated),
    how many documents match and the first of them."""
    index = index_for(spec)
    out: dict[str, list[dict[str, Any]]] = {}
    for k, (task, doc) in enumerate(index.items):
        hit = merged.get(k, {"grams": (), "doc_ids": [], "n_docs": 0})
        size, found = index.sizes[k], len(hit["grams"])
        out.setdefault(task, []).append(
            {
                "idx": doc["idx"],
                "id": doc["id"],
                "ngrams": size,
                "matched_ngrams": found,
                "overlap": found / size if size else 0.0,
                "contaminated": found > 0,
                "short": size == 0,
                "n_docs": hit["n_docs"],
                "doc_ids": hit["doc_ids"],
            }
        )
    return out


def summarise(
    verdicts: dict[str, list[dict[str, Any]]], reports: list[dict[str, Any]], cfg: ContaminationConfig
) -> dict[str, Any]:
    """`summary.json`: n, the corpus scanned, and per task the items, contaminated, their share, short and clean."""
    tasks = {}
    for task, items in verdicts.items():
        bad = sum(i["contaminated"] for i in items)
        tasks[task] = {
            "items": len(items),
            "contaminated": bad,
            "share": bad / len(items) if items else 0.0,
            "clean": len(items) - bad,
            "short": sum(i["short"] for i in items),
        }
    return {
        "ngram": cfg.ngram,
        "corpus": {
            "input": cfg.input,
            "subsets": cfg.subsets,
            "split": cfg.split,
            "files": len(reports),
            "docs": sum(r["docs"] for r in reports),
            "bytes": sum(r["bytes"] for r in reports),
        },
        "tasks": tasks,
    }


def finish(
    cfg: ContaminationConfig,
    spec: str,
    params: dict[str, Any],
    reports: list[dict[str, Any]],
    inputs: list[str],
    tmp: Path,
) -> dict[str, Any]:
    """Write the verdicts, the summary and the manifest into `tmp`; return the summary."""
    verdicts = item_verdicts(spec, merge_reports(reports, cfg.max_doc_ids))
    for task, items in verdicts.items():
        atomic_write_json(tmp / f"{task}.json", items)
    summary = summarise(verdicts, reports, cfg)
    atomic_write_json(tmp / SUMMARY, summary)
    write_manifest(tmp, stage="contamination", params=params, inputs=inputs, extra={"tasks": summary["tasks"]})
    return summary


def _metrics(summary: dict[str, Any], wall: float, workers: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
    t, corpus = summary["tasks"], summary["corpus"]
    cpu = sum(r.get("cpu_s", 0.0) for r in reports)
    return {
        "contaminated": {k: v["contaminated"] for k, v in t.items()},
        "clean": {k: v["clean"] for k, v in t.items()},
        "share": {k: v["share"] for k, v in t.items()},
        "docs": corpus["docs"],
        # diagnostics (the details file): sizes, short items, throughput of this run
        "items": {k: v["items"] for k, v in t.items()},
        "short": {k: v["short"] for k, v in t.items()},
        "files": corpus["files"],
        "bytes": corpus["bytes"],
        "wall_s": wall,
        "workers": workers,
        "mb_per_s": corpus["bytes"] / 1e6 / wall if wall > 0 else None,
        # per busy core: what one scanning process reaches, whatever else shares the machine
        "cpu_s": cpu,
        "mb_per_cpu_s": corpus["bytes"] / 1e6 / cpu if cpu > 0 else None,
    }


def print_summary(summary: dict[str, Any], where: str, wall: float | None = None, cpu: float | None = None) -> None:
    """One line per task: contaminated / items (share), short items; then the corpus scanned (MB/s, MB per CPU s)."""
    for task, v in summary["tasks"].items():
        print(
            f"contamination: {task}: {v['contaminated']}/{v['items']} items contaminated ({v['share']:.1%}), "
            f"{v['short']} shorter than {summary['ngram']} words"
        )
    c = summary["corpus"]
    rate = f" in {wall:.1f}s ({c['bytes'] / 1e6 / wall:.1f} MB/s)" if wall else ""
    if cpu:
        rate += f", {c['bytes'] / 1e6 / cpu:.1f} MB per CPU second"
    print(
        f"contamination: scanned {c['docs']:,} documents, {c['bytes'] / 1e6:.1f} MB of text "
        f"({c['files']} files){rate} → {where}"
    )


def part_dir(cfg: ContaminationConfig, num_shards: int, shard_index: int) -> Path:
    """Folder of one partial output: `<output>.parts/shard-<i>-of-<N>`."""
    return Path(cfg.output + PARTS_SUFFIX) / f"shard-{shard_index}-of-{num_shards}"


def run_contamination(
    cfg: ContaminationConfig,
    benchmarks: BenchmarkFiles,
    readers: ReadersConfig,
    *,
    workers: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
) -> dict[str, Any]:
    """Run the stage (or, with num_shards > 1, one job's part of it); return the metrics (or the part's counts)."""
    workers = cfg.workers if workers is None else workers
    _check_sharding(workers, num_shards, shard_index)
    require_verified(cfg.input)
    files = plan_files(cfg)
    tests = test_files(benchmarks)
    spec = benchmark_spec(tests, readers, cfg.ngram)
    params = data_params(cfg, benchmarks, readers)
    mine = files[shard_index::num_shards]
    t0 = time.perf_counter()
    if num_shards > 1:
        dest = part_dir(cfg, num_shards, shard_index)
        with atomic_dir(dest) as tmp:
            reports = _scan(cfg, spec, mine, workers)
            atomic_write_json(
                tmp / "plan.json",
                {"num_shards": num_shards, "shard_index": shard_index, "params": params, "files": mine},
            )
            atomic_write_json(tmp / "reports.json", reports)
            write_manifest(
                tmp,
                stage="contamination-part",
                params=params,
                inputs=[cfg.input],
                extra={"num_shards": num_shards, "shard_index": shard_index},
            )
        wall = time.perf_counter() - t0
        mb = sum(r["bytes"] for r in reports) / 1e6
        print(
            f"contamination: part {shard_index + 1}/{num_shards} → {dest}: {len(mine)} files, {mb:.1f} MB in "
            f"{wall:.1f}s; run `biomed-llama contamination-merge --num-shards {num_shards}` when all parts are done"
        )
        return {"part": str(dest), "files": len(mine), "bytes": mb * 1e6, "wall_s": wall}
    with atomic_dir(cfg.output) as tmp:
        reports = _scan(cfg, spec, files, workers)
        wall = time.perf_counter() - t0
        summary = finish(cfg, spec, params, reports, [cfg.input, *tests.values()], tmp)
    metrics = _metrics(summary, wall, workers, reports)
    write_metrics(cfg.metrics, metrics, HEADLINE)
    print_summary(summary, cfg.output, wall, metrics["cpu_s"])
    return metrics


def merge_contamination(
    cfg: ContaminationConfig, benchmarks: BenchmarkFiles, readers: ReadersConfig, *, num_shards: int
) -> dict[str, Any]:
    """Check that all `num_shards` parts exist, are intact and match the params, input files and benchmark files,
    and write the final output: byte-identical to one `contamination` run. The parts are left in place."""
    _check_sharding(1, num_shards, 0)
    require_verified(cfg.input)
    files = plan_files(cfg)
    tests = test_files(benchmarks)
    spec = benchmark_spec(tests, readers, cfg.ngram)
    params = data_params(cfg, benchmarks, readers)
    parts = [part_dir(cfg, num_shards, i) for i in range(num_shards)]
    missing = [p.name for p in parts if not (p / "manifest.json").is_file()]
    if missing:
        raise UserError(
            f"contamination-merge: missing part(s) {', '.join(missing)} under {cfg.output}{PARTS_SUFFIX}; "
            f"run `biomed-llama contamination --num-shards {num_shards} --shard-index I` for each"
        )
    by_file: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(parts):
        require_verified(part)
        plan = json.loads((part / "plan.json").read_text())
        if plan["params"] != params or plan["files"] != files[i::num_shards]:
            raise UserError(
                f"contamination-merge: {part} was made with other params, input or benchmark files; rerun that part"
            )
        for r in json.loads((part / "reports.json").read_text()):
            by_file[r["file"]] = r
    reports = [by_file[f] for f in files]
    with atomic_dir(cfg.output) as tmp:
        summary = finish(cfg, spec, params, reports, [cfg.input, *tests.values()], tmp)
    metrics = _metrics(summary, 0.0, 1, reports)
    metrics["mb_per_s"] = None  # the scan ran in the parts (each part's manifest and log say how fast)
    write_metrics(cfg.metrics, metrics, HEADLINE)
    print_summary(summary, cfg.output)
    return metrics
