"""Fixtures of the benchmark-reader tests: the committed sample files in the published formats."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def instruct_dir() -> Path:
    """data/sample/instruct: train-side fixtures, both MedMCQA conventions, the bad-record files (bad/)."""
    return REPO / "data" / "sample" / "instruct"


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    """data/sample/eval: the demo's benchmark test sets and few-shot pools."""
    return REPO / "data" / "sample" / "eval"
