"""Run identity: the run fingerprint, run folders, and the input checks before anything is built.

Checkpoints live in run folders (as OLMo / torchtitan do): `<checkpoint_dir>/<run_id>/step-NNNNNNNN/`,
where `run_id` is the run fingerprint (`spec_fingerprint`: seed, model, numeric params, steps and the
CONTENT identity of the data). A rerun with the same params and data (a Slurm requeue, `dvc repro`
after an interruption) finds its own folder and resumes; a run with other params or data starts
fresh in a folder of its own and leaves the other runs' checkpoints alone. So a DVC stage whose
checkpoint folder is a `persist: true` out reruns correctly after any param or upstream change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.train.config import PretrainConfig

# Engine-config fields a resume may change: the speed-only ones (`PretrainConfig.SPEED_ONLY`, which dvc.yaml
# leaves out of the params too) and where the outputs go; the run id leaves them out.
_OUTPUTS = {"checkpoint_dir", "output", "export_dtype", "export_init", "metrics", "plots"}
_RESUME_FREE = PretrainConfig.SPEED_ONLY | _OUTPUTS
# Options added later: left out of the fingerprint at the value that means the earlier behaviour, so that the runs of earlier
# versions (which computed exactly the default) keep their run ids and their checkpoints still resume.
_LATER_DEFAULTS = {
    "loss_weighting": "token",
    "decay_norms_and_biases": False,
    "released_loader": None,
    "document_order": "subset_major",
    "added_tokens": 0,
    "float8": None,
    "max_nonfinite_skips": 0,
}
# Fields that only say where the packed token stream comes from: a run with its own data
# fingerprint leaves them out (the fingerprint stands for the data).
_STREAM_FIELDS = {"tokens", "subsets", "split", "packing"}


def verify_inputs_on_main(env, folders: list[str]) -> None:
    """Rank 0 checks input folders against their manifests; every rank fails together if one does not match."""
    from biomed_llama.provenance import require_verified
    from biomed_llama.train.mesh import all_reduce_cpu

    problem = None
    if env.is_main:
        try:
            for folder in folders:
                require_verified(folder)
        except IntegrityError as e:
            problem = e
    (failed,) = all_reduce_cpu([1.0 if problem else 0.0])
    if problem:
        raise problem
    if failed:
        raise IntegrityError(f"rank 0 refused an input of {', '.join(folders)} (see its error)")


def hold_checkpoint_dir(checkpoint_dir: str | Path, stage: str):
    """Rank 0 (`RANK`, set by torchrun) holds an exclusive lock on the stage's checkpoint folder for the run.

    Two runs of a stage never train side by side there (nor export over each other): the second
    one's rank 0 stops with one line naming the holder's pid, and torchrun stops its other ranks.
    The lock is taken before the process group, so no collective is needed; other ranks get a no-op.
    """
    import contextlib
    import os

    from biomed_llama.fsutil import folder_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return folder_lock(checkpoint_dir, f"{stage} run")


def manifest_files_id(folder: str | Path) -> str | None:
    """sha256 over the `files` section (path → sha256, bytes) of `folder/manifest.json`; None without one.

    Only the file hashes: the rest of a manifest (environment, params) changes with every commit
    while the data stays the same.
    """
    from biomed_llama.provenance import MANIFEST

    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return None  # the input check (`require_verified`) names the problem
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def spec_fingerprint(seed: int, model_cfg, cfg, total_steps: int, data: dict[str, Any] | None = None) -> str:
    """The run fingerprint from the effective params; `data` (if given) replaces the token-stream fields."""
    skip = _RESUME_FREE | (_STREAM_FIELDS if data is not None else set())
    engine = cfg.model_dump(mode="json")
    # The optimiser section is hashed flat, as its fields were before they became `optim`: the runs
    # of earlier versions keep their run ids, so their checkpoints still resume.
    optim = engine.pop("optim")
    assert not optim.keys() & engine.keys(), "an optim field shadows an engine field in the fingerprint"
    pre = {
        k: v
        for k, v in {**engine, **optim}.items()
        if k not in skip and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
    }
    # the attention kernel and the trust opt-in change no number: a run keeps its id across them
    model = {k: v for k, v in model_cfg.model_dump(mode="json").items() if k not in ("attention", "base_external")}
    what = {"seed": seed, "model": model, "pretrain": pre, "steps": total_steps}
    if data is not None:
        what["data"] = data
    blob = json.dumps(what, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_resumable(checkpoint: Path, run_id: str, hint: str) -> None:
    """Refuse a checkpoint in this run's folder whose trainer.json records another run (moved or edited by hand)."""
    from biomed_llama.train.checkpoint import TRAINER_FILE

    try:
        theirs = json.loads((checkpoint / TRAINER_FILE).read_text()).get("run")
    except (ValueError, AttributeError):
        raise IntegrityError(f"{checkpoint / TRAINER_FILE} is not a trainer state; remove that checkpoint") from None
    if theirs != run_id:
        raise UserError(
            f"{checkpoint} lies in the folder of run {run_id} but was written by run {theirs}; "
            f"remove that folder (or restore it) under {hint}"
        )


def run_folder(root: str | Path, run_id: str, stage: str, is_main: bool) -> tuple[Path, Path | None]:
    """This run's checkpoint folder `root/run_id` and its newest complete checkpoint (None: a fresh start).

    On a fresh start rank 0 prints one line naming the folder and the other runs' folders beside it
    (left untouched: checkpoints of other params or data are never resumed nor pruned).
    """
    from biomed_llama.train.checkpoint import latest_checkpoint
    from biomed_llama.train.log import print_line

    root = Path(root)
    folder = root / run_id
    resume = latest_checkpoint(folder)
    if resume is None and is_main:
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != run_id) if root.is_dir() else []
        print_line(
            f"{stage}: new run {run_id}, checkpoints in {folder}"
            + (f"; other runs' folders there, left untouched: {', '.join(others)}" if others else "")
        )
    return folder, resume
