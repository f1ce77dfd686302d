"""bench/e2e.sh's CPU smoke (TINY=1): the paper profile, composed with the size overlays, through `dvc repro
evaluate` in a scratch git + DVC copy, a no-op second repro, `verify` on every output and the pretrain
kill-and-resume check; the same script is issue 23's one-command GPU run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration


def test_e2e_cpu_smoke_passes_every_check(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OUT": str(out), "WORK_DIR": str(work)}
    run = subprocess.run(["bash", str(REPO / "bench/e2e.sh")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1700)
    summary = (out / "e2e/summary.txt").read_text() if (out / "e2e/summary.txt").is_file() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "checks: PASS" in summary
    # every stage of the paper profile ran, each with a row of the table
    for stage in ("extract", "tokenize", "pretrain", "instruct-mix", "finetune-instruct", "finetune-task@medqa",
                  "finetune-instruct-base", "finetune-task-base@pubmedqa", "prepare-eval", "evaluate"):
        assert f"| {stage} |" in summary, stage
    assert "resumed weights == uninterrupted weights" in (out / "e2e/resume.log").read_text()
    table = (out / "e2e/table.md").read_text()
    assert "paper-cpu-smoke" in table and "GPT-Neo" in table and "PMC-LLaMA" in table
    assert sorted(p.name for p in (out / "e2e").iterdir()) == sorted(
        ["environment.txt", "inputs.json", "repro.log", "repro2.log", "verify.log", "resume.log", "summary.txt",
         "table.md"])  # at most 8 files come back from a device call
