"""Fine-tune step counts as the released HF Trainer 4.28 computed them (`finetune.<mode>.trainer_steps`).

The reference is the Trainer's own arithmetic over a real torch `DistributedSampler` + `DataLoader` on 8
ranks (fork trainer.py:865-870, 913-922, 1690-1702): `epochs × (len(dataloader) // accumulation)`.
"""

from __future__ import annotations

import math

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from biomed_llama.train.config import FinetuneHparams, TrainerSteps
from tests.helpers import load_named_profile

# The published train sets (REPRODUCTION.md; the mixture: instruct_mix.n_records) and the README's counts.
MODES = {  # name: (mode, examples, Trainer steps, ceil(epochs·n/128))
    "medqa": ("task", 10_178, 237, 239),
    "medmcqa": ("task", 182_822, 4_284, 4_285),
    "pubmedqa": ("task", 211_269, 4_950, 4_952),
    "instruct mixture": ("instruct", 150_000, 1_171, 1_172),
}


def trainer_steps(n: int, epochs: float, world: int, micro: int, accumulation: int) -> int:
    """What the fork's Trainer computed: len(DataLoader) of rank 0's DistributedSampler, // accumulation, × epochs."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=0, shuffle=True, seed=42, drop_last=False)
    len_dataloader = len(DataLoader(range(n), batch_size=micro, sampler=sampler, drop_last=False))
    return math.ceil(epochs * max(len_dataloader // accumulation, 1))


@pytest.mark.parametrize("name", sorted(MODES))
def test_the_paper_profile_counts_steps_as_the_released_trainer(name):
    mode, n, readme, old = MODES[name]
    hp = getattr(load_named_profile("paper").finetune, mode)
    ts = hp.trainer_steps
    assert (ts.world_size, ts.micro_batch) == (8, 1)
    accumulation = hp.global_batch_size // (ts.world_size * ts.micro_batch)
    assert accumulation == 16  # evaluation/train.sh:32
    assert hp.steps(n) == trainer_steps(n, hp.epochs, 8, 1, accumulation) == readme
    ceil_count = hp.model_copy(update={"trainer_steps": None}).steps(n)
    assert ceil_count == old and ceil_count > readme  # the other formula: 1-2 steps more
    # the engine's epochs (n // global batch steps each) end exactly where the Trainer's do: no step of a 4th epoch
    assert readme == hp.epochs * (n // hp.global_batch_size)


def test_trainer_steps_differs_where_ranks_pad_and_keeps_at_least_one_step_per_epoch():
    ts = TrainerSteps(world_size=8, micro_batch=1)
    # 8 × 16 × 10 + 1 examples: ceil(n / 8) = 161 → 10 steps an epoch, as n // 128
    assert ts.steps(1281, 3, 128) == 30 == trainer_steps(1281, 3, 8, 1, 16)
    # 2047 examples: ceil(2047 / 8) = 256 → 16 steps, where n // 128 = 15 (the padded rank completes a step)
    assert ts.steps(2047, 1, 128) == 16 == trainer_steps(2047, 1, 8, 1, 16)
    assert ts.steps(5, 3, 128) == 3 == trainer_steps(5, 3, 8, 1, 16)  # max(…, 1) per epoch
    assert TrainerSteps(world_size=2, micro_batch=2).steps(1000, 2.5, 8) == trainer_steps(1000, 2.5, 2, 2, 2)


def test_trainer_steps_must_divide_the_global_batch():
    with pytest.raises(ValueError, match="must divide"):
        FinetuneHparams(global_batch_size=100, trainer_steps={"world_size": 8, "micro_batch": 1})
    assert load_named_profile("params.yaml").finetune.task.trainer_steps is None  # the demo keeps ceil(epochs·n/B)
