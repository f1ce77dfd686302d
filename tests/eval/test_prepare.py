"""prepare-eval through the real CLI: few-shot pools are explicit params, the Pile test split is read
only when perplexity is asked for, and each refusal is one line with its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MC_ONLY = "eval.models={m: {path: models/none, paper_row: LLaMA-7B, suites: [modern, instruct]}}"


def prepare_eval(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`biomed-llama prepare-eval` on the demo params (run from the repo root), writing into `out`."""
    args = [a for o in (f"eval.output={out}", *overrides) for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "biomed_llama", "prepare-eval", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def error_line(out: subprocess.CompletedProcess) -> str:
    """The CLI's single stderr line, without the `error: ` prefix."""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0][len("error: "):]


def test_an_unset_pool_that_few_shot_needs_is_one_error_naming_the_key(tmp_path):
    out = prepare_eval(tmp_path / "eval", "eval.benchmarks.medqa4_train=null")
    assert out.returncode == 2
    assert error_line(out) == ("eval.benchmarks.medqa4_train: not set, but the seed suite's 3-shot medqa4 run "
                               "draws its examples from it (the task's train file)")
    assert not (tmp_path / "eval").exists()


def test_multiple_choice_only_needs_neither_the_pile_nor_unused_pools(tmp_path):
    out = prepare_eval(tmp_path / "eval", MC_ONLY, f"eval.benchmarks.pile_extracted={tmp_path}/no-extract",
                       "eval.benchmarks.medqa4_train=null")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "eval"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["extra"]["counts"]) == {"medqa4.test", "medqa5.test", "medqa5.train", "medmcqa.test",
                                                "medmcqa.train", "pubmedqa.test"}
    assert not list(folder.glob("pubmed_*")) and not list(folder.glob("tasks/seed/pubmed_*.yaml"))
    assert not any("no-extract" in i for i in manifest["inputs"])
    # the stock CLI asking for few-shot medqa4 is refused by its sampler, naming the key
    utils = (folder / "tasks/seed/utils.py").read_text()
    assert "sampler_medqa4 = v03_sampler(None, 42, missing='eval.benchmarks.medqa4_train')" in utils


def test_perplexity_asked_for_needs_a_verified_extract(tmp_path):
    none = tmp_path / "no-extract"
    out = prepare_eval(tmp_path / "eval", f"eval.benchmarks.pile_extracted={none}")
    assert out.returncode == 3
    # the folder is missing, and the line says so (not "no manifest.json")
    assert error_line(out).startswith(f"refusing input {none}: {none}: no such folder (looked in ")


def test_prepare_eval_counts_the_dropped_duplicates_in_its_manifest(eval_root, repo_root, tmp_path):
    """Under `readers.duplicates: drop` an evaluation set keeps one copy of an item given twice, and
    prepare-eval's manifest lists each dropped copy (file and line), so the drop is never silent."""
    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.eval.prepare import prepare_eval as run_prepare
    from tests.eval.conftest import base_config

    cfg = base_config(eval_root, repo_root)
    lines = Path(cfg.benchmarks.medmcqa_dev).read_text().splitlines()
    doubled = lines + lines[:2]
    dev = tmp_path / "dev.json"
    dev.write_text("\n".join(doubled) + "\n")
    cfg = cfg.model_copy(update={"output": str(tmp_path / "eval"),
                                 "benchmarks": cfg.benchmarks.model_copy(update={"medmcqa_dev": str(dev)})})
    counts = run_prepare(cfg, ReadersConfig(duplicates="drop"))
    manifest = json.loads((tmp_path / "eval/manifest.json").read_text())
    assert counts["medmcqa.test"] == len(lines)
    dropped = manifest["extra"]["dropped_duplicates"]
    assert [d.split(": ")[0] for d in dropped] == [f"{dev}:line {len(lines) + 1}", f"{dev}:line {len(lines) + 2}"]
