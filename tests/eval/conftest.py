"""Shared fixtures of the eval tests: a tiny random LLaMA with the demo tokenizer, extracted Pile
test shards (Parquet + manifest, as the extract stage writes them) and a prepared eval folder.
All session-scoped: built once, read by every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biomed_llama.eval.config import BenchmarkFiles, EvalConfig, EvalModel, GenerationConfig
from biomed_llama.testing import write_extracted
from tests.helpers.models import make_tiny_model

# Text long enough that 64-token rolling windows roll several times per document.
PUBMED_TEXTS = {
    "pubmed_abstracts": [
        "Background: Hypertension is common in older adults. Methods: We enrolled 412 patients "
        "and measured blood pressure at baseline and after 12 weeks of treatment with lisinopril. "
        "Results: Systolic pressure fell by 14 mmHg. Conclusions: Treatment was effective.",
        "Sepsis remains a leading cause of death in intensive care units.  We review early "
        "antibiotic therapy,\nfluid resuscitation and vasopressor use.\n",
        "Short abstract.",
    ],
    "pubmed_central": [
        "Introduction\n\nIron deficiency anemia affects millions of children worldwide. In this "
        "cohort study we followed 1,204 infants from birth to two years of age, recording "
        "hemoglobin, ferritin and dietary intake every three months. Anemia was defined by WHO "
        "criteria. Multivariable models adjusted for maternal education and income.\n\nResults\n\n"
        "The prevalence of anemia at 12 months was 18 percent.",
        "Methods: randomised trial of doxycycline versus placebo in 88 adults with rosacea.",
    ],
}


def make_extracted(root: Path) -> Path:
    """Write `root/extracted/<slug>/test/part-00000.parquet` + manifest, the extract contract."""
    tree = {(slug, "test"): [texts] for slug, texts in PUBMED_TEXTS.items()}
    return write_extracted(root / "extracted", tree, source="test.jsonl.zst")


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory, repo_root) -> Path:
    """A workspace: tiny model in `model/`, extracted shards, prepared eval folder `eval/`."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = tmp_path_factory.mktemp("evalws")
    make_tiny_model(root / "model", repo_root / "data/sample/tokenizer")
    for seed in (1, 2):  # a task fine-tune's seed runs: one HF folder per seed
        make_tiny_model(root / "ft-seeds" / f"seed-{seed}", repo_root / "data/sample/tokenizer", seed=seed)
    make_extracted(root)
    return root


def base_config(root: Path, repo: Path, **over) -> EvalConfig:
    """An EvalConfig on the committed fixtures, the workspace's shards and tiny model, CPU float32."""
    s = repo / "data/sample/eval"
    bench = BenchmarkFiles(
        medqa4_test=str(s / "medqa/US/4_options/phrases_no_exclude_test.jsonl"),
        medqa4_train=str(s / "medqa/US/4_options/phrases_no_exclude_train.jsonl"),
        medqa5_test=str(s / "medqa/US/test.jsonl"), medqa5_train=str(s / "medqa/US/train.jsonl"),
        medmcqa_dev=str(s / "medmcqa/dev.json"), medmcqa_train=str(s / "medmcqa/train.json"),
        pubmedqa_labeled=str(s / "pubmedqa/ori_pqal.json"), pile_extracted=str(root / "extracted"))
    kw = dict(benchmarks=bench, output=str(root / "eval"), dtype="float32", device="cpu", batch_size=4,
              max_length=48, generation=GenerationConfig(max_new_tokens=8), progress=False,
              models={"tiny": EvalModel(path=str(root / "model"), paper_row="BioMed-LLaMA-7B", suites=["seed"])},
              metrics_dir=str(root / "metrics/eval"), table_metrics=str(root / "metrics/table.json"), results_dir=str(root / "reports/eval"),
              table=str(root / "reports/table.md"), figure=str(root / "reports/loss.png"),
              contamination=str(root / "contamination"))  # absent unless a test makes it: full-set cells
    kw.update(over)
    return EvalConfig(**kw)


@pytest.fixture(scope="session")
def prepared(eval_root, repo_root) -> EvalConfig:
    """The prepared eval folder (prepare-eval run once) and the config that made it."""
    from biomed_llama.eval.prepare import prepare_eval

    cfg = base_config(eval_root, repo_root)
    prepare_eval(cfg)
    return cfg


@pytest.fixture(scope="session")
def pipeline(prepared, eval_root):
    """One `evaluate` run over the tiny model (seed suite 0/few-shot, plus one task of every other
    suite, a folder of two seed runs, a reference model without a path), limited to the first 8
    documents per task; returns (config, metrics)."""
    from biomed_llama.eval.run import evaluate

    path = str(eval_root / "model")
    curve = eval_root / "pretrain-loss.tsv"
    curve.write_text("step\tloss\n" + "".join(f"{i}\t{5 - i / 10:.3f}\n" for i in range(1, 21)))
    cfg = prepared.model_copy(update={"limit": 8, "loss_plots": {"pretrain": str(curve)}, "models": {
        "tiny": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["seed"]),
        "tiny-modern": EvalModel(path=path, paper_row="LLaMA-7B", suites=["modern"], tasks=["medmcqa"]),
        "tiny-instruct": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["instruct", "instruct_letters"],
                                   tasks=["pubmedqa"]),
        "tiny-ft-medqa4": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["finetune"], tasks=["medqa4"]),
        "tiny-ft-seeds": EvalModel(path=str(eval_root / "ft-seeds"), paper_row="LLaMA-7B", suites=["finetune"],
                                   tasks=["medqa4"]),
        "neo": EvalModel(path=None, paper_row="GPT-Neo (2.7B)", suites=["seed"]),
    }})
    metrics = evaluate(cfg, "test")
    return cfg, metrics


@pytest.fixture(scope="session")
def sp_model(prepared, eval_root) -> Path:
    """A tiny LLaMA whose tokenizer is SentencePiece-style (`tests.helpers.tokenizer.llama_sp_tokenizer`), trained on the prepared
    benchmark texts so that every eval text tokenizes into pieces, not bytes."""
    import json

    texts = []
    for f in sorted(Path(prepared.output).glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            texts += [d.get("text", ""), d.get("question", ""), d.get("context", "")] + d.get("options", [])
    texts += ["Question: Answer: Abstract: yes no maybe Yes No Maybe"] * 50
    from tests.helpers.tokenizer import llama_sp_tokenizer

    folder = llama_sp_tokenizer(eval_root / "sp_tokenizer", [t for t in texts if t], vocab_size=900)
    return make_tiny_model(eval_root / "sp_model", tokenizer=folder, manifest=False)


@pytest.fixture(scope="session", params=["demo", "sentencepiece"])
def any_model(request, eval_root) -> Path:
    """The tiny model with the demo's byte-level BPE tokenizer, then with the SentencePiece-style one."""
    return eval_root / "model" if request.param == "demo" else request.getfixturevalue("sp_model")
