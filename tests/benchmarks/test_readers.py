"""The shared MedQA / MedMCQA / PubMedQA readers on the committed fixtures: items, conventions, bad records."""

from __future__ import annotations

import json

import pytest

from biomed_llama.benchmarks.readers import detect_cop_base, read_benchmark, read_medmcqa, read_medqa, read_pubmedqa
from biomed_llama.benchmarks.records import BadRecords, MCItem, YesNoItem
from biomed_llama.errors import BadRecordError, UserError


def _read(fmt, path, policy="skip", **kw):
    bad = BadRecords(policy)
    return read_benchmark(fmt, path, bad, **kw), bad.found


@pytest.mark.parametrize("name,n_opt,n", [("train_4opt.jsonl", 4, 40), ("train_5opt.jsonl", 5, 30)])
def test_medqa_4_and_5_options(instruct_dir, name, n_opt, n):
    path = instruct_dir / "medqa" / name
    items, bad = _read("medqa", path)
    assert len(items) == n and not bad
    pos, item = items[0]
    assert pos == "line 1" and isinstance(item, MCItem) and len(item.options) == n_opt
    raw = json.loads(path.read_text().splitlines()[0])
    assert item.options == tuple(raw["options"][k] for k in "ABCDE"[:n_opt])
    assert item.answer == raw["answer_idx"] and item.answer_text == raw["answer"]
    assert item.id == f"{path.stem}-1"  # MedQA has no ids: file stem and line


def test_medqa_option_count_is_checked_when_asked(eval_dir):
    five = eval_dir / "medqa/US/test.jsonl"
    assert len(_read("medqa", five, n_options=5)[0]) == 40
    items, bad = _read("medqa", five, n_options=4)
    assert not items and len(bad) == 40 and bad[0].reason == "5 options, expected 4"
    with pytest.raises(BadRecordError, match=r"test.jsonl:line 1: 5 options, expected 4"):
        _read("medqa", five, "abort", n_options=4)


def test_medmcqa_both_cop_conventions_give_the_same_answers(instruct_dir):
    one, bad1 = _read("medmcqa", instruct_dir / "medmcqa" / "train_cop1.jsonl")
    zero, bad0 = _read("medmcqa", instruct_dir / "medmcqa" / "train_cop0.jsonl")
    assert len(one) == 60 and len(zero) == 40 and not bad1 and not bad0
    # Every fixture record's explanation names its gold option: the detected base picked the right one.
    for _, item in one + zero:
        assert item.explanation.endswith(f"because of {item.answer_text}.")
    assert {it.answer for _, it in one} == {it.answer for _, it in zero} == set("ABCD")


def test_medmcqa_labels_and_ids_follow_the_file(eval_dir, tmp_path):
    dev = eval_dir / "medmcqa/dev.json"
    raw = [json.loads(line) for line in dev.read_text().splitlines()]
    one, _ = _read("medmcqa", dev)
    assert ["ABCD".index(it.answer) for _, it in one] == [x["cop"] - 1 for x in raw]
    assert [it.id for _, it in one] == [x["id"] for x in raw]
    hf = tmp_path / "hf.jsonl"  # the Hugging Face copy: the same records, cop counted from 0
    hf.write_text("".join(json.dumps({**x, "cop": x["cop"] - 1}) + "\n" for x in raw))
    assert [it for _, it in _read("medmcqa", hf)[0]] == [it for _, it in one]
    with pytest.raises(BadRecordError, match=r"hf.jsonl:line \d+: cop 0 is not one of the options \(1–4\)"):
        _read("medmcqa", hf, "abort", medmcqa_cop="1-4")  # a 0-based file read as 1-based: cop 0 is caught


def test_medmcqa_explicit_convention_overrides_detection(instruct_dir):
    path = instruct_dir / "bad" / "medmcqa_ambiguous_cop.jsonl"
    with pytest.raises(UserError, match="cannot tell the MedMCQA cop convention .only 1–3 occur.; "
                                        "set readers.medmcqa_cop to 0-3 or 1-4"):
        _read("medmcqa", path)
    items, bad = _read("medmcqa", path, medmcqa_cop="1-4")
    assert [it.answer for _, it in items] == ["A", "B", "C"] and not bad
    items, bad = _read("medmcqa", path, medmcqa_cop="0-3")
    assert [it.answer for _, it in items] == ["B", "C", "D"] and not bad


def test_medmcqa_file_mixing_conventions_is_refused(instruct_dir):
    with pytest.raises(UserError, match="mixes cop conventions"):
        _read("medmcqa", instruct_dir / "bad" / "medmcqa_mixed_cop.jsonl")


@pytest.mark.parametrize("cops,setting,base", [([0, 1, 2], "auto", 0), ([1, 2, 4], "auto", 1), ([1, 2], "0-3", 0),
                                               ([1, 2], "1-4", 1), ([True, 4], "auto", 1)])
def test_detect_cop_base(cops, setting, base):
    assert detect_cop_base("f.jsonl", cops, setting) == base


def test_an_unreadable_medmcqa_file_says_what_is_wrong(tmp_path):
    """Never "only 1–3 occur" for a file that is not MedMCQA JSON lines (tests/benchmarks/test_cli.py: empty, CSV)."""
    path = tmp_path / "f.jsonl"
    cases = {"\n  \n": f"{path}: empty file, no records",
             '[{"question": "q", "cop": 1}]\n':
                 f"{path}:line 1: not JSON lines (one object per line expected; found a JSON list)",
             '{"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": "2"}\n':
                 f"{path}: no record has an integer `cop` (the MedMCQA answer field); is this a MedMCQA file?"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(UserError) as err:
            read_medmcqa(path, BadRecords("skip"))
        assert (str(err.value), err.value.exit_code) == (message, 1)


def test_pubmedqa_labeled_and_artificial(instruct_dir, eval_dir):
    pqal, _ = _read("pubmedqa", instruct_dir / "pubmedqa" / "ori_pqal.json")
    pqaa, _ = _read("pubmedqa", instruct_dir / "pubmedqa" / "ori_pqaa.json")
    assert len(pqal) == 24 and len(pqaa) == 60
    assert {it.answer for _, it in pqal} == {"yes", "no", "maybe"}
    assert {it.answer for _, it in pqaa} == {"yes", "no"}
    path = eval_dir / "pubmedqa/ori_pqal.json"
    raw = json.loads(path.read_text())
    items = read_pubmedqa(path, BadRecords("abort"))
    assert [pos for pos, _ in items] == [f"PMID {k}" for k in raw] and [it.id for _, it in items] == list(raw)
    pmid, first = next(iter(raw.items()))
    item = items[0][1]
    assert isinstance(item, YesNoItem) and item.context == "\n".join(first["CONTEXTS"])
    assert item.answer == first["final_decision"] and item.explanation == first["LONG_ANSWER"]


# Every bad-record case: (format, file, [(position, reason)] in file order, good records left)
BAD_CASES = [
    ("medqa", "medqa_bad.jsonl", [
        ("line 2", "missing field 'answer_idx'"),
        ("line 3", "answer_idx 'E' is not one of the options ['A', 'B', 'C', 'D']"),
        ("line 4", "answer 'a drug not listed' is not option B ('warfarin')"),
        ("line 5", "field 'options' is not an object of strings"),
        ("line 6", "not valid JSON (Unterminated string starting at)"),
    ], 2),
    ("medmcqa", "medmcqa_bad.jsonl", [
        ("line 2", "missing field 'opc'"),
        ("line 3", "cop 7 is not one of the options (0–3)"),
        ("line 4", "missing field 'cop'"),
    ], 2),
    ("pubmedqa", "pubmedqa_bad.json", [
        ("PMID 30000008", "missing field 'CONTEXTS'"),
        ("PMID 30000015", "final_decision 'perhaps' is not one of yes / no / maybe"),
    ], 2),
]


@pytest.mark.parametrize("fmt,name,expected,n_good", BAD_CASES, ids=[c[1] for c in BAD_CASES])
def test_bad_records_are_reported_with_file_and_position(instruct_dir, fmt, name, expected, n_good):
    path = instruct_dir / "bad" / name
    items, bad = _read(fmt, path, "skip")
    assert len(items) == n_good and [(b.path, b.position, b.reason) for b in bad] == [(str(path), *e) for e in expected]
    with pytest.raises(BadRecordError) as err:  # abort: the first bad record stops the read
        _read(fmt, path, "abort")
    want = f"{path}:{expected[0][0]}: {expected[0][1]} (on_bad_record: abort; set skip to drop such records)"
    assert (str(err.value), err.value.exit_code) == (want, 4)


def test_abort_message_carries_the_callers_advice(instruct_dir):
    with pytest.raises(BadRecordError, match=r"line 2: missing field 'answer_idx' \(fix the file\)$"):
        read_medqa(instruct_dir / "bad" / "medqa_bad.jsonl", BadRecords("abort", advice="fix the file"))


def test_medmcqa_empty_option_text_is_kept_and_blank_question_is_bad(tmp_path):
    path = tmp_path / "m.jsonl"
    good = {"id": "x", "question": "q?", "opa": "a", "opb": "", "opc": "c", "opd": "d", "cop": 4}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": None, "question": " "}) + "\n")
    items, bad = _read("medmcqa", path)
    assert [it.options for _, it in items] == [("a", "", "c", "d")] and items[0][1].id == "x"
    assert [(b.position, b.reason) for b in bad] == [("line 2", "field 'question' is empty")]
