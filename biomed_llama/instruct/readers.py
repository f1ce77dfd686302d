"""Readers of the instruction sources in their published formats, yielding parsed items.

Every reader takes a path and a `BadRecords` policy and returns `(position, item)` pairs in file
order. A record that is not valid JSON, lacks a field, has a field of the wrong type, or whose
answer is not one of its options is reported with file and position (`line N` for JSON lines,
`record N` for JSON lists, `PMID X` for PubMedQA; all 1-based) and handled by the policy.
A file that is unreadable as a whole (not JSON, wrong top-level type, mixed MedMCQA `cop`
conventions) is a UserError whatever the policy: nothing sensible can be kept from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

from biomed_llama.errors import UserError
from biomed_llama.instruct.records import (
    LETTERS, YES_NO_MAYBE, BadRecords, InstructionItem, Item, MCItem, OpenItem, YesNoItem,
)

Positioned = list[tuple[str, Item]]


class _Bad(Exception):
    """A record-level problem; the reader turns it into a BadRecords report."""


def _str(rec: dict[str, Any], key: str, *, empty_ok: bool = False) -> str:
    if key not in rec or rec[key] is None:
        raise _Bad(f"missing field {key!r}")
    value = rec[key]
    if not isinstance(value, str):
        raise _Bad(f"field {key!r} is {type(value).__name__}, not a string")
    if not empty_ok and not value.strip():
        raise _Bad(f"field {key!r} is empty")
    return value


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"record is {type(value).__name__}, not an object")
    return value


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    """Parse a JSON-lines file into (position, value) pairs, blank lines ignored.

    A line that is not JSON yields a `_Bad` in its place, so problems are reported in file order.
    """
    out: list[tuple[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                out.append((f"line {n}", _Bad(f"not valid JSON ({e.msg})")))
    return out


def _load_json(path: Path, kind: type) -> Any:
    """Load a whole JSON file that must be a `kind` (list or dict); anything else is a UserError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, kind):
        raise UserError(f"{path}: expected a JSON {kind.__name__} at top level, got {type(data).__name__}")
    return data


def _collect(path: Path, bad: BadRecords, records: list[tuple[str, Any]],
             parse: Callable[[Any], Item]) -> Positioned:
    out: Positioned = []
    for pos, rec in records:
        try:
            if isinstance(rec, _Bad):
                raise rec
            out.append((pos, parse(rec)))
        except _Bad as e:
            bad.report(str(path), pos, str(e))
    return out


def _lettered_options(options: Any) -> tuple[str, ...]:
    """Validate an `{"A": text, "B": …}` options object; return the texts in letter order."""
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise _Bad("field 'options' is not an object of strings")
    keys = sorted(options)
    if len(keys) < 2 or keys != list(LETTERS[: len(keys)]):
        raise _Bad(f"options keys {keys} are not A, B, C, …")
    return tuple(options[k] for k in keys)


def _medqa(rec: dict[str, Any]) -> MCItem:
    question, answer, idx = _str(rec, "question"), _str(rec, "answer"), _str(rec, "answer_idx").strip()
    options = rec.get("options")
    if options is None:
        raise _Bad("missing field 'options'")
    texts = _lettered_options(options)
    keys = sorted(options)
    if idx not in options:
        raise _Bad(f"answer_idx {idx!r} is not one of the options {keys}")
    if options[idx].strip() != answer.strip():
        raise _Bad(f"answer {answer!r} is not option {idx} ({options[idx]!r})")
    return MCItem(question=question, options=texts, answer=idx)


def read_medqa(path: str | Path, bad: BadRecords, **_: Any) -> Positioned:
    """Read MedQA-USMLE JSON lines (`question`, `answer`, `options` {A..D|E}, `answer_idx`, `meta_info`)."""
    path = Path(path)
    return _collect(path, bad, _read_jsonl(path), lambda r: _medqa(_obj(r)))


CopConvention = Literal["auto", "0-3", "1-4"]


def detect_cop_base(path: Path, cops: list[Any], setting: CopConvention) -> int:
    """Return 0 or 1, the base of MedMCQA `cop` in this file.

    `auto`: a 0 anywhere means the HF copy (0–3), a 4 anywhere the original release (1–4); a file
    with both is refused (two conventions mixed, every answer would be ambiguous); a file with
    only 1–3 cannot be told apart and must be set explicitly.
    """
    ints = {c for c in cops if isinstance(c, int) and not isinstance(c, bool)}
    if setting != "auto":
        return 0 if setting == "0-3" else 1
    if 0 in ints and 4 in ints:
        raise UserError(f"{path}: MedMCQA file mixes cop conventions (both 0 and 4 occur); refusing it")
    if 0 in ints:
        return 0
    if 4 in ints:
        return 1
    raise UserError(f"{path}: cannot tell the MedMCQA cop convention (only 1–3 occur); "
                    "set instruct_mix.medmcqa_cop to 0-3 or 1-4")


def _medmcqa(rec: dict[str, Any], base: int) -> MCItem:
    question = _str(rec, "question")
    options = tuple(_str(rec, k) for k in ("opa", "opb", "opc", "opd"))
    if "cop" not in rec or rec["cop"] is None:
        raise _Bad("missing field 'cop'")
    cop = rec["cop"]
    if not isinstance(cop, int) or isinstance(cop, bool) or not base <= cop <= base + 3:
        raise _Bad(f"cop {cop!r} is not one of the options ({base}–{base + 3})")
    exp = rec.get("exp")
    return MCItem(question=question, options=options, answer=LETTERS[cop - base],
                  explanation=exp if isinstance(exp, str) and exp.strip() else None)


def read_medmcqa(path: str | Path, bad: BadRecords, medmcqa_cop: CopConvention = "auto", **_: Any) -> Positioned:
    """Read MedMCQA JSON lines (`question`, `opa`..`opd`, `cop`, `exp`, …), detecting the `cop` convention."""
    path = Path(path)
    records = _read_jsonl(path)
    base = detect_cop_base(path, [r.get("cop") for _, r in records if isinstance(r, dict)], medmcqa_cop)
    return _collect(path, bad, records, lambda r: _medmcqa(_obj(r), base))


def _pubmedqa(rec: Any) -> YesNoItem:
    rec = _obj(rec)
    question = _str(rec, "QUESTION")
    contexts = rec.get("CONTEXTS")
    if contexts is None:
        raise _Bad("missing field 'CONTEXTS'")
    if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
        raise _Bad("field 'CONTEXTS' is not a non-empty list of strings")
    decision = _str(rec, "final_decision").strip().lower()
    if decision not in YES_NO_MAYBE:
        raise _Bad(f"final_decision {rec['final_decision']!r} is not one of yes / no / maybe")
    long_answer = rec.get("LONG_ANSWER")
    return YesNoItem(question=question, contexts=tuple(contexts), answer=decision,  # type: ignore[arg-type]
                     explanation=long_answer if isinstance(long_answer, str) and long_answer.strip() else None)


def read_pubmedqa(path: str | Path, bad: BadRecords, **_: Any) -> Positioned:
    """Read PubMedQA `ori_pqal.json` / `ori_pqaa.json`: one object keyed by PMID, in file order."""
    path = Path(path)
    data = _load_json(path, dict)
    return _collect(path, bad, [(f"PMID {k}", v) for k, v in data.items()], _pubmedqa)


def _alpaca(rec: Any) -> InstructionItem:
    rec = _obj(rec)
    return InstructionItem(instruction=_str(rec, "instruction"), input=_str(rec, "input", empty_ok=True),
                           output=_str(rec, "output"))


def read_alpaca(path: str | Path, bad: BadRecords, **_: Any) -> Positioned:
    """Read an Alpaca-style JSON list of `{instruction, input, output}` (AlpacaDataCleaned, visual-med-alpaca)."""
    path = Path(path)
    data = _load_json(path, list)
    return _collect(path, bad, [(f"record {i}", r) for i, r in enumerate(data, 1)], _alpaca)


def _example(rec: Any, cot: bool) -> Item:
    rec = _obj(rec)
    question, answer = _str(rec, "question"), _str(rec, "answer").strip()
    raw_exp = rec.get("explanation")
    explanation = _str(rec, "explanation") if cot else (raw_exp if isinstance(raw_exp, str) and raw_exp.strip() else None)
    if "options" in rec and rec["options"] is not None:
        texts = _lettered_options(rec["options"])
        if answer not in rec["options"]:
            raise _Bad(f"answer {answer!r} is not one of the options {sorted(rec['options'])}")
        return MCItem(question=question, options=texts, answer=answer, explanation=explanation)
    if "context" in rec and rec["context"] is not None:
        context = _str(rec, "context")
        if answer.lower() not in YES_NO_MAYBE:
            raise _Bad(f"answer {answer!r} is not one of yes / no / maybe")
        return YesNoItem(question=question, contexts=(context,), answer=answer.lower(),  # type: ignore[arg-type]
                         explanation=explanation)
    return OpenItem(question=question, answer=answer, explanation=explanation)


def read_examples(path: str | Path, bad: BadRecords, cot: bool = False, **_: Any) -> Positioned:
    """Read the package's small JSON list for medpalm / CoT exemplar sets.

    The original's hand-collected exemplar files are not published, so the package defines this
    format: each record has `question` and `answer`, plus `options` ({"A": …}; `answer` is then a
    letter), or `context` (a PubMedQA-style abstract; `answer` yes / no / maybe), or neither (a free
    answer). `explanation` is the chain of thought, required when the source is `cot`.
    """
    path = Path(path)
    data = _load_json(path, list)
    return _collect(path, bad, [(f"record {i}", r) for i, r in enumerate(data, 1)], lambda r: _example(r, cot))


READERS: dict[str, Callable[..., Positioned]] = {
    "medqa": read_medqa,
    "medmcqa": read_medmcqa,
    "pubmedqa": read_pubmedqa,
    "alpaca": read_alpaca,
    "examples": read_examples,
}


def read_source(fmt: str, path: str | Path, bad: BadRecords, *, cot: bool = False,
                medmcqa_cop: CopConvention = "auto") -> Positioned:
    """Read one file of format `fmt`; a missing file is a UserError."""
    if not Path(path).is_file():
        raise UserError(f"instruction source {path} not found")
    return READERS[fmt](path, bad, cot=cot, medmcqa_cop=medmcqa_cop)
