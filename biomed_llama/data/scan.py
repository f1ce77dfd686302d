"""Scanning one Pile shard for the extract stage: runs in worker processes, one whole file per task.

`scan_file` streams a file, writes the rows of the kept subsets to one intermediate Parquet file
per subset, and returns a JSON-able report (counts, bad records, corruption). It imports only
what a worker needs (no params loading, no CLI), so spawned workers start fast.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.data.config import subset_slug
from biomed_llama.data.pile import CorruptShard, MalformedRecord, iter_lines, parse_record
from biomed_llama.data.shards import RowSink
from biomed_llama.data.workers import map_ordered
from biomed_llama.errors import BadRecordError


@dataclass(frozen=True)
class InputFile:
    """One input shard: its position in the plan, its split and its local path."""

    index: int
    split: str
    path: str


@dataclass(frozen=True)
class ScanTask:
    """What a worker needs to scan one input file (picklable for spawned processes)."""

    file: InputFile
    subsets: tuple[str, ...]
    dest: str
    on_bad_record: str
    max_reported_bad: int


def _abort(msg: str) -> BadRecordError:
    return BadRecordError(f"{msg}; with extract.on_bad_record=skip it would be counted and skipped")


def scan_file(task: ScanTask) -> dict[str, Any]:
    """Read one input file, write its kept rows to `task.dest/<slug>.parquet`, return its report.

    The report: {index, split, file, lines, kept: {subset: {docs, chars, bytes}}, dropped:
    {other subset: docs}, bad_records, bad_examples: [{file, line, reason}], corrupt: None or
    {line, reason, rows_discarded}}. Raises BadRecordError on the first bad line or a corrupt
    file when on_bad_record is abort.
    """
    f, dest = task.file, Path(task.dest)
    kept = {s: {"docs": 0, "chars": 0, "bytes": 0} for s in task.subsets}
    sinks: dict[str, RowSink] = {}
    dropped: Counter[str] = Counter()
    bad, lines, corrupt = 0, 0, None
    examples: list[dict[str, Any]] = []
    try:
        for lines, raw in iter_lines(f.path):
            try:
                subset, text = parse_record(raw)
            except MalformedRecord as e:
                if task.on_bad_record == "abort":
                    raise _abort(f"{f.path}:{lines}: {e}") from None
                bad += 1
                if len(examples) < task.max_reported_bad:
                    examples.append({"file": f.path, "line": lines, "reason": str(e)})
                continue
            if subset not in kept:
                dropped[subset] += 1
                continue
            if subset not in sinks:
                sinks[subset] = RowSink(dest / f"{subset_slug(subset)}.parquet")
            sinks[subset].add(text, f.path, lines)
            k = kept[subset]
            k["docs"] += 1
            k["chars"] += len(text)
            k["bytes"] += len(text.encode("utf-8"))
    except CorruptShard as e:
        if task.on_bad_record == "abort":
            raise _abort(str(e)) from None
        lines = e.line
        corrupt = {"line": e.line, "reason": e.reason, "rows_discarded": sum(k["docs"] for k in kept.values())}
        kept = {s: {"docs": 0, "chars": 0, "bytes": 0} for s in task.subsets}
    finally:
        for sink in sinks.values():
            sink.close()
    if corrupt is not None:
        shutil.rmtree(dest, ignore_errors=True)  # a corrupt file is dropped whole (see biomed_llama.data.extract)
    return {
        "index": f.index,
        "split": f.split,
        "file": f.path,
        "lines": lines,
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "bad_records": bad,
        "bad_examples": examples,
        "corrupt": corrupt,
    }


def scan_all(tasks: list[ScanTask], workers: int) -> dict[int, dict[str, Any]]:
    """Scan every task (in `workers` spawned processes when > 1); return reports by input index."""
    reports = map_ordered(scan_file, tasks, workers, "extract: scanning shards")
    return {r["index"]: r for r in reports}
