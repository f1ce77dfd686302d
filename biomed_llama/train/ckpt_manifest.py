"""Checkpoint manifests: the sha256 of every file of a checkpoint, hashed by the ranks that wrote them,
and checked (hashing spread over all ranks) before a resume reads anything of the checkpoint.

Why: resuming calls `dcp.load`, which unpickles the checkpoint's `.metadata`; a crafted `.metadata`
runs code. A checkpoint is complete only with its `checkpoint-manifest.json`, written last by rank 0 once
every rank has hashed the files it wrote (`hashes-rank<r>.json`); `verify_checkpoint` refuses (exit 3)
a checkpoint with a missing, extra or changed file before `dcp.load` is called. The manifest
proves the files are the ones that were written, not who wrote them: checkpoints stay trusted input.

Hashing a 73 GB checkpoint on one rank takes minutes; here each rank hashes its own DCP files
(written in several files per rank, hashed by several threads) and, on resume, an equal share.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from biomed_llama.errors import IntegrityError
from biomed_llama.fsutil import atomic_write_json, sha256_file

MANIFEST = "checkpoint-manifest.json"
"""A checkpoint's manifest; named apart from the stage outputs' `manifest.json` (biomed_llama.provenance), which
records other things (environment, params, inputs) and is checked by other code."""
LEGACY_MANIFEST = "manifest.json"
"""The name checkpoints written before the rename carry: still read, so that they resume."""
HASH_THREADS = 4


def rank_hashes_file(folder: Path, rank: int) -> Path:
    """Where rank `rank` records the hashes of the files it wrote."""
    return folder / f"hashes-rank{rank}.json"


def own_files(folder: Path, rank: int, extra: list[str]) -> list[str]:
    """The files of `folder` this rank wrote: its DCP data files `__<rank>_*.distcp`, on rank 0 the DCP
    `.metadata`, and `extra` (its JSON parts)."""
    mine = sorted(p.name for p in folder.glob(f"__{rank}_*.distcp"))
    if rank == 0 and (folder / ".metadata").is_file():
        mine.append(".metadata")
    return mine + [name for name in extra if (folder / name).is_file()]


def hash_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """{name: {sha256, bytes}} of `names` in `folder`, several files at once (hashlib releases the GIL)."""
    names = sorted(names)
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        digests = list(pool.map(lambda n: sha256_file(folder / n, chunk=8 << 20), names))
    return {n: {"sha256": d, "bytes": (folder / n).stat().st_size} for n, d in zip(names, digests, strict=True)}


def record_own_hashes(folder: Path, rank: int, extra: list[str]) -> None:
    """Hash the files this rank wrote into `hashes-rank<r>.json` (atomic: present means complete)."""
    atomic_write_json(rank_hashes_file(folder, rank), hash_files(folder, own_files(folder, rank, extra)))


def all_ranks_hashed(folder: Path, world: int) -> bool:
    """True once every rank's hashes file is in `folder`."""
    return all(rank_hashes_file(folder, r).is_file() for r in range(world))


def write_checkpoint_manifest(folder: Path, world: int, meta: dict[str, Any]) -> None:
    """Rank 0: merge the ranks' hashes (hashing any file no rank claimed) into `manifest.json`, written last."""
    files: dict[str, dict[str, Any]] = {}
    for r in range(world):
        files.update(json.loads(rank_hashes_file(folder, r).read_text()))
    for r in range(world):
        rank_hashes_file(folder, r).unlink()
    unclaimed = [p.name for p in folder.iterdir() if p.is_file() and p.name not in files and p.name != MANIFEST]
    files.update(hash_files(folder, unclaimed))
    atomic_write_json(folder / MANIFEST, {**meta, "files": files})


def manifest_path(folder: Path) -> Path:
    """The checkpoint's manifest file: `checkpoint-manifest.json`, or an older checkpoint's `manifest.json`."""
    path = folder / MANIFEST
    return folder / LEGACY_MANIFEST if not path.is_file() and (folder / LEGACY_MANIFEST).is_file() else path


def _read_checkpoint_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = manifest_path(folder)
    if not path.is_file():
        raise IntegrityError(
            f"checkpoint {folder} has no {MANIFEST} (an older version's or an unfinished save); "
            "refusing to resume from it: remove that folder, and the run resumes from its newest complete "
            "checkpoint before it (from scratch if there is none)"
        )
    try:
        files = json.loads(path.read_text())["files"]
        return {str(k): {"sha256": str(v["sha256"]), "bytes": int(v["bytes"])} for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(
            f"checkpoint {folder}: {path.name} is not a manifest; refusing to resume from it"
        ) from None


def share(files: dict[str, dict[str, Any]], rank: int, world: int) -> list[str]:
    """This rank's share of `files` to hash: largest first, each to the least-loaded rank (the same on every rank)."""
    load, mine = [0] * world, []
    for name in sorted(files, key=lambda n: (-files[n]["bytes"], n)):
        r = min(range(world), key=lambda i: (load[i], i))
        load[r] += files[name]["bytes"] + 1
        if r == rank:
            mine.append(name)
    return mine


def verify_checkpoint(folder: str | Path, rank: int, world: int) -> None:
    """Collective: every file of the checkpoint matches its manifest and nothing else is there, or every rank
    raises the same IntegrityError (exit 3) before anything of it is unpickled."""
    from biomed_llama.train.mesh import all_reduce_cpu

    folder = Path(folder)
    files = _read_checkpoint_manifest(folder)
    manifest = manifest_path(folder).name
    names = sorted(files)
    bad = [0.0] * len(names)
    mine = share(files, rank, world)
    present = [n for n in mine if (folder / n).is_file()]
    got = hash_files(folder, present)
    for n in mine:
        if got.get(n) != files[n]:
            bad[names.index(n)] = 1.0
    bad = all_reduce_cpu(bad) if names else bad
    problems = [
        f"{n}: {'missing' if not (folder / n).is_file() else 'sha256 differs from ' + manifest}"
        for n, b in zip(names, bad, strict=True)
        if b
    ]
    extra = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != manifest)
    problems += [f"{n}: not in {manifest}" for n in extra]
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(
            f"checkpoint {folder} does not verify: {problems[0]}{more}; refusing to resume from it "
            "(checkpoints are trusted input: resuming unpickles their .metadata); remove that folder"
        )
