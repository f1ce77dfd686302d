"""Packing modes and the resumable, world-size-independent distributed loader."""

from __future__ import annotations

import numpy as np
import pytest

from biomed_llama.data.loader import IGNORE_INDEX, DistributedLoader, PackedDataset, open_stores
from biomed_llama.errors import UserError
from tests.helpers import train as H


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = H.make_tokens(tmp_path_factory.mktemp("tok"), n_docs=40, min_len=1, max_len=50)
    return open_stores(root, ["pubmed_abstracts", "pubmed_central"], "train")


def _docs(stores):
    return [np.asarray(s.tokens[s.offsets[i]:s.offsets[i + 1]]) for s in stores for i in range(len(s.offsets) - 1)]


def test_truncate_one_document_per_sequence(stores):
    ds = PackedDataset(stores, seq_len=16, packing="truncate")
    docs = _docs(stores)
    assert len(ds) == len(docs)
    for i, doc in enumerate(docs):
        ids, labels = ds.sequence(i)
        expected = np.concatenate([[H.BOS], doc])[:16]  # BOS + text + EOS, first seq_len tokens
        n = len(expected)
        assert ids.shape == labels.shape == (16,)
        assert np.array_equal(ids[:n], expected) and np.array_equal(labels[:n], expected)
        # targets (labels shifted by one) exist only inside this document: never across into padding
        assert np.all(labels[n:] == IGNORE_INDEX)
        assert np.sum(ids[:n] == H.BOS) == 1 and np.sum(expected[:-1] == H.EOS) == 0
    assert any(len(d) + 1 > 16 for d in docs) and any(len(d) + 1 < 16 for d in docs)  # both cases seen


def test_concat_is_the_stream_cut_into_full_sequences(stores):
    ds = PackedDataset(stores, seq_len=16, packing="concat")
    for s, store in enumerate(stores):
        docs = [np.asarray(store.doc(i)) for i in range(len(store))]
        stream = np.concatenate([np.concatenate([[H.BOS], d]) for d in docs])
        n = len(stream) // 16
        first = int(ds._starts[s])
        got = np.concatenate([ds.sequence(first + j)[0] for j in range(n)])
        assert np.array_equal(got, stream[: n * 16])
        assert int(ds._starts[s + 1]) - first == n
        ids, labels = ds.sequence(first)
        assert np.array_equal(ids, labels)


@pytest.mark.parametrize("shuffle", [True, False])
def test_global_batches_do_not_depend_on_world_size(stores, shuffle):
    ds = PackedDataset(stores, seq_len=16, packing="concat")
    ref = DistributedLoader(ds, global_batch=8, micro_batch=8, dp_rank=0, dp_size=1, seed=3, shuffle=shuffle)
    for dp, micro in [(2, 2), (4, 1), (2, 4)]:
        loaders = [DistributedLoader(ds, global_batch=8, micro_batch=micro, dp_rank=r, dp_size=dp, seed=3,
                                     shuffle=shuffle) for r in range(dp)]
        assert loaders[0].accumulation == 8 // (micro * dp)
        for step in range(ref.steps_per_epoch + 2):  # crosses an epoch boundary
            rows = np.concatenate([mb.input_ids.numpy() for ld in loaders for mb in ld.next_batch()])
            expected = np.stack([ds.sequence(int(i))[0] for i in ref.global_indices(step)])
            assert np.array_equal(rows, expected)
    order0 = ref.global_indices(0)
    assert (not np.array_equal(order0, np.arange(8))) == shuffle
    # each epoch is a permutation of all sequences, different per epoch when shuffled
    epoch = np.concatenate([ref.global_indices(s) for s in range(ref.steps_per_epoch)])
    assert len(set(epoch.tolist())) == len(epoch)


def test_resume_state_round_trip(stores):
    ds = PackedDataset(stores, seq_len=16, packing="truncate")
    a = DistributedLoader(ds, global_batch=4, micro_batch=2, dp_rank=1, dp_size=2, seed=1, shuffle=True)
    for _ in range(3):
        a.next_batch()
    b = DistributedLoader(ds, global_batch=4, micro_batch=2, dp_rank=1, dp_size=2, seed=1, shuffle=True)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        x, y = a.next_batch(), b.next_batch()
        assert all(np.array_equal(p.input_ids, q.input_ids) and np.array_equal(p.labels, q.labels) for p, q in zip(x, y))
    other_seed = DistributedLoader(ds, global_batch=4, micro_batch=2, dp_rank=1, dp_size=2, seed=2, shuffle=True)
    with pytest.raises(UserError, match="seed"):
        other_seed.load_state_dict(a.state_dict())


def test_clear_errors(stores, tmp_path):
    ds = PackedDataset(stores, seq_len=16, packing="concat")
    with pytest.raises(UserError, match="not a multiple of micro batch 3"):
        DistributedLoader(ds, global_batch=8, micro_batch=3, dp_rank=0, dp_size=1, seed=0, shuffle=True)
    with pytest.raises(UserError, match="fewer than one global batch"):
        DistributedLoader(ds, global_batch=10_000, micro_batch=1, dp_rank=0, dp_size=1, seed=0, shuffle=True)
    with pytest.raises(UserError, match="run `biomed-llama tokenize`"):
        open_stores(tmp_path, ["pubmed_abstracts"], "train")
