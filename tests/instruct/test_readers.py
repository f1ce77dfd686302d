"""The instruction-source readers: the benchmark formats through `read_source` (rendered with the
instruct / task templates), the Alpaca and `examples` lists, their bad-record cases.

The benchmark readers themselves (conventions, every MedQA / MedMCQA / PubMedQA bad record) are
tested in tests/benchmarks/test_readers.py."""

from __future__ import annotations

import pytest

from biomed_llama.benchmarks.records import BadRecords, InstructionItem, MCItem, OpenItem, YesNoItem
from biomed_llama.errors import BadRecordError, UserError
from biomed_llama.instruct.readers import read_source
from biomed_llama.instruct.templates import render_instruct, render_task


def _read(fmt, path, policy="skip", **kw):
    bad = BadRecords(policy)
    return read_source(fmt, path, bad, **kw), bad.found


@pytest.mark.parametrize("name,n_opt,n", [("train_4opt.jsonl", 4, 40), ("train_5opt.jsonl", 5, 30)])
def test_medqa_4_and_5_options(fixtures_dir, name, n_opt, n):
    items, bad = _read("medqa", fixtures_dir / "medqa" / name)
    assert len(items) == n and not bad
    pos, item = items[0]
    assert pos == "line 1" and isinstance(item, MCItem) and len(item.options) == n_opt
    inp, out = render_instruct(item)
    assert inp.endswith("### Answer:(")
    assert f"({'ABCDE'[n_opt - 1]}) {item.options[-1]}" in inp  # every option lettered, the fifth too
    assert out == f"{item.answer}) {item.answer_text}"


def test_medmcqa_source_passes_the_cop_convention_on(fixtures_dir):
    path = fixtures_dir / "bad" / "medmcqa_ambiguous_cop.jsonl"
    with pytest.raises(UserError, match="set readers.medmcqa_cop"):
        _read("medmcqa", path)
    items, bad = _read("medmcqa", path, medmcqa_cop="0-3")
    assert [it.answer for _, it in items] == ["B", "C", "D"] and not bad
    inp, out = render_instruct(items[0][1])
    assert inp.endswith("### Answer:(") and out == f"B) {items[0][1].options[1]}"


def test_pubmedqa_labeled_and_artificial(fixtures_dir):
    pqal, _ = _read("pubmedqa", fixtures_dir / "pubmedqa" / "ori_pqal.json")
    pqaa, _ = _read("pubmedqa", fixtures_dir / "pubmedqa" / "ori_pqaa.json")
    assert len(pqal) == 24 and len(pqaa) == 60
    assert {it.answer for _, it in pqal} == {"yes", "no", "maybe"}
    assert {it.answer for _, it in pqaa} == {"yes", "no"}
    pos, item = pqal[0]
    assert pos.startswith("PMID ") and isinstance(item, YesNoItem)
    inp, out = render_instruct(item)
    assert "### Abstract: " + "\n".join(item.contexts) in inp and inp.endswith("### Answer:")
    assert out == item.answer.capitalize()
    src, tgt = render_task(item)
    assert src.startswith("### Context: ") and "### Options: (A) yes (B) no (C) maybe\n" in src
    assert src.endswith("### Answer:") and tgt == f" {item.answer}"


@pytest.mark.parametrize("rel", ["alpaca/alpaca_data_cleaned.json", "visual-med-alpaca/med_alpaca_data.json"])
def test_alpaca_lists(fixtures_dir, rel):
    items, bad = _read("alpaca", fixtures_dir / rel)
    assert len(items) == 40 and not bad
    with_input = [it for _, it in items if it.input]
    without = [it for _, it in items if not it.input]
    assert with_input and without and all(isinstance(it, InstructionItem) for _, it in items)
    assert "### Input:\n" in render_instruct(with_input[0])[0]
    assert "### Input:" not in render_instruct(without[0])[0]


def test_examples_sets(fixtures_dir):
    items, _ = _read("examples", fixtures_dir / "examples" / "medpalm.json")
    kinds = {type(it) for _, it in items}
    assert kinds == {MCItem, YesNoItem, OpenItem}
    cot, bad = _read("examples", fixtures_dir / "examples" / "mmlu_cot.json", cot=True)
    assert len(cot) == 12 and not bad
    inp, out = render_instruct(cot[0][1], cot=True)
    assert inp.endswith("### Answer:") and cot[0][1].explanation in out
    assert out.endswith(f"({cot[0][1].answer}) {cot[0][1].answer_text}.")


# Every bad-record case of the instruction-only formats: (format, file, kwargs, expected [(position,
# reason fragment)], good records left)
BAD_CASES = [
    ("alpaca", "alpaca_bad.json", {}, [
        ("record 2", "missing field 'output'"),
        ("record 3", "field 'instruction' is int"),
        ("record 4", "record is list, not an object"),
    ], 2),
    ("examples", "examples_bad.json", {"cot": True}, [
        ("record 1", "answer 'F' is not one of the options"),
        ("record 2", "missing field 'explanation'"),
    ], 2),
]


@pytest.mark.parametrize("fmt,name,kw,expected,n_good", BAD_CASES, ids=[c[1] for c in BAD_CASES])
def test_bad_records_are_reported_with_file_and_position(fixtures_dir, fmt, name, kw, expected, n_good):
    path = fixtures_dir / "bad" / name
    items, bad = _read(fmt, path, "skip", **kw)
    assert len(items) == n_good
    assert [b.position for b in bad] == [pos for pos, _ in expected]
    for b, (_, reason) in zip(bad, expected):
        assert b.path == str(path) and reason in b.reason
    # abort: the first bad record stops the read, naming file and position.
    first_pos, first_reason = expected[0]
    with pytest.raises(BadRecordError) as err:
        _read(fmt, path, "abort", **kw)
    assert f"{path}:{first_pos}:" in str(err.value) and first_reason in str(err.value)
    assert err.value.exit_code == 4


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match=f"^instruction source {tmp_path}/nope.json not found$"):
        _read("alpaca", tmp_path / "nope.json")
    with pytest.raises(UserError, match="^instruction source .* not found$"):
        _read("medmcqa", tmp_path / "nope.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(UserError, match="not valid JSON"):
        _read("alpaca", broken)
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    with pytest.raises(UserError, match="expected a JSON list"):
        _read("alpaca", obj)
