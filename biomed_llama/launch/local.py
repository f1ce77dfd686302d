"""Local mode of `launch`: torchrun's agent runs in this process; a failed stage is one line with its own exit code.

`python -m torch.distributed.run` on its own turns every worker failure into exit 1 under a
`ChildFailedError` traceback, whatever the worker said. Here torchrun's `run` is called in the
launcher's process instead (the same agent, rendezvous and workers as the command line
`torchrun_command` prints):

- the agent is this process, so signals from DVC or the shell reach it as they would reach an
  exec'd torchrun, and its workers, which die with their parent (`biomed_llama.procs`), die with
  it: kill -9 of the launcher's process group leaves nothing behind (the workers run in sessions
  of their own, out of reach of a process-group kill);
- each worker that stops on a UserError writes its line and exit code into a folder named by
  BIOMED_ERROR_DIR instead of printing it (`errors.report`); the launcher prints one of them —
  the lowest rank's real error, a rank stopped by a signal only when none failed on its own — and
  exits with that rank's code (3 for an integrity error, 143 after a SIGTERM checkpoint, …);
- a worker that died without a line (a crash with its traceback above, the OOM killer) gives
  `error: STAGE: rank R exited with code C` (or `was killed by SIGNAL`) and that code (128+N).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from biomed_llama.errors import ERROR_DIR_ENV, UserError
from biomed_llama.procs import PARENT_PID_ENV

if TYPE_CHECKING:  # torch loads only when a stage is launched
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

# Lazy imports: torch's launcher is imported where a stage is launched: `launch --dry-run` and Slurm runs never load
# it.

TORCHRUN_MODULE = "torch.distributed.run"
# torchrun's own ERROR log line per failed worker ("failed (exitcode: 3) local_rank: 0 …") repeats
# what the one `error:` line says.
_QUIET_LOGGERS = ("torch.distributed.elastic.multiprocessing.api",)


class StageFailed(UserError):
    """A training stage that ended with an error; exit code = the failing rank's own (1 if none)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code or 1


def read_errors(folder: Path) -> dict[int, dict]:
    """{rank: {"message", "exit_code"}} of the errors the workers recorded in `folder`."""
    out = {}
    for p in folder.glob("rank-*.json"):
        try:
            out[int(p.stem.removeprefix("rank-"))] = json.loads(p.read_text())
        except (ValueError, OSError):
            continue  # a rank killed while writing; another rank's line (or the exit codes) will do
    return out


def pick_error(errors: dict[int, dict]) -> tuple[str, int] | None:
    """The line and exit code to report: the lowest rank that failed on its own (exit code < 128),
    else the lowest rank stopped by a signal (a checkpoint-and-exit on SIGTERM: 128 + N)."""
    if not errors:
        return None
    own = [r for r in sorted(errors) if errors[r]["exit_code"] < 128]
    rank = own[0] if own else min(errors)
    return errors[rank]["message"], int(errors[rank]["exit_code"])


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def failure_line(stage: str, failures: Mapping[int, ProcessFailure]) -> tuple[str, int]:
    """For workers that left no line: the first failed rank's exit code, or the signal that killed it (128 + N)."""
    rank = min(failures)
    code = int(failures[rank].exitcode)
    if code < 0:
        return f"{stage}: rank {rank} was killed by {_signal_name(-code)} (out of memory?)", 128 - code
    return f"{stage}: rank {rank} exited with code {code} (its traceback is above)", code


ERROR_DIR_PREFIX = "biomed-launch-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clean_stale_error_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove the error folders (`biomed-launch-<pid>-…` under the temp dir) of launchers that are gone: a
    launcher killed with -9 cannot remove its own. Folders of live launchers and of other users stay; return
    the removed ones."""
    removed = []
    for p in Path(root or tempfile.gettempdir()).glob(f"{ERROR_DIR_PREFIX}*"):
        pid = p.name[len(ERROR_DIR_PREFIX) :].split("-", 1)[0]
        try:
            mine = p.is_dir() and not p.is_symlink() and p.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def _worker_env(extra: dict[str, str]) -> Iterator[Path]:
    """The environment torchrun hands the workers (it copies this process's), and the error folder (named by
    this launcher's pid, so that the next launcher removes it if this one is killed before it can)."""
    clean_stale_error_dirs()
    folder = Path(tempfile.mkdtemp(prefix=f"{ERROR_DIR_PREFIX}{os.getpid()}-"))
    saved = {k: os.environ.get(k) for k in (*extra, ERROR_DIR_ENV, PARENT_PID_ENV)}
    os.environ.update({**extra, ERROR_DIR_ENV: str(folder), PARENT_PID_ENV: str(os.getpid())})
    try:
        yield folder
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(folder, ignore_errors=True)


def run_torchrun(argv: list[str], env: dict[str, str], stage: str) -> int:
    """Run `python -m torch.distributed.run ARGS…` (`argv`, as `torchrun_command` builds it) with this
    process as the agent; 0 when every worker finished, else raise StageFailed with one line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(argv[argv.index(TORCHRUN_MODULE) + 1 :])
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with _worker_env(env) as folder:
        try:
            run(args)
            return 0
        except ChildFailedError as e:
            fallback = failure_line(stage, e.failures)
        except SignalException as e:
            fallback = (f"{stage}: stopped by {e.sigval.name}", 128 + int(e.sigval))
        line, code = pick_error(read_errors(folder)) or fallback
    raise StageFailed(line, code)
