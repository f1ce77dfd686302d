"""evaluate under faults: a model without a manifest needs the recorded `external` opt-in; a few-shot
count its pool cannot give is one ConfigError line, and the runs already done are kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from biomed_llama.errors import ConfigError, IntegrityError
from biomed_llama.eval.config import EvalModel
from biomed_llama.eval.run import evaluate
from biomed_llama.fsutil import sha256_file
from biomed_llama.provenance import verify, verify_inputs


def _cfg(prepared, tmp: Path, models: dict[str, EvalModel], **over):
    return prepared.model_copy(update={"limit": 2, "models": models, "metrics_dir": str(tmp / "metrics"), "table_metrics": str(tmp / "table.json"),
                                       "results_dir": str(tmp / "results"), "table": str(tmp / "table.md"), **over})


def test_a_model_without_manifest_needs_the_external_opt_in(prepared, eval_root, tmp_path):
    model = tmp_path / "downloaded"
    shutil.copytree(eval_root / "model", model)
    (model / "manifest.json").unlink()  # as a downloaded model, or a stage output whose manifest was deleted
    spec = dict(path=str(model), paper_row="LLaMA-7B", suites=["seed"], tasks=["medqa4"])
    cfg = _cfg(prepared, tmp_path, {"llama": EvalModel(**spec)}, shots=["zero"])
    with pytest.raises(IntegrityError) as e:
        evaluate(cfg, "demo")
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert str(e.value).startswith(f"refusing model {model}: no manifest.json") and \
        "set eval.models.llama.external: true" in str(e.value)
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "table.md").exists()  # refused before any run

    cfg = _cfg(prepared, tmp_path, {"llama": EvalModel(**spec, external=True)}, shots=["zero"])
    metrics = evaluate(cfg, "demo")
    assert set(metrics["llama"]) >= {"seed.medqa4.0shot.acc"}
    results = tmp_path / "results" / "llama"
    recorded = json.loads((results / "manifest.json").read_text())["inputs"][str(model)]
    assert recorded["external"] is True
    assert recorded["files"]["model.safetensors"]["sha256"] == sha256_file(model / "model.safetensors")
    assert verify(results) == [] and verify_inputs(results) == []
    with open(model / "config.json", "a") as f:
        f.write(" ")
    assert any("config.json" in p for p in verify_inputs(results))  # `verify --inputs` sees the change


def test_a_tampered_stage_model_is_refused(prepared, eval_root, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(eval_root / "model", model)
    with open(model / "config.json", "a") as f:
        f.write(" ")
    cfg = _cfg(prepared, tmp_path, {"m": EvalModel(path=str(model), paper_row="LLaMA-7B", external=True)})
    with pytest.raises(IntegrityError, match=r"config.json: size"):  # the opt-in never skips a manifest that is there
        evaluate(cfg, "demo")


def test_a_fewshot_count_over_the_pool_is_one_line_and_keeps_the_runs_done(prepared, eval_root, tmp_path):
    path = str(eval_root / "model")
    models = {"a": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["seed"], tasks=["medqa4"]),
              "b": EvalModel(path=path, paper_row="LLaMA-7B", suites=["seed"], tasks=["pubmedqa"])}
    # PubMedQA draws its examples from its own 30 test items less the one asked: 30 cannot be had
    fewshot = {"medqa4": 3, "medqa5": 3, "medmcqa": 10, "pubmedqa": 30}
    with pytest.raises(ConfigError) as e:
        evaluate(_cfg(prepared, tmp_path, models, fewshot=fewshot), "demo")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    assert str(e.value).startswith("eval.fewshot.pubmedqa=30: biomed_seed_pubmedqa has fewer examples than that")
    kept = {n: json.loads((tmp_path / "metrics" / f"{n}.json").read_text()) for n in "ab"}
    assert {k.rsplit(".", 1)[0] for k in kept["a"]} == {"seed.medqa4.0shot", "seed.medqa4.3shot"}
    assert {k.rsplit(".", 1)[0] for k in kept["b"]} == {"seed.pubmedqa.0shot"}  # its zero-shot run is kept
    assert "PubMedQA" in (tmp_path / "table.md").read_text()
    assert not (tmp_path / "results" / "b" / "manifest.json").exists()  # b's results are not complete

    metrics = evaluate(_cfg(prepared, tmp_path, models, fewshot={**fewshot, "pubmedqa": 1}), "demo")
    assert {k.rsplit(".", 1)[0] for k in metrics["b"]} == {"seed.pubmedqa.0shot", "seed.pubmedqa.1shot"}
    assert verify(tmp_path / "results" / "b") == []


def test_a_model_with_fewer_positions_than_max_length_is_scored_within_them(tmp_path):
    """BioMedLM's architecture (GPT-2, n_positions 1,024 < eval.max_length 2,048): the perplexity windows fit
    its positions instead of failing with an index error in the position embedding (bench/e2e.sh found it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from biomed_llama.eval import harness
    from biomed_llama.eval.config import EvalConfig
    from tests.helpers.models import DEMO_TOKENIZER

    torch.manual_seed(0)
    model_dir = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=4096, n_embd=16, n_layer=1, n_head=2, n_positions=64)).save_pretrained(model_dir)
    for f in DEMO_TOKENIZER.iterdir():
        shutil.copy2(f, model_dir / f.name)
    cfg = EvalConfig(device="cpu", dtype="float32", batch_size=2, max_length=2048)
    args = harness.hf_model_args(cfg, str(model_dir))
    assert args["max_length"] == 64 and harness.model_positions(str(model_dir)) == 64
    from lm_eval.api.instance import Instance

    doc = [Instance("loglikelihood_rolling", None, ("word " * 300,), 0)]
    (ll,) = harness.load_lm(args, "stock").loglikelihood_rolling(doc)
    assert ll < 0
    # The packed backend packs GPT-2 (issue 23) within the same 64 positions, to the same figure.
    packed = harness.load_lm(args, "packed", token_budget=256)
    assert packed.packable and packed.loglikelihood_rolling(doc)[0] == pytest.approx(ll, rel=1e-6)
