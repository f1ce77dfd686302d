"""`biomed-llama show`: stage metrics as tables, eval cells only through the results table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from biomed_llama.report_console import flatten, print_summary


def test_flatten_dots_nested_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_summary_lists_stage_metrics_and_the_table(tmp_path: Path) -> None:
    (tmp_path / "metrics" / "eval").mkdir(parents=True)
    (tmp_path / "metrics" / "tokenize.json").write_text(json.dumps({"total": {"tokens": 94076}}))
    (tmp_path / "metrics" / "eval" / "pretrained.json").write_text(json.dumps({"seed.medqa4.0shot.acc": 0.25}))
    table = tmp_path / "table.md"
    table.write_text("| Model | USMLE |\n| --- | --- |\n| pretrained | 0.2500 (paper: 0.3535) |\n")
    console = Console(record=True, width=200)
    figure = tmp_path / "loss.png"
    figure.write_bytes(b"\x89PNG")
    print_summary(tmp_path / "metrics", table, console, figure=figure)
    out = console.export_text()
    assert out.rstrip().endswith(f"training-loss figure: {figure}")
    assert "total.tokens" in out and "94076" in out
    assert "seed.medqa4.0shot.acc" not in out  # per-cell eval metrics appear only in the table
    assert "| pretrained | 0.2500 (paper: 0.3535) |" in out


def test_summary_says_what_to_run_when_empty(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    print_summary(tmp_path / "metrics", tmp_path / "table.md", console)
    assert "dvc repro evaluate" in console.export_text()
