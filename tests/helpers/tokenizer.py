"""Tiny tokenizers trained on given texts: a byte-level BPE, and a LLaMA-style SentencePiece one."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def tiny_bpe(texts: Iterable[str], vocab_size: int = 600):
    """A byte-level BPE fast tokenizer with LLaMA's special ids: <unk> 0, <s> 1, </s> 2, <pad> 3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def llama_sp_tokenizer(folder: Path, texts: list[str], vocab_size: int = 600) -> Path:
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
