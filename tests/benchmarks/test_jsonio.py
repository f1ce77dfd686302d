"""Whole-file problems are one UserError naming the file; record problems keep their position."""

from __future__ import annotations

import gzip
import json

import pytest

from biomed_llama.benchmarks.jsonio import RecordProblem, list_entries, load_json, read_jsonl, require_file
from biomed_llama.errors import UserError


def test_missing_file_names_what_was_looked_for(tmp_path):
    with pytest.raises(UserError, match=f"^benchmark file {tmp_path}/nope.jsonl not found$"):
        require_file(tmp_path / "nope.jsonl", "benchmark file")
    with pytest.raises(UserError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_jsonl_lines_keep_their_numbers_and_problems_stay_in_place(tmp_path):
    path = tmp_path / "f.jsonl"
    # U+2028 is legal inside a JSON string: it must not split the line.
    path.write_text('{"q": "a\u2028b"}\n\n{oops\n[1]\n', encoding="utf-8")
    entries = read_jsonl(path)
    assert [(e.position, e.key) for e in entries] == [("line 1", "f-1"), ("line 3", "f-3"), ("line 4", "f-4")]
    assert entries[0].value == {"q": "a\u2028b"}
    assert isinstance(entries[1].value, RecordProblem) and "not valid JSON" in str(entries[1].value)
    assert entries[2].value == [1]


@pytest.mark.parametrize("writer,message", [
    (lambda p: p.write_bytes(gzip.compress(b'{"a": 1}\n')), "f.jsonl: not UTF-8 text"),
    (lambda p: p.write_text(json.dumps({"a": 1}, indent=1)), "f.jsonl:line 1: not JSON lines"),
    (lambda p: p.write_text('"text"\n'),
     "f.jsonl:line 1: not JSON lines (one object per line expected; found a JSON string)"),
])
def test_a_file_that_is_not_json_lines_is_refused(tmp_path, writer, message):
    path = tmp_path / "f.jsonl"
    writer(path)
    with pytest.raises(UserError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")


def test_json_files_empty_broken_or_of_the_wrong_type(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("")
    with pytest.raises(UserError, match="f.json: empty file, no records"):
        load_json(path, list)
    path.write_text("[{")
    with pytest.raises(UserError, match=r"f.json: not valid JSON \(line 1: "):
        load_json(path, list)
    path.write_text("{}")
    with pytest.raises(UserError, match="expected a JSON list at top level, got object"):
        load_json(path, list)
    path.write_text('[{"a": 1}, 2]')
    assert [(e.position, e.key, e.value) for e in list_entries(path)] == [("record 1", "f-1", {"a": 1}),
                                                                          ("record 2", "f-2", 2)]


def test_a_lone_surrogate_is_a_record_problem_in_place(tmp_path):
    from biomed_llama.benchmarks.jsonio import collect
    from biomed_llama.benchmarks.records import BadRecords

    path = tmp_path / "f.jsonl"
    path.write_text('{"q": "fine"}\n{"q": "half \\udc80 a pair"}\n{"o": {"A": ["\\ud800"]}}\n', encoding="utf-8")
    bad = BadRecords("skip")
    kept = collect(path, bad, read_jsonl(path), lambda value, key: value)
    assert [pos for pos, _ in kept] == ["line 1"]
    assert [(b.position, b.reason) for b in bad.found] == [
        ("line 2", "not valid Unicode (lone surrogate U+DC80)"),
        ("line 3", "not valid Unicode (lone surrogate U+D800)")]
