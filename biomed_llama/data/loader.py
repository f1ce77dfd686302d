"""Packing of the tokenized stream into training sequences, and a resumable data-parallel loader.

A *sequence* is `max_seq_length` token ids plus labels (-100 where no target); HF causal-LM models
shift labels inside, so position t's target is `labels[t + 1]`.

Packing modes (REPRODUCTION.md "Data"):
- `truncate`: sequence i is document i alone: BOS + its tokens (EOS included by tokenize), cut to
  `max_seq_length` and right-padded; padding gets label -100, so no target ever crosses a document.
- `concat`: the stream BOS doc₀ EOS BOS doc₁ EOS … of each subset is cut into full sequences
  (the remainder shorter than one sequence is dropped); targets cross document boundaries.

The global batch of step s is a fixed set of sequence indices that depends only on the seed and s
(a per-epoch seeded permutation), never on the world size; data-parallel rank r takes the r-th
contiguous slice of it and splits that into micro batches. The loader's whole state is the number
of global batches consumed, so resuming is exact.

Document order (`pretrain.document_order`, `document_order_index`): which sequence of the stores the
loader's sequence i is. `subset_major`: every sequence of the first subset, then the next (the
stores concatenated); `interleaved`: the subsets merged by a seeded uniform random interleave that
keeps each subset's own file order, the order the Pile's shards hold the two subsets in (its
documents are spread over its shards at random, so a per-shard extraction keeps them mixed);
`shuffled`: one seeded permutation of all sequences. With `shuffle: true` the per-epoch permutation
comes on top (any order then trains alike); it matters for the file-order readers, above all the
released loader, whose one epoch covers only its first 1/16.

`released_global_indices` is the other order, labelled for what it is: the stream the released run
fed (correction 8 of REPRODUCTION.md, `pretrain.released_loader`): file order, each batch as many
times in a row as there were loader workers, one epoch covering 1/workers of the distinct data.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from biomed_llama.errors import UserError

IGNORE_INDEX = -100
"""The label of a position with no target (the loss skips it): padding, a masked prompt; transformers' and
PyTorch's `ignore_index` default. The one definition: model/lm.py and instruct/finetune_data.py import it."""


class Store(Protocol):
    """What the loader needs of a token store (`biomed_llama.data.tokens.TokenStore`)."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: dict[str, Any]


def open_stores(root: str | Path, subsets: Sequence[str], split: str) -> list[Store]:
    """Open `<root>/<subset>/<split>` token stores in the given order; a missing one is a UserError."""
    from biomed_llama.data.tokens import TokenStore

    stores: list[Store] = []
    for slug in subsets:
        path = Path(root) / slug / split
        if not (path / "tokens.bin").is_file():
            raise UserError(f"no token store at {path}; run `biomed-llama tokenize` first")
        stores.append(TokenStore(path))
    return stores


DOCUMENT_ORDERS = ("subset_major", "interleaved", "shuffled")


def document_order_index(counts: Sequence[int], order: str, seed: int) -> np.ndarray | None:
    """Where the loader's sequence i lies in the concatenated stores (int64[sum(counts)]); None: in place.

    `counts` are the sequences of each store in `pretrain.subsets` order. `interleaved` draws which
    subset each position takes, as a seeded permutation of the multiset of subset labels (a uniform
    random interleave), and fills each subset's positions with its sequences in their own order;
    `shuffled` is a seeded permutation of every sequence. The same seed gives the same order on any
    rank and world size.
    """
    if order not in DOCUMENT_ORDERS:
        raise UserError(f"unknown document order {order!r}; use one of {', '.join(DOCUMENT_ORDERS)}")
    if order == "subset_major":
        return None
    n = int(sum(counts))
    # its own stream: the per-epoch shuffle (`DistributedLoader._order`) uses [seed, epoch]
    rng = np.random.default_rng([seed, 0x0D0C])
    if order == "shuffled":
        return rng.permutation(n).astype(np.int64)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    index = np.empty(n, dtype=np.int64)
    for s in range(len(counts)):
        at = labels == s
        index[at] = starts[s] + np.arange(int(counts[s]), dtype=np.int64)
    return index


class PackedDataset:
    """Random access to packed sequences over one or more token stores, in `document_order`."""

    def __init__(
        self,
        stores: Sequence[Store],
        seq_len: int,
        packing: str,
        *,
        document_order: str = "subset_major",
        seed: int = 0,
    ):
        if not stores:
            raise UserError("no token stores given")
        if packing not in ("truncate", "concat"):
            raise UserError(f"unknown packing {packing!r}")
        self.stores, self.seq_len, self.packing = list(stores), seq_len, packing
        meta = stores[0].meta
        if meta.get("bos_id") is None or meta.get("eos_id") is None:
            raise UserError("the token stores have no BOS/EOS id in meta.json; pretraining needs both")
        self.bos_id, self.eos_id = int(meta["bos_id"]), int(meta["eos_id"])
        # Padding only ever appears with label -100; EOS is a valid id for any vocabulary.
        self.pad_id = self.eos_id
        if packing == "truncate":
            counts = [len(s.offsets) - 1 for s in stores]
        else:
            # One BOS per document joins the stream, so document d starts at offsets[d] + d.
            self._stream_offsets = [np.asarray(s.offsets, dtype=np.int64) + np.arange(len(s.offsets)) for s in stores]
            counts = [int(so[-1]) // seq_len for so in self._stream_offsets]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.counts = counts
        """Sequences of each store, in the stores' order."""
        self._index = document_order_index(counts, document_order, seed)

    def store_of(self, i: int) -> int:
        """Which store (subset, in `pretrain.subsets` order) the loader's sequence i comes from."""
        return self._locate(i)[0]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._index is not None:
            i = int(self._index[i])
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        return s, i - int(self._starts[s])

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (input_ids, labels) of sequence i, both int64 of length seq_len."""
        s, j = self._locate(i)
        store = self.stores[s]
        if self.packing == "truncate":
            doc = np.asarray(store.tokens[store.offsets[j] : store.offsets[j + 1]], dtype=np.int64)
            ids = np.concatenate([[self.bos_id], doc[: self.seq_len - 1]])
            n = len(ids)
            out = np.full(self.seq_len, self.pad_id, dtype=np.int64)
            out[:n] = ids
            labels = out.copy()
            labels[n:] = IGNORE_INDEX
            return out, labels
        ids = self._concat_slice(s, j * self.seq_len, (j + 1) * self.seq_len)
        return ids, ids.copy()

    def _concat_slice(self, s: int, start: int, end: int) -> np.ndarray:
        """Stream positions [start, end) of store s, the stream being BOS + document per document."""
        store, so = self.stores[s], self._stream_offsets[s]
        out = np.empty(end - start, dtype=np.int64)
        d = int(np.searchsorted(so, start, side="right") - 1)
        pos = start
        while pos < end:
            doc_start = int(so[d])
            take_end = min(end, int(so[d + 1]))
            if pos == doc_start:  # the BOS slot of document d
                out[pos - start] = self.bos_id
                pos += 1
                continue
            # stream position p (> doc_start) is token p - doc_start - 1 of document d
            lo = int(store.offsets[d]) + pos - doc_start - 1
            hi = int(store.offsets[d]) + take_end - doc_start - 1
            out[pos - start : take_end - start] = store.tokens[lo:hi]
            pos = take_end
            d += 1
        return out


@dataclass
class MicroBatch:
    """One forward/backward's inputs on one rank: `input_ids` and `labels`, both [micro, seq_len]."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def n_targets(self) -> int:
        """Number of positions with a target (labels shifted by one, -100 excluded)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())


def grad_accumulation(global_batch: int, micro_batch: int, dp_size: int) -> int:
    """Micro batches each data-parallel rank runs per optimizer step: global = micro × accumulation × ranks.

    The one place this is computed (the trainer's step structure, the loader's split, the released run's
    layout); a global batch the split does not divide is a UserError.
    """
    if global_batch % (micro_batch * dp_size):
        raise UserError(
            f"global batch {global_batch} is not a multiple of micro batch {micro_batch} × "
            f"data-parallel size {dp_size}; change pretrain.global_batch_size or micro_batch_size"
        )
    return global_batch // (micro_batch * dp_size)


def released_global_indices(
    step: int, n: int, global_batch: int, workers: int, world_size: int, micro_batch: int
) -> np.ndarray:
    """Sequence indices the released run's `world_size` ranks consumed at optimizer step `step` (rank-major).

    The chain it reproduces (`pretrain/train_multi_nodes.sh:38-44`, `utils/data.py:68-107`, HF Trainer
    4.28): the file-order stream of `n` sequences is split by `IterableDatasetShard` (rank r keeps
    elements b·m·W + r·m + [0, m) of every block b of m·W, the incomplete last block dropped); each of
    the `workers` DataLoader workers iterates that whole share, and the DataLoader takes one batch from
    each worker in turn, so a rank's k-th batch is its share's batch ⌊k / workers⌋. Each optimizer step
    consumes A = global_batch / (W·m) batches per rank. Past the end of the replayed stream it starts
    over. Returns int64[global_batch].
    """
    accumulation = grad_accumulation(global_batch, micro_batch, world_size)
    share_batches = n // (micro_batch * world_size)
    if share_batches == 0:
        raise UserError(
            f"the data holds {n} sequences, fewer than one batch on each of the released run's {world_size} ranks"
        )
    k = (step * accumulation + np.arange(accumulation)) % (workers * share_batches)  # DataLoader batch numbers
    b = k // workers  # the share's batch each one is
    rank = np.arange(world_size)[:, None, None]
    offset = np.arange(micro_batch)[None, None, :]
    idx = b[None, :, None] * (micro_batch * world_size) + rank * micro_batch + offset  # [W, A, m]
    return idx.reshape(-1).astype(np.int64)


class DistributedLoader:
    """Yields, per optimizer step, this data-parallel rank's micro batches of the global batch.

    Same seed → same global batches for any `dp_size`; state is the count of global batches consumed.
    """

    def __init__(
        self,
        dataset: PackedDataset,
        *,
        global_batch: int,
        micro_batch: int,
        dp_rank: int,
        dp_size: int,
        seed: int,
        shuffle: bool,
        released: Any = None,
    ):
        self.accumulation = grad_accumulation(global_batch, micro_batch, dp_size)
        if len(dataset) < global_batch:
            raise UserError(f"the data holds {len(dataset)} sequences, fewer than one global batch of {global_batch}")
        self.dataset, self.global_batch, self.micro_batch = dataset, global_batch, micro_batch
        self.dp_rank, self.dp_size, self.seed, self.shuffle = dp_rank, dp_size, seed, shuffle
        self.released = released
        """`pretrain.released_loader` (workers, world_size, micro_batch) or None: replay the released stream."""
        if released is None:
            self.steps_per_epoch = len(dataset) // global_batch
        else:  # the released Trainer's epoch: len(DataLoader) // accumulation, len from the unduplicated stream
            per_rank = len(dataset) // (released.micro_batch * released.world_size)
            accumulation = grad_accumulation(global_batch, released.micro_batch, released.world_size)
            self.steps_per_epoch = per_rank // accumulation
            if self.steps_per_epoch == 0:
                raise UserError(
                    f"the data holds {len(dataset)} sequences, fewer than one released step "
                    f"({released.world_size} ranks × {global_batch // released.world_size} sequences)"
                )
        self.step = 0

    # the loader lives as long as the run, so the cache cannot keep a dead instance alive; two epochs suffice
    @functools.lru_cache(maxsize=2)  # noqa: B019
    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def global_indices(self, step: int) -> np.ndarray:
        """Sequence indices of the global batch of optimizer step `step` (0-based), on every rank alike."""
        if self.released is not None:
            r = self.released
            return released_global_indices(
                step, len(self.dataset), self.global_batch, r.workers, r.world_size, r.micro_batch
            )
        epoch, b = divmod(step, self.steps_per_epoch)
        return self._order(epoch)[b * self.global_batch : (b + 1) * self.global_batch]

    def local_indices(self, step: int) -> np.ndarray:
        """This rank's contiguous slice of the global batch of `step`."""
        per_rank = self.global_batch // self.dp_size
        return self.global_indices(step)[self.dp_rank * per_rank : (self.dp_rank + 1) * per_rank]

    def next_batch(self) -> list[MicroBatch]:
        """Return this rank's `accumulation` micro batches of the next step and advance."""
        idx = self.local_indices(self.step)
        self.step += 1
        micros = []
        for k in range(self.accumulation):
            seqs = [self.dataset.sequence(int(i)) for i in idx[k * self.micro_batch : (k + 1) * self.micro_batch]]
            ids = torch.from_numpy(np.stack([s[0] for s in seqs]))
            labels = torch.from_numpy(np.stack([s[1] for s in seqs]))
            micros.append(MicroBatch(ids, labels))
        return micros

    def state_dict(self) -> dict[str, int]:
        """The resumable position (global batches consumed) and what it is only valid for."""
        return {
            "step": self.step,
            "global_batch": self.global_batch,
            "n_sequences": len(self.dataset),
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the position; refuse a state written for other data, seed or global batch."""
        for key in ("global_batch", "n_sequences", "seed"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise UserError(
                    f"checkpoint's data loader has {key}={state.get(key)}, this run {mine}; "
                    "the run folder holds a checkpoint of other data (tampered?); remove that run folder"
                )
        self.step = int(state["step"])
