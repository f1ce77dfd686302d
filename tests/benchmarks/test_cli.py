"""instruct-mix and prepare-eval read benchmark files through the same readers, so the real CLI
refuses a file the same way in both and reads it identically once `readers.medmcqa_cop` says how."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MC_ONLY = "eval.models={m: {path: models/none, paper_row: LLaMA-7B, suites: [modern]}}"


# The test files live in tmp_path, outside the input roots DVC tracks: widen the roots to `/` so
# the params check (`biomed_llama.inputs`) lets them through (no task train sets, which must lie in
# per-task folders under inputs.instruct); what these tests pin is the reading.
ROOTS = ("--set", "inputs.instruct=/", "--set", "inputs.benchmarks=/", "--set", "finetune.tasks={}")


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run `python -m biomed_llama ARGS` from the repository root (the demo params, demo fixtures)."""
    return subprocess.run([sys.executable, "-m", "biomed_llama", *args, *ROOTS], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def instruct_mix(medmcqa: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    """instruct-mix with one source, the MedMCQA file `medmcqa`, each record drawn once (`proportional`: one pass)."""
    n = sum(1 for line in medmcqa.read_text().splitlines() if line.strip()) or 1
    source = f"{{name: m, format: medmcqa, epochs: 1, paths: [{medmcqa}]}}"
    return cli("instruct-mix", "--set", f"instruct_mix.sources=[{source}]", "--set", f"instruct_mix.n_records={n}",
               "--set", "instruct_mix.allocation=proportional",
               "--set", f"instruct_mix.output={out}/instruct", "--set", f"instruct_mix.metrics={out}/instruct_mix.json",
               *more)


def prepare_eval(medmcqa: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    """prepare-eval with `medmcqa` as the MedMCQA test set, no MedMCQA pool, multiple-choice suites only."""
    return cli("prepare-eval", "--set", f"eval.benchmarks.medmcqa_dev={medmcqa}", "--set",
               "eval.benchmarks.medmcqa_train=null", "--set", f"eval.output={out}/eval", "--set", MC_ONLY, *more)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The CLI's single stderr line (no traceback), without the `error: ` prefix."""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0][len("error: "):]


@pytest.fixture()
def hf_without_zero(tmp_path) -> Path:
    """A MedMCQA file in the HF convention (cop 0–3) in which no answer happens to be (A): cop 0 never occurs."""
    path = tmp_path / "dev_hf.json"
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "opa": f"a{i}", "opb": f"b{i}", "opc": f"c{i}",
             "opd": f"d{i}", "cop": 1 + i % 3, "exp": None} for i in range(9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_0_3_file_without_cop_0_is_refused_alike_then_read_alike(hf_without_zero, tmp_path):
    mix, prep = instruct_mix(hf_without_zero, tmp_path), prepare_eval(hf_without_zero, tmp_path)
    want = (f"{hf_without_zero}: cannot tell the MedMCQA cop convention (only 1–3 occur); "
            "set readers.medmcqa_cop to 0-3 or 1-4")
    assert (mix.returncode, one_line_error(mix)) == (prep.returncode, one_line_error(prep)) == (1, want)
    assert not (tmp_path / "instruct").exists() and not (tmp_path / "eval").exists()

    setting = ("--set", "readers.medmcqa_cop=0-3")
    mix, prep = instruct_mix(hf_without_zero, tmp_path, *setting), prepare_eval(hf_without_zero, tmp_path, *setting)
    assert mix.returncode == 0 and prep.returncode == 0, mix.stderr + prep.stderr
    rows = [json.loads(line) for line in (tmp_path / "instruct/mixture.jsonl").read_text().splitlines()]
    by_mix = {r["input"].split("### Question: ")[1].split("\n")[0]: r["output"][0] for r in rows}  # "B) b1" -> "B"
    docs = [json.loads(line) for line in (tmp_path / "eval/medmcqa.test.jsonl").read_text().splitlines()]
    by_eval = {d["question"]: "ABCD"[d["label"]] for d in docs}
    assert by_mix == by_eval and len(by_eval) == 9
    assert sorted(set(by_eval.values())) == ["B", "C", "D"]  # cop 1–3 read as 0–3: (B)–(D), nothing shifted


@pytest.mark.parametrize("content,why", [
    ("", ": empty file, no records"),
    ("id,question,cop\nq1,Why?,2\n",
     ":line 1: not JSON lines (one object per line expected; found not valid JSON (Expecting value))"),
])
def test_an_empty_or_non_json_medmcqa_file_says_so_in_both_commands(tmp_path, content, why):
    path = tmp_path / "dev.json"
    path.write_text(content)
    for out in (instruct_mix(path, tmp_path), prepare_eval(path, tmp_path)):
        assert (out.returncode, one_line_error(out)) == (1, f"{path}{why}")
