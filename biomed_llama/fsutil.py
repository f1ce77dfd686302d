"""Atomic file and folder writes, and the one check of where a stage may write.

An output is either complete under its final name or absent (`atomic_dir`, `atomic_write_*`). Before a
stage touches anything, `check_stage_outputs` refuses (exit 2) an output that would overwrite what it must
not: an input of the stage, another stage's output or raw input, the checkout, git-tracked files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.errors import ConfigError, OutputError, UserError, output_error


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
def _any_os_error_as_output_error(target: Path, action: str) -> Iterator[None]:
    """Every OSError of an operation on the output itself (make, rename, replace) becomes one OutputError line:
    a mount point (EBUSY), a folder another process holds, a vanished parent are the environment's, not bugs."""
    try:
        yield
    except OSError as e:
        err = output_error(e, target, CLEANED)
        if err is None:
            err = OutputError(f"cannot {action} {target}: {e.strerror or e}{CLEANED}", e)
        raise err from None


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


def _write_through(path: str | Path) -> Path:
    """The path a write replaces: a symlinked output is written through (its target replaced, the link kept),
    never renamed away. Refuses (exit 2) a path that is or holds the working directory or a `.git`."""
    path = Path(path)
    real = os.path.realpath(path)
    problem = _holds_checkout(real)
    if problem:
        raise ConfigError(f"refusing to write {path}: {problem}; nothing was changed")
    return Path(real) if path.is_symlink() else path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename.

    A full or read-only disk is one OutputError line naming `path` (the temporary file removed). A symlink
    at `path` is written through: its target gets the new bytes.
    """
    path = _write_through(path)
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


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: JSON has no such numbers (`NaN` is not JSON),
    and a metrics file must stay readable by every JSON parser (DVC's included)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (sorted keys, 2-space indent, trailing newline) atomically, so reruns are byte-identical.

    A non-finite float is written as null (`finite_json`), never as `NaN` / `Infinity`."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it replaces `final`, on error it is removed.

    The swap is two renames (old → trash, tmp → final), so a reader never sees a half-written
    folder under the final name; a crash between them leaves the old copy in the trash name,
    which the next run cleans up. A full or read-only disk met while writing (here or in a worker
    process) is one OutputError line naming `final`, and so is any OSError of the swap itself (a
    mount point cannot be renamed: EBUSY). A symlinked `final` is written through: the folder it
    points to is replaced, the link stays. A `final` that is or holds the working directory or a
    `.git` is refused before anything is touched.
    """
    named = Path(final)
    final = _write_through(named)
    if os.path.ismount(final):
        raise OutputError(
            f"cannot replace {named}: it is a mount point, and an output folder is replaced whole; "
            f"name a folder inside it"
        )
    with _unwritable_as_error(named), _any_os_error_as_output_error(named, "create a folder beside"):
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        with _unwritable_as_error(named):
            yield tmp
        with _unwritable_as_error(named), _any_os_error_as_output_error(named, "replace"):
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


def lock_path(folder: str | Path) -> Path:
    """Where the lock of `folder` lives: `<parent>/.<name>.lock`, beside the folder, not in it.

    The folder is a DVC output (a training stage's checkpoints), and whatever lies inside it is part of the
    output's hash: a lock file written there by a run that was then refused would make DVC see the stage
    changed. Beside it, on the same file system, the lock still works across the nodes of a cluster.
    """
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (an flock on `lock_path(folder)`) for the `with` block.

    The kernel releases it when the holder exits or dies (kill -9 included), so a stale lock never
    blocks a rerun. The holder writes its pid and host into the file; a second holder is refused at
    once with one UserError line naming them (`what` says what the folder is for). The folder itself
    is not created or touched.
    """
    folder = Path(folder)
    path = lock_path(folder)
    with _unwritable_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
            raise UserError(f"{folder} is in use by another {what} ({holder}); wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


# ---- Where a stage may write ----------------------------------------------------------------------------------


def _real(path: str | Path) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def _inside(path: str, root: str) -> bool:
    """Whether real path `path` is `root` or lies inside it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def checkout_root() -> str:
    """The real path of the git checkout holding the working directory (the working directory if none)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return _real(os.getcwd())
    return _real(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else _real(os.getcwd())


def _holds_checkout(real: str) -> str | None:
    """Why writing the real path `real` would destroy the checkout or the working directory (None: it would not)."""
    cwd = _real(os.getcwd())
    if _inside(cwd, real):
        return "it is or holds the working directory"
    if os.path.isdir(os.path.join(real, ".git")) or os.path.isfile(os.path.join(real, ".git")):
        return "it is a git checkout"
    if f"{os.sep}.git{os.sep}" in real + os.sep:
        return "it lies inside a .git folder"
    return None


def _tracked_files(root: str) -> list[str]:
    """Real paths of the files git tracks in the checkout at `root` (none outside a checkout)."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [os.path.join(root, f) for f in out.stdout.decode(errors="replace").split("\0") if f]


@dataclass(frozen=True)
class Declared:
    """One path the params declare: whose it is, under which key, and whether it is written or read."""

    stage: str
    key: str
    path: str
    role: str
    """`out`: the stage writes it; `in`: the stage reads it, and a stage is meant to write it (`tokenize.input`,
    `finetune.model`, …); `raw`: the stage reads it and no stage writes it (`inputs.*`, tokenizers, benchmark files)."""
    adds: bool = False
    """An output folder the stage writes files into (checkpoint roots, plot and metrics folders), never replaced
    whole: two such folders may nest (`plots/` and `plots/instruct/`), as their files differ; being one is a clash."""


def _declared(p: Any) -> list[Declared]:
    """Every output and input path the params declare, per stage (`p`: the validated Params)."""
    out: list[Declared] = []

    def add(stage: str, role: str, key: str, path: Any, adds: bool = False) -> None:
        if isinstance(path, str) and path.strip():
            out.append(Declared(stage, key, path, role, adds))

    ex = p.extract
    add("extract", "raw", "inputs.pile", p.inputs.pile)
    for key in ("output", "metrics"):
        add("extract", "out", f"extract.{key}", getattr(ex, key))
    if ex.remote is not None:
        add("extract", "out", "extract.cache", ex.cache, adds=True)
    tk = p.tokenize
    add("tokenize", "in", "tokenize.input", tk.input)
    add("tokenize", "raw", "tokenize.tokenizer", tk.tokenizer)
    add("tokenize", "out", "tokenize.output", tk.output)
    add("tokenize", "out", "tokenize.metrics", tk.metrics)
    pt = p.pretrain
    add("pretrain", "in", "pretrain.tokens", pt.tokens)
    add("pretrain", "raw", "pretrain.tokenizer", pt.tokenizer)
    add("pretrain", "raw", "model.base", p.model.base)
    for key in ("checkpoint_dir", "output", "export_init", "metrics", "plots"):
        add("pretrain", "out", f"pretrain.{key}", getattr(pt, key), adds=key in ("checkpoint_dir", "plots"))
    im = p.instruct_mix
    add("instruct-mix", "raw", "inputs.instruct", p.inputs.instruct)
    add("instruct-mix", "out", "instruct_mix.output", im.output)
    add("instruct-mix", "out", "instruct_mix.metrics", im.metrics)
    ft = p.finetune
    add("finetune", "in", "finetune.model", ft.model)
    add("finetune", "in", "finetune.mixture", ft.mixture)
    starts = ["pretrained"] + (["base"] if ft.base is not None else [])
    if ft.base is not None:
        add("finetune", "in", "finetune.base.model", ft.base.model)
    for name, task in ft.tasks.items():
        add("finetune", "raw", f"finetune.tasks.{name}.path", task.path)
    for start in starts:
        runs = [ft.run_paths("instruct", None, start)]
        runs += [ft.run_paths("task", t, start, seed) for t in ft.tasks for seed in ft.seeds_of(t)]
        for r in runs:
            for field in ("output", "checkpoint_dir", "metrics", "plots"):
                add(
                    "finetune",
                    "out",
                    f"finetune ({r.name} {field})",
                    getattr(r, field),
                    adds=field in ("checkpoint_dir", "plots"),
                )
    ev = p.eval
    add("prepare-eval", "raw", "inputs.benchmarks", p.inputs.benchmarks)
    for field, value in ev.benchmarks:
        add("prepare-eval", "in" if field == "pile_extracted" else "raw", f"eval.benchmarks.{field}", value)
    add("prepare-eval", "out", "eval.output", ev.output)
    cn = p.contamination
    add("contamination", "in", "contamination.input", cn.input)
    for field, value in ev.benchmarks:
        if field != "pile_extracted":
            add("contamination", "raw", f"eval.benchmarks.{field}", value)
    add("contamination", "out", "contamination.output", cn.output)
    add("contamination", "out", "contamination.metrics", cn.metrics)
    add("evaluate", "in", "eval.output", ev.output)
    add("evaluate", "in", "eval.contamination", ev.contamination)
    for name, model in ev.models.items():
        add("evaluate", "in", f"eval.models.{name}.path", model.path)
    for name, path in ev.loss_plots.items():
        add("evaluate", "in", f"eval.loss_plots.{name}", path)
    for key in ("metrics_dir", "results_dir", "table", "figure"):
        add("evaluate", "out", f"eval.{key}", getattr(ev, key), adds=key in ("metrics_dir", "results_dir"))
    return out


# The commands that write a stage's outputs (`extract-merge` writes extract's).
STAGE_OF_COMMAND = {
    "extract": "extract",
    "extract-merge": "extract",
    "tokenize": "tokenize",
    "pretrain": "pretrain",
    "instruct-mix": "instruct-mix",
    "finetune": "finetune",
    "prepare-eval": "prepare-eval",
    "evaluate": "evaluate",
    "contamination": "contamination",
    "contamination-merge": "contamination",
}


def output_problems(params: Any, stage: str, sanctioned: Any = None) -> list[str]:
    """Why each output of `stage` may not be written where `params` put it: one line per problem, none if all is well.

    An output may not be or hold the checkout (or the working directory), be a mount point (the stage
    replaces it whole), hold git-tracked files, or be a git-tracked file other than the one the params
    file itself names there (`sanctioned`: the params without `--set`; DVC metrics may be committed). It
    may not overlap (be, hold or lie inside) an input of its own stage, another output of its stage,
    another stage's output, or a raw input (one no stage writes). Another stage reading this output (the
    pipeline's wiring, e.g. `pretrain.tokens` = `tokenize.output`) is fine. Paths compare as real paths,
    so a symlink cannot hide an overlap.
    """
    decl = _declared(params)
    real = {d: _real(d.path) for d in decl}
    # An input meant to be a stage's output is guarded through that output where one writes it (or holds or lies
    # inside it: a task's seed folders): one of the params file's, another stage's, or this stage's exactly (the
    # wiring of an ad-hoc run: `--set eval.output=X` is prepare-eval's output and evaluate's input). The others
    # (an external model named as an input) are raw, as are the inputs no stage writes: no output may overlap them.
    file_out = [_real(d.path) for d in (_declared(sanctioned) if sanctioned is not None else decl) if d.role == "out"]
    other_out = [real[d] for d in decl if d.role == "out" and d.stage != stage]
    own_out = {real[d] for d in decl if d.role == "out" and d.stage == stage}
    raw = {
        d
        for d in decl
        if d.role == "raw"
        or (d.role == "in" and real[d] not in own_out and not any(_overlap(real[d], m) for m in file_out + other_out))
    }
    file_value = {d.key: d.path for d in _declared(sanctioned)} if sanctioned is not None else {}
    root = checkout_root()
    tracked: list[str] | None = None
    problems = []
    for o in (d for d in decl if d.stage == stage and d.role == "out"):
        ro, here = real[o], f"{o.key}: {o.path}"
        why = _holds_checkout(ro) or ("it is or holds the checkout" if _inside(root, ro) else None)
        if why:
            problems.append(f"{here}: {why}")
            continue
        clash = _clash(o, ro, stage, decl, real, raw, root)
        if clash:
            problems.append(f"{here} {clash}")
            continue
        if tracked is None:
            tracked = _tracked_files(root)
        inside = [t for t in tracked if _inside(t, ro)]
        if inside and not (inside == [ro] and file_value.get(o.key) == o.path):
            what = (
                "is a git-tracked file"
                if inside == [ro]
                else f"holds {len(inside)} git-tracked files (e.g. {os.path.relpath(inside[0], root)})"
            )
            problems.append(f"{here} {what}")
            continue
        if os.path.ismount(ro):
            problems.append(f"{here} is a mount point, and a stage replaces its output whole; name a folder inside it")
    return problems


def _overlap(a: str, b: str) -> bool:
    return _inside(a, b) or _inside(b, a)


def _clash(o: Declared, ro: str, stage: str, decl: list[Declared], real: dict, raw: set, root: str) -> str | None:
    """How output `o` (real path `ro`) overlaps a path it must not (None: it overlaps none).

    A declared folder that holds the whole checkout (an input root of `/`: inputs may lie anywhere) bounds
    nothing: every output lies inside it, so only being it or holding it counts there."""
    # the stage's own inputs first: the line names what this run would have destroyed first
    for d in sorted(decl, key=lambda d: d.stage != stage or d.role == "out"):
        if d.key == o.key and d.role == "out":
            continue  # itself (the seeds of a task share their checkpoint folder and metrics file)
        if d.stage != stage and d.role != "out" and d not in raw:
            continue  # another stage reading what a stage writes: the pipeline's wiring
        rd = real[d]
        rel = "is also" if ro == rd else "holds" if _inside(rd, ro) else "lies inside" if _inside(ro, rd) else None
        if rel is None or (rel == "lies inside" and _inside(root, rd)):
            continue
        if rel != "is also" and o.adds and d.adds:
            continue  # two folders of files, nested: each writes its own files
        whose = (
            "an input of this stage"
            if d.stage == stage and d.role != "out"
            else "another output of this stage"
            if d.stage == stage
            else f"an output of stage {d.stage}"
            if d.role == "out"
            else f"an input of stage {d.stage}"
        )
        return f"{rel} {d.key} ({d.path}), {whose}"
    return None


def check_stage_outputs(params: Any, stage: str, sanctioned: Any = None) -> None:
    """Refuse (ConfigError, exit 2) before anything is touched when an output of `stage` is unsafe (`output_problems`)."""
    problems = output_problems(params, stage, sanctioned)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"refusing to run {stage}: {problems[0]}{more}; nothing was changed")
