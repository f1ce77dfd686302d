"""Synthetic stage outputs for the tests and bench/, written through the package's own writers.

A test or a benchmark that needs a token store or an extract output without running the stage writes
it here: through the writer the stage itself uses (`data.tokens.TokenWriter` for the token store,
`data.shards.ParquetRows` for the extract Parquet) and with the stage's manifest
(`provenance.write_manifest`). So the synthetic outputs follow the on-disk contract by construction:
a change of a format changes them too, instead of leaving a hand-written copy behind. No stage imports
this module (it is in no stage's code deps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from biomed_llama.data.shards import ParquetRows, part_name
from biomed_llama.data.tokens import TokenWriter
from biomed_llama.provenance import write_manifest

BOS_ID, EOS_ID = 1, 2
"""The special ids of the demo tokenizer (data/sample/tokenizer) and of LLaMA's: `<s>` 1, `</s>` 2."""


def write_token_store(
    folder: str | Path,
    docs: Sequence[np.ndarray],
    *,
    vocab_size: int,
    bos_id: int | None = BOS_ID,
    eos_id: int | None = EOS_ID,
) -> dict[str, Any]:
    """Write one `<slug>/<split>` token store of `docs` (each followed by `eos_id` unless it is None) with
    `TokenWriter`, as `tokenize` writes it; return its meta."""
    eos = np.array([] if eos_id is None else [eos_id], dtype=np.int64)
    ids = [np.concatenate([np.asarray(d, dtype=np.int64), eos]) for d in docs]
    with TokenWriter(folder, vocab_size=vocab_size, bos_id=bos_id, eos_id=eos_id) as writer:
        writer.append(
            np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64), np.array([len(d) for d in ids], dtype=np.int64)
        )
    assert writer.meta is not None  # set by a successful close
    return writer.meta


def write_token_stores(
    root: str | Path,
    stores: Mapping[tuple[str, str], Sequence[np.ndarray]],
    *,
    vocab_size: int,
    bos_id: int | None = BOS_ID,
    eos_id: int | None = EOS_ID,
    params: dict[str, Any] | None = None,
) -> Path:
    """A tokenize-stage output: `root/<slug>/<split>` per (slug, split) key of `stores` (`write_token_store`),
    then `root/manifest.json` recording `params`; return `root`."""
    root = Path(root)
    for (slug, split), docs in stores.items():
        write_token_store(root / slug / split, docs, vocab_size=vocab_size, bos_id=bos_id, eos_id=eos_id)
    write_manifest(root, stage="tokenize", params=params or {})
    return root


def motif_docs(n_docs: int, doc_len: int, vocab_size: int, seed: int = 0) -> list[np.ndarray]:
    """`n_docs` documents of `doc_len` ids, each repeating its own random 32-token motif of ids 3..vocab_size-1
    (past the special ids), so a model's loss on them falls within a few steps."""
    rng = np.random.default_rng(seed)
    return [np.resize(rng.integers(3, vocab_size, size=32), doc_len) for _ in range(n_docs)]


def write_extracted(
    root: str | Path,
    tree: Mapping[tuple[str, str], Sequence[Sequence[str]]],
    *,
    source: str = "00.jsonl.zst",
    params: dict[str, Any] | None = None,
) -> Path:
    """An extract-stage output: per (slug, split) key of `tree`, one `part-NNNNN.parquet` per inner list of
    texts (written by `ParquetRows`, rows `source` and line 1, 2, … of that part), then `root/manifest.json`
    recording `params`; return `root`."""
    root = Path(root)
    for (slug, split), parts in tree.items():
        folder = root / slug / split
        folder.mkdir(parents=True, exist_ok=True)  # a split with no part still exists, as extract writes it
        for k, texts in enumerate(parts):
            writer = ParquetRows(folder / part_name(k))
            writer.write(
                pa.table(
                    {
                        "text": pa.array(list(texts), pa.string()),
                        "source": pa.array([source] * len(texts), pa.string()),
                        "line": pa.array(np.arange(1, len(texts) + 1), pa.int64()),
                    }
                )
            )
            writer.close()
    write_manifest(root, stage="extract", params=params or {})
    return root
