"""A stage's metrics file holds its headline numbers; its diagnostics go to a JSON file beside it.

`dvc metrics show` and `dvc metrics diff` read the files dvc.yaml declares as metrics: they hold what a
reader compares between runs (counts, throughput, the final loss, the table cells), a few values per
stage. Everything else a stage measures (dropped records per Pile subset, per-source statistics of the
mixture, per-split token counts, the device and mesh of a run) goes to `<name>.details.json` beside the
metrics file, an output DVC tracks but does not show as metrics.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from biomed_llama.fsutil import atomic_write_json

DETAILS_SUFFIX = ".details.json"


def details_path(metrics_path: str | Path) -> Path:
    """The diagnostics file beside a metrics file: `metrics/extract.json` → `metrics/extract.details.json`."""
    path = Path(metrics_path)
    return path.with_name(path.name.removesuffix(".json") + DETAILS_SUFFIX)


def split_metrics(metrics: dict[str, Any], headline: Collection[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `headline` keys of `metrics`, every other key), each in the order of `metrics`."""
    return (
        {k: v for k, v in metrics.items() if k in headline},
        {k: v for k, v in metrics.items() if k not in headline},
    )


def write_split(metrics_path: str | Path, headline: dict[str, Any], details: dict[str, Any]) -> None:
    """Write `headline` to the metrics file and `details` beside it (each atomically)."""
    atomic_write_json(details_path(metrics_path), details)
    atomic_write_json(metrics_path, headline)


def write_metrics(metrics_path: str | Path, metrics: dict[str, Any], headline: Collection[str]) -> None:
    """Write the `headline` keys of `metrics` to the metrics file and the rest to its details file."""
    write_split(metrics_path, *split_metrics(metrics, headline))
