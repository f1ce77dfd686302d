"""The lm-eval documents prepare-eval makes from the shared readers' items, and the fixtures they read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.errors import BadRecordError, UserError
from biomed_llama.eval.prepare import read_docs

DOC_KEYS = {"idx", "n_docs", "id", "context", "question", "options", "label"}


def test_fixtures_are_what_the_script_makes(repo_root):
    out = subprocess.run([sys.executable, "scripts/make_eval_fixtures.py", "--check"], cwd=repo_root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_medqa_4_and_5_options(repo_root):
    s = repo_root / "data/sample/eval/medqa/US"
    four = read_docs("medqa4", str(s / "4_options/phrases_no_exclude_test.jsonl"), ReadersConfig())
    five = read_docs("medqa5", str(s / "test.jsonl"), ReadersConfig())
    assert len(four) == 40 and len(five) == 40 and all(set(d) == DOC_KEYS for d in four + five)
    raw = json.loads((s / "test.jsonl").read_text().splitlines()[3])
    rec = five[3]
    assert rec["options"] == [raw["options"][k] for k in "ABCDE"]
    assert rec["options"][rec["label"]] == raw["answer"]
    assert (rec["idx"], rec["n_docs"], rec["context"], rec["id"]) == (3, 40, "", "test-4")
    with pytest.raises(BadRecordError, match="test.jsonl:line 1: 5 options, expected 4"):
        read_docs("medqa4", str(s / "test.jsonl"), ReadersConfig())


def test_medmcqa_labels_count_from_zero_whatever_the_file(repo_root, tmp_path):
    dev = repo_root / "data/sample/eval/medmcqa/dev.json"
    one = read_docs("medmcqa", str(dev), ReadersConfig())
    raw = [json.loads(line) for line in dev.read_text().splitlines()]
    assert [r["label"] for r in one] == [x["cop"] - 1 for x in raw]
    assert [r["id"] for r in one] == [x["id"] for x in raw]
    zero = tmp_path / "hf.jsonl"
    zero.write_text("".join(json.dumps({**x, "cop": x["cop"] - 1}) + "\n" for x in raw))
    assert read_docs("medmcqa", str(zero), ReadersConfig()) == one
    with pytest.raises(BadRecordError, match=r"hf.jsonl:line \d+: cop 0 is not one of the options"):
        read_docs("medmcqa", str(zero), ReadersConfig(medmcqa_cop="1-4"))  # a 0-based file read as 1-based


def test_pubmedqa_keeps_file_order_and_joins_contexts(repo_root):
    path = repo_root / "data/sample/eval/pubmedqa/ori_pqal.json"
    raw = json.loads(path.read_text())
    recs = read_docs("pubmedqa", str(path), ReadersConfig())
    assert [r["id"] for r in recs] == list(raw)
    first = raw[recs[0]["id"]]
    assert recs[0]["context"] == "\n".join(first["CONTEXTS"])
    assert recs[0]["options"] == ["Yes", "No", "Maybe"]
    assert recs[0]["options"][recs[0]["label"]].lower() == first["final_decision"]


def test_a_bad_record_always_aborts_naming_file_and_line(tmp_path):
    p = tmp_path / "medqa.jsonl"
    good = {"question": "q", "answer": "b", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}
    p.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(BadRecordError, match=r"medqa.jsonl:line 2: not valid JSON .* evaluation set keeps every item"):
        read_docs("medqa4", str(p), ReadersConfig())
    with pytest.raises(UserError, match=f"^benchmark file {tmp_path}/missing.jsonl not found$"):
        read_docs("medqa4", str(tmp_path / "missing.jsonl"), ReadersConfig())
