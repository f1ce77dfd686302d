"""The token store format: writer/reader round trip, dtype choice, and refusal of inconsistent files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biomed_llama.data.tokens import TokenStore, TokenWriter, open_token_stores, token_dtype
from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.provenance import write_manifest


def write_store(folder: Path, docs: list[list[int]], vocab_size: int = 4096, chunk: int = 2) -> dict:
    """Write `docs` (each already ending in EOS) through TokenWriter in chunks of `chunk` documents."""
    writer = TokenWriter(folder, vocab_size=vocab_size, bos_id=1, eos_id=2)
    for k in range(0, len(docs), chunk):
        part = docs[k:k + chunk]
        flat = np.array([t for d in part for t in d], dtype=np.int64)
        writer.append(flat, np.array([len(d) for d in part], dtype=np.int64))
    return writer.close()


DOCS = [[5, 6, 7, 2], [2], [9, 10, 2], [11, 12, 13, 14, 15, 2], [8, 2]]


def test_dtype_is_uint16_up_to_65535_ids_else_uint32():
    assert token_dtype(32000) == np.dtype("<u2")
    assert token_dtype(65535) == np.dtype("<u2")
    assert token_dtype(65536) == np.dtype("<u4")
    assert token_dtype(128256) == np.dtype("<u4")


@pytest.mark.parametrize("vocab_size", [4096, 100_000])
def test_round_trip_documents_offsets_and_meta(tmp_path, vocab_size):
    docs = DOCS + ([[99_999, 2]] if vocab_size > 65535 else [])
    meta = write_store(tmp_path, docs, vocab_size)
    assert meta == {"dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size, "bos_id": 1, "eos_id": 2,
                    "n_docs": len(docs), "n_tokens": sum(map(len, docs))}
    store = TokenStore(tmp_path)
    assert (store.n_docs, store.n_tokens, len(store)) == (len(docs), sum(map(len, docs)), len(docs))
    assert [store.doc(i).tolist() for i in range(len(docs))] == docs
    assert store.doc(-1).tolist() == docs[-1]
    assert store.offsets.tolist() == np.concatenate([[0], np.cumsum([len(d) for d in docs])]).tolist()
    assert store.doc_lengths().tolist() == [len(d) for d in docs]
    assert (store.bos_id, store.eos_id) == (1, 2)
    assert store.tokens.tolist() == [t for d in docs for t in d]
    assert (tmp_path / "tokens.bin").stat().st_size == store.n_tokens * token_dtype(vocab_size).itemsize
    with pytest.raises(IndexError):
        store.doc(len(docs))


def test_empty_store_opens_with_no_documents(tmp_path):
    write_store(tmp_path, [])
    store = TokenStore(tmp_path)
    assert store.n_docs == 0 and store.n_tokens == 0 and store.offsets.tolist() == [0]
    assert len(store.tokens) == 0


def test_truncated_tokens_file_is_refused(tmp_path):
    write_store(tmp_path, DOCS)
    path = tmp_path / "tokens.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(IntegrityError, match="tokens.bin: .* bytes, expected"):
        TokenStore(tmp_path)


def test_inconsistent_offsets_are_refused(tmp_path):
    write_store(tmp_path, DOCS)
    offsets = np.load(tmp_path / "offsets.npy")
    offsets[2], offsets[3] = offsets[3], offsets[2]  # no longer non-decreasing
    np.save(tmp_path / "offsets.npy", offsets)
    with pytest.raises(IntegrityError, match="non-decreasing"):
        TokenStore(tmp_path)
    np.save(tmp_path / "offsets.npy", offsets[:-1])  # wrong length
    with pytest.raises(IntegrityError, match="expected int64"):
        TokenStore(tmp_path)


def test_bad_meta_is_refused(tmp_path):
    write_store(tmp_path, DOCS)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "dtype": "float32"}))
    with pytest.raises(IntegrityError, match="not uint16 or uint32"):
        TokenStore(tmp_path)
    with pytest.raises(UserError, match="no token store"):
        TokenStore(tmp_path / "nowhere")


def test_open_token_stores_verifies_the_manifest_first(tmp_path):
    root = tmp_path / "tokens"
    write_store(root / "pubmed_abstracts" / "train", DOCS)
    write_store(root / "pubmed_central" / "val", DOCS[:2])
    with pytest.raises(IntegrityError, match="no manifest.json"):
        open_token_stores(root)
    assert sorted(open_token_stores(root, verify=False)) == [("pubmed_abstracts", "train"), ("pubmed_central", "val")]
    write_manifest(root, stage="tokenize", params={})
    stores = open_token_stores(root)
    assert stores[("pubmed_central", "val")].doc(1).tolist() == DOCS[1]
    (root / "pubmed_central" / "val" / "meta.json").write_text("{}")
    with pytest.raises(IntegrityError, match="meta.json"):
        open_token_stores(root)
    with pytest.raises(UserError, match="no token stores"):
        open_token_stores(tmp_path / "empty", verify=False)
