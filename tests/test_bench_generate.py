"""bench/bench_generate.py: the paper profile's generation runs and seed runs derived from configs/paper.yaml, the
projection of the whole table, and the CPU smoke of the whole script (integration tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bench_generate as G


def test_the_plan_is_the_paper_profiles_eval_section():
    plan = G.paper_plan()
    models = plan["models"]
    assert sorted(n for n, m in models.items() if m["seed_suite"]) == \
        ["biomedlm-2.7b", "gpt-neo-2.7b", "llama-7b", "pmc-llama-7b", "pretrained"]  # five base models
    assert sorted(n for n, m in models.items() if "instruct" in m["suites"]) == ["instruct", "llama-7b-instruct"]
    assert {n: m["members"] for n, m in models.items() if "finetune" in m["suites"]} == {
        "ft-medqa": 3, "ft-medmcqa": 1, "ft-pubmedqa": 1,  # finetune.tasks.medqa.seeds: three seed runs
        "llama-7b-ft-medqa": 3, "llama-7b-ft-medmcqa": 1, "llama-7b-ft-pubmedqa": 1}
    assert models["instruct"]["gen_cells"] == ["instruct.medqa4", "instruct.medmcqa", "instruct.pubmedqa"]
    assert plan["cells"] == ["finetune.medmcqa", "finetune.medqa4", "finetune.pubmedqa",
                             "instruct.medmcqa", "instruct.medqa4", "instruct.pubmedqa"]
    assert models["llama-7b"]["other_suites"] == ["modern"]  # not one of the 54 cells: not counted
    assert (plan["batch_size"], plan["max_new_tokens"]) == (4, 128)  # main.py:158, 177


def test_the_seed_suite_time_is_read_from_the_results():
    assert G.seed_suite_seconds(None) == (409.8, "bench/RESULTS.md (packed path, one H200)")
    assert G.seed_suite_seconds(300.0) == (300.0, "--seed-suite-s")


def test_the_projection_adds_the_seed_suites_and_each_seed_runs_generation():
    plan = G.paper_plan()
    cells = {c: {"faithful": {"full_s": 100.0}, "fast": {"full_s": 10.0, "compile_s": 2.0}} for c in plan["cells"]}
    p = G.project(plan, cells, seed_s=60.0, load_s=1.0)
    rows = {r["model"]: r for r in p["rows"]}
    assert rows["ft-medqa"]["gen_faithful_s"] == 3 * 100 + 3 * 1 and rows["ft-medqa"]["gen_fast_s"] == 3 * 12 + 3
    assert rows["instruct"]["gen_fast_s"] == 3 * 12 + 1 and rows["pretrained"]["seed_s"] == 61
    # 5 seed suites; generation: 2 instruct × 3 cells + 2 × (3 + 1 + 1) fine-tune runs = 16 cell runs, 12 model folders
    assert p["total"]["seed_s"] == 5 * 61
    assert p["total"]["gen_faithful_s"] == 16 * 100 + 12 and p["total"]["gen_fast_s"] == 16 * 12 + 12
    assert p["complete"] and p["met"]
    del cells["finetune.medqa4"]
    assert G.project(plan, cells, 60.0)["missing_cells"] == ["finetune.medqa4"]


@pytest.mark.integration
def test_cpu_smoke_runs_every_cell_and_float32_outputs_agree(tmp_path: Path, repo_root: Path):
    """`bench/bench_generate.sh --tiny`: every generation cell of the paper profile, batch 4 and the fast setting
    (batch 8, longest first, static cache), outputs identical in float32, the table's projection printed."""
    done = subprocess.run(["bash", "bench/bench_generate.sh", "--tiny"], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_generate.json").read_text())
    assert [c["cell"] for c in report["cells"]] == G.paper_plan()["cells"] and not report["skipped"]
    for c in report["cells"]:
        assert c["compared"] > 0 and c["outputs_differ"] == 0 and c["scores_differ"] == 0, c
        assert c["faithful"]["new_tokens"] > c["compared"]  # text was generated, not only EOS
    assert report["fast"] == {"batch_size": 8, "sort_by_length": True, "static_cache": True, "compile": False}
    assert report["projection"]["complete"] and report["projection"]["total"]["seed_s"] == 5 * 409.8
    assert "whole 54-cell table on one CPU" in done.stdout
