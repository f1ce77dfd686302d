"""Readers of the published benchmark formats and the fixtures that exercise them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from biomed_llama.errors import BadRecordError, UserError
from biomed_llama.eval import formats


def test_fixtures_are_what_the_script_makes(repo_root):
    out = subprocess.run([sys.executable, "scripts/make_eval_fixtures.py", "--check"], cwd=repo_root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_medqa_4_and_5_options(repo_root):
    s = repo_root / "data/sample/eval/medqa/US"
    four = formats.read_medqa(s / "4_options/phrases_no_exclude_test.jsonl", 4)
    five = formats.read_medqa(s / "test.jsonl", 5)
    assert len(four) == 40 and len(five) == 40
    raw = json.loads((s / "test.jsonl").read_text().splitlines()[3])
    rec = five[3]
    assert rec["options"] == [raw["options"][k] for k in "ABCDE"]
    assert rec["options"][rec["label"]] == raw["answer"]
    assert (rec["idx"], rec["n_docs"], rec["context"]) == (3, 40, "")
    with pytest.raises(BadRecordError, match="5 options, expected 4|not a 4-option"):
        formats.read_medqa(s / "test.jsonl", 4)


def test_medmcqa_cop_bases(repo_root, tmp_path):
    dev = repo_root / "data/sample/eval/medmcqa/dev.json"
    one = formats.read_medmcqa(dev, 1)
    raw = [json.loads(line) for line in dev.read_text().splitlines()]
    assert [r["label"] for r in one] == [x["cop"] - 1 for x in raw]
    zero = tmp_path / "hf.jsonl"
    zero.write_text("".join(json.dumps({**x, "cop": x["cop"] - 1}) + "\n" for x in raw))
    assert [r["label"] for r in formats.read_medmcqa(zero, 0)] == [r["label"] for r in one]
    with pytest.raises(BadRecordError, match="hf.jsonl:.*out of range"):
        formats.read_medmcqa(zero, 1)  # a 0-based file read as 1-based: cop 0 is caught


def test_pubmedqa_keeps_file_order_and_joins_contexts(repo_root):
    path = repo_root / "data/sample/eval/pubmedqa/ori_pqal.json"
    raw = json.loads(path.read_text())
    recs = formats.read_pubmedqa(path)
    assert [r["id"] for r in recs] == list(raw)
    first = raw[recs[0]["id"]]
    assert recs[0]["context"] == "\n".join(first["CONTEXTS"])
    assert recs[0]["options"] == ["Yes", "No", "Maybe"]
    assert recs[0]["options"][recs[0]["label"]].lower() == first["final_decision"]


def test_bad_records_name_file_and_line(tmp_path):
    p = tmp_path / "medqa.jsonl"
    p.write_text('{"question": "q", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}\nnot json\n')
    with pytest.raises(BadRecordError, match="medqa.jsonl:2: not valid JSON"):
        formats.read_medqa(p, 4)
    with pytest.raises(UserError, match="not found"):
        formats.read_medqa(tmp_path / "missing.jsonl", 4)
