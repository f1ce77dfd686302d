"""`biomed-llama show`: print what the pipeline produced (metrics of each stage and the results table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import app


@app.command()
def show(
    metrics_dir: Annotated[Path, typer.Option(help="Folder of stage metrics JSON files.")] = Path("metrics"),
    table: Annotated[Path, typer.Option(help="The rendered results table.")] = Path("reports/table.md"),
    figure: Annotated[Path, typer.Option(help="The training-loss figure.")] = Path("reports/loss.png"),
) -> None:
    """Print every stage's metrics and, when they exist, the results table and the loss figure's path."""
    from biomed_llama.report_console import print_summary

    print_summary(metrics_dir, table, figure=figure)
