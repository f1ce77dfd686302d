"""Readers of MedQA, MedMCQA and PubMedQA in their published formats: one set, used by instruct-mix,
`finetune` task mode and prepare-eval.

Every reader takes a path and a `BadRecords` policy and returns `(position, item)` pairs in file
order (`jsonio` says how positions and whole-file problems are reported). A record is bad when it
is not a JSON object, lacks a field, has a field of the wrong type or an empty question, or when
its answer is not one of its options; each caller chooses what happens to it (instruct-mix and
task mode: `instruct_mix.on_bad_record`; prepare-eval: always abort, see `eval.prepare`).

Formats (REPRODUCTION.md "Benchmark file formats"):
- MedQA (US): JSON lines `{question, answer, options: {A: …}, answer_idx, meta_info}`; `answer`
  must be the text of option `answer_idx`.
- MedMCQA: JSON lines `{id, question, opa..opd, cop, exp, …}`; `cop` counts from 1 in the original
  release and from 0 in the Hugging Face copy: `readers.medmcqa_cop` (`detect_cop_base`).
- PubMedQA: `ori_pqal.json` / `ori_pqaa.json`, one object keyed by PMID, `{QUESTION, CONTEXTS,
  final_decision, LONG_ANSWER, …}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from biomed_llama.benchmarks.jsonio import (
    Entry,
    Positioned,
    RecordProblem,
    as_object,
    collect,
    lettered_options,
    object_pairs,
    optional_text,
    read_jsonl,
    text_field,
)
from biomed_llama.benchmarks.records import LETTERS, YES_NO_MAYBE, BadRecords, MCItem, YesNoItem
from biomed_llama.errors import UserError

BenchmarkFormat = Literal["medqa", "medmcqa", "pubmedqa"]
CopConvention = Literal["auto", "0-3", "1-4"]


def _medqa(value: Any, key: str, n_options: int | None) -> MCItem:
    rec = as_object(value)
    question, answer = text_field(rec, "question"), text_field(rec, "answer")
    idx = text_field(rec, "answer_idx").strip()
    texts = lettered_options(rec.get("options"))
    options: dict[str, str] = rec["options"]  # validated by lettered_options
    if n_options is not None and len(texts) != n_options:
        raise RecordProblem(f"{len(texts)} options, expected {n_options}")
    if idx not in options:
        raise RecordProblem(f"answer_idx {idx!r} is not one of the options {sorted(options)}")
    if options[idx].strip() != answer.strip():
        raise RecordProblem(f"answer {answer!r} is not option {idx} ({options[idx]!r})")
    return MCItem(question=question, options=texts, answer=idx, id=key)


def read_medqa(path: str | Path, bad: BadRecords, n_options: int | None = None) -> Positioned:
    """Read MedQA-USMLE JSON lines; `n_options` (4 or 5) makes a record with another count bad."""
    return collect(path, bad, read_jsonl(path), lambda v, k: _medqa(v, k, n_options), unique=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def detect_cop_base(path: str | Path, cops: list[Any], setting: CopConvention) -> int:
    """Return 0 or 1, the base of MedMCQA `cop` in this file (`readers.medmcqa_cop`).

    `0-3` / `1-4` are taken as given. `auto`: a 0 anywhere means the HF copy (0–3), a 4 anywhere the
    original release (1–4); a file with both is refused (two conventions mixed, every answer would be
    ambiguous); a file with only 1–3 cannot be told apart and must be set explicitly.
    """
    if setting != "auto":
        return 0 if setting == "0-3" else 1
    ints = {c for c in cops if _is_int(c)}
    if not ints:
        raise UserError(f"{path}: no record has an integer `cop` (the MedMCQA answer field); is this a MedMCQA file?")
    if 0 in ints and 4 in ints:
        raise UserError(f"{path}: MedMCQA file mixes cop conventions (both 0 and 4 occur); refusing it")
    if 0 in ints:
        return 0
    if 4 in ints:
        return 1
    raise UserError(
        f"{path}: cannot tell the MedMCQA cop convention (only 1–3 occur); set readers.medmcqa_cop to 0-3 or 1-4"
    )


def _medmcqa_id(rec: dict[str, Any], key: str) -> str:
    own = rec.get("id")
    return str(own) if own is not None and str(own).strip() else key


def _medmcqa(value: Any, key: str, base: int) -> MCItem:
    rec = as_object(value)
    question = text_field(rec, "question")
    # Option texts may be empty (the question is still scored over four options); a missing one is bad.
    options = tuple(text_field(rec, k, empty_ok=True) for k in ("opa", "opb", "opc", "opd"))
    if "cop" not in rec or rec["cop"] is None:
        raise RecordProblem("missing field 'cop'")
    cop = rec["cop"]
    if not _is_int(cop) or not base <= cop <= base + 3:
        raise RecordProblem(f"cop {cop!r} is not one of the options ({base}–{base + 3})")
    return MCItem(
        question=question,
        options=options,
        answer=LETTERS[cop - base],
        explanation=optional_text(rec, "exp"),
        id=_medmcqa_id(rec, key),
    )


def read_medmcqa(path: str | Path, bad: BadRecords, medmcqa_cop: CopConvention = "auto") -> Positioned:
    """Read MedMCQA JSON lines, with the `cop` convention `medmcqa_cop` (`detect_cop_base`)."""
    entries = read_jsonl(path)
    base = detect_cop_base(path, [e.value.get("cop") for e in entries if isinstance(e.value, dict)], medmcqa_cop)
    return collect(path, bad, entries, lambda v, k: _medmcqa(v, k, base), unique=True)


def _medmcqa_unlabeled(value: Any, key: str) -> MCItem:
    rec = as_object(value)
    question = text_field(rec, "question")
    options = tuple(text_field(rec, k, empty_ok=True) for k in ("opa", "opb", "opc", "opd"))
    # The released evaluation's rule on a split without answers: HF gives every test record cop = -1, and
    # `answer = options[original_sample['cop']]` (evaluation/mcqa_dataset.py:56) is then the last option,
    # lettered by its first occurrence (`options.index(answer)`, mcqa_dataset.py:22).
    return MCItem(
        question=question,
        options=options,
        answer=LETTERS[options.index(options[-1])],
        explanation=optional_text(rec, "exp"),
        id=_medmcqa_id(rec, key),
    )


def read_medmcqa_unlabeled(path: str | Path, bad: BadRecords) -> Positioned:
    """Read the MedMCQA test set (answers withheld; any `cop` ignored) with the released evaluation's targets:
    every item's answer is its option D, as `evaluation/mcqa_dataset.py` made it from HF's cop = -1."""
    return collect(path, bad, read_jsonl(path), _medmcqa_unlabeled, unique=True)


def _pubmedqa(value: Any, key: str) -> YesNoItem:
    rec = as_object(value)
    question = text_field(rec, "QUESTION")
    contexts = rec.get("CONTEXTS")
    if contexts is None:
        raise RecordProblem("missing field 'CONTEXTS'")
    if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
        raise RecordProblem("field 'CONTEXTS' is not a non-empty list of strings")
    decision = text_field(rec, "final_decision").strip().lower()
    if decision not in YES_NO_MAYBE:
        raise RecordProblem(f"final_decision {rec['final_decision']!r} is not one of yes / no / maybe")
    return YesNoItem(
        question=question,
        contexts=tuple(contexts),
        answer=decision,  # type: ignore[arg-type]
        explanation=optional_text(rec, "LONG_ANSWER"),
        id=key,
    )


def read_pubmedqa(path: str | Path, bad: BadRecords) -> Positioned:
    """Read PubMedQA `ori_pqal.json` / `ori_pqaa.json`: one object keyed by PMID, in file order (a PMID key
    given twice is a duplicate item, found while parsing: a JSON object would keep only its last value)."""
    entries = [Entry(f"PMID {k}", str(k), v) for k, v in object_pairs(path)]
    return collect(path, bad, entries, _pubmedqa, unique=True)


def read_benchmark(
    fmt: BenchmarkFormat,
    path: str | Path,
    bad: BadRecords,
    *,
    medmcqa_cop: CopConvention = "auto",
    n_options: int | None = None,
) -> Positioned:
    """Read one benchmark file of format `fmt` (`n_options` applies to MedQA, `medmcqa_cop` to MedMCQA)."""
    if fmt == "medqa":
        return read_medqa(path, bad, n_options)
    if fmt == "medmcqa":
        return read_medmcqa(path, bad, medmcqa_cop)
    if fmt == "pubmedqa":
        return read_pubmedqa(path, bad)
    raise ValueError(f"unknown benchmark format {fmt!r}")
