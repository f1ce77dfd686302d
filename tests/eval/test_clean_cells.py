"""`evaluate` with the contamination verdicts: per-run clean-subset metrics, the Random row's, the table's cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomed_llama.contamination.results import contaminated_items
from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.eval.aggregate import chance_accuracy, clean_metrics, combine_members
from biomed_llama.eval.config import EvalConfig, EvalModel
from biomed_llama.eval.table import render_table, table_cells
from biomed_llama.provenance import write_manifest

VERDICTS = {"medqa4": {0: True, 1: False, 2: False, 3: True}, "medqa5": {0: False}}


def _lm_eval_sample(idx: int, acc: float, acc_norm: float) -> dict:
    return {"doc_id": idx, "doc": {"idx": idx}, "acc": acc, "acc_norm": acc_norm}


def test_clean_metrics_score_only_the_uncontaminated_items():
    samples = [_lm_eval_sample(0, 1.0, 1.0), _lm_eval_sample(1, 1.0, 0.0), _lm_eval_sample(2, 0.0, 0.0),
               _lm_eval_sample(3, 1.0, 1.0)]
    full = {"seed.medqa4.0shot.acc": 0.75, "seed.medqa4.0shot.acc_norm": 0.5}
    got = clean_metrics("seed.medqa4.0shot", "seed", "medqa4", samples, full, VERDICTS)
    assert got == {"seed.medqa4.0shot.clean_items": 2.0, "seed.medqa4.0shot.acc_clean": 0.5,
                   "seed.medqa4.0shot.acc_norm_clean": 0.0}
    # the generation suites log `doc_id` = the prepared document's idx (eval/generate.py)
    gen = [{"doc_id": i, "exact_match": float(i % 2)} for i in range(4)]
    em = {"instruct.medqa4.0shot.exact_match": 0.5}
    assert clean_metrics("instruct.medqa4.0shot", "instruct", "medqa4", gen, em, VERDICTS) == {
        "instruct.medqa4.0shot.clean_items": 2.0, "instruct.medqa4.0shot.exact_match_clean": 0.5}
    # nothing without verdicts, for a task they lack (perplexity), or for MedMCQA's unlabeled test split
    assert clean_metrics("seed.medqa4.0shot", "seed", "medqa4", samples, full, None) == {}
    assert clean_metrics("seed.pubmed_a.0shot", "seed", "pubmed_a", [], {}, VERDICTS) == {}
    assert clean_metrics("instruct.medmcqa.0shot", "instruct", "medmcqa", gen, em,
                         {"medmcqa": {i: False for i in range(4)}}, "test") == {}
    with pytest.raises(UserError, match="item 7 has no contamination verdict"):
        clean_metrics("seed.medqa4.0shot", "seed", "medqa4", [_lm_eval_sample(7, 1.0, 1.0)], full, VERDICTS)


def test_seed_runs_average_the_clean_value_and_keep_the_item_count():
    a = {"finetune.medqa4.0shot.exact_match": 0.4, "finetune.medqa4.0shot.exact_match_clean": 0.5,
         "finetune.medqa4.0shot.clean_items": 2.0}
    b = {**a, "finetune.medqa4.0shot.exact_match_clean": 0.0}
    got = combine_members({"seed-1": a, "seed-2": b})
    assert got["finetune.medqa4.0shot.exact_match_clean"] == 0.25
    assert got["finetune.medqa4.0shot.clean_items"] == 2.0 and got["finetune.medqa4.0shot.exact_match_n"] == 2.0


def test_chance_accuracy_over_the_clean_items(tmp_path: Path):
    docs = [{"idx": i, "options": ["a", "b"] if i < 2 else ["a", "b", "c", "d"]} for i in range(4)]
    (tmp_path / "medqa4.test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    got = chance_accuracy(tmp_path, VERDICTS)
    assert got["random.medqa4.0shot.acc"] == (0.5 + 0.5 + 0.25 + 0.25) / 4
    assert got["random.medqa4.0shot.acc_clean"] == (0.5 + 0.25) / 2  # items 1 and 2
    assert got["random.medqa4.0shot.clean_items"] == 2.0
    assert "random.medqa4.0shot.acc_clean" not in chance_accuracy(tmp_path)


def test_table_shows_the_clean_value_and_count_after_the_paper_value():
    cfg = EvalConfig(models={"p": EvalModel(path="x", paper_row="BioMed-LLaMA-7B", suites=["seed"])})
    metrics = {"p": {"seed.medqa4.0shot.acc": 0.31, "seed.medqa4.0shot.acc_clean": 0.25,
                     "seed.medqa4.0shot.clean_items": 36.0, "seed.medqa5.0shot.acc": 0.2,
                     "seed.medqa5.0shot.acc_clean": None, "seed.medqa5.0shot.clean_items": 0.0,
                     "seed.pubmed_a.0shot.word_perplexity": 99.0}}
    table = render_table(cfg, metrics)
    row = next(ln for ln in table.splitlines() if ln.startswith("| BioMed-LLaMA-7B | 0-shot | p |"))
    assert "0.3100 / 0.2000 (paper: 0.3535 / 0.3032) · clean: 0.2500 on 36 / – on 0 |" in row
    assert "99.0000 (paper: 15.7774) |" in row  # perplexity: no clean part
    assert "`clean: v on k`" in table
    details: dict = {}
    cells = table_cells(cfg, metrics, details)
    key = "main/BioMed-LLaMA-7B/0-shot/p/medqa4"
    assert (cells[key], cells[f"{key}/clean"], details[f"{key}/clean_items"]) == (0.31, 0.25, 36)
    assert f"{key}/clean_items" not in cells  # `dvc metrics show` stays a headline: counts beside it
    assert "main/BioMed-LLaMA-7B/0-shot/p/pubmed_a/clean" not in cells
    plain = render_table(cfg, {"p": {"seed.medqa4.0shot.acc": 0.31}})  # no verdicts read: no clean part
    assert "clean" not in plain and "0.3100 / – (paper: 0.3535 / 0.3032) |" in plain


def test_contaminated_items_reads_a_verified_output(tmp_path: Path):
    assert contaminated_items(None) is None and contaminated_items(tmp_path / "absent") is None
    out = tmp_path / "c"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"tasks": {"medqa4": {}}}))
    (out / "medqa4.json").write_text(json.dumps([{"idx": 0, "contaminated": True}, {"idx": 1, "contaminated": False}]))
    write_manifest(out, stage="contamination", params={})
    assert contaminated_items(out) == {"medqa4": {0: True, 1: False}}
    (out / "medqa4.json").write_text(json.dumps([{"idx": 0, "contaminated": False}]))
    with pytest.raises(IntegrityError):
        contaminated_items(out)


def test_evaluate_reads_the_verdicts_and_scores_the_clean_items(prepared, tmp_path: Path):
    """A real `evaluate` of the tiny model: each MC run's clean value is its per-sample metric over the items the
    verdicts call clean, the Random row gets one too, and the table and its DVC cells show them."""
    from biomed_llama.eval.run import evaluate

    verdicts = tmp_path / "contamination"
    verdicts.mkdir()
    tasks = {"medqa4": {0, 1}, "medqa5": set(), "medmcqa": {3}, "pubmedqa": {0, 1, 2, 3}}
    for task, bad in tasks.items():
        n = sum(1 for _ in (Path(prepared.output) / f"{task}.test.jsonl").open())
        (verdicts / f"{task}.json").write_text(json.dumps([{"idx": i, "contaminated": i in bad} for i in range(n)]))
    (verdicts / "summary.json").write_text(json.dumps({"tasks": {t: {} for t in tasks}}))
    write_manifest(verdicts, stage="contamination", params={})
    cfg = prepared.model_copy(update={
        "limit": 4, "shots": ["zero"], "contamination": str(verdicts), "metrics_dir": str(tmp_path / "metrics"),
        "table_metrics": str(tmp_path / "table.json"), "results_dir": str(tmp_path / "rep"),
        "table": str(tmp_path / "table.md"), "figure": str(tmp_path / "loss.png")})
    metrics = evaluate(cfg, "test")
    m = metrics["tiny"]
    for task, bad in tasks.items():
        key = f"seed.{task}.0shot"
        samples = [json.loads(ln) for ln in (tmp_path / "rep/tiny" / f"{key}.samples.jsonl").open()]
        clean = [s["acc"] for s in samples if s["doc"]["idx"] not in bad]
        assert m[f"{key}.clean_items"] == len(clean) == 4 - len(bad), task
        assert m.get(f"{key}.acc_clean") == (sum(clean) / len(clean) if clean else None) or clean == [], task
    assert metrics["random"]["random.medqa4.0shot.clean_items"] < 40  # over the whole test set, two contaminated
    table = Path(cfg.table).read_text()
    assert "· clean: " in table and "– on 0" in table  # PubMedQA: all four scored items contaminated
    cells = json.loads((tmp_path / "table.json").read_text())
    assert cells["main/BioMed-LLaMA-7B/0-shot/tiny/medqa4/clean"] == m["seed.medqa4.0shot.acc_clean"]
    details = json.loads((tmp_path / "table.details.json").read_text())
    assert details["main/BioMed-LLaMA-7B/0-shot/tiny/medqa4/clean_items"] == 2
    assert json.loads((tmp_path / "rep/tiny/manifest.json").read_text())["inputs"][str(verdicts)]


def test_generation_cells_clean_values_go_beside_the_headline():
    cfg = EvalConfig(models={"ft": EvalModel(path="x", paper_row="BioMed-LLaMA-7B", suites=["finetune"],
                                             tasks=["pubmedqa"])})
    em = "finetune.pubmedqa.0shot.exact_match"
    metrics = {"ft": {em: 0.5, f"{em}_clean": 0.4, "finetune.pubmedqa.0shot.clean_items": 26.0}}
    details: dict = {}
    cells = table_cells(cfg, metrics, details)
    key = "main/BioMed-LLaMA-7B/fine-tune/ft/pubmedqa"
    assert cells == {key: 0.5} and details == {f"{key}/clean": 0.4, f"{key}/clean_items": 26}
    assert "0.5000 (paper: 0.763) · clean: 0.4000 on 26" in render_table(cfg, metrics)
