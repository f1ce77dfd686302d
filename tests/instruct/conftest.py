"""Fixtures of the instruct tests: the committed sample sources and a tiny tokenizer trained on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomed_llama.config import Params
from tests.helpers import REPO
from tests.helpers.tokenizer import tiny_bpe

FIXTURES = REPO / "data" / "sample" / "instruct"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """data/sample/instruct in the checkout."""
    return FIXTURES


def _corpus() -> list[str]:
    texts = []
    for path in sorted(FIXTURES.rglob("*.json*")):
        texts.append(path.read_text(encoding="utf-8"))
    return texts


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE (vocab 600) with LLaMA's special ids: <unk> 0, <s> 1, </s> 2, <pad> 3."""
    return tiny_bpe(_corpus())


@pytest.fixture()
def params(tmp_path, monkeypatch) -> Params:
    """Demo params with outputs redirected into tmp_path (sources read from the checkout)."""
    monkeypatch.chdir(REPO)
    p = Params()
    p.instruct_mix.output = str(tmp_path / "instruct")
    p.instruct_mix.metrics = str(tmp_path / "metrics" / "instruct_mix.json")
    p.finetune.mixture = p.instruct_mix.output
    return p


def read_json(path: Path):
    """Load a JSON file."""
    return json.loads(Path(path).read_text())
