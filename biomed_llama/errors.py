"""Errors that reach the user as one line (no traceback) with a fixed exit code."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A problem with the user's inputs or environment; printed as one line, exit code 1."""

    exit_code = 1


class ConfigError(UserError):
    """A params problem (unknown key, wrong type, impossible value); exit code 2."""

    exit_code = 2


class IntegrityError(UserError):
    """An input folder whose files do not match its manifest; exit code 3."""

    exit_code = 3


class BadRecordError(UserError):
    """A malformed input record under `on_bad_record: abort`; exit code 4."""

    exit_code = 4


class DivergedError(UserError):
    """Training met a non-finite loss or gradient norm (or weights) and stopped there; exit code 5."""

    exit_code = 5


class OutputError(UserError):
    """An output that cannot be written (disk or quota full, read-only file system, no permission); exit code 1."""

    exit_code = 1

    def __init__(self, message: str, cause: OSError | None = None):
        super().__init__(message)
        self.cause = cause
        """The OSError it stands for, so an enclosing writer can name its own output instead."""

    def __reduce__(self):  # picklable back from a worker process, with its cause
        return (OutputError, (str(self), self.cause))


# The OSErrors that are the environment's, not a bug: each becomes one line instead of a traceback.
_UNWRITABLE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
_DENIED = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def output_error(e: OSError, target: str | Path | None = None, note: str = "") -> OutputError | None:
    """The one-line OutputError for a disk-full, read-only or permission OSError (None for any other).

    `target`: the output being written (a folder written through a temporary one is named by its
    final name), else the file the OSError names. A permission error names the file it was raised
    on, which may be an input. `note` ends the line (e.g. what was cleaned up).
    """
    if e.errno in _UNWRITABLE:
        name = target or e.filename or "an output"
        return OutputError(f"cannot write {name}: {_UNWRITABLE[e.errno]}{note}", e)
    if e.errno in _DENIED:
        return OutputError(f"{e.filename or target or 'a file'}: {_DENIED[e.errno]}{note}", e)
    return None


ERROR_DIR_ENV = "BIOMED_ERROR_DIR"
"""Set by the local launcher (`launch/local.py`): where its torchrun workers leave their error line."""


def report(message: str, exit_code: int) -> int:
    """Tell the user about an error; return `exit_code`.

    Normally one line `error: …` on stderr. In a torchrun worker of the local launcher (RANK and
    BIOMED_ERROR_DIR set) the line and code go to `<dir>/rank-<RANK>.json` instead: the launcher
    prints one line for all ranks and exits with the code.
    """
    folder, rank = os.environ.get(ERROR_DIR_ENV), os.environ.get("RANK")
    if folder and rank is not None:
        tmp = os.path.join(folder, f".rank-{rank}.json.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"message": message, "exit_code": exit_code}, f)
            os.replace(tmp, os.path.join(folder, f"rank-{rank}.json"))
            return exit_code
        except OSError:
            pass  # the folder is gone or full: say it here instead
    print(f"error: {message}", file=sys.stderr)
    return exit_code
