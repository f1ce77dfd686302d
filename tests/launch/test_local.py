"""`launch` in local mode: torchrun's agent in the launcher (one rank: the stage's own process), one error line
with the stage's exit code, no worker outliving a killed launcher, one run at a time per checkpoint folder.

The integration tests run the real `biomed-llama launch pretrain` on a tiny model (CPU, gloo) and
find the processes they started by a tag in their environment (`tests.helpers.procs`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from biomed_llama.launch.local import failure_line, pick_error, read_errors
from biomed_llama.train.checkpoint import list_checkpoints
from tests.helpers import REPO
from tests.helpers import procs as P
from tests.helpers import train as H


def test_the_reported_error_is_the_lowest_rank_that_failed_on_its_own():
    errors = {0: {"message": "stopped by signal 15 at step 3", "exit_code": 143},
              2: {"message": "bad record", "exit_code": 4}, 1: {"message": "integrity", "exit_code": 3}}
    assert pick_error(errors) == ("integrity", 3)
    assert pick_error({0: errors[0], 3: {"message": "stopped", "exit_code": 143}}) == (errors[0]["message"], 143)
    assert pick_error({}) is None


def test_a_worker_that_left_no_line_is_named_with_its_code_or_signal():
    assert failure_line("pretrain", {1: SimpleNamespace(exitcode=1), 0: SimpleNamespace(exitcode=-9)}) == (
        "pretrain: rank 0 was killed by SIGKILL (out of memory?)", 137)
    line, code = failure_line("finetune", {0: SimpleNamespace(exitcode=5)})
    assert code == 5 and line.startswith("finetune: rank 0 exited with code 5")


def test_error_files_of_the_workers_are_read_back(tmp_path, monkeypatch):
    from biomed_llama.errors import ERROR_DIR_ENV, report

    monkeypatch.setenv(ERROR_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    assert report("refusing input x", 3) == 3
    (tmp_path / "rank-0.json").write_text("{not json")  # a rank killed mid-write is skipped
    assert read_errors(tmp_path) == {1: {"message": "refusing input x", "exit_code": 3}}


def _workspace(tmp: Path, ranks: int = 1, **pretrain) -> tuple[Path, dict]:
    tokens = H.make_tokens(tmp / "tokens", n_docs=400)
    raw = {**H.tiny_params(tmp, tokens, **pretrain), "launch": {"nproc_per_node": ranks}}
    return H.write_params_file(tmp / "params.yaml", raw), raw


def _launch(params: Path) -> list[str]:
    return [sys.executable, "-m", "biomed_llama", "launch", "pretrain", "--params", str(params)]


@pytest.mark.integration
@pytest.mark.parametrize("ranks", [1, 2], ids=["one-rank", "torchrun-2"])
def test_an_error_inside_torchrun_is_one_line_with_the_stage_exit_code(tmp_path, ranks):
    # two ranks: rank 0 names the bad file, rank 1 only that rank 0 refused; the launcher prints rank 0's.
    # One rank: no torchrun, the stage's own process prints its line (the same line and code)
    params, raw = _workspace(tmp_path, ranks=ranks, max_steps=4)
    meta = tmp_path / "tokens" / "pubmed_abstracts" / "train" / "meta.json"
    good = meta.read_bytes()
    meta.write_bytes(good + b" ")  # tampered after its manifest was written: an integrity error, exit 3
    out = subprocess.run(_launch(params), cwd=REPO, env=H.env_for_subprocess(), capture_output=True, text=True,
                         timeout=240)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert out.returncode == 3, out.stderr
    assert len(errors) == 1 and "refusing input" in errors[0] and "meta.json" in errors[0], out.stderr
    assert "Traceback" not in out.stderr and "ChildFailedError" not in out.stderr, out.stderr
    assert not Path(raw["pretrain"]["output"]).exists() and not H.run_dirs(tmp_path / "ckpt")  # nothing written
    meta.write_bytes(good)
    again = subprocess.run(_launch(params), cwd=REPO, env=H.env_for_subprocess(), capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr
    assert (Path(raw["pretrain"]["output"]) / "manifest.json").is_file()


@pytest.mark.integration
@pytest.mark.parametrize("ranks", [1, 2], ids=["one-rank", "torchrun-2"])
def test_one_run_per_checkpoint_folder_and_nothing_outlives_a_killed_launcher(tmp_path, ranks):
    # enough steps that the first run is still training when it is frozen (a tiny model runs ~100 steps/s)
    params, raw = _workspace(tmp_path, ranks=ranks, max_steps=1500, checkpoint_every=20, log_every=50)
    env, tag = H.env_for_subprocess(), P.new_tag()
    first = P.start_tagged(_launch(params), REPO, env, tag, tmp_path / "first.log")
    try:
        # a complete checkpoint (a `step-*.tmp` still being written would not be resumed from)
        assert P.wait_until(lambda: len(H.run_dirs(tmp_path / "ckpt")) == 1
                            and bool(list_checkpoints(H.run_dirs(tmp_path / "ckpt")[0])), 180), \
            (tmp_path / "first.log").read_text()
        # freeze the first run where it is (holding its lock), so it cannot finish during the checks below
        for pid in P.tagged(tag):
            os.kill(pid, signal.SIGSTOP)
        # a second run beside it: refused at once, one line naming the first's rank-0 worker
        second = subprocess.run(_launch(params), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        (line,) = [ln for ln in second.stderr.splitlines() if ln.startswith("error: ")]
        holder = int(re.search(r"in use by another pretrain run \(pid (\d+) on ", line).group(1))
        assert holder in P.tagged(tag)
        # torchrun: rank 0's worker holds it, not the agent (the launcher); one rank: the launcher became the stage
        assert (holder != first.pid) if ranks > 1 else (holder == first.pid)
        # kill -9 of the launcher's process group (the workers run in sessions of their own)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        assert P.wait_until(lambda: not P.tagged(tag), 15), f"left running: {P.tagged(tag)}"
        assert not Path(raw["pretrain"]["output"]).exists()  # the killed worker did not go on to export
    finally:
        P.kill_tagged(tag)
    # the rerun is not blocked by the dead run's lock, resumes from its checkpoint and finishes
    again = subprocess.run(_launch(params), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout + again.stderr
    assert (Path(raw["pretrain"]["output"]) / "manifest.json").is_file()
