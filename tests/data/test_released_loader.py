"""Correction 8: `pretrain.released_loader` feeds each step what the released run's ranks were fed.

The reference is the released chain itself, run here: an unsplit `IterableDataset` over the
file-order stream (`utils/data.py:68-107`), transformers' `IterableDatasetShard` as the Trainer wrapped
it for each rank, and a real torch `DataLoader` with several worker processes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from biomed_llama.data.loader import DistributedLoader, released_global_indices
from biomed_llama.errors import UserError


class FileOrderStream(IterableDataset):
    """Like `LMSuperLargeDataset`: yields every sequence (here its index) in file order, never split by worker."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def __iter__(self):
        yield from range(self.n)

    def __len__(self):
        return self.n


class Indices:
    """A dataset stand-in whose sequence i is just i (the loader only needs len() and .sequence())."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def sequence(self, i: int):
        return np.array([i, i], dtype=np.int64), np.array([i, i], dtype=np.int64)


def released_rank_batches(n: int, world: int, micro: int, workers: int, rank: int) -> tuple[list[list[int]], int]:
    """Rank `rank`'s batches as HF Trainer 4.28 + DataLoader(num_workers) produced them, and len(DataLoader)."""
    from transformers.trainer_pt_utils import IterableDatasetShard

    shard = IterableDatasetShard(FileOrderStream(n), batch_size=micro, drop_last=True, num_processes=world,
                                 process_index=rank)
    loader = DataLoader(shard, batch_size=micro, num_workers=workers)
    return [b.tolist() for b in loader], len(loader)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("world,micro,workers,accumulation", [(2, 1, 3, 2), (3, 2, 2, 1)])
def test_global_batches_are_what_the_released_ranks_were_fed(world, micro, workers, accumulation):
    n = 41
    global_batch = world * micro * accumulation
    per_rank = [released_rank_batches(n, world, micro, workers, r) for r in range(world)]
    len_dataloader = per_rank[0][1]
    steps = len_dataloader // accumulation  # HF 4.28: num_update_steps_per_epoch, max_steps for 1 epoch
    released = SimpleNamespace(workers=workers, world_size=world, micro_batch=micro)
    for dp_size in (1, 2):
        loader = DistributedLoader(Indices(n), global_batch=global_batch, micro_batch=1 if dp_size == 2 else micro,
                                   dp_rank=0, dp_size=dp_size, seed=0, shuffle=False, released=released)
        assert loader.steps_per_epoch == steps
        for step in range(steps):
            expected = [i for batches, _ in per_rank
                        for b in batches[step * accumulation:(step + 1) * accumulation] for i in b]
            assert loader.global_indices(step).tolist() == expected
    # Rank 0's stream: every batch `workers` times in a row; one epoch sees 1/workers of the distinct data.
    batches0 = per_rank[0][0]
    assert all(batches0[k] == batches0[k - k % workers] for k in range(len(batches0)))
    seen = {i for s in range(steps) for i in DistributedLoader(Indices(n), global_batch=global_batch, micro_batch=micro,
                                                               dp_rank=0, dp_size=1, seed=0, shuffle=False,
                                                               released=released).global_indices(s).tolist()}
    assert len(seen) <= -(-steps * global_batch // workers) < n


def test_released_run_shape_sees_a_sixteenth_of_the_data():
    """The released layout (32 ranks × 1 × 64 accumulation, 16 workers) over 2048 × 40 sequences."""
    n, gb = 2048 * 40, 2048
    steps = (n // 32) // 64
    idx = np.concatenate([released_global_indices(s, n, gb, 16, 32, 1) for s in range(steps)])
    assert steps == 40 and len(idx) == n
    uniq, counts = np.unique(idx, return_counts=True)
    assert len(uniq) == n // 16 and np.all(counts == 16)
    assert set(uniq.tolist()) == set(range(n // 16))  # the first sixteenth of the file-order stream
    step0 = released_global_indices(0, n, gb, 16, 32, 1).reshape(32, 64)
    assert step0[0].tolist() == [0] * 16 + [32] * 16 + [64] * 16 + [96] * 16  # rank 0: its share, 16× each


def test_next_batch_stacks_the_replayed_sequences():
    released = SimpleNamespace(workers=2, world_size=2, micro_batch=1)
    loader = DistributedLoader(Indices(20), global_batch=4, micro_batch=2, dp_rank=1, dp_size=2, seed=0, shuffle=False,
                               released=released)
    (micro,) = loader.next_batch()
    assert micro.input_ids[:, 0].tolist() == loader.global_indices(0)[2:].tolist() == [1, 1]
    assert isinstance(micro.input_ids, torch.Tensor)


def test_config_needs_file_order_and_a_divisible_layout():
    from pydantic import ValidationError

    from biomed_llama.train.config import PretrainConfig

    ok = PretrainConfig(global_batch_size=64, micro_batch_size=2, shuffle=False,
                        released_loader={"workers": 16, "world_size": 32, "micro_batch": 1})
    assert ok.released_loader.workers == 16
    with pytest.raises(ValidationError, match="shuffle: false"):
        PretrainConfig(global_batch_size=64, micro_batch_size=2, shuffle=True, released_loader={})
    with pytest.raises(ValidationError, match="must divide"):
        PretrainConfig(global_batch_size=48, micro_batch_size=2, shuffle=False, released_loader={"world_size": 32})
    with pytest.raises(UserError, match="fewer than one"):
        DistributedLoader(Indices(40), global_batch=64, micro_batch=2, dp_rank=0, dp_size=1, seed=0, shuffle=False,
                          released=SimpleNamespace(workers=16, world_size=32, micro_batch=1))
