"""Distributed checkpoints: a registry of named stateful parts, saved with DCP (tensors) and JSON (the rest).

Every piece of training state is a `Part` of the registry `training_state` builds: an object with
`state_dict()` / `load_state_dict()` and where it is stored (the idea of torchtitan's
`CheckpointManager.states`). A new piece of state is one more entry there; `Checkpointer` saves and
restores whatever the registry holds. Layout of `<dir>/step-00001000/` (the engine's `<dir>` is one
run's folder, `<checkpoint_dir>/<run_id>`):
- DCP files of the `dcp` parts, {"model", "optim"} (sharded state dicts; each rank writes its
  shards, any world size can load them),
- `<name>-rank<r>.json` per `rank` part, e.g. `rng-rank<r>.json`: that rank's torch/CUDA/numpy/python
  RNG states (restored only on a rank that has its file: same world size),
- `trainer.json` (rank 0): step, the run's metadata (`run`) and every `trainer` part (scheduler,
  data-loader position, history),
- `checkpoint-manifest.json` (written last by rank 0): the sha256 of every file (`ckpt_manifest`), checked
  before a resume reads anything else.
Tensors go through DCP, everything else is JSON (DCP's own `.metadata` is a pickle: hence the
manifest). All of it is written under `step-00001000.tmp` and renamed once every rank has written
and hashed its files, so a crash mid-save (async or not) leaves only a `.tmp` folder, which
discovery ignores and the next completed save removes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import json
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from biomed_llama.errors import IntegrityError, output_error
from biomed_llama.fsutil import atomic_write_json
from biomed_llama.train.ckpt_manifest import (
    HASH_THREADS,
    all_ranks_hashed,
    record_own_hashes,
    verify_checkpoint,
    write_checkpoint_manifest,
)
from biomed_llama.train.ckpt_staging import HostStager

_STEP_DIR = re.compile(r"^step-(\d{8})$")
TRAINER_FILE = "trainer.json"
SAVES_FILE = "saves.json"
"""Beside the step folders: the run's `SaveRecord`s (rank 0's), so a resumed run's metrics list every save."""


def step_dir(root: str | Path, step: int) -> Path:
    """The final folder name of the checkpoint at `step`."""
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first (a `.tmp` or one without trainer.json is skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / TRAINER_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict[str, Any]:
    """This process's RNG states as JSON-able data (no pickles in checkpoints)."""
    state = np.random.get_state()
    assert isinstance(state, tuple), "legacy=True (the default): the global MT19937's 5-tuple, not a dict"
    kind, keys, pos, has_gauss, gauss = state
    version, pystate, pygauss = random.getstate()
    out = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(pystate), pygauss],
    }
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(_unb64(state["torch"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, pystate, pygauss = state["python"]
    random.setstate((version, tuple(pystate), pygauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


@contextlib.contextmanager
def _disk_errors(final: Path):
    """A full, read-only or unwritable checkpoint disk becomes one `OutputError` line naming the checkpoint.

    DCP reports a rank's write failure as a `CheckpointException` (a BaseException carrying every failed
    rank's exception), raised on every rank alike: the line names the first OSError in it. The `.tmp`
    folder left behind is never resumed from, and the next save or the rerun clears it.
    """
    from torch.distributed.checkpoint.api import CheckpointException

    note = f"; {final.name}.tmp is incomplete and never resumed from (the last complete checkpoint stays)"
    try:
        yield
    except OSError as e:
        err = output_error(e, final, note)
        if err is None:
            raise
        raise err from None
    except CheckpointException as e:
        causes = [c for c in (_disk_cause(exc, final.parent) for exc, _ in e.failures.values()) if c is not None]
        if not causes:
            raise
        err = output_error(causes[0], final, note)
        assert err is not None, "_disk_cause returns only OSErrors that output_error names"
        raise err from None


FULL_BELOW = 64 * 1024
"""Free bytes under which a checkpoint disk counts as full when a write came up short without an OSError."""


def _disk_cause(exc: BaseException | None, where: Path | None = None) -> OSError | None:
    """The full-disk / unwritable OSError `exc` is or arose from, or None.

    torch.save meets ENOSPC in two ways: the OSError itself, or, when the file object took fewer bytes than
    given without raising, a RuntimeError from its zip writer ("unexpected pos 704 vs 598") and no OSError at
    all. The second counts as a full disk only when the disk under `where` has (almost) no room left.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and output_error(exc) is not None:
            return exc
        if where is not None and _short_write(exc) and shutil.disk_usage(where).free < FULL_BELOW:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        exc = exc.__cause__ or exc.__context__
    return None


def _short_write(exc: BaseException | None) -> bool:
    """True for torch.save's zip writer finding that fewer bytes reached the file than it wrote."""
    return isinstance(exc, RuntimeError) and "unexpected pos" in str(exc)


def _quiet_writer_threads() -> None:
    """Drop the traceback DCP's file-writer threads print for a full or unwritable disk (idempotent).

    Such a thread dies of the OSError and the saving thread re-raises it, which `_disk_errors` turns into
    the stage's one line; any other exception of any thread is printed as before.
    """
    previous = threading.excepthook
    if getattr(previous, "biomed_quiet", False):
        return
    threading.excepthook = _QuietWriterHook(previous)


class _QuietWriterHook:
    """The `threading.excepthook` of `_quiet_writer_threads`: silent for a DCP writer thread's disk error,
    `previous` for anything else."""

    biomed_quiet = True
    """Marks the hook installed (`_quiet_writer_threads` installs it once)."""

    def __init__(self, previous: Callable[[threading.ExceptHookArgs], object]):
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        # a short write is left to the saving thread, which re-raises it and checks the disk's free space
        if (
            args.thread is not None
            and "_write_files_from_queue" in args.thread.name
            and (_disk_cause(args.exc_value) is not None or _short_write(args.exc_value))
        ):
            return
        self.previous(args)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Stateful(Protocol):
    """What a checkpointed part is: a state to save and a way to restore it."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Part:
    """One named piece of checkpointed state and where it is stored."""

    obj: Stateful
    store: Literal["dcp", "trainer", "rank"]
    """`dcp`: tensors, sharded by torch.distributed.checkpoint; `trainer`: JSON in trainer.json (the same
    on every rank; rank 0 writes it); `rank`: JSON per rank in `<name>-rank<r>.json`."""


class ModelState:
    """The (sharded) model's parameters and buffers as a DCP state dict."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state)


class OptimizerState:
    """The optimizer's state keyed by parameter name (so any sharding can load it)."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state)


class RNGState:
    """This process's RNG states (`rng_state`)."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state)


def training_state(model, optimizer, scheduler, loader, history) -> dict[str, Part]:
    """The registry of everything a checkpoint holds: add a new piece of state here (and only here)."""
    return {
        "model": Part(ModelState(model), "dcp"),
        "optim": Part(OptimizerState(model, optimizer), "dcp"),
        "scheduler": Part(scheduler, "trainer"),
        "loader": Part(loader, "trainer"),
        "history": Part(history, "trainer"),
        "rng": Part(RNGState(), "rank"),
    }


@dataclass
class SaveRecord:
    """One save as the run saw it: how long training stalled for it and when it became resumable."""

    step: int
    stall_s: float
    """Seconds the training loop waited: the save call, and (async) the wait for the host copy before the next update."""
    complete_s: float | None = None
    """Seconds from the save call until the checkpoint was complete (written, hashed, renamed); rank 0 only."""
    staged_s: float | None = None
    """Async: seconds from the save call until this rank's host copy of the state was done (the copy runs beside
    the next forward/backward; only what outlasts them is stall)."""


@dataclass
class _Pending:
    """An async save in flight on this rank."""

    record: SaveRecord
    tmp: Path
    final: Path
    started: float
    written: Future
    """Done when this rank's DCP files are written and its hashes recorded."""
    staged: Future | None
    """Done when the state is copied to host memory (the tensors may change again after it)."""
    committed: bool = False


class Checkpointer:
    """Collective save / load of the registry `parts` in the step folders under `root`, keeping the newest `keep`.

    `meta` (e.g. the run id) is written into every trainer.json beside the step. With `async_save` the DCP
    files are written in the background (`dcp.async_save` over a dedicated gloo group, as torchtitan's
    async mode; the state is first copied into host buffers kept across saves, `HostStager`, on CUDA pinned
    and filled on a side stream): `save` returns once
    the save is started, `wait_for_staging` (before the next optimizer update) waits for the host copy,
    and the checkpoint is renamed to its final name, complete with its manifest, once every rank has
    written and hashed its files (`poll`, the next `save` or `close`). A crash before that leaves only
    the `.tmp` folder.
    """

    def __init__(
        self,
        root: str | Path,
        parts: dict[str, Part],
        *,
        keep: int,
        meta: dict[str, Any],
        async_save: bool = False,
        device: torch.device | None = None,
    ):
        self.root, self.parts, self.keep, self.meta = Path(root), parts, keep, meta
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.async_save = async_save
        self.saves: list[SaveRecord] = []
        self._pending: _Pending | None = None
        self._prestaged = False
        _quiet_writer_threads()
        if async_save:
            self._group = dist.new_group(backend="gloo")  # the background save's collectives, apart from training's
            self._stager = HostStager(device)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-hash")

    def _of(self, store: str) -> dict[str, Stateful]:
        return {name: p.obj for name, p in self.parts.items() if p.store == store}

    def _write_json_parts(self, tmp: Path, step: int) -> list[str]:
        """Write this rank's JSON parts (rank 0: trainer.json too) now, as they are at `step`; return their names."""
        names = []
        for name, obj in self._of("rank").items():
            atomic_write_json(tmp / f"{name}-rank{self.rank}.json", obj.state_dict())
            names.append(f"{name}-rank{self.rank}.json")
        if self.rank == 0:
            trainer = {name: obj.state_dict() for name, obj in self._of("trainer").items()}
            atomic_write_json(tmp / TRAINER_FILE, {"step": step, **self.meta, **trainer})
            names.append(TRAINER_FILE)
        return names

    def save(self, step: int) -> Path:
        """Collectively save every part at `step` (under a `.tmp` name, renamed when complete); prune old ones."""
        t0 = time.perf_counter()
        self.wait()
        final = step_dir(self.root, step)
        with _disk_errors(final):
            return self._save(step, final, t0)

    def _save(self, step: int, final: Path, t0: float) -> Path:
        """`save` without its disk-error translation: write under `<final>.tmp`; sync: hash, rename, record."""
        tmp = final.with_name(final.name + ".tmp")
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
            tmp.mkdir(parents=True)
        _barrier()
        tensors = {name: obj.state_dict() for name, obj in self._of("dcp").items()}
        written = self._write_json_parts(tmp, step)
        writer = FileSystemWriter(str(tmp), thread_count=HASH_THREADS)
        record = SaveRecord(step, 0.0)
        if self.async_save:
            # torch >= 2.9 (`async_stager`, `AsyncSaveResponse`); imported here so older torch still trains sync.
            # The stager refills its host buffers: the previous save is written (`self.wait()` above).
            from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse

            response = dcp.async_save(
                tensors, storage_writer=writer, process_group=self._group, async_stager=self._stager
            )
            upload, staged = (
                (response.upload_completion, response.staging_completion)
                if isinstance(response, AsyncSaveResponse)
                else (response, None)
            )
            done = self._pool.submit(_write_then_hash, upload, tmp, self.rank, written)
            if staged is not None:

                def note_staged(_: Future[None], r: SaveRecord = record) -> None:
                    r.staged_s = time.perf_counter() - t0

                staged.add_done_callback(note_staged)
            self._pending = _Pending(record, tmp, final, t0, done, staged)
        else:
            dcp.save(tensors, storage_writer=writer)
            record_own_hashes(tmp, self.rank, written)
            _barrier()
            if self.rank == 0:
                self._commit(tmp, final)
                record.complete_s = time.perf_counter() - t0
            _barrier()
        record.stall_s = time.perf_counter() - t0
        self.saves.append(record)
        if not self.async_save:
            self._record_saves()  # complete now; an async one is recorded when it becomes complete (`_finish`)
        return final

    def _record_saves(self) -> None:
        """Rank 0: write the save records so far beside the step folders (`SAVES_FILE`), once the newest is complete
        (an async save's record may still gain stall time afterwards: `close` writes the final ones)."""
        if self.rank == 0 and self.root.is_dir():
            atomic_write_json(self.root / SAVES_FILE, [dataclasses.asdict(r) for r in self.saves])

    def _restore_saves(self, step: int) -> None:
        """The records of the saves up to `step` (the resumed checkpoint's), as the run that made them wrote them."""
        try:
            records = json.loads((self.root / SAVES_FILE).read_text())
            self.saves = [SaveRecord(**r) for r in records if int(r["step"]) <= step]
        except (OSError, ValueError, TypeError, KeyError):
            self.saves = []  # a run of an earlier version, or the file lost: the new saves only

    def prestage(self) -> None:
        """Async, once (after the first update, when the optimizer state exists): allocate the stager's host buffers
        (pinned on CUDA) in the background, so that they exist before the first save. Allocating and pinning tens
        of GB takes seconds that would otherwise stall that save; nothing is copied, so it overlaps the updates."""
        if not self.async_save or self._prestaged:
            return
        self._prestaged = True
        self._stager.reserve({name: obj.state_dict() for name, obj in self._of("dcp").items()})

    def wait_for_staging(self) -> None:
        """Before the optimizer changes the tensors: wait until an async save's host copy is done (counted as stall)."""
        pending = self._pending
        if pending is None or pending.staged is None:
            return
        t0 = time.perf_counter()
        pending.staged.result()
        pending.staged = None
        pending.record.stall_s += time.perf_counter() - t0

    def in_flight(self) -> bool:
        """Whether this rank's async save is still being copied, written or hashed."""
        pending = self._pending
        return pending is not None and not pending.written.done()

    def poll(self) -> None:
        """Rank 0, between steps: make an async save that every rank has written and hashed complete (no collective)."""
        pending = self._pending
        if self.rank != 0 or pending is None or pending.committed or not pending.written.done():
            return
        with _disk_errors(pending.final):
            pending.written.result()  # raises what the background write raised
        if all_ranks_hashed(pending.tmp, self.world):
            self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        self._commit(pending.tmp, pending.final)
        pending.committed = True
        pending.record.complete_s = time.perf_counter() - pending.started
        self._record_saves()

    def wait(self) -> None:
        """Collective: wait for this rank's async save, then rank 0 makes it complete (before the next or at the end)."""
        if not self.async_save:
            return
        pending = self._pending
        if pending is not None:
            self.wait_for_staging()
            with _disk_errors(pending.final):
                pending.written.result()
        self._pending = None
        _barrier()
        if self.rank == 0 and pending is not None and not pending.committed:
            self._finish(pending)

    def close(self) -> None:
        """Collective: finish the async save in flight (every rank waits for its part; rank 0 completes it)."""
        self.wait()
        _barrier()
        self._record_saves()
        if self.async_save:
            self._pool.shutdown(wait=True)
            self._stager.close()

    def _commit(self, tmp: Path, final: Path) -> None:
        """Rank 0: the written `tmp` gets its manifest and becomes `final`; only the newest `keep` checkpoints stay."""
        write_checkpoint_manifest(tmp, self.world, {"step": int(final.name.split("-")[1]), **self.meta})
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(self.root)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob("step-*.tmp"):  # left by crashed saves (none is in flight now)
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, path: str | Path) -> int:
        """Collectively verify the checkpoint folder `path` against its manifest, then restore every part; return its step.

        A `rank` part is restored only where the checkpoint has this rank's file (same world size).
        """
        path = Path(path)
        verify_checkpoint(path, self.rank, self.world)  # before dcp.load unpickles .metadata
        trainer = json.loads((path / TRAINER_FILE).read_text())
        tensors = {name: obj.state_dict() for name, obj in self._of("dcp").items()}
        dcp.load(tensors, checkpoint_id=str(path))  # in place, into this run's sharding
        for name, part in self.parts.items():
            if part.store == "dcp":
                part.obj.load_state_dict(tensors[name])
            elif part.store == "trainer":
                if name not in trainer:
                    raise IntegrityError(f"{path / TRAINER_FILE} has no {name!r} state; remove that checkpoint")
                part.obj.load_state_dict(trainer[name])
            elif (own := path / f"{name}-rank{self.rank}.json").is_file():
                part.obj.load_state_dict(json.loads(own.read_text()))
        self._restore_saves(int(trainer["step"]))
        return int(trainer["step"])


def _write_then_hash(upload: Future, tmp: Path, rank: int, written: list[str]) -> None:
    """Background: wait for this rank's DCP files, then record the hashes of everything it wrote."""
    upload.result()
    record_own_hashes(tmp, rank, written)
