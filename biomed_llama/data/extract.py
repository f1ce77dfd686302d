"""Stage `extract`: keep the PubMed records of Pile shards and write Parquet shards per subset and split.

Flow (the same for one process, many processes, or many Slurm jobs):

1. `plan_inputs` lists the input files: each split's paths/globs expanded and sorted, train then
   val then test, numbered 0…n-1 (with `extract.remote` set, the names are resolved under the
   remote and downloaded into `extract.cache` first).
2. `scan_file` reads ONE input file and writes its kept rows, per subset, to an intermediate
   Parquet file, returning a JSON-able report (counts, bad records). Workers get whole files.
3. `assemble` concatenates the intermediates in input order and cuts each subset/split stream
   into `part-NNNNN.parquet` files of `rows_per_shard` rows, planned from the reports' row counts
   and written in parallel. Because the row order is fixed by the plan and a file's bytes
   depend only on its rows (see `shards.py`), the output is byte-identical whatever the number
   of workers, and `--num-shards N` jobs + `extract-merge` give the same bytes as one run (job i
   scans files i, i+N, … into `<output>.parts/shard-i-of-N/`, the merge assembles all parts).

Bad input (never a silent loss): a malformed line (broken JSON, invalid UTF-8, no or empty text,
no `meta.pile_set_name`) is counted and reported with file and line; a truncated or corrupt zst
file is reported with the last complete line before the damage. With `on_bad_record: abort`
the first one stops the stage (exit code 4) and no output is written. With `skip` a bad line is
skipped, and a corrupt FILE IS DROPPED AS A WHOLE: rows read from it before the damage are not
kept (a shard cut at an arbitrary point is not a meaningful sample), and their number appears in
the metrics as `rows_discarded_from_bad_files` and in the manifest's `extra.bad_files`.

Outputs are written into a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from biomed_llama.data.config import ExtractConfig, subset_slug
from biomed_llama.data.pile import expand, fetch, remote_names
from biomed_llama.data.scan import InputFile, ScanTask, scan_all
from biomed_llama.data.shards import PartTask, part_name, plan_parts, write_part
from biomed_llama.data.workers import map_ordered
from biomed_llama.errors import ConfigError, IntegrityError, UserError
from biomed_llama.fsutil import atomic_dir, atomic_write_json
from biomed_llama.provenance import require_verified, write_manifest
from biomed_llama.stage_metrics import write_metrics

# Lazy imports: rich (the summary table) is imported where it prints: workers and library callers never load it.

SPLITS = ("train", "val", "test")
PARTS_SUFFIX = ".parts"
SCAN_DIR = "files"  # per-input-file intermediates: files/<index>/<slug>.parquet
# The counts `dvc metrics show` lists; per-subset and per-split figures and the dropped records of other
# Pile subsets go to the details file beside the metrics (biomed_llama/stage_metrics.py).
HEADLINE = ("input_files", "lines", "docs", "chars", "bad_records", "bad_files", "rows_discarded_from_bad_files")


# --- planning --------------------------------------------------------------------------------


def plan_inputs(cfg: ExtractConfig) -> list[InputFile]:
    """Return every input file of every split in the fixed order train, val, test (each sorted)."""
    files: list[InputFile] = []
    seen: dict[str, str] = {}
    for split in SPLITS:
        patterns = getattr(cfg, split)
        if cfg.remote:
            paths = [(Path(cfg.cache) / n).as_posix() for n in remote_names(cfg.remote, patterns)]
        else:
            paths = expand(patterns, f"extract.{split}")
        for p in paths:
            if p in seen:
                raise UserError(f"extract: {p} is listed in both {seen[p]} and {split}")
            seen[p] = split
            files.append(InputFile(len(files), split, p))
    return files


def _check_sharding(workers: int, num_shards: int, shard_index: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    if num_shards < 1:
        raise ConfigError(f"--num-shards must be >= 1 (got {num_shards})")
    if not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index must be in 0..{num_shards - 1} (got {shard_index})")


def _data_params(cfg: ExtractConfig) -> dict[str, Any]:
    """The params that decide the output bytes (everything but the worker count)."""
    return cfg.model_dump(mode="json", exclude=set(cfg.SPEED_ONLY))


# --- assembling the output ---------------------------------------------------------------------


def assemble(
    cfg: ExtractConfig,
    files: list[InputFile],
    reports: dict[int, dict[str, Any]],
    scan_dir: Callable[[int], Path],
    out: Path,
    workers: int,
) -> dict[str, dict[str, int]]:
    """Cut the intermediates, concatenated in input order, into `out/<slug>/<split>/part-*.parquet`.

    Parts are planned from the reports' row counts and written in parallel; every subset/split
    gets at least one (maybe empty) part. Returns {slug: {split: number of parts}}.
    """
    tasks: list[PartTask] = []
    expected: list[int] = []
    nparts: dict[str, dict[str, int]] = {}
    for subset in cfg.subsets:
        slug = subset_slug(subset)
        for split in SPLITS:
            sources = [
                (str(scan_dir(f.index) / f"{slug}.parquet"), reports[f.index]["kept"][subset]["docs"])
                for f in files
                if f.split == split
            ]
            parts = plan_parts([s for s in sources if s[1]], cfg.rows_per_shard)
            for k, pieces in enumerate(parts):
                tasks.append(PartTask(str(out / slug / split / part_name(k)), tuple(pieces)))
                expected.append(sum(stop - start for _, start, stop in pieces))
            nparts.setdefault(slug, {})[split] = len(parts)
    written = map_ordered(write_part, tasks, workers, "extract: writing parts")
    if written != expected:  # the per-file intermediates changed between the scan and now
        raise IntegrityError(
            f"extract: the intermediate files hold {sum(written)} rows where the scan counted "
            f"{sum(expected)} (changed during the run?); rerun extract"
        )
    return nparts


def build_metrics(
    cfg: ExtractConfig, files: list[InputFile], reports: dict[int, dict[str, Any]], nparts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """Counts for metrics/extract.json: kept docs/chars/bytes per subset and split, dropped and bad records."""
    subsets: dict[str, Any] = {}
    for subset in cfg.subsets:
        slug = subset_slug(subset)
        subsets[slug] = {}
        for split in SPLITS:
            tot: Counter[str] = Counter()
            for f in files:
                if f.split == split:
                    tot.update(reports[f.index]["kept"][subset])
            subsets[slug][split] = {
                "docs": tot["docs"],
                "chars": tot["chars"],
                "bytes": tot["bytes"],
                "parts": nparts[slug][split],
            }
    dropped: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
    for f in files:
        dropped[f.split].update(reports[f.index]["dropped"])
    rs = [reports[f.index] for f in files]
    return {
        "subsets": subsets,
        "dropped": {s: dict(sorted(c.items())) for s, c in dropped.items()},
        "docs": sum(v["docs"] for d in subsets.values() for v in d.values()),
        "chars": sum(v["chars"] for d in subsets.values() for v in d.values()),
        "input_files": len(files),
        "lines": sum(r["lines"] for r in rs),
        "bad_records": sum(r["bad_records"] for r in rs),
        "bad_files": sum(r["corrupt"] is not None for r in rs),
        "rows_discarded_from_bad_files": sum(r["corrupt"]["rows_discarded"] for r in rs if r["corrupt"]),
    }


def _manifest_extra(
    cfg: ExtractConfig, files: list[InputFile], reports: dict[int, dict[str, Any]], metrics: dict[str, Any]
) -> dict[str, Any]:
    rs = [reports[f.index] for f in files]
    examples = [e for r in rs for e in r["bad_examples"]][: cfg.max_reported_bad]
    return {
        "counts": metrics,
        "bad_records": examples,
        "bad_records_listed": len(examples),
        "bad_files": [{"file": r["file"], **r["corrupt"]} for r in rs if r["corrupt"]],
        "files": [
            {
                "file": r["file"],
                "split": r["split"],
                "lines": r["lines"],
                "kept": sum(k["docs"] for k in r["kept"].values()),
                "bad_records": r["bad_records"],
            }
            for r in rs
        ],
    }


def _finish(
    cfg: ExtractConfig,
    files: list[InputFile],
    reports: dict[int, dict[str, Any]],
    scan_dir: Callable[[int], Path],
    workers: int,
    tmp: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Assemble into the temporary output folder `tmp` and write its manifest; return (metrics, manifest extra)."""
    nparts = assemble(cfg, files, reports, scan_dir, tmp, workers)
    shutil.rmtree(tmp / SCAN_DIR, ignore_errors=True)  # a single run's intermediates are not part of the output
    metrics = build_metrics(cfg, files, reports, nparts)
    # The worker count is left out: it does not change the output, so it must not change the manifest's bytes.
    # Nor is the seed recorded: extraction draws nothing at random (a new seed reruns no extraction).
    record = _data_params(cfg)
    extra = _manifest_extra(cfg, files, reports, metrics)
    write_manifest(tmp, stage="extract", params=record, inputs=[f.path for f in files], extra=extra)
    return metrics, extra


def print_summary(metrics: dict[str, Any], where: str, extra: dict[str, Any], show_bad: int = 5) -> None:
    """Print a short table of kept documents per subset and split, the dropped/bad counts and the first bad records."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"extract → {where}", header_style="bold")
    for col in ("subset", "split", "docs", "chars", "parts"):
        t.add_column(col, justify="left" if col in ("subset", "split") else "right")
    for slug, splits in metrics["subsets"].items():
        for split, v in splits.items():
            t.add_row(slug, split, f"{v['docs']:,}", f"{v['chars']:,}", str(v.get("parts", "-")))
    console = Console()
    console.print(t)
    dropped = sum(sum(c.values()) for c in metrics["dropped"].values())
    console.print(
        f"{metrics['input_files']} files, {metrics['lines']:,} lines: {dropped:,} records of other subsets "
        f"dropped, {metrics['bad_records']:,} bad records, {metrics['bad_files']} bad files "
        f"({metrics['rows_discarded_from_bad_files']:,} rows discarded)"
    )
    for b in extra["bad_files"]:
        console.print(
            f"[yellow]bad file[/] {b['file']}: {b['reason']} after line {b['line']}; "
            f"dropped with its {b['rows_discarded']} kept rows",
            highlight=False,
            soft_wrap=True,
        )
    for b in extra["bad_records"][:show_bad]:
        console.print(f"[yellow]bad record[/] {b['file']}:{b['line']}: {b['reason']}", highlight=False, soft_wrap=True)
    if metrics["bad_records"] > show_bad:
        console.print(f"… {metrics['bad_records'] - show_bad} more (listed in {where}/manifest.json)")


# --- entry points ------------------------------------------------------------------------------


def _tasks(cfg: ExtractConfig, files: list[InputFile], root: Path) -> list[ScanTask]:
    return [
        ScanTask(
            f, tuple(cfg.subsets), str(root / SCAN_DIR / f"{f.index:05d}"), cfg.on_bad_record, cfg.max_reported_bad
        )
        for f in files
    ]


def part_dir(cfg: ExtractConfig, num_shards: int, shard_index: int) -> Path:
    """Folder of one partial output: `<output>.parts/shard-<i>-of-<N>`."""
    return Path(cfg.output + PARTS_SUFFIX) / f"shard-{shard_index}-of-{num_shards}"


def run_extract(
    cfg: ExtractConfig, *, workers: int | None = None, num_shards: int = 1, shard_index: int = 0
) -> dict[str, Any]:
    """Run the stage (or, with num_shards > 1, one job's part of it); return the metrics (or the part's counts)."""
    workers = cfg.workers if workers is None else workers
    _check_sharding(workers, num_shards, shard_index)
    files = plan_inputs(cfg)
    mine = files[shard_index::num_shards]
    if cfg.remote:
        fetch(cfg.remote, [Path(f.path).relative_to(cfg.cache).as_posix() for f in mine], cfg.cache)
    if num_shards > 1:
        return _run_part(cfg, mine, workers, num_shards, shard_index)
    with atomic_dir(cfg.output) as tmp:
        reports = scan_all(_tasks(cfg, files, tmp), workers)
        metrics, extra = _finish(cfg, files, reports, lambda i: tmp / SCAN_DIR / f"{i:05d}", workers, tmp)
    write_metrics(cfg.metrics, metrics, HEADLINE)
    print_summary(metrics, cfg.output, extra)
    return metrics


def _run_part(
    cfg: ExtractConfig, mine: list[InputFile], workers: int, num_shards: int, shard_index: int
) -> dict[str, Any]:
    dest = part_dir(cfg, num_shards, shard_index)
    with atomic_dir(dest) as tmp:
        reports = scan_all(_tasks(cfg, mine, tmp), workers)
        atomic_write_json(
            tmp / "plan.json",
            {
                "num_shards": num_shards,
                "shard_index": shard_index,
                "params": _data_params(cfg),
                "files": [asdict(f) for f in mine],
            },
        )
        atomic_write_json(tmp / "reports.json", [reports[f.index] for f in mine])
        write_manifest(
            tmp,
            stage="extract-part",
            params=_data_params(cfg),
            inputs=[f.path for f in mine],
            extra={"num_shards": num_shards, "shard_index": shard_index},
        )
    docs = sum(k["docs"] for r in reports.values() for k in r["kept"].values())
    print(
        f"extract: part {shard_index + 1}/{num_shards} → {dest}: {len(mine)} files, {docs} docs kept; "
        f"run `biomed-llama extract-merge --num-shards {num_shards}` when all parts are done"
    )
    return {"part": str(dest), "input_files": len(mine), "docs": docs}


def merge_extract(cfg: ExtractConfig, *, num_shards: int, workers: int | None = None) -> dict[str, Any]:
    """Check that all `num_shards` parts exist, match the params and are intact, and assemble the final output.

    The result is byte-identical to a single `extract` run. The parts are left in place.
    """
    workers = cfg.workers if workers is None else workers
    _check_sharding(workers, num_shards, 0)
    files = plan_inputs(cfg)
    parts = [part_dir(cfg, num_shards, i) for i in range(num_shards)]
    missing = [p.name for p in parts if not (p / "manifest.json").is_file()]
    if missing:
        raise UserError(
            f"extract-merge: missing part(s) {', '.join(missing)} under {cfg.output}{PARTS_SUFFIX}; "
            f"run `biomed-llama extract --num-shards {num_shards} --shard-index I` for each"
        )
    reports: dict[int, dict[str, Any]] = {}
    where: dict[int, Path] = {}
    for i, part in enumerate(parts):
        require_verified(part)
        plan = json.loads((part / "plan.json").read_text())
        if plan["params"] != _data_params(cfg) or plan["files"] != [asdict(f) for f in files[i::num_shards]]:
            raise UserError(f"extract-merge: {part} was made with other params or input files; rerun that part")
        for r in json.loads((part / "reports.json").read_text()):
            reports[r["index"]] = r
            where[r["index"]] = part / SCAN_DIR / f"{r['index']:05d}"
    with atomic_dir(cfg.output) as tmp:
        metrics, extra = _finish(cfg, files, reports, where.__getitem__, workers, tmp)
    write_metrics(cfg.metrics, metrics, HEADLINE)
    print_summary(metrics, cfg.output, extra)
    return metrics
