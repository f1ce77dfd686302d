"""The on-disk token store of one subset/split, written by `tokenize` and read by the loader and eval.

Layout of `<root>/<subset-slug>/<split>/`:
- `tokens.bin`: flat little-endian token ids, uint16 when the vocabulary has ≤ 65535 ids, else
  uint32; each document's ids are followed by EOS (when tokenize appended it).
- `offsets.npy`: int64, n_docs + 1 entries; document i is `tokens[offsets[i]:offsets[i + 1]]`.
- `meta.json`: {"dtype", "vocab_size", "bos_id", "eos_id", "n_docs", "n_tokens"}.
`<root>/manifest.json` (written by the stage) hashes every file; `open_token_stores` checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.fsutil import atomic_write_json
from biomed_llama.provenance import require_verified

TOKENS = "tokens.bin"
OFFSETS = "offsets.npy"
META = "meta.json"
# The largest vocabulary whose ids all fit uint16 by the contract (ids < vocab_size ≤ 65535).
UINT16_MAX_VOCAB = 65535


def token_dtype(vocab_size: int) -> np.dtype:
    """Return the little-endian dtype for a vocabulary: uint16 if it has ≤ 65535 ids, else uint32."""
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


class TokenWriter:
    """Append documents' ids to a new token store folder, then `close()` writes the index and meta.

    Memory holds only the per-chunk document lengths (8 bytes a document); ids go straight to disk.
    As a context manager it closes on success (then `.meta` is set) and only releases the file on error.
    """

    def __init__(self, folder: str | Path, *, vocab_size: int, bos_id: int | None, eos_id: int | None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.vocab_size, self.bos_id, self.eos_id = vocab_size, bos_id, eos_id
        # open for the writer's lifetime: `close` or `__exit__` closes it
        self._file = open(self.folder / TOKENS, "wb")  # noqa: SIM115
        self._lengths: list[np.ndarray] = []
        self.n_tokens = 0
        self.n_docs = 0
        self.meta: dict[str, Any] | None = None

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()  # a failed store is left incomplete; its whole folder is discarded

    def append(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Append a chunk: `ids` (flat, every document's ids in order), `lengths` (tokens per document)."""
        # Internal invariant: the encoder returns ids and lengths of the same encodings.
        assert int(lengths.sum()) == len(ids), "lengths must add up to the chunk's ids"
        self._file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self._lengths.append(np.asarray(lengths, dtype=np.int64))
        self.n_tokens += len(ids)
        self.n_docs += len(lengths)

    def close(self) -> dict[str, Any]:
        """Flush the ids, write `offsets.npy` and `meta.json`; return the meta."""
        self._file.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.folder / OFFSETS, offsets.astype("<i8"), allow_pickle=False)
        meta = {
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "n_docs": self.n_docs,
            "n_tokens": self.n_tokens,
        }
        atomic_write_json(self.folder / META, meta)
        self.meta = meta
        return meta


class TokenStore:
    """Read-only view of one token store folder: `.tokens` (memmap), `.offsets`, `.meta`, `.doc(i)`.

    Opening checks that the three files agree (sizes, index shape and order) and raises a one-line
    IntegrityError otherwise; the file hashes are checked by `open_token_stores(verify=True)`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise UserError(f"no token store at {self.path} ({META} missing); run `biomed-llama tokenize` first")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
            self.n_docs = int(self.meta["n_docs"])
            self.n_tokens = int(self.meta["n_tokens"])
            self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"{meta_path}: unreadable token store meta ({e})") from None
        if self.dtype.name not in ("uint16", "uint32"):
            raise IntegrityError(f"{meta_path}: dtype {self.dtype.name} is not uint16 or uint32")
        self.offsets = self._load_offsets()
        self.tokens = self._map_tokens()

    def _load_offsets(self) -> np.ndarray:
        path = self.path / OFFSETS
        try:
            offsets = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IntegrityError(f"{path}: unreadable document index ({e})") from None
        if offsets.dtype != np.dtype("<i8") or offsets.shape != (self.n_docs + 1,):
            raise IntegrityError(
                f"{path}: expected int64[{self.n_docs + 1}], found {offsets.dtype}{list(offsets.shape)}"
            )
        if offsets[0] != 0 or offsets[-1] != self.n_tokens or np.any(np.diff(offsets) < 0):
            raise IntegrityError(f"{path}: offsets are not a non-decreasing index from 0 to {self.n_tokens}")
        return offsets

    def _map_tokens(self) -> np.ndarray:
        path = self.path / TOKENS
        expected = self.n_tokens * self.dtype.itemsize
        size = path.stat().st_size if path.is_file() else -1
        if size != expected:
            raise IntegrityError(f"{path}: {size} bytes, expected {expected} ({self.n_tokens} × {self.dtype.name})")
        if self.n_tokens == 0:  # numpy cannot memory-map an empty file
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    @property
    def eos_id(self) -> int | None:
        """The id appended after each document, or None if tokenize appended none."""
        return self.meta.get("eos_id")

    @property
    def bos_id(self) -> int | None:
        """The tokenizer's BOS id (the loader prepends it), or None if it has none."""
        return self.meta.get("bos_id")

    def __len__(self) -> int:
        return self.n_docs

    def doc(self, i: int) -> np.ndarray:
        """Return document i's ids (EOS included) as a read-only view; negative i counts from the end."""
        if not -self.n_docs <= i < self.n_docs:
            raise IndexError(f"document {i} out of range for {self.n_docs} documents")
        i %= self.n_docs
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        """Return the number of tokens of every document (int64[n_docs])."""
        return np.diff(self.offsets)


def open_token_stores(root: str | Path, *, verify: bool = True) -> dict[tuple[str, str], TokenStore]:
    """Open every `<root>/<slug>/<split>` store, keyed by (slug, split) in sorted order.

    With `verify` (the default) the folder is first checked against `<root>/manifest.json`, so a
    tampered or half-copied output is refused with an IntegrityError (this hashes every byte).
    """
    root = Path(root)
    if verify:
        require_verified(root)
    found = sorted(p.parent for p in root.glob(f"*/*/{META}"))
    if not found:
        raise UserError(f"no token stores under {root}; run `biomed-llama tokenize` first")
    return {(p.parent.name, p.name): TokenStore(p) for p in found}
