"""Console summary of a pipeline run: one rich table per metrics file, then the results table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from biomed_llama.stage_metrics import DETAILS_SUFFIX


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (`{"a": {"b": 1}}` → `{"a.b": 1}`)."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def print_summary(metrics_dir: Path, table: Path, console: Console | None = None, figure: Path | None = None) -> None:
    """Print each stage's `metrics_dir/**/*.json` as a key/value table, then the results `table` and where
    the training-loss `figure` is (when it exists).

    The per-cell evaluation metrics (`metrics_dir/eval/`) are what the results table shows, so
    they are not listed twice. The table is printed as its Markdown text: it stays readable at
    any terminal width and in CI logs, where a rendered table would wrap.
    """
    console = console or Console()
    # the diagnostics beside each metrics file (biomed_llama/stage_metrics.py) are for reading on their own
    files = (
        sorted(
            f
            for f in metrics_dir.rglob("*.json")
            if "eval" not in f.relative_to(metrics_dir).parts[:-1] and not f.name.endswith(DETAILS_SUFFIX)
        )
        if metrics_dir.is_dir()
        else []
    )
    if not files and not table.is_file():
        console.print(f"no metrics under {metrics_dir} and no {table}: run `dvc repro evaluate` first")
        return
    for f in files:
        t = Table(title=str(f), show_header=True, header_style="bold")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k, v in flatten(json.loads(f.read_text())).items():
            t.add_row(k, _fmt(v))
        console.print(t)
    if table.is_file():
        console.rule(str(table))
        console.print(table.read_text(), markup=False, highlight=False, soft_wrap=True)
    if figure is not None and figure.is_file():
        console.print(f"training-loss figure: {figure}", markup=False, highlight=False)
