"""A benchmark item given twice in one file is refused (exit 4, naming the id and the file), or, with
`readers.duplicates: drop`, an exact duplicate is dropped and listed; a repeated PubMedQA PMID key is caught."""

from __future__ import annotations

import json

import pytest

from biomed_llama.benchmarks.readers import read_benchmark
from biomed_llama.benchmarks.records import BadRecords
from biomed_llama.errors import BadRecordError


def _lines(path, n_dup=1):
    lines = path.read_text().splitlines()
    return lines, lines + lines[:n_dup]


def test_a_repeated_medmcqa_record_is_refused_naming_its_id(eval_dir, tmp_path):
    lines, doubled = _lines(eval_dir / "medmcqa/dev.json")
    path = tmp_path / "dev.json"
    path.write_text("\n".join(doubled) + "\n")
    first_id = json.loads(lines[0])["id"]
    with pytest.raises(BadRecordError, match=rf"dev.json:line {len(lines) + 1}: duplicate item id {first_id} "
                                             r"\(an exact duplicate of line 1; readers.duplicates: drop"):
        read_benchmark("medmcqa", path, BadRecords("abort"))
    assert BadRecordError.exit_code == 4
    bad = BadRecords("abort", duplicates="drop")
    items = read_benchmark("medmcqa", path, bad)
    assert len(items) == len(lines) and [d.position for d in bad.dropped] == [f"line {len(lines) + 1}"]


def test_a_different_record_under_a_taken_id_always_aborts(eval_dir, tmp_path):
    lines, _ = _lines(eval_dir / "medmcqa/dev.json")
    other = {**json.loads(lines[1]), "id": json.loads(lines[0])["id"]}
    path = tmp_path / "dev.json"
    path.write_text("\n".join(lines + [json.dumps(other)]) + "\n")
    with pytest.raises(BadRecordError, match="a different record of line 1; two different records share the id"):
        read_benchmark("medmcqa", path, BadRecords("skip", duplicates="drop"))


def test_a_repeated_medqa_record_is_a_duplicate_though_medqa_has_no_ids(eval_dir, tmp_path):
    lines, doubled = _lines(eval_dir / "medqa/US/4_options/phrases_no_exclude_test.jsonl")
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(doubled) + "\n")
    with pytest.raises(BadRecordError, match=r"test.jsonl:line \d+: duplicate item id test-\d+ \(an exact duplicate of line 1"):
        read_benchmark("medqa", path, BadRecords("abort"))


def test_a_pmid_key_given_twice_is_caught_while_parsing(eval_dir, tmp_path):
    text = (eval_dir / "pubmedqa/ori_pqal.json").read_text()
    data = json.loads(text)
    pmid, record = next(iter(data.items()))
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in [*data.items(), (pmid, record)])
    path = tmp_path / "ori_pqal.json"
    path.write_text("{" + body + "}")
    assert len(json.loads(path.read_text())) == len(data)  # json.loads alone silently keeps one
    with pytest.raises(BadRecordError, match=rf"ori_pqal.json:PMID {pmid}: duplicate item id {pmid} \(an exact "
                                             rf"duplicate of PMID {pmid}"):
        read_benchmark("pubmedqa", path, BadRecords("abort"))
    changed = {**record, "final_decision": "maybe" if record["final_decision"] != "maybe" else "yes"}
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in [*data.items(), (pmid, changed)])
    path.write_text("{" + body + "}")
    with pytest.raises(BadRecordError, match="a different record of PMID"):
        read_benchmark("pubmedqa", path, BadRecords("abort", duplicates="drop"))


def test_the_committed_fixtures_have_no_duplicates(eval_dir, instruct_dir):
    for fmt, path in [("medqa", eval_dir / "medqa/US/test.jsonl"), ("medqa", eval_dir / "medqa/US/train.jsonl"),
                      ("medmcqa", eval_dir / "medmcqa/train.json"), ("pubmedqa", instruct_dir / "pubmedqa/ori_pqaa.json"),
                      ("medqa", instruct_dir / "medqa/train_4opt.jsonl"),
                      ("medmcqa", instruct_dir / "medmcqa/train_cop1.jsonl")]:
        bad = BadRecords("skip")
        assert read_benchmark(fmt, path, bad) and not bad.dropped, path

