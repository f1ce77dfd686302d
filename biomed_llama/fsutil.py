"""Atomic file and folder writes: an output is either complete under its final name or absent."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from biomed_llama.errors import OutputError, UserError, output_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# How a failed write ends the line of its error: the temporary copy is gone, the old output untouched.
CLEANED = "; nothing was left half-written (the previous copy, if any, is untouched)"


@contextlib.contextmanager
def _unwritable_as_error(target: Path) -> Iterator[None]:
    """A disk-full, read-only or permission OSError becomes one OutputError line naming `target` (the
    outermost writer's: a manifest written inside a temporary folder is named by the folder's final name)."""
    try:
        yield
    except OutputError as e:
        if e.cause is None:
            raise
        raise output_error(e.cause, target, CLEANED) or e from None
    except OSError as e:
        err = output_error(e, target, CLEANED)
        if err is None:
            raise
        raise err from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename.

    A full or read-only disk is one OutputError line naming `path` (the temporary file removed).
    """
    path = Path(path)
    with _unwritable_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # mkstemp creates 0600; give the file the mode a plain open() would have.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (sorted keys, 2-space indent, trailing newline) atomically, so reruns are byte-identical."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it replaces `final`, on error it is removed.

    The swap is two renames (old → trash, tmp → final), so a reader never sees a half-written
    folder under the final name; a crash between them leaves the old copy in the trash name,
    which the next run cleans up. A full or read-only disk met while writing (here or in a worker
    process) is one OutputError line naming `final`.
    """
    final = Path(final)
    with _unwritable_as_error(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        with _unwritable_as_error(final):
            yield tmp
            if final.exists():
                trash = final.parent / f".{final.name}.{os.getpid()}.old.tmp"
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (an flock on `folder/.lock`) for the `with` block.

    The kernel releases it when the holder exits or dies (kill -9 included), so a stale lock never
    blocks a rerun. The holder writes its pid and host into the file; a second holder is refused at
    once with one UserError line naming them (`what` says what the folder is for).
    """
    import fcntl
    import socket

    folder = Path(folder)
    with _unwritable_as_error(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
            raise UserError(f"{folder} is in use by another {what} ({holder}); wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield folder / LOCK_FILE
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
