"""Params of the data stages (`extract`, `tokenize`): validation only, no reader imports (zstandard, pyarrow)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

PUBMED_SUBSETS = ["PubMed Abstracts", "PubMed Central"]
HUB_PREFIX = "hf://datasets/"


class ExtractConfig(StrictModel):
    """Which Pile shards to read, which subsets to keep, and how to write them."""

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"workers"})  # the output is byte-identical for any count

    train: list[str] = Field(default_factory=lambda: ["data/sample/pile/train/*.jsonl.zst"])
    """Train shards: local paths or globs of Pile-format `*.jsonl.zst` files, read in sorted order."""
    val: list[str] = Field(default_factory=lambda: ["data/sample/pile/val.jsonl.zst"])
    """Validation shards (paths or globs)."""
    test: list[str] = Field(default_factory=lambda: ["data/sample/pile/test.jsonl.zst"])
    """Test shards (paths or globs); the perplexity rows of the table use this split."""
    remote: str | None = None
    """Optional remote source, `https://…/prefix` or `hf://datasets/owner/name[@revision]`: then train/val/test are shard names under it (globs for the Hub), downloaded into `cache` before reading. Nothing is downloaded when null."""
    cache: str = "data/pile-cache"
    """Local folder that receives the shards of `remote` (an already-downloaded shard is not fetched again)."""
    subsets: list[str] = Field(default_factory=lambda: list(PUBMED_SUBSETS), min_length=1)
    """Values of `meta.pile_set_name` to keep; each becomes an output folder."""
    rows_per_shard: int = Field(64, ge=1)
    """Target number of rows per output Parquet shard (the demo's 64; configs/paper.yaml: 100,000)."""
    on_bad_record: Literal["skip", "abort"] = "skip"
    """What to do with a malformed line, a record without text or a corrupt zst file: count and skip, or abort."""
    workers: int = Field(2, ge=1)
    """Processes reading input files in parallel (output bytes do not depend on it; the demo's 2 cores)."""
    output: str = "data/extracted"
    """Output folder: `<subset-slug>/<split>/part-NNNNN.parquet` + manifest.json."""
    metrics: str = "metrics/extract.json"
    """Metrics JSON: documents, characters and bytes per subset and split, dropped and bad record counts."""
    max_reported_bad: int = Field(100, ge=0)
    """How many bad records (file, line, reason) are listed in the manifest; all of them are counted."""

    @model_validator(mode="after")
    def _check(self) -> ExtractConfig:
        if self.remote is not None and not is_remote_spec(self.remote):
            raise ValueError(
                f"remote must be an http(s):// URL prefix or hf://datasets/owner/name (got {self.remote!r})"
            )
        slugs = [subset_slug(s) for s in self.subsets]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"subsets map to clashing folder names {slugs}")
        return self


def is_remote_spec(remote: str) -> bool:
    """True for the remote forms extract accepts: `http(s)://prefix` or `hf://datasets/owner/name[@revision]`."""
    return remote.startswith(("http://", "https://")) or (
        remote.startswith(HUB_PREFIX) and remote[len(HUB_PREFIX) :].count("/") == 1
    )


def subset_slug(subset: str) -> str:
    """Folder name of a subset: lower-cased, runs of non-alphanumerics → `_` (`PubMed Central` → `pubmed_central`)."""
    return re.sub(r"[^0-9a-z]+", "_", subset.lower()).strip("_")


class TokenizeConfig(StrictModel):
    """Which tokenizer to use and how to write the token stream."""

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"workers"})  # the output is byte-identical for any count

    tokenizer: str = "data/sample/tokenizer"
    """A Hugging Face tokenizer directory (the base model's for the paper profile)."""
    input: str = "data/extracted"
    """The extract stage's output folder."""
    output: str = "data/tokens"
    """Output folder: `<subset-slug>/<split>/tokens.bin` + `offsets.npy` + manifest.json."""
    workers: int = Field(2, ge=1)
    """Processes tokenizing in parallel (output bytes do not depend on it; the demo's 2 cores); 1 = in-process, the
    Rust tokenizer then uses all cores per batch."""
    batch_size: int = Field(64, ge=1)
    """Documents per tokenizer call (and per chunk handed to a worker); the demo's 64, configs/paper.yaml: 1,000."""
    append_eos: bool = True
    """Append the tokenizer's EOS id after each document (the original's `text + </s>`)."""
    metrics: str = "metrics/tokenize.json"
    """Metrics JSON: documents, tokens and text bytes per subset/split; totals with tokens/s and MB/s."""

    @model_validator(mode="after")
    def _check(self) -> TokenizeConfig:
        if self.input == self.output:
            raise ValueError("tokenize.input and tokenize.output must differ")
        return self
