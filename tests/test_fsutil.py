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


def test_the_lock_lies_beside_the_folder_and_leaves_it_alone(tmp_path):
    with folder_lock(tmp_path / "ckpt", "pretrain run") as lock:
        assert lock == tmp_path / ".ckpt.lock"
    assert not (tmp_path / "ckpt").exists()  # a refused run must not change the (DVC-tracked) folder


def test_a_symlinked_output_is_written_through(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.txt").write_text("old")
    (tmp_path / "out").symlink_to(tmp_path / "real")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("new")
    assert (tmp_path / "out").is_symlink() and sorted(p.name for p in (tmp_path / "real").iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]  # no `.out.<pid>.old.tmp` left
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    atomic_write_json(tmp_path / "link.json", {"a": 1})
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "target.json").read_text() == '{\n  "a": 1\n}\n'


def test_any_os_error_of_the_swap_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    real = os.replace

    def busy(src, dst):
        if str(dst).endswith(".old.tmp"):
            raise OSError(errno.EBUSY, "Device or resource busy", str(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(OutputError, match=rf"cannot replace {tmp_path / 'out'}: Device or resource busy"):
        with atomic_dir(tmp_path / "out"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_holding_the_working_directory_is_never_replaced(tmp_path, monkeypatch):
    from biomed_llama.errors import ConfigError

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ConfigError, match="it is or holds the working directory"):
        with atomic_dir(tmp_path):
            pass
    assert (tmp_path / "work").is_dir()


def _problems(*overrides: str, stage: str = "tokenize") -> list[str]:
    from biomed_llama.config import load_params
    from biomed_llama.fsutil import output_problems

    return output_problems(load_params(REPO / "params.yaml", list(overrides)), stage, load_params(REPO / "params.yaml"))


@pytest.mark.parametrize("output,why", [
    ("data", "holds tokenize.input (data/extracted), an input of this stage"),
    ("data/extracted/x", "lies inside tokenize.input (data/extracted), an input of this stage"),
    ("data/sample/pile/x", "lies inside inputs.pile (data/sample/pile), an input of stage extract"),
    ("models/pretrained", "is also pretrain.output (models/pretrained), an output of stage pretrain"),
    ("README.md", "is a git-tracked file"),
    ("biomed_llama", "git-tracked files (e.g. biomed_llama/"),
    (".", "it is or holds the working directory"),
])
def test_an_output_that_would_destroy_data_is_refused(output, why, monkeypatch):
    monkeypatch.chdir(REPO)
    (line,) = [p for p in _problems(f"tokenize.output={output}") if p.startswith("tokenize.output")]
    assert why in line


def test_the_pipeline_as_configured_and_an_ad_hoc_output_pass(monkeypatch, tmp_path):
    from biomed_llama.fsutil import STAGE_OF_COMMAND

    monkeypatch.chdir(REPO)
    for stage in set(STAGE_OF_COMMAND.values()):
        assert _problems(stage=stage) == [], stage
    assert _problems(f"tokenize.output={tmp_path}/tok", f"tokenize.metrics={tmp_path}/m.json") == []
    # an ad-hoc pipeline wired by --set: prepare-eval's output is evaluate's input
    assert _problems(f"eval.output={tmp_path}/eval", stage="prepare-eval") == []


def _tree_digest(root) -> dict:
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def test_replayed_overwrites_are_refused_and_change_nothing(tmp_path):
    """`launch tokenize --set tokenize.output=data` (or the checkout itself), on a scratch clone of the checkout."""
    co = tmp_path / "co"
    subprocess.run(["git", "clone", "-q", str(REPO), str(co)], check=True)
    before = _tree_digest(co)
    for output in ("data", str(co), "."):
        proc = subprocess.run([sys.executable, "-m", "biomed_llama", "launch", "tokenize", "--set",
                               f"tokenize.output={output}"], cwd=co, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: refusing to run tokenize: tokenize.output"), lines
        assert lines[0].endswith("nothing was changed")
    assert _tree_digest(co) == before
