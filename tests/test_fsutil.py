"""fsutil: an unwritable output is one line naming it (the temporary copy removed); the folder lock."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from biomed_llama.errors import OutputError, UserError
from biomed_llama.fsutil import atomic_dir, atomic_write_json, folder_lock
from tests.helpers import REPO


def test_a_full_disk_inside_a_folder_write_names_the_final_folder(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("previous run")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the manifest written last inside the folder hits it
    with pytest.raises(OutputError) as e:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "part.bin").write_bytes(b"x" * 10)
            atomic_write_json(tmp / "manifest.json", {})
    assert str(e.value).startswith(f"cannot write {tmp_path / 'out'}: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    assert (tmp_path / "out" / "old.txt").read_text() == "previous run"  # the old copy untouched


def test_other_os_errors_stay_what_they_are(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "out"):
            open(tmp_path / "missing" / "x")


def test_a_held_folder_is_refused_naming_the_holder(tmp_path):
    with folder_lock(tmp_path / "ckpt", "pretrain run"):
        with pytest.raises(UserError, match=rf"ckpt is in use by another pretrain run \(pid {os.getpid()} on "):
            with folder_lock(tmp_path / "ckpt", "pretrain run"):
                pass
    with folder_lock(tmp_path / "ckpt", "pretrain run") as lock:  # released at the end of the block
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")


@pytest.mark.integration
def test_a_killed_holder_releases_the_lock(tmp_path):
    code = (f"from biomed_llama.fsutil import folder_lock\nimport time\n"
            f"with folder_lock({str(tmp_path)!r}, 'run'):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=rf"\(pid {holder.pid} on "):
            with folder_lock(tmp_path, "run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with folder_lock(tmp_path, "run"):  # kill -9 leaves no stale lock
        pass
