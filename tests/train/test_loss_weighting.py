"""`pretrain.loss_weighting: sequence` (REPRODUCTION.md correction 5): the mean over the global batch's
sequences of each sequence's mean token loss, equal to a direct computation, and the same for every
micro × accumulation × world split (1, 2 and 4 gloo ranks under torchrun)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import train as H

SPLIT_TOL = 1e-6  # fp32 CPU: splits differ only in summation order
REF_TOL = 1e-5  # the direct computation runs one sequence per forward


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    # documents of 3..70 tokens cut/padded to 32 (truncate packing): sequences hold 2..31 targets
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


def _raw(tmp, tokens, **kw):
    return H.tiny_params(tmp, tokens, packing="truncate", loss_weighting="sequence", **kw)


def _run(tmp, tokens, **kw):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    return run_pretrain(PretrainParams.of(H.validate(_raw(tmp, tokens, **kw))))


def direct_sequence_mean(params) -> list[float]:
    """HF model, one sequence per forward: loss = mean over the batch's sequences of `model(seq).loss`
    (HF's token mean of that sequence), as HF Trainer 4.28 averaged 1-sequence micro batches."""
    from transformers import AutoTokenizer, LlamaForCausalLM, get_cosine_schedule_with_warmup

    from biomed_llama.data.loader import DistributedLoader, PackedDataset, open_stores
    from biomed_llama.model.build import init_weights, llama_config

    cfg, hp = params.pretrain, params.pretrain.optim
    model = LlamaForCausalLM(llama_config(params.model, len(AutoTokenizer.from_pretrained(cfg.tokenizer))))
    init_weights(model, params.seed, model.config.initializer_range)
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": hp.weight_decay},
                             {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=hp.lr, betas=hp.betas, eps=hp.eps)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.max_steps * hp.warmup_ratio), cfg.max_steps,
                                            hp.num_cycles)
    data = PackedDataset(open_stores(cfg.tokens, cfg.subsets, cfg.split), cfg.max_seq_length, cfg.packing)
    loader = DistributedLoader(data, global_batch=cfg.global_batch_size, micro_batch=cfg.global_batch_size,
                               dp_rank=0, dp_size=1, seed=params.seed, shuffle=cfg.shuffle)
    losses = []
    for _ in range(cfg.max_steps):
        (mb,) = loader.next_batch()
        per_seq = [model(input_ids=mb.input_ids[i:i + 1], labels=mb.labels[i:i + 1]).loss
                   for i in range(len(mb.labels)) if (mb.labels[i, 1:] != -100).any()]
        loss = torch.stack(per_seq).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _curve(result) -> list[float]:
    return [result.losses[s] for s in sorted(result.losses)]


@pytest.fixture(scope="module")
def one_rank(tokens, tmp_path_factory):
    return _curve(_run(tmp_path_factory.mktemp("seq"), tokens, micro_batch_size=2))


def test_sequence_weighting_equals_the_direct_computation(tokens, one_rank, tmp_path):
    ref = direct_sequence_mean(H.validate(_raw(tmp_path, tokens)))
    assert len(one_rank) == len(ref) == 6
    assert max(abs(a - b) for a, b in zip(one_rank, ref)) < REF_TOL, (one_rank, ref)
    # and it is not the token mean: sequences of different lengths weigh differently
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    token = _curve(run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "tok", tokens, packing="truncate")))))
    assert abs(token[0] - one_rank[0]) > 1e-3


def test_sequence_weighting_same_for_every_micro_and_accumulation(tokens, one_rank, tmp_path):
    for micro in (1, 4):  # accumulation 4 and 1 (the fixture: micro 2, accumulation 2)
        got = _curve(_run(tmp_path / f"m{micro}", tokens, micro_batch_size=micro))
        assert max(abs(a - b) for a, b in zip(got, one_rank)) < SPLIT_TOL, (micro, got, one_rank)


@pytest.mark.parametrize("nproc,shard,micro,speed", [
    (2, 2, 1, {}),
    # four processes on two cores: the slowest of these, so in the integration tier
    pytest.param(4, 2, 1, {}, marks=pytest.mark.integration),
    # the speed levers that touch the step: params kept gathered across micro batches, a sync per micro batch
    (2, 2, 1, {"reshard_after_forward": False, "grad_sync": "every"}),
    # the last layer kept gathered across micro batches while the other resharded (pretrain.gathered_layers)
    (2, 2, 1, {"gathered_layers": 1, "grad_sync": "every"}),
], ids=["2-ranks", "4-ranks-2x2", "2-ranks-zero2-sync-every", "2-ranks-gathered-layer"])
def test_sequence_weighting_same_on_more_ranks(tokens, one_rank, tmp_path, nproc, shard, micro, speed):
    from biomed_llama.train.metrics import read_loss_curve

    raw = _raw(tmp_path, tokens, micro_batch_size=micro, shard_size=shard, **speed)
    proc = H.torchrun(nproc, H.write_params_file(tmp_path / "params.yaml", raw))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [r["loss"] for r in read_loss_curve(tmp_path / "plots")]
    assert max(abs(a - b) for a, b in zip(got, one_rank)) < SPLIT_TOL, (got, one_rank)


def test_a_sequence_without_targets_counts_in_neither():
    from biomed_llama.data.loader import MicroBatch
    from biomed_llama.train.step import SequenceMeanLoss

    labels = torch.tensor([[1, 5, 6, -100], [1, -100, -100, -100], [1, 7, 8, 9]])
    mb = MicroBatch(labels.clamp(min=0), labels)
    loss = SequenceMeanLoss()
    assert loss.count([mb]) == 2
    w = loss.inputs(mb, total=4)["token_weights"]
    # sequence 0: 2 targets → 1/(2·4) each; sequence 1: none; sequence 2: 3 targets → 1/(3·4) each
    expected = torch.tensor([[1 / 8, 1 / 8, 0], [0, 0, 0], [1 / 12, 1 / 12, 1 / 12]])
    assert torch.allclose(w, expected) and math.isclose(float(w.sum()), 2 / 4)


def test_finetune_inherits_or_sets_its_own_weighting():
    from biomed_llama.config import validate_params

    p = validate_params({"pretrain": {"loss_weighting": "sequence"}})
    assert p.finetune.engine_config(p.pretrain, "task", "medqa", 10).loss_weighting == "sequence"
    p = validate_params({"pretrain": {"loss_weighting": "sequence"}, "finetune": {"task": {"loss_weighting": "token"}}})
    assert p.finetune.engine_config(p.pretrain, "task", "medqa", 10).loss_weighting == "token"
    assert p.finetune.engine_config(p.pretrain, "instruct", None, 10).loss_weighting == "sequence"
