"""Reading the `contamination` stage's output (what `evaluate` needs): per task, which test items are contaminated."""

from __future__ import annotations

import json
from pathlib import Path

from biomed_llama.errors import UserError
from biomed_llama.provenance import require_verified

SUMMARY = "summary.json"


def contaminated_items(folder: str | Path | None) -> dict[str, dict[int, bool]] | None:
    """{task: {idx: contaminated}} from a contamination output folder (verified against its manifest), or None
    when `folder` is unset or holds no output (then the table shows the full-set cells only)."""
    if not folder or not (Path(folder) / SUMMARY).is_file():
        return None
    require_verified(folder)
    summary = json.loads((Path(folder) / SUMMARY).read_text())
    out: dict[str, dict[int, bool]] = {}
    for task in summary["tasks"]:
        items = json.loads((Path(folder) / f"{task}.json").read_text())
        out[task] = {int(i["idx"]): bool(i["contaminated"]) for i in items}
    if not out:
        raise UserError(f"{folder}/{SUMMARY} names no task: rerun `biomed-llama contamination`")
    return out
