"""Shared fixtures: the repository root, a LLaMA-style SentencePiece tokenizer factory, and skipping
`gpu`-marked tests where CUDA is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (where params.yaml and data/sample live)."""
    return REPO


def build_llama_sp_tokenizer(folder: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """Train a LLaMA-like SentencePiece-style BPE on `texts` and save it as a HF folder.

    Like LLaMA's tokenizer: spaces become `▁` and a `▁` is prepended (SentencePiece's dummy prefix),
    byte fallback for unseen characters, `<unk>` 0, `<s>` 1, `</s>` 2, and BOS added by `tokenizer(x)`.
    Built with `tokenizers` (the venv has no `sentencepiece`); the `▁` effects are the same.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # SentencePiece's whitespace handling: a `▁` is always prepended (its dummy prefix), every space becomes
    # `▁`, and pieces never span two words (its default split_by_whitespace): " warfarin" is `▁` + `▁war…`.
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            clean_up_tokenization_spaces=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_sp_tokenizer():
    """Factory `(folder, texts) -> folder` of `build_llama_sp_tokenizer`."""
    return build_llama_sp_tokenizer


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
