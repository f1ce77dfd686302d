"""`pretrain.document_order` on the demo's own Pile sample: what the released loader's one epoch (its first
N/16 sequences, `pretrain.released_loader` with 16 workers) holds under each order.

The demo's two train shards hold both PubMed subsets mixed, as the Pile's shards do; extract + tokenize
split them into one store per subset, so `subset_major` puts every abstract before the first paper and the
first sixteenth of the stream holds no PubMed Central at all, while `interleaved` (the paper profile's
order) and `shuffled` keep the mix.
"""

from __future__ import annotations

import numpy as np
import pytest

from biomed_llama.config import validate_params
from biomed_llama.data.extract import run_extract
from biomed_llama.data.loader import DOCUMENT_ORDERS, PackedDataset, document_order_index, open_stores
from biomed_llama.data.tokenize import run_tokenize
from biomed_llama.errors import UserError
from tests.helpers import REPO

SUBSETS = ["pubmed_abstracts", "pubmed_central"]
WORKERS = 16  # the released run's --dataloader_num_workers (train_multi_nodes.sh:42): one epoch = the first N/16


@pytest.fixture(scope="module")
def demo_stores(tmp_path_factory):
    """The demo's Pile sample (data/sample/pile/train) extracted and tokenized as the stages do."""
    tmp = tmp_path_factory.mktemp("order")
    params = validate_params({
        "extract": {"train": [str(REPO / "data/sample/pile/train/*.jsonl.zst")], "val": [], "test": [],
                    "workers": 1, "output": str(tmp / "extracted"), "metrics": str(tmp / "extract.json")},
        "tokenize": {"tokenizer": str(REPO / "data/sample/tokenizer"), "input": str(tmp / "extracted"),
                     "output": str(tmp / "tokens"), "workers": 1, "metrics": str(tmp / "tokenize.json")},
    })
    run_extract(params.extract)
    run_tokenize(params.tokenize)
    return open_stores(tmp / "tokens", SUBSETS, "train")


def _first_sixteenth_mix(stores, order: str, seed: int = 1234) -> tuple[int, int, int]:
    ds = PackedDataset(stores, seq_len=64, packing="truncate", document_order=order, seed=seed)
    window = len(ds) // WORKERS
    central = sum(ds.store_of(i) for i in range(window))  # store 1 = pubmed_central
    return window, window - central, central


def test_the_released_epoch_sees_pubmed_central_only_when_the_subsets_are_mixed(demo_stores):
    n_a, n_c = (len(s.offsets) - 1 for s in demo_stores)
    assert n_a > (n_a + n_c) // WORKERS and n_c >= WORKERS  # the demo is big enough to tell
    mix = {order: _first_sixteenth_mix(demo_stores, order) for order in DOCUMENT_ORDERS}
    for order, (window, a, c) in mix.items():
        print(f"{order:>12}: first N/16 = {window} of {n_a + n_c} sequences: {a} abstracts, {c} PMC "
              f"({c / n_c:.1%} of PMC; PMC is {n_c / (n_a + n_c):.1%} of all)")
    assert mix["subset_major"][2] == 0  # every abstract first: the epoch never reaches PubMed Central
    for order in ("interleaved", "shuffled"):
        window, a, c = mix[order]
        assert a > 0 and c > 0
        # both orders mix at random: the window's PMC count is hypergeometric around the overall share
        expected = window * n_c / (n_a + n_c)
        sd = np.sqrt(expected * (1 - n_c / (n_a + n_c)))
        assert abs(c - expected) <= 4 * sd + 1, (order, c, expected)


def test_interleaved_keeps_each_subsets_own_order_and_shuffled_does_not(demo_stores):
    counts = [len(s.offsets) - 1 for s in demo_stores]
    for order in ("interleaved", "shuffled"):
        index = document_order_index(counts, order, seed=7)
        assert sorted(index.tolist()) == list(range(sum(counts)))  # a permutation: every sequence once
        abstracts = index[index < counts[0]]
        central = index[index >= counts[0]]
        in_order = bool(np.all(np.diff(abstracts) > 0) and np.all(np.diff(central) > 0))
        assert in_order == (order == "interleaved")
    assert document_order_index(counts, "subset_major", seed=7) is None
    a, b = (document_order_index(counts, "interleaved", seed=s) for s in (7, 8))
    assert np.array_equal(a, document_order_index(counts, "interleaved", seed=7)) and not np.array_equal(a, b)


def test_the_order_only_moves_sequences(demo_stores):
    plain = PackedDataset(demo_stores, seq_len=32, packing="concat")
    mixed = PackedDataset(demo_stores, seq_len=32, packing="concat", document_order="interleaved", seed=3)
    index = document_order_index(plain.counts, "interleaved", seed=3)
    for i in (0, 1, len(plain) // 2, len(plain) - 1):
        assert np.array_equal(mixed.sequence(i)[0], plain.sequence(int(index[i]))[0])
    with pytest.raises(UserError, match="unknown document order"):
        PackedDataset(demo_stores, seq_len=32, packing="concat", document_order="random")
