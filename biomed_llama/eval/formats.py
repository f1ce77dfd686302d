"""The lm-eval documents prepare-eval writes: benchmark items and Pile test texts in the task files' shape.

Every multiple-choice document is
`{"idx", "n_docs", "id", "context", "question", "options": [str], "label": int}`
(`idx` = position in the published file, `n_docs` = items in that file: the fork's example sampler
needs both), every perplexity document `{"idx", "n_docs", "text"}`. Parsing the published files
is `biomed_llama.benchmarks.readers`' job; this module only reshapes its items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.benchmarks.jsonio import Positioned, require_file
from biomed_llama.benchmarks.readers import BenchmarkFormat, read_benchmark
from biomed_llama.benchmarks.records import LETTERS, YES_NO_MAYBE, BadRecords, MCItem, YesNoItem
from biomed_llama.errors import UserError

# Lazy imports: pyarrow is imported only where the Pile's Parquet test split is read.

PUBMEDQA_CHOICES = ["Yes", "No", "Maybe"]
SUBSET_SLUGS = {"pubmed_a": "pubmed_abstracts", "pubmed_c": "pubmed_central"}


def _finish(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, r in enumerate(records):
        r["idx"], r["n_docs"] = i, len(records)
    return records


def mc_doc(item: MCItem | YesNoItem) -> dict[str, Any]:
    """One multiple-choice document (without `idx`/`n_docs`): PubMedQA scores Yes / No / Maybe, MC its options."""
    if isinstance(item, YesNoItem):
        return {
            "id": item.id,
            "context": item.context,
            "question": item.question,
            "options": list(PUBMEDQA_CHOICES),
            "label": YES_NO_MAYBE.index(item.answer),
        }
    return {
        "id": item.id,
        "context": "",
        "question": item.question,
        "options": list(item.options),
        "label": LETTERS.index(item.answer),
    }


def mc_docs(items: Positioned) -> list[dict[str, Any]]:
    """A benchmark file's items (as a reader returns them, in file order) as numbered documents."""
    docs = []
    for _, item in items:
        assert isinstance(item, (MCItem, YesNoItem)), f"a benchmark reader returned {type(item).__name__}"
        docs.append(mc_doc(item))
    return _finish(docs)


# Each MC task's test file and format (MedQA: its option count).
MC_FILES: dict[str, tuple[str, BenchmarkFormat, int | None]] = {
    "medqa4": ("medqa4_test", "medqa", 4),
    "medqa5": ("medqa5_test", "medqa", 5),
    "medmcqa": ("medmcqa_dev", "medmcqa", None),
    "pubmedqa": ("pubmedqa_labeled", "pubmedqa", None),
}


def read_docs(task: str, path: str, readers: ReadersConfig, dropped: list[str] | None = None) -> list[dict[str, Any]]:
    """Read one benchmark file of MC task `task` into lm-eval documents, every item kept.

    An evaluation set never loses an item: a skipped record would change the denominator of every
    score. So a bad record always aborts prepare-eval (BadRecordError naming file and line, exit
    code 4), whatever `instruct_mix.on_bad_record` says for training data. The one exception is an
    exact duplicate under `readers.duplicates: drop` (the same item twice is one item): each one dropped
    is appended to `dropped` (`file:position: reason`), which prepare-eval records in its manifest.
    """
    _, fmt, n_options = MC_FILES[task]
    bad = BadRecords(
        "abort", advice="an evaluation set keeps every item: fix or replace the file", duplicates=readers.duplicates
    )
    items = read_benchmark(
        fmt, require_file(path, "benchmark file"), bad, medmcqa_cop=readers.medmcqa_cop, n_options=n_options
    )
    if dropped is not None:
        dropped += [str(d) for d in bad.dropped]
    return mc_docs(items)


def read_pile_test(extracted: str | Path, task: str, max_docs: int | None = None) -> list[dict[str, Any]]:
    """Read the extract stage's Parquet shards of one subset's test split (`pubmed_a`/`pubmed_c`), in shard order."""
    import pyarrow.parquet as pq

    folder = Path(extracted) / SUBSET_SLUGS[task] / "test"
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        raise UserError(f"no Parquet shards in {folder}: run `biomed-llama extract` first")
    out: list[dict[str, Any]] = []
    for shard in shards:
        for text in pq.read_table(shard, columns=["text"]).column("text").to_pylist():
            if max_docs is not None and len(out) >= max_docs:
                return _finish(out)
            out.append({"text": text})
    return _finish(out)
