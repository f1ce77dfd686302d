"""Processes a test starts, found again in the process table by a tag in their environment.

A test starts its command with `BIOMED_TEST_TAG=<fresh uuid>` in the environment; every process
descended from it inherits the tag (pool workers, the resource tracker, torchrun workers, even
ones that left its session or were re-parented to init). `tagged` lists them from /proc, so a
test checks "nothing left behind" and cleans up only what it started, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

TAG = "BIOMED_TEST_TAG"


def new_tag() -> str:
    """A fresh tag for one test's processes."""
    return uuid.uuid4().hex


def tagged(tag: str) -> list[int]:
    """Pids of the live processes (zombies excluded) whose environment holds `BIOMED_TEST_TAG=tag`."""
    needle = f"{TAG}={tag}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in env.split(b"\0") and state != "Z":
            pids.append(int(d.name))
    return sorted(pids)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid`."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def wait_until(predicate, timeout: float, poll: float = 0.2) -> bool:
    """Poll `predicate()` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def kill_tagged(tag: str) -> None:
    """SIGKILL every live process carrying `tag` (test clean-up: only what the test started)."""
    for pid in tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_tagged(cmd: list[str], cwd: Path, env: dict[str, str], tag: str, log: Path) -> subprocess.Popen:
    """Start `cmd` in a new session (its own process group, id = its pid), tagged, output to `log`."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=cwd, env={**env, TAG: tag}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
