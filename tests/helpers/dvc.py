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


def copy_checkout(dst: Path) -> Path:
    """Copy the files git tracks (and untracked, not ignored ones) into `dst`, commit them there; return `dst`."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "snapshot"], dst)
    return dst
