"""Where the raw inputs live: the `inputs` params section and the check that every input lies under its root.

DVC cannot turn a list param into deps (`${…}` interpolates only scalars), so a stage whose
params list files (extract.train/val/test, instruct_mix.sources, finetune.tasks, eval.benchmarks)
names a root folder in dvc.yaml instead (`${inputs.pile}`, …), and every listed file must lie
under that root: a file outside it would change without DVC noticing. `check_roots` enforces it
when params are loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from biomed_llama.schema import StrictModel

_GLOB = re.compile(r"[*?\[]")


class InputRoots(StrictModel):
    """The folders the pipeline's raw inputs lie under; each is a DVC dependency of the stages that read it."""

    pile: str = "data/sample/pile"
    """Folder of the Pile shards named by extract.train/val/test (the `extract` stage's data dep). Not checked with `extract.remote`: the shard names then belong to the remote."""
    instruct: str = "data/sample/instruct"
    """Folder of the instruction sources (instruct_mix.sources) and the task train sets: finetune.tasks.NAME.path must lie under `<instruct>/NAME`, the data dep of stage `finetune-task@NAME`."""
    benchmarks: str = "data/sample/eval"
    """Folder of the benchmark files named in eval.benchmarks (the `prepare-eval` stage's data dep)."""


def fixed_prefix(pattern: str) -> str:
    """The part of a path or glob before its first wildcard component (`data/pile/train/*.zst` → `data/pile/train`)."""
    parts = pattern.replace("\\", "/").split("/")
    keep = []
    for part in parts:
        if _GLOB.search(part):
            break
        keep.append(part)
    return "/".join(keep) or "."


def is_under(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies inside it, compared lexically (absolute against relative via the cwd)."""
    p, r = os.path.normpath(path), os.path.normpath(root)
    if os.path.isabs(p) != os.path.isabs(r):
        p, r = os.path.abspath(p), os.path.abspath(r)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _listed(params: Any) -> Iterator[tuple[str, str, str, str]]:
    """(param key, path, root key, root) for every input path params list under a root."""
    roots: InputRoots = params.inputs
    if params.extract.remote is None:
        for split in ("train", "val", "test"):
            for pattern in getattr(params.extract, split):
                yield f"extract.{split}", fixed_prefix(pattern), "inputs.pile", roots.pile
    for k, src in enumerate(params.instruct_mix.sources):
        for path in src.paths:
            yield f"instruct_mix.sources[{k}] ({src.name})", path, "inputs.instruct", roots.instruct
    for name, task in params.finetune.tasks.items():
        yield f"finetune.tasks.{name}.path", task.path, "inputs.instruct/" + name, f"{roots.instruct}/{name}"
    for field, value in params.eval.benchmarks:
        if isinstance(value, str) and field != "pile_extracted":  # pile_extracted is a stage output
            yield f"eval.benchmarks.{field}", value, "inputs.benchmarks", roots.benchmarks


def check_roots(params: Any) -> str | None:
    """Return one line naming the first input path that lies outside its root, or None when all are inside."""
    for key, path, root_key, root in _listed(params):
        if not is_under(path, root):
            return (
                f"{key}: {path} is not under {root_key} ({root}), the folder DVC tracks; "
                f"move the file there or set {root_key.split('/')[0]}"
            )
    return None
