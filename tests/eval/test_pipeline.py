"""The evaluate stage's outputs (flat metrics, full results, per-sample logs, table), report, and
the plan / config / integrity rules around them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from biomed_llama.config import load_params
from biomed_llama.errors import ConfigError, IntegrityError, UserError
from biomed_llama.eval.config import EvalConfig, EvalModel
from biomed_llama.eval.harness import Run, plan_runs, run_one
from biomed_llama.eval.run import evaluate, read_loss_tsv, report, smooth


def test_no_results_from_lm_eval_is_one_user_error(monkeypatch):
    # lm-eval returns None on every rank but 0: what `evaluate` started as several processes gets.
    import lm_eval

    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: None)
    with pytest.raises(UserError, match="biomed_seed_medqa4: lm-eval returned no results: run `evaluate` as one process"):
        run_one(None, None, Run("m", "seed", "medqa4", 0))


def test_the_environment_report_is_made_once_a_process(prepared, eval_root, monkeypatch):
    # lm-eval adds torch's environment report (subprocesses: pip list, nvidia-smi, ...) to every run's results
    from torch.utils import collect_env

    from biomed_llama.eval import harness

    made = []
    monkeypatch.setattr(collect_env, "get_pretty_env_info", lambda: made.append(1) or "the report")
    lm = harness.load_lm(harness.hf_model_args(prepared, str(eval_root / "model")), "packed")
    tm = harness.task_manager(Path(prepared.output) / "tasks")
    results = [run_one(lm, tm, Run("m", "seed", task, 0), limit=2) for task in ("medqa4", "pubmedqa")]
    assert len(made) == 1
    assert [r["pretty_env_info"] for r in results] == ["the report"] * 2 and results[1]["results"]


def test_plan_covers_models_suites_and_shots():
    cfg = EvalConfig(models={
        "p": EvalModel(path="m", paper_row="BioMed-LLaMA-7B", suites=["seed", "instruct"]),
        "ft": EvalModel(path="f", paper_row="LLaMA-7B", suites=["finetune"], tasks=["medmcqa"])})
    runs = plan_runs(cfg)
    seed = {(r.task, r.shots) for r in runs if r.suite == "seed"}
    assert seed == {("pubmed_a", 0), ("pubmed_c", 0), ("medqa4", 0), ("medqa5", 0), ("medmcqa", 0), ("pubmedqa", 0),
                    ("medqa4", 3), ("medqa5", 3), ("medmcqa", 10), ("pubmedqa", 1)}
    assert {(r.task, r.shots) for r in runs if r.suite == "instruct"} == {("medqa4", 0), ("medmcqa", 0), ("pubmedqa", 0)}
    letters = plan_runs(cfg.model_copy(update={"models": {"i": EvalModel(path="m", paper_row="LLaMA-7B",
                                                                         suites=["instruct_letters"])}}))
    assert {(r.task, r.shots) for r in letters} == {("medqa4", 0), ("medmcqa", 0), ("pubmedqa", 0)}
    assert [r for r in runs if r.model == "ft"] == [Run("ft", "finetune", "medmcqa", 0)]
    only_few = cfg.model_copy(update={"shots": ["few"]})
    assert all(r.shots > 0 for r in plan_runs(only_few) if r.suite == "seed")


def test_metrics_files_are_flat_and_complete(pipeline):
    cfg, metrics = pipeline
    tiny = json.loads(Path(cfg.metrics_dir, "tiny.json").read_text())
    assert tiny == metrics["tiny"]
    assert all(isinstance(v, float) for v in tiny.values())
    for t in ("pubmed_a", "pubmed_c"):
        assert {f"seed.{t}.0shot.{m}" for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")} <= set(tiny)
    for t, k in cfg.fewshot.items():
        assert {f"seed.{t}.0shot.acc", f"seed.{t}.{k}shot.acc", f"seed.{t}.{k}shot.acc_norm"} <= set(tiny)
    assert set(metrics["tiny-modern"]) == {"modern.medmcqa.0shot.acc", "modern.medmcqa.0shot.acc_norm",
                                           "modern.medmcqa.10shot.acc", "modern.medmcqa.10shot.acc_norm"}
    assert set(metrics["tiny-ft-medqa4"]) == {"finetune.medqa4.0shot.exact_match"}
    assert set(metrics["tiny-instruct"]) == {"instruct.pubmedqa.0shot.exact_match", "instruct_letters.pubmedqa.0shot.acc",
                                             "instruct_letters.pubmedqa.0shot.acc_norm"}
    runs = [r for r in plan_runs(cfg) if r.model not in ("neo", "tiny-ft-seeds")]  # no path; seed folders
    for r in runs:
        folder = Path(cfg.results_dir, r.model)
        full = json.loads((folder / f"{r.key}.results.json").read_text())
        assert r.lm_eval_task in full["results"]
        n_docs = json.loads((Path(cfg.output) / f"{r.task}.test.jsonl").read_text().splitlines()[0])["n_docs"]
        assert len((folder / f"{r.key}.samples.jsonl").read_text().splitlines()) == min(cfg.limit, n_docs)
    assert set(json.loads(Path(cfg.results_dir, "tiny", "timing.json").read_text())) == \
        {r.key for r in runs if r.model == "tiny"}


def test_table_sets_paper_values_beside_measured_cells(pipeline):
    cfg, metrics = pipeline
    table = Path(cfg.table).read_text()
    ppl = metrics["tiny"]["seed.pubmed_a.0shot.word_perplexity"]
    assert f"| BioMed-LLaMA-7B | 0-shot | tiny | {ppl:.4f} (paper: 15.7774) |" in table
    acc4, acc5 = metrics["tiny"]["seed.medqa4.3shot.acc"], metrics["tiny"]["seed.medqa5.3shot.acc"]
    assert f"| BioMed-LLaMA-7B | few-shot | tiny | – | – | {acc4:.4f} (3) / {acc5:.4f} (3) (paper: 0.3668 / 0.3229) |" in table
    assert "| BioMed-LLaMA-7B | fine-tune | tiny-ft-medqa4 | – | – | " in table and "(paper: 0.4072±0.012 / –)" in table
    seeds = metrics["tiny-ft-seeds"]
    em = "finetune.medqa4.0shot.exact_match"
    assert f"| LLaMA-7B | fine-tune | tiny-ft-seeds | – | – | {seeds[em]:.4f}±{seeds[em + '_std']:.4f} (n=2) / – " \
           "(paper: 0.3946±0.008 / –)" in table
    em_i = metrics["tiny-instruct"]["instruct.pubmedqa.0shot.exact_match"]  # generation + exact match, as released
    assert ("| BioMed-LLaMA-7B | instructed | tiny-instruct | not measured (paper: 0.487) | not measured (paper: 0.4475) "
            f"| {em_i:.4f} (paper: 0.757) |") in table
    assert "| LLaMA-7B | instructed | — | not measured (paper: 0.4391) |" in table
    assert "| GPT-Neo (2.7B) | 0-shot | — | not measured (paper: 19.1207) |" in table  # path null: not evaluated
    assert "| Random | - | random | – | – | 0.2500 / 0.2000 (paper: 0.25 / 0.5) | 0.2500 (paper: 0.25) |" in table
    assert "NOT the paper's method" in table and "| LLaMA-7B | few-shot | tiny-modern |" in table
    assert "`test` profile" in table
    cells = json.loads(Path(cfg.table_metrics).read_text())
    assert cells["main/LLaMA-7B/fine-tune/tiny-ft-seeds/medqa4"] == seeds[em]
    assert cells["main/Random/-/random/medqa5"] == pytest.approx(0.2)
    assert Path(cfg.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # evaluate draws the loss figure too


def test_seed_runs_are_evaluated_each_and_averaged(pipeline):
    cfg, metrics = pipeline
    m = metrics["tiny-ft-seeds"]
    em = "finetune.medqa4.0shot.exact_match"
    per_seed = [m[f"seed-1/{em}"], m[f"seed-2/{em}"]]
    mean = sum(per_seed) / 2
    assert m[em] == pytest.approx(mean) and m[f"{em}_n"] == 2
    assert m[f"{em}_std"] == pytest.approx(((per_seed[0] - mean) ** 2 + (per_seed[1] - mean) ** 2) ** 0.5)
    for seed in ("seed-1", "seed-2"):
        assert (Path(cfg.results_dir) / "tiny-ft-seeds" / seed / f"{em.rsplit('.', 1)[0]}.results.json").is_file()
    assert "neo" not in metrics and not (Path(cfg.metrics_dir) / "neo.json").exists()


def test_report_rerenders_table_and_draws_loss_curves(pipeline, tmp_path):
    cfg, _ = pipeline
    plots = {}
    for stage, n in (("pretrain", 50), ("finetune", 20)):
        p = tmp_path / f"{stage}.tsv"
        p.write_text("step\tloss\tlr\n" + "".join(f"{i}\t{5 - i / n:.4f}\t1e-5\n" for i in range(n)))
        plots[stage] = str(p)
    before = Path(cfg.table).read_text()
    rcfg = cfg.model_copy(update={"loss_plots": plots, "figure": str(tmp_path / "loss.png"),
                                  "table": str(tmp_path / "table.md")})
    out = report(rcfg, "test")
    assert out["stages"] == ["pretrain", "finetune"]
    assert Path(rcfg.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(rcfg.table).read_text() == before
    assert read_loss_tsv(Path(plots["finetune"]))[1][:2] == [5.0, 4.95]
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    none = rcfg.model_copy(update={"loss_plots": {"pretrain": str(tmp_path / "absent.tsv")},
                                   "figure": str(tmp_path / "none.png")})
    assert report(none, "demo")["stages"] == []
    assert Path(none.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the stage's output exists all the same


def test_evaluate_refuses_tampered_inputs_and_missing_models(prepared, tmp_path):
    bad = tmp_path / "eval"
    shutil.copytree(prepared.output, bad)
    with open(bad / "medqa4.test.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(IntegrityError, match="medqa4.test.jsonl"):
        evaluate(prepared.model_copy(update={"output": str(bad)}), "demo")
    missing = prepared.model_copy(update={"models": {"x": EvalModel(path=str(tmp_path / "nope"), paper_row="LLaMA-7B")}})
    with pytest.raises(UserError, match="eval.models.x: .* not a HF model folder"):
        evaluate(missing, "demo")


def test_prepared_folder_renders_runnable_tasks(prepared):
    out = Path(prepared.output)
    counts = json.loads((out / "manifest.json").read_text())["extra"]["counts"]
    assert counts["medqa4.test"] == 40 and counts["pubmedqa.test"] == 30 and counts["pubmed_c.test"] == 2
    yaml_text = (out / "tasks/seed/medqa4.yaml").read_text()
    assert "@" not in yaml_text and str(out / "medqa4.test.jsonl") in yaml_text
    utils = (out / "tasks/seed/utils.py").read_text()
    assert f"sampler_medqa4 = v03_sampler({str(out / 'medqa4.train.jsonl')!r}, 42)" in utils
    assert "sampler_pubmedqa = v03_sampler(None, 42)" in utils


def test_eval_params_are_validated(repo_root, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text((repo_root / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="eval.bogus: unknown key"):
        load_params(p, ["eval.bogus=1"])
    with pytest.raises(ConfigError, match="eval.models.x.suites"):
        load_params(p, ["eval.models={x: {path: m, paper_row: LLaMA-7B, suites: [zero]}}"])
    with pytest.raises(ConfigError, match="eval.batch_size"):
        load_params(p, ["eval.batch_size=big"])


def test_cli_errors_are_one_line(repo_root, tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "biomed_llama", *args], cwd=repo_root,
                              capture_output=True, text=True, timeout=120)

    # (a missing file under inputs.benchmarks: one outside it is a params error, exit 2)
    out = run("prepare-eval", "--set", "eval.benchmarks.medqa4_test=data/sample/eval/none.jsonl",
              "--set", f"eval.output={tmp_path}/eval")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == ["error: benchmark file data/sample/eval/none.jsonl not found"]
    out = run("report", "--set", f"eval.metrics_dir={tmp_path}/nothing")
    assert out.returncode == 1 and "run `biomed-llama evaluate` first" in out.stderr and "Traceback" not in out.stderr
