"""Stage `contamination`: lm-eval's n-grams reused, exact verdicts on fixtures, byte-identical splits, the demo's counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.config import validate_params
from biomed_llama.contamination import ngrams
from biomed_llama.contamination.stage import merge_contamination, part_dir, run_contamination
from biomed_llama.data.extract import run_extract
from biomed_llama.errors import ConfigError, IntegrityError, UserError
from tests.helpers import load_script
from tests.data.test_extract import write_zst

D1 = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon"
D2 = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat today"
D3 = "Introduction eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau and more"  # D1's words 7-19


def _abstract(text: str) -> str:
    return json.dumps({"text": text, "meta": {"pile_set_name": "PubMed Abstracts"}})


def _medqa(question: str, n: int = 4) -> dict:
    letters = "ABCDE"[:n]
    return {"question": question, "answer": "opt A", "options": {k: f"opt {k}" for k in letters},
            "meta_info": "step1", "answer_idx": "A"}


def _medmcqa(i: int, question: str) -> dict:
    return {"id": f"m{i}", "question": question, "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 4 - i}


def _pubmedqa(question: str, contexts: list[str]) -> dict:
    return {"QUESTION": question, "CONTEXTS": contexts, "LABELS": ["BACKGROUND"] * len(contexts),
            "final_decision": "yes"}


MEDQA4 = [
    "ALPHA, beta; gamma   delta\nepsilon zeta eta theta iota (kappa) lambda mu nu. Which?",  # D1's first 13 words
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu",  # 12 words: short
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",  # unrelated
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu xi",  # D1 with `nu` left out
]


@pytest.fixture
def corpus(tmp_path: Path):
    """An extract output (train: two abstracts in one file, D3 as PubMed Central in another; D2 again in val; D1 in
    Wikipedia) and the four benchmark files; returns the params of both stages under `tmp_path`."""
    pile = tmp_path / "pile"
    write_zst(pile / "train" / "a.jsonl.zst", [_abstract(D1), _abstract(D2),
                                               json.dumps({"text": D1, "meta": {"pile_set_name": "Wikipedia (en)"}})])
    write_zst(pile / "train" / "b.jsonl.zst", [json.dumps({"text": D3, "meta": {"pile_set_name": "PubMed Central"}})])
    write_zst(pile / "val.jsonl.zst", [_abstract("unrelated words only " * 5)])
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "medqa4.jsonl").write_text("".join(json.dumps(_medqa(q)) + "\n" for q in MEDQA4))
    (bench / "medqa5.jsonl").write_text(json.dumps(_medqa(D2 + "?", 5)) + "\n")
    (bench / "medmcqa.json").write_text(json.dumps(_medmcqa(0, "Drug of choice for gout is")) + "\n" + json.dumps(
        _medmcqa(1, "eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau")) + "\n")
    (bench / "pubmedqa.json").write_text(json.dumps({
        "1": _pubmedqa("Does the fox sleep?", ["The quick brown fox jumps over the lazy dog", "while the cat "
                                                "sleeps on the warm mat today"]),
        "2": _pubmedqa("Is this clean?", ["Nothing here is in the corpus at all, not one run of words."])}))
    params = validate_params({
        "extract": {"train": [str(pile / "train" / "*.jsonl.zst")], "val": [str(pile / "val.jsonl.zst")], "test": [],
                    "output": str(tmp_path / "extracted"), "metrics": str(tmp_path / "extract.json")},
        "contamination": {"input": str(tmp_path / "extracted"), "output": str(tmp_path / "out"),
                          "metrics": str(tmp_path / "metrics.json")},
        "eval": {"benchmarks": {"medqa4_test": str(bench / "medqa4.jsonl"), "medqa5_test": str(bench / "medqa5.jsonl"),
                                "medmcqa_dev": str(bench / "medmcqa.json"),
                                "pubmedqa_labeled": str(bench / "pubmedqa.json")}}})
    run_extract(params.extract)
    return params


def _run(params, **kw):
    return run_contamination(params.contamination, params.eval.benchmarks, ReadersConfig(), **kw)


def _items(out: Path, task: str) -> list[dict]:
    return json.loads((out / f"{task}.json").read_text())


def test_ngrams_are_lm_evals_and_ignore_case_punctuation_and_whitespace():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination.janitor import Janitor, word_ngrams
    text = "The Quick,  brown\tfox! jumps"
    assert list(ngrams.ngrams(text, 3)) == list(word_ngrams(Janitor().normalize_string(text), 3))
    assert ngrams.item_ngrams(text, 3) == ngrams.item_ngrams("the quick brown fox jumps", 3) == [
        "the quick brown", "quick brown fox", "brown fox jumps"]
    assert ngrams.item_ngrams("four words only here", 5) == []  # fewer than n words: no n-gram at all
    assert ngrams.item_ngrams("a b a b a b", 2) == ["a b", "b a"]  # distinct, in first-seen order
    doc = {"question": "Q?", "context": "c1\nc2", "options": [], "label": 0}
    assert ngrams.decontamination_query("pubmedqa", doc) == "Q? c1\nc2"  # fork tasks/pubmedqa.py:82-83
    assert ngrams.decontamination_query("medqa4", doc) == "Q?"  # fork tasks/usmleqa.py:105-106


def test_exact_verdicts_on_fixtures(corpus):
    metrics = _run(corpus)
    out = Path(corpus.contamination.output)
    d1, d2, d3 = (f"{corpus.extract.train[0][:-len('*.jsonl.zst')]}a.jsonl.zst:1",
                  f"{corpus.extract.train[0][:-len('*.jsonl.zst')]}a.jsonl.zst:2",
                  f"{corpus.extract.train[0][:-len('*.jsonl.zst')]}b.jsonl.zst:1")
    medqa4 = _items(out, "medqa4")
    # case, punctuation and whitespace differ from D1; 14 words = 2 n-grams, the first found
    assert [(i["contaminated"], i["ngrams"], i["matched_ngrams"], i["short"]) for i in medqa4] == [
        (True, 2, 1, False), (False, 0, 0, True), (False, 3, 0, False), (False, 1, 0, False)]
    assert medqa4[0]["overlap"] == 0.5 and medqa4[0]["doc_ids"] == [d1] and medqa4[0]["n_docs"] == 1
    (five,) = _items(out, "medqa5")
    assert (five["contaminated"], five["ngrams"], five["matched_ngrams"], five["overlap"]) == (True, 6, 6, 1.0)
    assert five["doc_ids"] == [d2]  # the val copy of nothing and the Wikipedia copy of D1 are not scanned
    mcq = _items(out, "medmcqa")
    assert [(i["contaminated"], i["short"]) for i in mcq] == [(False, True), (True, False)]
    assert mcq[1]["doc_ids"] == [d1, d3] and mcq[1]["n_docs"] == 2  # corpus order: abstracts, then central
    pqa = _items(out, "pubmedqa")  # question + " " + contexts joined: 4 + 18 words = 10 n-grams, D2's 6 found
    assert [(i["contaminated"], i["ngrams"], i["matched_ngrams"]) for i in pqa] == [(True, 10, 6), (False, 4, 0)]
    assert pqa[0]["overlap"] == 0.6 and pqa[0]["id"] == "1"
    assert metrics["contaminated"] == {"medqa4": 1, "medqa5": 1, "medmcqa": 1, "pubmedqa": 1}
    assert metrics["share"] == {"medqa4": 0.25, "medqa5": 1.0, "medmcqa": 0.5, "pubmedqa": 0.5}
    assert metrics["short"] == {"medqa4": 1, "medqa5": 0, "medmcqa": 1, "pubmedqa": 0}
    assert metrics["docs"] == 3 and metrics["mb_per_s"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["medqa4"] == {"items": 4, "contaminated": 1, "share": 0.25, "clean": 3, "short": 1}
    headline = json.loads(Path(corpus.contamination.metrics).read_text())
    assert headline == {"contaminated": metrics["contaminated"], "clean": {"medqa4": 3, "medqa5": 0, "medmcqa": 1,
                                                                         "pubmedqa": 1}}  # the rest: details
    assert all(p.suffix == ".json" for p in out.iterdir())  # JSON only: nothing pickled


def test_max_doc_ids_lists_the_first_but_counts_all(corpus):
    corpus.contamination.max_doc_ids = 1
    _run(corpus)
    mcq = _items(Path(corpus.contamination.output), "medmcqa")[1]
    assert len(mcq["doc_ids"]) == 1 and mcq["doc_ids"][0].endswith("a.jsonl.zst:1") and mcq["n_docs"] == 2


def test_n_is_a_param(corpus):
    corpus.contamination.ngram = 20  # only D1 (20 words) could hold a 20-gram; no item quotes 20 of its words
    metrics = _run(corpus)
    assert metrics["contaminated"] == {"medqa4": 0, "medqa5": 0, "medmcqa": 0, "pubmedqa": 0}
    assert metrics["short"] == {"medqa4": 4, "medqa5": 1, "medmcqa": 2, "pubmedqa": 1}


def _data_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


def test_byte_identical_for_workers_and_shards_plus_merge(corpus, tmp_path: Path):
    _run(corpus, workers=1)
    out = Path(corpus.contamination.output)
    ref, ref_metrics = _data_files(out), Path(corpus.contamination.metrics).read_bytes()
    ref_manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)
    _run(corpus, workers=2)
    assert _data_files(out) == ref and Path(corpus.contamination.metrics).read_bytes() == ref_metrics
    assert json.loads((out / "manifest.json").read_text())["files"] == ref_manifest["files"]
    shutil.rmtree(out)
    for i in range(2):
        part = _run(corpus, num_shards=2, shard_index=i)
        assert part["files"] == 1  # the two train files (abstracts, central), one each
    assert not out.exists()
    merge_contamination(corpus.contamination, corpus.eval.benchmarks, ReadersConfig(), num_shards=2)
    assert _data_files(out) == ref and Path(corpus.contamination.metrics).read_bytes() == ref_metrics
    assert json.loads((out / "manifest.json").read_text())["params"] == ref_manifest["params"]


def test_merge_refuses_missing_or_foreign_parts(corpus):
    cfg, bench = corpus.contamination, corpus.eval.benchmarks
    _run(corpus, num_shards=2, shard_index=0)
    with pytest.raises(UserError, match="missing part.*shard-1-of-2"):
        merge_contamination(cfg, bench, ReadersConfig(), num_shards=2)
    _run(corpus, num_shards=2, shard_index=1)
    other = cfg.model_copy(update={"ngram": 5})
    with pytest.raises(UserError, match="other params"):
        merge_contamination(other, bench, ReadersConfig(), num_shards=2)
    original = Path(bench.medqa5_test).read_text()
    Path(bench.medqa5_test).write_text(json.dumps(_medqa("changed benchmark item text here", 5)) + "\n")
    with pytest.raises(UserError, match="benchmark files"):  # a part made against other benchmark files
        merge_contamination(cfg, bench, ReadersConfig(), num_shards=2)
    Path(bench.medqa5_test).write_text(original)
    (part_dir(cfg, 2, 1) / "reports.json").write_text("[]")
    with pytest.raises(IntegrityError, match="reports.json"):
        merge_contamination(cfg, bench, ReadersConfig(), num_shards=2)
    assert not Path(cfg.output).exists()


def test_bad_arguments_and_missing_input(corpus, tmp_path: Path):
    with pytest.raises(ConfigError, match="--shard-index"):
        _run(corpus, num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="--workers"):
        _run(corpus, workers=0)
    corpus.contamination.subsets = ["pubmed_abstracts", "nope"]
    with pytest.raises(UserError, match="no folder .*nope/train"):
        _run(corpus)


def test_demo_sample_items_are_contaminated_as_the_fixture_script_planted(repo_root: Path, tmp_path: Path):
    """The committed demo: every quoting item of scripts/make_eval_fixtures.py with 13 words or more is found, no
    other item is, and the CLI (the DVC stage's command) writes the same counts."""
    fixtures = load_script("make_eval_fixtures")
    params = validate_params({
        "extract": {"train": [f"{repo_root}/data/sample/pile/train/*.jsonl.zst"], "val": [], "test": [],
                    "output": str(tmp_path / "extracted"), "metrics": str(tmp_path / "x.json")},
        "contamination": {"input": str(tmp_path / "extracted"), "output": str(tmp_path / "out"),
                          "metrics": str(tmp_path / "m.json")},
        "eval": {"benchmarks": {k: f"{repo_root}/data/sample/eval/{rel}" for k, rel in {
            "medqa4_test": "medqa/US/4_options/phrases_no_exclude_test.jsonl", "medqa5_test": "medqa/US/test.jsonl",
            "medmcqa_dev": "medmcqa/dev.json", "pubmedqa_labeled": "pubmedqa/ori_pqal.json"}.items()}}})
    run_extract(params.extract)
    _run(params, workers=2)
    files = {"medqa4": "medqa/US/4_options/phrases_no_exclude_test.jsonl", "medqa5": "medqa/US/test.jsonl",
             "medmcqa": "medmcqa/dev.json", "pubmedqa": "pubmedqa/ori_pqal.json"}
    for task, rel in files.items():
        planted = {pos for pos, _, _, words, _ in fixtures.CONTAMINATED[rel] if words >= 13}
        found = {i["idx"] for i in _items(tmp_path / "out", task) if i["contaminated"]}
        assert found == planted, task
        assert len(planted) >= 2  # the demo's table has clean cells that differ from the full-set ones
    cli = subprocess.run([sys.executable, "-m", "biomed_llama", "contamination", "--set",
                          f"contamination.input={tmp_path / 'extracted'}", "--set",
                          f"contamination.output={tmp_path / 'cli'}", "--set",
                          f"contamination.metrics={tmp_path / 'cli.json'}"],
                         cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert _data_files(tmp_path / "cli") == _data_files(tmp_path / "out")
