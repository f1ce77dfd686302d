"""SFT examples: label masking, truncation, collation, instruct and task datasets, a loss that goes down."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomed_llama.errors import UserError
from biomed_llama.instruct.finetune_data import (
    IGNORE_INDEX, SFTCollator, assemble, build_sft_dataset, task_pairs, tokenize_pairs,
)
from biomed_llama.instruct.mixture import run_instruct_mix

BOS, EOS, PAD = 1, 2, 3


def test_assemble_masks_bos_and_prompt_only():
    ids, n_masked = assemble([10, 11, 12], [20, 21], BOS, EOS, max_length=64)
    assert ids == [BOS, 10, 11, 12, 20, 21, EOS] and n_masked == 4


def test_right_truncation_cuts_the_end_and_drops_examples_left_without_output():
    ids, n_masked = assemble(list(range(10, 15)), [20, 21, 22], BOS, EOS, max_length=8)
    assert ids == [BOS, 10, 11, 12, 13, 14, 20, 21] and n_masked == 6  # EOS and one output token cut
    assert assemble(list(range(10, 20)), [20], BOS, EOS, max_length=8) is None


def test_prompt_left_truncation_keeps_the_output_and_the_prompt_end():
    assert assemble(list(range(10, 20)), [20, 21], BOS, EOS, max_length=8) is None  # `right` loses it
    ids, n_masked = assemble(list(range(10, 20)), [20, 21], BOS, EOS, max_length=8, truncation="prompt_left")
    assert ids == [BOS, 16, 17, 18, 19, 20, 21, EOS] and n_masked == 5
    ids, n_masked = assemble([10, 11], list(range(20, 30)), BOS, EOS, max_length=6, truncation="prompt_left")
    assert ids == [BOS, 20, 21, 22, 23, 24] and n_masked == 1


def test_every_prompt_position_ignored_every_output_position_and_eos_counted(tokenizer):
    pairs = [("### Question: Which drug?\n### Answer:", " aspirin"), ("Summarise the role of the liver.", "It filters blood.")]
    ds = tokenize_pairs(pairs, ["a", "b"], tokenizer, max_length=512)
    assert len(ds) == 2 and ds.n_dropped == 0
    for (prompt, output), i in zip(pairs, range(2)):
        ex = ds[i]
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        o = tokenizer(output, add_special_tokens=False)["input_ids"]
        assert ex["input_ids"].dtype == torch.long and ex["labels"].dtype == torch.long
        assert ex["input_ids"].tolist() == [BOS] + p + o + [EOS]
        n_prompt = 1 + len(p)
        assert (ex["labels"][:n_prompt] == IGNORE_INDEX).all()                       # BOS + prompt ignored
        assert ex["labels"][n_prompt:].tolist() == o + [EOS]                          # output + EOS counted
        assert tokenizer.decode(ex["labels"][n_prompt:-1]) == output
    ids, labels = ds.sequence(0)  # the fixed-length form the pretrain loader stacks
    n = len(ds[0]["input_ids"])
    assert ids.shape == labels.shape == (512,) and ids.dtype == labels.dtype == np.int64
    assert ids[:n].tolist() == ds[0]["input_ids"].tolist() and (ids[n:] == PAD).all()
    assert labels[:n].tolist() == ds[0]["labels"].tolist() and (labels[n:] == IGNORE_INDEX).all()
    assert ds.n_label_tokens() == sum(int((ds[i]["labels"] != IGNORE_INDEX).sum()) for i in range(2))


def test_collator_right_pads_with_pad_id_and_ignored_labels():
    ex = [{"input_ids": torch.tensor([1, 5, 6]), "labels": torch.tensor([-100, 6, 2])},
          {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([-100, 2])}]
    batch = SFTCollator(pad_id=PAD)(ex)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, PAD]]
    assert batch["labels"].tolist() == [[-100, 6, 2], [-100, 2, -100]]
    assert SFTCollator(pad_id=PAD, pad_to_multiple_of=4)(ex)["input_ids"].shape == (2, 4)


@pytest.mark.parametrize("task,n", [("medqa", 40), ("medmcqa", 60), ("pubmedqa", 60)])
def test_task_mode_builds_the_fine_tune_prompt(params, tokenizer, task, n):
    pairs = task_pairs(params.finetune, task, params.readers, params.instruct_mix.on_bad_record)
    assert len(pairs) == n
    prompt, target = pairs[0]
    assert "### Question: " in prompt and "\n### Options: (A) " in prompt and prompt.endswith("\n### Answer:")
    assert target.startswith(" ") and not target.endswith("</s>")
    if task == "pubmedqa":
        assert prompt.startswith("### Context: ") and target in (" yes", " no")
    ds = build_sft_dataset(params.finetune, "task", task, tokenizer, params.readers, params.instruct_mix.on_bad_record)
    assert len(ds) + ds.n_dropped == n and ds.sources[0] == task
    with pytest.raises(UserError, match="unknown fine-tune task"):
        build_sft_dataset(params.finetune, "task", "nope", tokenizer, params.readers, params.instruct_mix.on_bad_record)


def test_instruct_mode_reads_the_verified_mixture(params, tokenizer):
    run_instruct_mix(params.instruct_mix, params.readers)
    ds = build_sft_dataset(params.finetune, "instruct", None, tokenizer, params.readers, params.instruct_mix.on_bad_record)
    assert len(ds) + ds.n_dropped == params.instruct_mix.n_records
    again = build_sft_dataset(params.finetune, "instruct", None, tokenizer, params.readers, params.instruct_mix.on_bad_record)
    assert again.fingerprint() == ds.fingerprint()
    stats = ds.stats()
    assert stats["max_length"] <= params.finetune.max_length and 0 < stats["label_tokens"] < stats["tokens"]
    # A tampered mixture is refused (the manifest no longer matches).
    with open(f"{params.instruct_mix.output}/mixture.jsonl", "a") as f:
        f.write('{"source": "x", "input": "y", "output": "z"}\n')
    with pytest.raises(UserError, match="refusing input"):
        build_sft_dataset(params.finetune, "instruct", None, tokenizer, params.readers, params.instruct_mix.on_bad_record)


def test_a_few_steps_on_task_examples_lower_the_masked_loss(params, tokenizer):
    """The examples carry a learnable signal through the standard shifted-label loss of a HF causal LM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ds = build_sft_dataset(params.finetune, "task", "medqa", tokenizer, params.readers, params.instruct_mix.on_bad_record)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=512, bos_token_id=BOS, eos_token_id=EOS,
                                         pad_token_id=PAD))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    collate = SFTCollator(pad_id=PAD)
    batch = collate([ds[i] for i in range(8)])
    losses = []
    for _ in range(12):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]


def test_the_pretrain_loader_serves_sft_examples(params, tokenizer):
    loader_mod = pytest.importorskip("biomed_llama.data.loader")
    ds = build_sft_dataset(params.finetune, "task", "medmcqa", tokenizer, params.readers, params.instruct_mix.on_bad_record)
    loader = loader_mod.DistributedLoader(ds, global_batch=8, micro_batch=4, dp_rank=0, dp_size=1, seed=0, shuffle=True)
    micros = loader.next_batch()
    idx = loader.global_indices(0)
    assert len(micros) == 2 and micros[0].input_ids.shape == (4, ds.seq_len)
    expected = sum(int(ds.lengths[i] - ds.n_masked[i]) for i in idx)
    assert sum(m.n_targets() for m in micros) == expected
