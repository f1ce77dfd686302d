"""A git + DVC copy of the checkout (what a user clones) and a runner for commands inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

DVC = Path(sys.executable).with_name("dvc")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with the venv's bin first on PATH (the stages call `biomed-llama`); assert success if `ok`."""
    env = {**os.environ, **GIT_ENV, "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


# What a run of the pipeline leaves in the checkout outside git's ignore list: DVC's record of the run, the
# metrics, plots and reports it writes and the Slurm logs. A scratch copy starts without them, as a fresh
# clone does, so a test sees the same copy whatever ran in this checkout before (`make demo`, another tier).
RUN_RECORDS = ("dvc.lock", "metrics", "plots", "reports", "logs")


def checkout_files() -> list[str]:
    """The files a copy of the checkout holds: every tracked file, and the untracked, not ignored ones that
    are not a run's records (`RUN_RECORDS`: an untracked dvc.lock or metrics file comes from a run here)."""
    def ls(*args: str) -> set[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, capture_output=True, check=True).stdout
        return set(filter(None, out.decode().split("\0")))

    untracked = {f for f in ls("--others", "--exclude-standard") if f.split("/")[0] not in RUN_RECORDS}
    return sorted(ls("--cached") | untracked)


def copy_files(dst: Path) -> Path:
    """Copy the checkout's files (`checkout_files`) into `dst`, without making it a repository; return `dst`."""
    for rel in checkout_files():
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def copy_checkout(dst: Path) -> Path:
    """Copy the checkout's files (`checkout_files`) into `dst` and commit them there; return `dst`."""
    copy_files(dst)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "snapshot"], dst)
    return dst
