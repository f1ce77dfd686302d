"""Readers of the benchmark files in their published formats, into one record shape the tasks read.

Every multiple-choice record becomes
`{"idx", "n_docs", "id", "context", "question", "options": [str], "label": int}`
(`idx` = position in the published file, `n_docs` = items in that file: the v0.3 example sampler
needs both), every perplexity record `{"idx", "n_docs", "text"}`. A malformed record is a
BadRecordError naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from biomed_llama.errors import BadRecordError, UserError

PUBMEDQA_CHOICES = ["Yes", "No", "Maybe"]
SUBSET_SLUGS = {"pubmed_a": "pubmed_abstracts", "pubmed_c": "pubmed_central"}


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UserError(f"benchmark file {path} not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise BadRecordError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise BadRecordError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, rec


def _finish(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, r in enumerate(records):
        r["idx"], r["n_docs"] = i, len(records)
    return records


def read_medqa(path: str | Path, n_options: int) -> list[dict[str, Any]]:
    """Read a MedQA (US) JSON-lines file: `question`, `options` {A: …}, `answer_idx` (letter)."""
    path = Path(path)
    letters = [chr(ord("A") + i) for i in range(n_options)]
    out = []
    for lineno, rec in _jsonl(path):
        try:
            opts = rec["options"]
            options = [str(opts[k]) for k in letters]
            label = letters.index(rec["answer_idx"])
            question = str(rec["question"])
        except (KeyError, ValueError, TypeError) as e:
            raise BadRecordError(f"{path}:{lineno}: not a {n_options}-option MedQA record ({e!r})") from None
        if len(opts) != n_options:
            raise BadRecordError(f"{path}:{lineno}: {len(opts)} options, expected {n_options}")
        out.append({"id": f"{path.stem}-{lineno}", "context": "", "question": question,
                    "options": options, "label": label})
    return _finish(out)


def read_medmcqa(path: str | Path, cop_base: int = 1) -> list[dict[str, Any]]:
    """Read a MedMCQA JSON-lines file (`opa`..`opd`, `cop` counted from `cop_base`)."""
    path = Path(path)
    out = []
    for lineno, rec in _jsonl(path):
        try:
            options = [str(rec[k]) for k in ("opa", "opb", "opc", "opd")]
            label = int(rec["cop"]) - cop_base
            question = str(rec["question"])
        except (KeyError, ValueError, TypeError) as e:
            raise BadRecordError(f"{path}:{lineno}: not a MedMCQA record ({e!r})") from None
        if not 0 <= label < 4:
            raise BadRecordError(f"{path}:{lineno}: cop {rec['cop']} out of range for cop_base {cop_base}")
        out.append({"id": str(rec.get("id", f"{path.stem}-{lineno}")), "context": "",
                    "question": question, "options": options, "label": label})
    return _finish(out)


def read_pubmedqa(path: str | Path) -> list[dict[str, Any]]:
    """Read PubMedQA `ori_pqal.json` (object keyed by PMID) in file order; label from `final_decision`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"benchmark file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise BadRecordError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRecordError(f"{path}: expected an object keyed by PMID")
    out = []
    for pmid, rec in data.items():
        try:
            decision = str(rec["final_decision"]).strip().lower()
            label = [c.lower() for c in PUBMEDQA_CHOICES].index(decision)
            contexts = [str(c) for c in rec["CONTEXTS"]]
            question = str(rec["QUESTION"])
        except (KeyError, ValueError, TypeError) as e:
            raise BadRecordError(f"{path}: PMID {pmid}: not a PubMedQA record ({e!r})") from None
        out.append({"id": str(pmid), "context": "\n".join(contexts), "question": question,
                    "options": list(PUBMEDQA_CHOICES), "label": label})
    return _finish(out)


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
