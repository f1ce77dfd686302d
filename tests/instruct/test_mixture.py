"""Mixture weighting against the seed table, the seeded draw, byte-identical reruns, the stage's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biomed_llama.errors import BadRecordError, UserError
from biomed_llama.instruct.config import InstructSource
from biomed_llama.instruct.mixture import (
    MIXTURE_FILE, allocate, build_mixture, draw_indices, mixture_percentages, run_instruct_mix, source_shares,
)
from biomed_llama.provenance import verify

# The seed's table: source → (#Sample, printed MixtureP); epoch factors from REPRODUCTION.md.
TABLE = {
    "MedQA-USMLE": (10178, "21.45"), "MedMCQA": (182822, "25.69"), "PubMedQA": (211269, "14.84"),
    "AlpacaDataCleaned": (51760, "18.18"), "visual-med-alpaca": (54412, "19.11"), "medpalm": (24, "0.05"),
    "medpalm-cot": (19, "0.04"), "medpalm2-cot": (19, "0.04"), "mmlu-cot": (282, "0.6"), "codex-cot": (3, "0.006"),
}
EPOCHS = {"MedQA-USMLE": 3, "MedMCQA": 0.2, "PubMedQA": 0.1, "AlpacaDataCleaned": 0.5, "visual-med-alpaca": 0.5,
          "medpalm": 3, "medpalm-cot": 3, "medpalm2-cot": 3, "mmlu-cot": 3, "codex-cot": 3}


def _decimals(printed: str) -> int:
    return len(printed.split(".")[1]) if "." in printed else 0


def test_seed_table_counts_give_the_mixture_column():
    pct = mixture_percentages({k: n for k, (n, _) in TABLE.items()}, EPOCHS)
    for name, (_, printed) in TABLE.items():
        assert f"{pct[name]:.{_decimals(printed)}f}" == printed, name
    assert sum(pct.values()) == pytest.approx(100.0)


def test_proportional_allocation_gets_the_weights_to_within_one_record():
    # The grouped table's counts and factors (medpalm 3 as one row): the `proportional` alternative lands
    # on N × share to within one record.
    counts = {k: n for k, (n, _) in TABLE.items()}
    shares = source_shares(counts, EPOCHS)
    quota = allocate(150_000, shares, np.random.Generator(np.random.PCG64(0)), "proportional")
    assert sum(quota.values()) == 150_000
    assert all(abs(quota[k] - 150_000 * shares[k]) < 1 for k in quota)
    assert quota["MedQA-USMLE"] == 32174


def test_allocation_methods_sum_to_n():
    shares = {"a": 0.5, "b": 0.3333, "c": 0.1667}
    prop = allocate(7, shares, np.random.Generator(np.random.PCG64(1)), "proportional")
    assert prop == {"a": 4, "b": 2, "c": 1}
    multi = allocate(10_000, shares, np.random.Generator(np.random.PCG64(1)), "multinomial")
    assert sum(multi.values()) == 10_000 and abs(multi["a"] - 5000) < 200


def test_draw_indices_full_passes_then_distinct_remainder():
    rng = np.random.Generator(np.random.PCG64(3))
    idx = draw_indices(5, 13, rng)  # 2 full passes + 3 distinct
    assert len(idx) == 13
    assert sorted(idx[:5]) == sorted(idx[5:10]) == list(range(5))
    assert len(set(idx[10:].tolist())) == 3
    assert len(set(draw_indices(100, 40, rng).tolist())) == 40  # factor < 1: no repeats
    assert len(draw_indices(0, 0, rng)) == 0
    with pytest.raises(UserError, match="cannot draw 3 records from an instruction source with no records"):
        draw_indices(0, 3, rng)


@pytest.mark.parametrize("allocation", ["proportional", "released"])
def test_draw_is_seeded_and_matches_the_weights(params, allocation):
    params.instruct_mix.allocation = allocation
    mix_a = build_mixture(params.instruct_mix, params.readers)
    mix_b = build_mixture(params.instruct_mix, params.readers)
    assert mix_a.records == mix_b.records
    params.instruct_mix.seed = 99
    assert build_mixture(params.instruct_mix, params.readers).records != mix_a.records
    n = params.instruct_mix.n_records
    assert len(mix_a.records) == n
    for name, s in mix_a.sources.items():
        assert sum(r["source"] == name for r in mix_a.records) == s["count"]
        if allocation == "proportional":
            assert abs(s["count"] - n * s["weight_percent"] / 100) <= 1


def test_stage_outputs_are_byte_identical_across_reruns(params, tmp_path):
    metrics = run_instruct_mix(params.instruct_mix, params.readers)
    out = Path(params.instruct_mix.output)
    first = (out / MIXTURE_FILE).read_bytes()
    first_metrics = Path(params.instruct_mix.metrics).read_bytes()
    assert not verify(out)
    run_instruct_mix(params.instruct_mix, params.readers)
    assert (out / MIXTURE_FILE).read_bytes() == first
    assert Path(params.instruct_mix.metrics).read_bytes() == first_metrics
    rows = [json.loads(line) for line in first.decode().splitlines()]
    assert len(rows) == metrics["n_records"] and all(list(r) == ["source", "input", "output"] for r in rows)
    assert sum(s["count"] for s in metrics["sources"].values()) == metrics["n_records"]
    assert sum(s["percent"] for s in metrics["sources"].values()) == pytest.approx(100.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "instruct-mix" and MIXTURE_FILE in manifest["files"]
    assert any(k.endswith("train_4opt.jsonl") for k in manifest["inputs"])


def test_bad_records_skip_lists_them_and_abort_stops(params, fixtures_dir):
    params.instruct_mix.sources = params.instruct_mix.sources + [
        InstructSource(name="bad-medqa", format="medqa", paths=[str(fixtures_dir / "bad" / "medqa_bad.jsonl")], epochs=1)]
    metrics = run_instruct_mix(params.instruct_mix, params.readers)
    assert metrics["bad_records"] == 5 and metrics["sources"]["bad-medqa"]["bad_records"] == 5
    listed = [json.loads(x) for x in (Path(params.instruct_mix.output) / "bad_records.jsonl").read_text().splitlines()]
    assert [b["position"] for b in listed] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    params.instruct_mix.on_bad_record = "abort"
    with pytest.raises(BadRecordError, match="medqa_bad.jsonl:line 2: missing field 'answer_idx'"):
        run_instruct_mix(params.instruct_mix, params.readers)


def test_cli_reports_a_bad_record_in_one_line_with_exit_code_4(repo_root, tmp_path):
    bad = repo_root / "data/sample/instruct/bad/alpaca_bad.json"
    cmd = [sys.executable, "-m", "biomed_llama", "instruct-mix",
           "--set", f"instruct_mix.output={tmp_path / 'out'}", "--set", f"instruct_mix.metrics={tmp_path / 'm.json'}",
           "--set", "instruct_mix.on_bad_record=abort",
           "--set", f"instruct_mix.sources=[{{name: a, format: alpaca, paths: ['{bad}'], epochs: 1}}]"]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "alpaca_bad.json:record 2: missing field 'output'" in res.stderr
    assert not (tmp_path / "out").exists()
