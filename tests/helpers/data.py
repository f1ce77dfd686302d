"""An extract-stage output written directly in its on-disk contract (Parquet parts + manifest)."""

from __future__ import annotations

from pathlib import Path


def write_extracted(root: Path, tree: dict[tuple[str, str], list[list[str]]], source: str = "00.jsonl.zst") -> Path:
    """Write `root/<slug>/<split>/part-NNNNN.parquet`, one part per inner list of texts, then the manifest; return `root`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biomed_llama.provenance import write_manifest

    for (slug, split), shards in tree.items():
        folder = root / slug / split
        folder.mkdir(parents=True)
        for k, texts in enumerate(shards):
            table = pa.table({"text": pa.array(texts, pa.string()),
                              "source": pa.array([source] * len(texts), pa.string()),
                              "line": pa.array(np.arange(1, len(texts) + 1), pa.int64())})
            pq.write_table(table, folder / f"part-{k:05d}.parquet")
    write_manifest(root, stage="extract", params={})
    return root
