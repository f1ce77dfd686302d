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
    seed = _bench_eval_json(tmp_path / "seed" / "gpt-neo-2.7b", "gpt-neo-2.7b", 150.0).parent.parent
    done = subprocess.run(["bash", "bench/bench_generate.sh", "--tiny", "--seed-suite-json", str(seed),
                           "--seed-suite-s-model", "biomedlm-2.7b=100"], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_generate.json").read_text())
    assert [c["cell"] for c in report["cells"]] == G.paper_plan()["cells"] and not report["skipped"]
    for c in report["cells"]:
        assert c["compared"] > 0 and c["outputs_differ"] == 0 and c["scores_differ"] == 0, c
        assert c["faithful"]["new_tokens"] > c["compared"]  # text was generated, not only EOS
    assert report["fast"] == {"batch_size": 8, "sort_by_length": True, "static_cache": True, "compile": False}
    # the 2.7B rows charged their own seed suites (a bench_eval.json, a per-model time), the LLaMA-7B rows the 7B figure
    assert report["projection"]["complete"]
    assert report["projection"]["total"]["seed_s"] == pytest.approx(3 * 409.8 + 150 + 100)
    assert report["seed_suite"]["biomedlm-2.7b"] == {"s": 100.0, "source": "--seed-suite-s-model"}
    assert "| gpt-neo-2.7b | 1 | 2.5 | measured, gpt-neo-2.7b packed on NVIDIA H200" in done.stdout
    assert "whole 54-cell table on one CPU" in done.stdout


def _bench_eval_json(path: Path, arch: str, packed_s: float, complete: bool = True, gpu: str = "NVIDIA H200") -> Path:
    """A bench_eval.json as bench/bench_eval.py writes it (only the keys the projection reads)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "bench_eval.json").write_text(json.dumps({
        "arch": arch, "params": 2_651_307_520, "packable": True,
        "summary": {"packed_s": packed_s, "packed_complete": complete, "complete": complete},
        "cards": {"packed": {"gpu": gpu}, "stock": {"gpu": gpu}}}))
    return path / "bench_eval.json"


def test_base_models_map_to_the_bench_eval_archs():
    seed_models = [n for n, m in G.paper_plan()["models"].items() if m["seed_suite"]]
    assert {n: G.model_arch(n) for n in seed_models} == {
        "llama-7b": "llama-7b", "pretrained": "llama-7b", "pmc-llama-7b": "llama-7b",
        "gpt-neo-2.7b": "gpt-neo-2.7b", "biomedlm-2.7b": "biomedlm-2.7b"}


def test_each_base_model_is_charged_its_own_seed_suite_else_the_7b_fallback(tmp_path: Path):
    """A bench_eval.json of an arch times that arch's base rows, `--seed-suite-s-model` one model; a 2.7B row with
    neither gets the 7B figure, labelled the fallback; the projection adds what each row was charged."""
    plan = G.paper_plan()
    default = (409.8, "bench/RESULTS.md (packed path, one H200)")
    _bench_eval_json(tmp_path / "a" / "gpt-neo-2.7b", "gpt-neo-2.7b", 150.0)
    _bench_eval_json(tmp_path / "a" / "biomedlm-2.7b", "biomedlm-2.7b", 120.0, gpu="NVIDIA H100 80GB HBM3")
    measured = G.measured_seed_suites(tmp_path / "a")  # a folder: its arch subfolders' files
    assert sorted(m["arch"] for m in measured) == ["biomedlm-2.7b", "gpt-neo-2.7b"]

    times = G.seed_suite_times(plan, default, measured, {})
    assert times["gpt-neo-2.7b"] == (150.0, "measured, gpt-neo-2.7b packed on NVIDIA H200 (gpt-neo-2.7b/bench_eval.json)")
    assert times["biomedlm-2.7b"][0] == 120.0 and "NVIDIA H100" in times["biomedlm-2.7b"][1]
    assert {n: times[n] for n in ("llama-7b", "pretrained", "pmc-llama-7b")} == dict.fromkeys(
        ("llama-7b", "pretrained", "pmc-llama-7b"), default)

    cells = {c: {"faithful": {"full_s": 100.0}, "fast": {"full_s": 10.0, "compile_s": 2.0}} for c in plan["cells"]}
    p = G.project(plan, cells, times, load_s=1.0)
    rows = {r["model"]: r for r in p["rows"]}
    assert rows["gpt-neo-2.7b"]["seed_s"] == 151 and rows["biomedlm-2.7b"]["seed_s"] == 121
    assert rows["pmc-llama-7b"]["seed_s"] == 410.8 and rows["instruct"]["seed_s"] == 0
    assert p["total"]["seed_s"] == pytest.approx(151 + 121 + 3 * 410.8)  # not 5 × 410.8: the 2.7B rows' own times count
    table = G.projection_table(p, "NVIDIA H200")
    assert "| gpt-neo-2.7b | 1 | 2.5 | measured, gpt-neo-2.7b packed on NVIDIA H200" in table

    # one model's own time wins; the 2.7B row with no measurement falls back to the 7B figure, labelled so
    times = G.seed_suite_times(plan, default, measured[1:], {"pmc-llama-7b": 300.0})
    assert measured[1]["arch"] == "gpt-neo-2.7b"
    assert times["pmc-llama-7b"] == (300.0, "--seed-suite-s-model") and times["llama-7b"] == default
    assert times["biomedlm-2.7b"] == (409.8, "7B fallback (biomedlm-2.7b not measured): " + default[1])
    p = G.project(plan, cells, times)
    assert p["total"]["seed_s"] == pytest.approx(150 + 300 + 3 * 409.8)


def test_seed_suite_inputs_are_checked(tmp_path: Path):
    plan = G.paper_plan()
    f = _bench_eval_json(tmp_path / "cut", "gpt-neo-2.7b", 90.0, complete=False)
    with pytest.raises(SystemExit, match="did not finish every cell"):
        G.measured_seed_suites(f)
    with pytest.raises(SystemExit, match="no bench_eval.json"):
        G.measured_seed_suites(tmp_path / "empty")
    with pytest.raises(SystemExit, match="instruct"):  # no seed suite: nothing to charge
        G.seed_suite_times(plan, (1.0, "x"), [], {"instruct": 5.0})
