"""JSON files read record by record, each problem tied to the record's position: the helpers every reader shares.

Positions are 1-based and say where a record sits: `line N` (JSON lines), `record N` (a JSON
list), `PMID X` (PubMedQA's object keyed by PMID). A problem with one record is a `RecordProblem`,
which `collect` hands to the `BadRecords` policy. A problem with the whole file (missing, empty,
not UTF-8, not JSON, not JSON lines, the wrong top-level type) is a UserError whatever the policy:
nothing sensible can be kept from such a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.records import LETTERS, BadRecords, Item
from biomed_llama.errors import UserError

Positioned = list[tuple[str, Item]]
"""A reader's result: `(position, item)` pairs in file order."""


class RecordProblem(Exception):
    """A record-level problem; `collect` reports it to the BadRecords policy with the record's position."""


@dataclass(frozen=True)
class Entry:
    """One raw record of a file: where it is, the id it gets if it has none of its own, its JSON value."""

    position: str
    key: str
    value: Any


def require_file(path: str | Path, what: str = "input file") -> Path:
    """Return `path` as a Path; a missing file is a UserError `<what> <path> not found`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    return path


def _read_text(path: Path) -> str:
    try:
        text = require_file(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (a compressed or binary file?)") from None
    if not text.strip():
        raise UserError(f"{path}: empty file, no records")
    return text


def read_jsonl(path: str | Path) -> list[Entry]:
    """Parse a JSON-lines file into entries (blank lines skipped; `key` = `<file stem>-<line>`).

    A line that is not JSON becomes a RecordProblem in its place, so problems are reported in file
    order. An empty file, or one in which no line is a JSON object (a JSON list, a pretty-printed
    object, text), is a UserError naming the path and the first line.
    """
    path = Path(path)
    entries = []
    # split on "\n" only: str.splitlines would also break at U+2028 and friends, legal inside JSON strings
    for n, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as e:
            value = RecordProblem(f"not valid JSON ({e.msg})")
        entries.append(Entry(f"line {n}", f"{path.stem}-{n}", value))
    if not any(isinstance(e.value, dict) for e in entries):
        first = entries[0]
        what = first.value if isinstance(first.value, RecordProblem) else f"a JSON {_json_type(first.value)}"
        raise UserError(f"{path}:{first.position}: not JSON lines (one object per line expected; found {what})")
    return entries


def _load(path: Path, kind: type) -> tuple[Any, list[tuple[str, Any]]]:
    """The whole JSON value of `path` (a `kind`) and, for an object, its top-level (key, value) pairs in file order,
    a repeated key included: `json.loads` keeps only the last value of a key, the pairs keep every one."""
    pairs: list[list[tuple[str, Any]]] = []

    def keep(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs[:] = [items]  # the top-level object is the last one parsed
        return dict(items)

    try:
        data = json.loads(_read_text(path), object_pairs_hook=keep)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, kind):
        raise UserError(f"{path}: expected a JSON {_json_type(kind())} at top level, got {_json_type(data)}")
    return data, (pairs[0] if isinstance(data, dict) and pairs else [])


def load_json(path: str | Path, kind: type) -> Any:
    """Load a whole JSON file that must be a `kind` (list or dict); anything else is a UserError."""
    return _load(Path(path), kind)[0]


def object_pairs(path: str | Path) -> list[tuple[str, Any]]:
    """The top-level (key, value) pairs of a JSON-object file in file order, a repeated key kept each time
    (PubMedQA's files are one object keyed by PMID: a PMID given twice must not silently overwrite the first)."""
    return _load(Path(path), dict)[1]


def list_entries(path: str | Path) -> list[Entry]:
    """The records of a JSON-list file as entries (`record N`, key `<file stem>-<N>`)."""
    path = Path(path)
    return [Entry(f"record {i}", f"{path.stem}-{i}", r) for i, r in enumerate(load_json(path, list), 1)]


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def collect(
    path: str | Path, bad: BadRecords, entries: list[Entry], parse: Callable[[Any, str], Item], *, unique: bool = False
) -> Positioned:
    """Parse every entry with `parse(value, key)`; a RecordProblem goes to `bad` with file and position.

    `unique` (the benchmark items): an item whose id repeats an earlier one's, or whose record is the same
    record again, goes to `bad.duplicate` (exit 4, or dropped when it is exact and `readers.duplicates: drop`).
    """
    out: Positioned = []
    by_id: dict[str, tuple[str, str]] = {}  # id → (position, canonical record)
    by_record: dict[str, str] = {}  # canonical record → position
    for e in entries:
        try:
            if isinstance(e.value, RecordProblem):
                raise e.value
            _require_unicode(e.value)
            item = parse(e.value, e.key)
        except RecordProblem as problem:
            bad.report(str(path), e.position, str(problem))
            continue
        if unique:
            record = json.dumps(e.value, sort_keys=True, ensure_ascii=False)
            item_id = str(getattr(item, "id", None) or e.key)
            if item_id in by_id:
                first, seen = by_id[item_id]
                bad.duplicate(str(path), e.position, item_id, first, identical=seen == record)
                continue
            if record in by_record:  # the same record under an id of its own (MedQA: ids are line numbers)
                bad.duplicate(str(path), e.position, item_id, by_record[record], identical=True)
                continue
            by_id[item_id], by_record[record] = (e.position, record), e.position
        out.append((e.position, item))
    return out


def _require_unicode(value: Any) -> None:
    """JSON may escape half a surrogate pair (`\\ud800`): it parses, but is no text and cannot be written
    as UTF-8 again, so a record holding one (in any string) is a RecordProblem."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RecordProblem(f"not valid Unicode (lone surrogate U+{ord(value[e.start]):04X})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _require_unicode(k)
            _require_unicode(v)
    elif isinstance(value, list):
        for v in value:
            _require_unicode(v)


def as_object(value: Any) -> dict[str, Any]:
    """The record itself, which must be a JSON object."""
    if not isinstance(value, dict):
        raise RecordProblem(f"record is {_json_type(value)}, not an object")
    return value


def text_field(rec: dict[str, Any], key: str, *, empty_ok: bool = False) -> str:
    """A string field of `rec`, present and (unless `empty_ok`) not blank."""
    if key not in rec or rec[key] is None:
        raise RecordProblem(f"missing field {key!r}")
    value = rec[key]
    if not isinstance(value, str):
        raise RecordProblem(f"field {key!r} is {type(value).__name__}, not a string")
    if not empty_ok and not value.strip():
        raise RecordProblem(f"field {key!r} is empty")
    return value


def optional_text(rec: dict[str, Any], key: str) -> str | None:
    """An optional free-text field (an explanation): the string, or None when absent, not a string or blank."""
    value = rec.get(key)
    return value if isinstance(value, str) and value.strip() else None


def lettered_options(options: Any) -> tuple[str, ...]:
    """Validate an `{"A": text, "B": …}` options object; return the texts in letter order."""
    if options is None:
        raise RecordProblem("missing field 'options'")
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise RecordProblem("field 'options' is not an object of strings")
    keys = sorted(options)
    if len(keys) < 2 or keys != list(LETTERS[: len(keys)]):
        raise RecordProblem(f"options keys {keys} are not A, B, C, …")
    return tuple(options[k] for k in keys)
