"""Distributed checkpoints with torch.distributed.checkpoint (DCP): save, keep the last K, resume.

Layout of `<dir>/step-00001000/` (the engine's `<dir>` is one run's folder, `<checkpoint_dir>/<run_id>`):
- DCP files of {"model", "optim"} (sharded state dicts; each rank writes its shards, any world
  size can load them),
- `rng-rank<r>.json`: that rank's torch/CUDA/numpy/python RNG states,
- `trainer.json` (written last by rank 0): step, scheduler, data-loader position, extras.
All of it is written under `step-00001000.tmp` and renamed once every rank is done, so a crash
mid-save leaves only a `.tmp` folder, which discovery ignores and the next save removes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

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


def save_checkpoint(root: str | Path, step: int, model, optimizer, trainer_state: dict[str, Any], keep: int) -> Path:
    """Collectively save model + optimizer (DCP) + RNG + `trainer_state` at `step`; keep the newest `keep`."""
    rank = dist.get_rank()
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    atomic_write_json(tmp / f"rng-rank{rank}.json", rng_state())
    _barrier()
    if rank == 0:
        atomic_write_json(tmp / TRAINER_FILE, {"step": step, **trainer_state})
        if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, model, optimizer) -> dict[str, Any]:
    """Collectively load a checkpoint folder into the (sharded) model and optimizer; return trainer state.

    Restores this rank's RNG states when the checkpoint has them for this rank (same world size).
    """
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng_file = path / f"rng-rank{dist.get_rank()}.json"
    if rng_file.is_file():
        set_rng_state(json.loads(rng_file.read_text()))
    return json.loads((path / TRAINER_FILE).read_text())
