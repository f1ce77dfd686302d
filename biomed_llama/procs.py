"""Every process the package starts dies with its parent, so a killed stage leaves nothing running.

The children are the spawned pool workers of extract and tokenize and the torchrun workers of the
training stages. Each calls `die_with_parent` first thing. Why this and not a watchdog:

- On Linux the kernel itself delivers the signal (`prctl(PR_SET_PDEATHSIG)`), at the moment the
  parent dies, whatever killed it (kill -9, the OOM killer): nothing to poll, nothing that a hung
  child could fail to run. The signal is SIGKILL: a parent that died without cleaning up will never
  collect a result, and every output is written under a temporary name, so dying mid-write loses
  nothing (a training resumes from its last complete checkpoint). A graceful stop (SIGTERM to the
  launcher or to torchrun) still reaches the workers the ordinary way, before their parent exits.
- The kernel sends it when the THREAD that started the child ends. Pool workers are started by
  the thread that submits work (the main thread here: Python's spawn pools add workers in
  `submit`), torchrun workers by the agent's main thread.
- Race: a parent that died before its child made the call is caught by comparing `os.getppid()`
  with the pid the parent passed down (`parent_pid`).
- Elsewhere (macOS) a daemon thread polls `os.getppid()` once a second: a watchdog, slower, but
  the same outcome.

The multiprocessing resource tracker needs nothing: it exits when the last holder of its pipe
(the parent and the pool workers) is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_PID_ENV = "BIOMED_PARENT_PID"
"""Set by the local launcher to its pid (it is the torchrun agent): its workers check they still have it."""
WATCHDOG_POLL_S = 1.0


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_POLL_S)
    os._exit(128 + signal.SIGKILL)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Have this process killed when its parent dies; exit at once if the parent is already gone.

    `parent_pid`: the parent's pid as the parent saw it (None: this process's parent now, which
    cannot catch a parent that died before this call).
    """
    expected = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    else:
        threading.Thread(target=_watch, args=(expected,), daemon=True, name="parent-watchdog").start()
    if os.getppid() != expected:  # the parent died before the call above took effect
        os._exit(128 + signal.SIGKILL)


def die_with_torchrun_agent() -> None:
    """In a torchrun worker: die with the agent (the local launcher passes its pid in BIOMED_PARENT_PID)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        pid = os.environ.get(PARENT_PID_ENV)
        die_with_parent(int(pid) if pid else None)
