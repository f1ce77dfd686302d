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
- `trainer.json` (written last by rank 0): step, the run's metadata (`run`) and every `trainer` part
  (scheduler, data-loader position, history).
No pickles: tensors go through DCP, everything else is JSON. All of it is written under
`step-00001000.tmp` and renamed once every rank is done, so a crash mid-save leaves only a `.tmp`
folder, which discovery ignores and the next save removes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from biomed_llama.errors import IntegrityError
from biomed_llama.fsutil import atomic_write_json

_STEP_DIR = re.compile(r"^step-(\d{8})$")
TRAINER_FILE = "trainer.json"


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
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    out = {"torch": _b64(torch.get_rng_state()),
           "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
           "python": [version, list(pystate), pygauss]}
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


class Checkpointer:
    """Collective save / load of the registry `parts` in the step folders under `root`, keeping the newest `keep`.

    `meta` (e.g. the run id) is written into every trainer.json beside the step.
    """

    def __init__(self, root: str | Path, parts: dict[str, Part], *, keep: int, meta: dict[str, Any]):
        self.root, self.parts, self.keep, self.meta = Path(root), parts, keep, meta

    def _of(self, store: str) -> dict[str, Stateful]:
        return {name: p.obj for name, p in self.parts.items() if p.store == store}

    def save(self, step: int) -> Path:
        """Collectively save every part at `step` (under a `.tmp` name, renamed when complete); prune old ones."""
        final = step_dir(self.root, step)
        tmp = final.with_name(final.name + ".tmp")
        rank = dist.get_rank()
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
            tmp.mkdir(parents=True)
        _barrier()
        dcp.save({name: obj.state_dict() for name, obj in self._of("dcp").items()}, checkpoint_id=str(tmp))
        for name, obj in self._of("rank").items():
            atomic_write_json(tmp / f"{name}-rank{rank}.json", obj.state_dict())
        _barrier()
        if rank == 0:
            trainer = {name: obj.state_dict() for name, obj in self._of("trainer").items()}
            atomic_write_json(tmp / TRAINER_FILE, {"step": step, **self.meta, **trainer})
            self._commit(tmp, final)
        _barrier()
        return final

    def _commit(self, tmp: Path, final: Path) -> None:
        """Rank 0: the complete `tmp` becomes `final`; only the newest `keep` checkpoints stay."""
        if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(self.root)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path) -> int:
        """Collectively restore every part from the checkpoint folder `path`; return its step.

        A `rank` part is restored only where the checkpoint has this rank's file (same world size).
        """
        path = Path(path)
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
            elif (own := path / f"{name}-rank{dist.get_rank()}.json").is_file():
                part.obj.load_state_dict(json.loads(own.read_text()))
        return int(trainer["step"])
