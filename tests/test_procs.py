"""`procs.die_with_parent`: a child dies with its parent, and exits at once if the parent is already gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO
from tests.helpers import procs as P


def test_a_child_whose_parent_already_died_exits_at_once():
    code = "from biomed_llama.procs import die_with_parent; die_with_parent(os.getppid() + 1_000_000); print('alive')"
    out = subprocess.run([sys.executable, "-c", "import os; " + code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 128 + signal.SIGKILL and "alive" not in out.stdout


@pytest.mark.integration
def test_a_child_dies_with_its_parent(tmp_path):
    # parent: starts a child that ties itself to it, says the child's pid, then waits to be killed
    child = ("import os, time; from biomed_llama.procs import die_with_parent; "
             "die_with_parent(int(os.environ['PPID_'])); print('ready', flush=True); time.sleep(600)")
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        c = subprocess.Popen([sys.executable, "-c", {child!r}], env={{**os.environ, "PPID_": str(os.getpid())}},
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert c.stdout.readline() == "ready\\n"
        print(c.pid, flush=True)
        time.sleep(600)
    """)
    tag = P.new_tag()
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, env={**os.environ, P.TAG: tag},
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child_pid = int(proc.stdout.readline())
        assert child_pid in P.tagged(tag)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only; the child is in a session of its own
        proc.wait(30)
        assert P.wait_until(lambda: not P.tagged(tag), 10), f"left running: {P.tagged(tag)}"
    finally:
        P.kill_tagged(tag)
