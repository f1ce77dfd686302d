"""A small tmpfs for disk-full and read-only cases (root only: a test skips with the reason elsewhere)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """Mount a tmpfs of `size` (mount's syntax, e.g. `128k`) at `path` for the block; skip the test without root."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; the injected-error tests cover the outcome")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    """Change a mounted tmpfs's options, e.g. `ro` or `rw,size=16m`."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)
