"""Shared fixtures: the repository root, a LLaMA-style SentencePiece tokenizer factory, and skipping
`gpu`-marked tests where CUDA is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, tokenizer


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (where params.yaml and data/sample live)."""
    return REPO


@pytest.fixture(scope="session")
def llama_sp_tokenizer():
    """Factory `(folder, texts) -> folder` of `tests.helpers.tokenizer.llama_sp_tokenizer`."""
    return tokenizer.llama_sp_tokenizer


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
