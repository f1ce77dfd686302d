"""A bad params value or option, given to the real CLI, is one line `error: …` on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "rows_per_shard=0": (["extract", "--set", "extract.rows_per_shard=0"], "extract.rows_per_shard"),
    "on_bad_record=maybe": (["extract", "--set", "extract.on_bad_record=maybe"], "extract.on_bad_record"),
    "unknown key": (["extract", "--set", "extract.rows_per_sharrd=5"], "extract.rows_per_sharrd: unknown key"),
    "bad remote": (["extract", "--set", "extract.remote=ftp://host/pile"], "remote must be"),
    "subsets not a list": (["extract", "--set", "extract.subsets=7"], "extract.subsets"),
    "shard index out of range": (["extract", "--num-shards", "2", "--shard-index", "2"], "--shard-index"),
    "zero workers": (["extract", "--workers", "0"], "--workers must be >= 1"),
    "zero tokenize workers": (["tokenize", "--workers", "0"], "--workers must be >= 1"),
    "merge of zero shards": (["extract-merge", "--num-shards", "0"], "--num-shards must be >= 1"),
    "input outside its root": (["extract", "--set", "extract.val=[elsewhere/val.jsonl.zst]"],
                               "extract.val: elsewhere/val.jsonl.zst is not under inputs.pile (data/sample/pile)"),
    "task file outside its folder": (["instruct-mix", "--set", "finetune.tasks.medqa.path=data/sample/instruct/x.json"],
                                     "finetune.tasks.medqa.path: data/sample/instruct/x.json is not under inputs.instruct/medqa"),
}


@pytest.fixture(scope="module")
def results(repo_root: Path, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run every case's CLI at once (each in its own empty folder): start-up dominates, so run them side by side."""
    procs = {}
    for case, (args, _) in CASES.items():
        cwd = tmp_path_factory.mktemp("cli")
        cmd = [sys.executable, "-m", "biomed_llama", *args, "--params", str(repo_root / "params.yaml")]
        procs[case] = (subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), cwd)
    out = {}
    for case, (proc, cwd) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), cwd)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_param_is_one_line_and_exit_2(case: str, results):
    out, cwd = results[case]
    needle = CASES[case][1]
    assert out.returncode == 2, out.stderr
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not list(cwd.iterdir())  # nothing was written
