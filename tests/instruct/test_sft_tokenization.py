"""Correction 4: SFT examples are tokenized as the released code did, source + target as one string.

The reference here is the original's procedure written out again (`evaluation/instruct_dataset.py:
85-105`, `evaluation/mcqa_dataset.py:119-139`): tokenize `[source + target + "</s>", source]` with the
tokenizer's own BOS, truncate to max_length, mask the first `len(tokenize(source))` positions. It is
checked on a LLaMA-style SentencePiece tokenizer trained here (where `▁` decides the pieces) and on
the demo's byte-level BPE (which adds no BOS itself, so the reference adds it).
"""

from __future__ import annotations

import pytest
import torch

from biomed_llama.instruct.finetune_data import IGNORE_INDEX, tokenize_pairs
from biomed_llama.instruct.templates import render_task
from biomed_llama.benchmarks.records import MCItem, YesNoItem

WORDS = ["warfarin", "aspirin", "heparin", "Answer", "Question", "Options", "patient", "dose", "maybe", "Yes"]


def _pairs() -> list[tuple[str, str]]:
    """Instruct MC (prompt ends `(`), PubMedQA, task fine-tune prompts, an Alpaca-style output."""
    mc = MCItem(question="Which anticoagulant needs INR checks?", options=("aspirin", "warfarin", "heparin"),
                answer="B")
    yn = YesNoItem(question="Does warfarin raise the INR?", contexts=("A cohort of 40 patients.",), answer="yes")
    mc_prompt = ("The following is a multiple-choice question.\n\n### Question: Which drug?\n\n"
                 "### Options:\n(A) aspirin\n(B) warfarin\n\n### Answer:(")
    return [
        (mc_prompt, "B) warfarin"),
        ("### Abstract: A cohort.\n\n### Question: Does it help?\n\n### Answer:", "Yes"),
        render_task(mc),  # (... "### Answer:", " warfarin")
        render_task(yn),  # (... "### Answer:", " yes")
        ("### Instruction:\nList two anticoagulants.\n\n### Response:\n", "Warfarin and heparin."),
    ]


def _texts() -> list[str]:
    return [p + o for p, o in _pairs()] * 20 + [" ".join(WORDS)] * 50


def original_rule(tok, source: str, target: str, max_length: int, add_bos: bool) -> tuple[list[int], list[int]]:
    """The released code's example, computed with the tokenizer's own call (the reference)."""
    enc = tok([source + target + tok.eos_token, source], max_length=max_length, truncation=True)
    full, src = enc["input_ids"]
    if add_bos:  # the demo tokenizer adds no BOS itself; the package always starts a sequence with one
        full, src = [tok.bos_token_id] + full, [tok.bos_token_id] + src
        full = full[:max_length]
    source_len = min(len(src), max_length)
    labels = list(full)
    labels[:source_len] = [IGNORE_INDEX] * min(source_len, len(full))
    return full, labels


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory, llama_sp_tokenizer):
    from transformers import AutoTokenizer

    folder = llama_sp_tokenizer(tmp_path_factory.mktemp("sp"), _texts())
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def demo_tok(repo_root):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(repo_root / "data" / "sample" / "tokenizer"))


@pytest.mark.parametrize("which", ["sp", "demo"])
@pytest.mark.parametrize("max_length", [512, 10])
def test_joint_examples_equal_the_released_rule(which, max_length, sp_tok, demo_tok):
    tok = sp_tok if which == "sp" else demo_tok
    pairs = _pairs()
    assert (tok("x")["input_ids"][0] == tok.bos_token_id) == (which == "sp")
    ds = tokenize_pairs(pairs, ["s"] * len(pairs), tok, max_length=max_length, tokenization="joint")
    kept = 0
    for source, target in pairs:
        ids, labels = original_rule(tok, source, target, max_length, add_bos=which == "demo")
        if all(x == IGNORE_INDEX for x in labels):
            continue  # nothing to learn after truncation: the package drops such an example
        ex = ds[kept]
        assert ex["input_ids"].tolist() == ids
        assert ex["labels"].tolist() == labels
        kept += 1
    assert kept == len(ds) and ds.n_dropped == len(pairs) - kept
    if max_length == 10:
        assert ds.n_dropped > 0  # long prompts lose their output under right truncation, as in the original


def test_sentencepiece_output_keeps_the_joint_pieces(sp_tok):
    """`" warfarin"` after `### Answer:` is one `▁war…` run jointly; alone it gains a lone `▁`."""
    source, target = render_task(MCItem(question="Which drug?", options=("aspirin", "warfarin"), answer="B"))
    joint = tokenize_pairs([(source, target)], ["t"], sp_tok, 512, tokenization="joint")[0]
    separate = tokenize_pairs([(source, target)], ["t"], sp_tok, 512, tokenization="separate")[0]
    out_joint = [t for t, lab in zip(joint["input_ids"].tolist(), joint["labels"].tolist()) if lab != IGNORE_INDEX]
    out_sep = [t for t, lab in zip(separate["input_ids"].tolist(), separate["labels"].tolist()) if lab != IGNORE_INDEX]
    pieces_joint = sp_tok.convert_ids_to_tokens(out_joint)
    pieces_sep = sp_tok.convert_ids_to_tokens(out_sep)
    assert pieces_joint[-1] == pieces_sep[-1] == "</s>"
    assert "".join(pieces_joint[:-1]) == "▁warfarin"        # one leading ▁, as in the joint string
    assert "".join(pieces_sep[:-1]) == "▁▁warfarin"         # dummy prefix + the space: one ▁ too many
    assert pieces_sep[0] == "▁" and out_joint != out_sep


def test_whitespace_before_eos_is_dropped_as_the_slow_tokenizer_did(sp_tok):
    """`evaluation/main.py:98-103` sets `</s>` as a plain string: the slow tokenizer strips the space on its left."""
    a = tokenize_pairs([("### Response:\n", "Take it daily.  \n")], ["a"], sp_tok, 512)[0]
    b = tokenize_pairs([("### Response:\n", "Take it daily.")], ["a"], sp_tok, 512)[0]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_separate_mode_is_the_labelled_alternative(sp_tok):
    pairs = _pairs()
    ds = tokenize_pairs(pairs, ["s"] * len(pairs), sp_tok, 512, tokenization="separate")
    for i, (source, target) in enumerate(pairs):
        p = sp_tok(source, add_special_tokens=False)["input_ids"]
        o = sp_tok(target, add_special_tokens=False)["input_ids"]
        assert ds[i]["input_ids"].tolist() == [sp_tok.bos_token_id] + p + o + [sp_tok.eos_token_id]
        assert ds[i]["labels"].tolist() == [IGNORE_INDEX] * (1 + len(p)) + o + [sp_tok.eos_token_id]
