"""The results table renders every one of the seed's 54 cells, measured or not, and gathers seed runs."""

from __future__ import annotations

import re

import pytest

from biomed_llama.eval.config import EvalConfig, EvalModel
from biomed_llama.eval.table import paper_cell_count, render_table, table_cells

# The seed document's two tables, typed from it: (model, method) → the row's numbers in column order
# (PubMed-A, PubMed-C, USMLE 4, USMLE 5, MedMCQA, PubMedQA; instructed: USMLE 4, MedMCQA, PubMedQA).
SEED_MAIN = {
    ("Random", "-"): ["0.25", "0.5", "0.25", "0.33"],
    ("GPT-Neo (2.7B)", "0-shot"): ["19.1207", "20.8701", "0.2781", "0.2412", "0.2570", "0.5640"],
    ("BioMedLM (2.7B)", "0-shot"): ["15.6959", "18.6799", "0.2993", "0.2624", "0.2744", "0.5520"],
    ("LLaMA-7B", "0-shot"): ["20.1107", "29.0583", "0.3339", "0.2742", "0.2933", "0.7520"],
    ("PMC-LLaMA-7B", "0-shot"): ["36.8191", "39.5381", "0.3441", "0.2883", "0.2850", "0.6640"],
    ("BioMed-LLaMA-7B", "0-shot"): ["15.7774", "20.9322", "0.3535", "0.3032", "0.2921", "0.6160"],
    ("LLaMA-7B", "few-shot"): ["0.3661", "0.3174", "0.2991", "0.713"],
    ("BioMed-LLaMA-7B", "few-shot"): ["0.3668", "0.3229", "0.3007", "0.702"],
    ("LLaMA-7B", "fine-tune"): ["0.3946±0.008", "0.4994", "0.764"],
    ("BioMed-LLaMA-7B", "fine-tune"): ["0.4072±0.012", "0.5357", "0.763"],
}
SEED_INSTRUCTED = {
    ("LLaMA-7B", "instructed"): ["0.4391", "0.4236", "0.744"],
    ("BioMed-LLaMA-7B", "instructed"): ["0.487", "0.4475", "0.757"],
}


def _row(table: str, model: str, method: str) -> str:
    lines = [ln for ln in table.splitlines() if ln.startswith(f"| {model} | {method} |")]
    assert len(lines) == 1, (model, method, lines)
    return lines[0]


def _numbers(cell_text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", cell_text)]


def test_every_seed_cell_is_rendered_without_any_measurement():
    cfg = EvalConfig(models={})
    table = render_table(cfg, {})
    assert sum(len(v) for v in SEED_MAIN.values()) + sum(len(v) for v in SEED_INSTRUCTED.values()) == 54
    assert paper_cell_count() == 54
    found = 0
    for seed in (SEED_MAIN, SEED_INSTRUCTED):
        for (model, method), values in seed.items():
            row = _row(table, model, method)
            papers = [_numbers(c) for c in re.findall(r"\(paper: ([^)]*)\)", row)]
            got = [x for p in papers for x in p]
            want = [float(x) for v in values for x in v.split("±")]
            assert got == want, (model, method)
            found += len(values)
            assert row.count("not measured") == len(papers)  # nothing measured: every paper cell says so
    assert found == 54


def test_measured_cells_join_their_rows_and_extra_rows_follow(tmp_path):
    cfg = EvalConfig(models={
        "p": EvalModel(path="x", paper_row="BioMed-LLaMA-7B", suites=["seed"]),
        "neo": EvalModel(path="y", paper_row="GPT-Neo (2.7B)", suites=["seed"]),
        "b-ft": EvalModel(path="z", paper_row="LLaMA-7B", suites=["finetune"], tasks=["medqa4"]),
        "b-ft2": EvalModel(path="w", paper_row="LLaMA-7B", suites=["finetune"], tasks=["pubmedqa"]),
    })
    em = "finetune.medqa4.0shot.exact_match"
    metrics = {
        "p": {"seed.medqa4.0shot.acc": 0.31, "seed.medqa4.3shot.acc": 0.33},
        "neo": {"seed.medqa4.0shot.acc": 0.27, "seed.medqa4.3shot.acc": 0.29},
        "b-ft": {em: 0.40, f"{em}_std": 0.01, f"{em}_n": 3.0},
        "b-ft2": {"finetune.pubmedqa.0shot.exact_match": 0.7},
    }
    table = render_table(cfg, metrics, "paper")
    assert "0.3100 / not measured" not in table  # a column's half: "–", not "not measured"
    assert "| BioMed-LLaMA-7B | 0-shot | p | not measured (paper: 15.7774) |" in table
    assert "0.3100 / – (paper: 0.3535 / 0.3032)" in _row(table, "BioMed-LLaMA-7B", "0-shot")
    assert "0.2700 / – (paper: 0.2781 / 0.2412)" in _row(table, "GPT-Neo (2.7B)", "0-shot")
    ft = _row(table, "LLaMA-7B", "fine-tune")
    assert "| b-ft, b-ft2 |" in ft and "0.4000±0.0100 (n=3) / – (paper: 0.3946±0.008 / –)" in ft
    assert "0.7000 (paper: 0.764)" in ft
    # GPT-Neo few-shot has no row in the seed: it follows the seed's rows, without a paper value
    lines = table.split("## Instruction tuning")[0].splitlines()
    extra = [i for i, ln in enumerate(lines) if ln.startswith("| GPT-Neo (2.7B) | few-shot | neo |")]
    assert extra and extra[0] > max(i for i, ln in enumerate(lines) if ln.startswith("| BioMed-LLaMA-7B | fine-tune"))
    assert "0.2900 (3)" in lines[extra[0]] and "paper" not in lines[extra[0]]
    cells = table_cells(cfg, metrics)
    assert cells["main/LLaMA-7B/fine-tune/b-ft+b-ft2/medqa4"] == 0.40
    assert cells["main/LLaMA-7B/fine-tune/b-ft+b-ft2/medqa4/std"] == 0.01
    assert "`paper` profile" in table


def test_reserved_model_names_are_refused():
    with pytest.raises(ValueError, match="taken by the table"):
        EvalConfig(models={"random": EvalModel(path="x", paper_row="Random")})


@pytest.mark.parametrize("split,given,says", [
    ("validation", "prompt", ["validation split (a correction", "prompt alone (a correction"]),
    ("test", "prompt_and_target", ["test split as released", "prompt + gold answer + </s> as released"]),
])
def test_the_table_says_which_generation_choices_made_its_cells(split, given, says):
    gen = {"medmcqa_split": split, "finetune_input": given}
    cfg = EvalConfig(models={}, generation=gen, benchmarks={"medmcqa_test": "t.json"} if split == "test" else {})
    note = [ln for ln in render_table(cfg, {}, "paper").splitlines() if ln.startswith("Fine-tune and instructed cells:")]
    assert len(note) == 1 and all(s in note[0] for s in says), note


def test_a_drifted_environment_evaluates_and_the_table_says_so(prepared, eval_root, tmp_path, monkeypatch, repo_root):
    """Issue 23, item 4: the GPU machine's torch is not the lock's. `evaluate` still runs, its manifest records
    the torch that ran, and the table's header names the drift and the outputs it touched; the model folder,
    made in an environment matching the lock, is counted apart."""
    import json
    from pathlib import Path

    import torch

    from biomed_llama import provenance
    from biomed_llama.eval.run import evaluate

    lock = tmp_path / "env.lock"  # pins exactly this environment: the fixtures' model folder matches it
    lock.write_text("".join(f"{n}=={v}\n" for n, v in provenance.packages().items()))
    monkeypatch.setenv("BIOMED_LOCK", str(lock))
    locked_torch = provenance.packages()["torch"]
    model = tmp_path / "model"
    from tests.helpers.models import make_tiny_model

    make_tiny_model(model, repo_root / "data/sample/tokenizer")
    installed = {**provenance.packages(), "torch": "2.11.0+cu130"}
    monkeypatch.setattr(provenance, "packages", lambda: installed)
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    cfg = prepared.model_copy(update={
        "limit": 3, "random_baseline": False, "metrics_dir": str(tmp_path / "metrics"),
        "table_metrics": str(tmp_path / "table.json"), "results_dir": str(tmp_path / "rep"),
        "table": str(tmp_path / "table.md"), "figure": str(tmp_path / "loss.png"),
        "models": {"tiny-instruct": EvalModel(path=str(model), paper_row="BioMed-LLaMA-7B", suites=["instruct"],
                                              tasks=["pubmedqa"])}})
    evaluate(cfg, "test")  # no refusal
    env = json.loads((tmp_path / "rep/tiny-instruct/manifest.json").read_text())["environment"]
    assert env["torch"] == env["packages"]["torch"] == "2.11.0+cu130"
    drift = f"torch: locked {locked_torch}, installed 2.11.0+cu130"
    assert env["lock"]["drift"] == [drift]
    table = Path(cfg.table).read_text()
    header = table.split("| Model |")[0]
    assert "**Environment differs from the lock**: 1 of 3 outputs" in header  # results; the model and data/eval match
    assert f"- against `{lock}`: {drift}. Outputs: `{tmp_path / 'rep/tiny-instruct'}` (evaluate)" in header
    assert str(model) not in header

    monkeypatch.undo()  # the same outputs read in the lock's environment: only the recorded drift counts
    monkeypatch.setenv("BIOMED_LOCK", str(lock))
    assert "1 of 3 outputs" in render_table(cfg, {"tiny-instruct": {"x": 1.0}})
    manifest = tmp_path / "rep/tiny-instruct/manifest.json"
    data = json.loads(manifest.read_text())
    del data["environment"]["lock"]["drift"]  # a manifest of an earlier version: compared with the unchanged lock
    manifest.write_text(json.dumps(data))
    assert f"- against `{lock}`: {drift}." in render_table(cfg, {"tiny-instruct": {"x": 1.0}})
    data["environment"]["packages"]["torch"] = locked_torch
    manifest.write_text(json.dumps(data))
    assert "Environment: all 3 outputs behind these cells" in render_table(cfg, {"tiny-instruct": {"x": 1.0}})
