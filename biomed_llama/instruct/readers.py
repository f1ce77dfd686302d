"""Readers of the instruction sources: the benchmarks (`biomed_llama.benchmarks.readers`) plus the
instruction-only formats, Alpaca lists and the package's `examples` lists.

Each returns `(position, item)` pairs in file order and reports bad records to a `BadRecords`
policy with file and position, as the benchmark readers do (`benchmarks.jsonio`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.jsonio import (
    Positioned,
    RecordProblem,
    as_object,
    collect,
    lettered_options,
    list_entries,
    optional_text,
    require_file,
    text_field,
)
from biomed_llama.benchmarks.readers import CopConvention, read_benchmark
from biomed_llama.benchmarks.records import YES_NO_MAYBE, BadRecords, InstructionItem, Item, MCItem, OpenItem, YesNoItem


def _alpaca(value: Any, _key: str) -> InstructionItem:
    rec = as_object(value)
    return InstructionItem(
        instruction=text_field(rec, "instruction"),
        input=text_field(rec, "input", empty_ok=True),
        output=text_field(rec, "output"),
    )


def read_alpaca(path: str | Path, bad: BadRecords) -> Positioned:
    """Read an Alpaca-style JSON list of `{instruction, input, output}` (AlpacaDataCleaned, visual-med-alpaca)."""
    return collect(path, bad, list_entries(path), _alpaca)


def _example(value: Any, cot: bool) -> Item:
    rec = as_object(value)
    question, answer = text_field(rec, "question"), text_field(rec, "answer").strip()
    explanation = text_field(rec, "explanation") if cot else optional_text(rec, "explanation")
    if rec.get("options") is not None:
        texts = lettered_options(rec["options"])
        if answer not in rec["options"]:
            raise RecordProblem(f"answer {answer!r} is not one of the options {sorted(rec['options'])}")
        return MCItem(question=question, options=texts, answer=answer, explanation=explanation)
    if rec.get("context") is not None:
        context = text_field(rec, "context")
        if answer.lower() not in YES_NO_MAYBE:
            raise RecordProblem(f"answer {answer!r} is not one of yes / no / maybe")
        return YesNoItem(
            question=question,
            contexts=(context,),
            answer=answer.lower(),  # type: ignore[arg-type]
            explanation=explanation,
        )
    return OpenItem(question=question, answer=answer, explanation=explanation)


def read_examples(path: str | Path, bad: BadRecords, cot: bool = False) -> Positioned:
    """Read the package's small JSON list for medpalm / CoT exemplar sets.

    The original's hand-collected exemplar files are not published, so the package defines this
    format: each record has `question` and `answer`, plus `options` ({"A": …}; `answer` is then a
    letter), or `context` (a PubMedQA-style abstract; `answer` yes / no / maybe), or neither (a free
    answer). `explanation` is the chain of thought, required when the source is `cot`.
    """
    return collect(path, bad, list_entries(path), lambda v, _key: _example(v, cot))


def read_source(
    fmt: str, path: str | Path, bad: BadRecords, *, cot: bool = False, medmcqa_cop: CopConvention = "auto"
) -> Positioned:
    """Read one instruction source file of format `fmt`; a missing file is a UserError."""
    require_file(path, "instruction source")
    if fmt == "alpaca":
        return read_alpaca(path, bad)
    if fmt == "examples":
        return read_examples(path, bad, cot)
    return read_benchmark(fmt, path, bad, medmcqa_cop=medmcqa_cop)  # type: ignore[arg-type]
