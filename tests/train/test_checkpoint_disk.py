"""A checkpoint that cannot be written (disk full, read-only) is one error line with exit code 1, in process
and under the local launcher's torchrun; no complete checkpoint is faked and the rerun recovers."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from biomed_llama.errors import OutputError
from biomed_llama.train.checkpoint import SAVES_FILE
from tests.helpers import REPO
from tests.helpers import train as H
from tests.helpers.disk import remount, tmpfs


def _raw(tmp: Path, ckpt: Path, **over) -> dict:
    tokens = H.make_tokens(tmp / "tokens", n_docs=40)
    raw = H.tiny_params(tmp, tokens, max_steps=4, checkpoint_every=2, **over)
    raw["pretrain"]["checkpoint_dir"] = str(ckpt)
    return raw


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_an_injected_enospc_in_a_dcp_write_is_one_output_error(tmp_path, monkeypatch, async_save):
    from torch.distributed.checkpoint import FileSystemWriter

    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    raw = _raw(tmp_path, tmp_path / "ckpt", checkpoint_async=async_save)

    def full(self, plan, planner):  # what DCP's file writer meets on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(FileSystemWriter, "write_data", full)
        with pytest.raises(OutputError) as e:
            run_pretrain(PretrainParams.of(H.validate(raw)))
    (run,) = H.run_dirs(tmp_path / "ckpt")
    assert str(e.value) == (f"cannot write {run / 'step-00000002'}: no space left on device; step-00000002.tmp is "
                            "incomplete and never resumed from (the last complete checkpoint stays)")
    assert e.value.exit_code == 1 and H.run_checkpoints(tmp_path / "ckpt") == []
    assert not Path(raw["pretrain"]["output"]).exists()
    run_pretrain(PretrainParams.of(H.validate(raw)))  # the disk has room again: the rerun clears the .tmp and finishes
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt")] == [2, 4]
    assert sorted(p.name for p in run.iterdir()) == [SAVES_FILE, "step-00000002", "step-00000004"]


@pytest.mark.parametrize("free", [0, 10**9], ids=["full", "room"])
def test_a_short_zip_write_is_a_full_disk_only_when_the_disk_has_no_room(tmp_path, monkeypatch, free):
    """torch.save can meet ENOSPC as a RuntimeError of its zip writer with no OSError behind it (seen on a full
    tmpfs): that is the full-disk line when the disk has no room left, else DCP's own exception stands."""
    import shutil
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException

    from biomed_llama.train import checkpoint as C

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - free, free))
    short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    final = tmp_path / "run" / "step-00000002"
    final.parent.mkdir()
    failure = CheckpointException("write failed", {0: (short, traceback.StackSummary())})
    expected = OutputError if free == 0 else CheckpointException
    with pytest.raises(expected) as e:
        with C._disk_errors(final):
            raise failure
    if free == 0:
        assert str(e.value).startswith(f"cannot write {final}: no space left on device; step-00000002.tmp")
    other = CheckpointException("write failed", {0: (RuntimeError("some other failure"), traceback.StackSummary())})
    with pytest.raises(CheckpointException):
        with C._disk_errors(final):
            raise other


@pytest.mark.integration
def test_a_full_checkpoint_disk_under_launch_is_one_line_and_exit_1(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        raw = _raw(tmp_path, disk / "ckpt")
        raw["launch"] = {"nproc_per_node": 1}
        params = H.write_params_file(tmp_path / "params.yaml", raw)
        cmd = [sys.executable, "-m", "biomed_llama", "launch", "pretrain", "--params", str(params)]
        out = subprocess.run(cmd, cwd=REPO, env=H.env_for_subprocess(), capture_output=True, text=True, timeout=300)
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
        assert out.returncode == 1, out.stderr[-3000:]
        assert len(errors) == 1 and "no space left on device" in errors[0] and "step-00000002" in errors[0], out.stderr
        assert "Traceback" not in out.stderr and "CheckpointException" not in out.stderr, out.stderr[-3000:]
        assert H.run_checkpoints(disk / "ckpt") == [] and not Path(raw["pretrain"]["output"]).exists()
        remount(disk, "rw,size=64m")
        again = subprocess.run(cmd, cwd=REPO, env=H.env_for_subprocess(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert [s for s, _ in H.run_checkpoints(disk / "ckpt")] == [2, 4]
        assert (Path(raw["pretrain"]["output"]) / "manifest.json").is_file()
