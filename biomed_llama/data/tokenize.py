"""Stage `tokenize`: extracted Parquet shards → one token store per subset/split (see `data/tokens.py`).

Each document is tokenized alone, without special tokens, and followed by EOS (`append_eos`); the
loader adds BOS later. Documents are read in file/row order and cut into chunks of `batch_size`
documents by position; chunks are tokenized in parallel but written in chunk order, so the bytes
never depend on the number of workers.

Parallelism (measured by `bench/bench_tokenize.py`):
- `workers == 1`: one in-process tokenizer whose Rust `encode_batch` already spreads each batch over
  all cores (rayon; `RAYON_NUM_THREADS` caps it). This is what `datasets.map(num_proc=1)` gets too.
- `workers > 1`: that many spawned processes, each single-threaded (TOKENIZERS_PARALLELISM=false),
  rebuilt from the tokenizer's JSON (no transformers import in workers, so they start fast). The
  parent reads Parquet and keeps at most `2 × workers` chunks in flight, so memory stays bounded.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomed_llama.data.tokens import TokenWriter, token_dtype
from biomed_llama.errors import BadRecordError, ConfigError, UserError
from biomed_llama.fsutil import atomic_dir
from biomed_llama.procs import die_with_parent
from biomed_llama.provenance import require_verified, write_manifest
from biomed_llama.stage_metrics import write_metrics

if TYPE_CHECKING:
    from biomed_llama.data.config import TokenizeConfig

# Lazy imports: transformers, tokenizers, pyarrow and rich are imported inside the functions that use them: the
# spawned workers and a `--help` start without them (transformers alone takes seconds).

# Params that never change the output bytes: kept out of the manifest, so outputs made with any
# worker count are identical (the worker count is in the metrics instead).
NOT_RECORDED = {"workers", "metrics"}
# The totals are the metrics `dvc metrics show` lists; the per-split counts go to the details file.
HEADLINE = ("total",)
# Chunks in flight per worker: enough to keep every worker busy while the parent reads and writes.
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a process needs to rebuild the tokenizer exactly and lay out its ids (picklable)."""

    backend_json: str
    """The fast tokenizer's full `tokenizer.json` (model, normalizer, pre-tokenizer, added tokens)."""
    split_special_tokens: bool
    """Whether special-token text inside a document is tokenized as plain text (the HF setting)."""
    vocab_size: int
    """Number of ids (`len(tokenizer)`, added tokens included)."""
    bos_id: int | None
    """BOS id, recorded in meta for the loader."""
    eos_id: int | None
    """EOS id appended after every document, or None when not appending."""


@dataclass(frozen=True)
class SplitInput:
    """The Parquet shards of one subset/split, in reading order."""

    slug: str
    split: str
    files: tuple[Path, ...]

    @property
    def name(self) -> str:
        """`<slug>/<split>`, the key of this split in metrics."""
        return f"{self.slug}/{self.split}"


def load_tokenizer_spec(path: str | Path, *, append_eos: bool = True) -> TokenizerSpec:
    """Load a Hugging Face fast tokenizer from a local directory and return its TokenizerSpec.

    Raises a one-line UserError when the directory is missing, cannot be loaded, holds only a slow
    tokenizer, or has no EOS token while `append_eos` is on.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"tokenizer directory {path} not found")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tokenizer from {path}: {first}") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer in {path} is not a fast (Rust) tokenizer; save one with tokenizer.json")
    if append_eos and tok.eos_token_id is None:
        raise UserError(f"tokenizer in {path} has no EOS token, but tokenize.append_eos is on")
    return TokenizerSpec(
        backend_json=tok.backend_tokenizer.to_str(),
        split_special_tokens=bool(getattr(tok, "split_special_tokens", False)),
        vocab_size=len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id if append_eos else None,
    )


class ChunkEncoder:
    """Tokenize a list of texts into (flat ids, per-document lengths), EOS appended per document.

    Matches `tokenizer(texts, add_special_tokens=False)["input_ids"]` of the HF tokenizer: the same
    backend, no truncation or padding, the same special-token splitting.
    """

    def __init__(self, spec: TokenizerSpec):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(spec.backend_json)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.backend.encode_special_tokens = spec.split_special_tokens
        self.eos_id = spec.eos_id
        self.dtype = token_dtype(spec.vocab_size)
        self.vocab_size = spec.vocab_size
        # encode_batch_fast skips character offsets, which we never use.
        self._encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids: dtype[n_tokens], lengths: int64[len(texts)]) with EOS after each document."""
        ids = [e.ids for e in self._encode(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        if len(flat) and int(flat.max()) >= self.vocab_size:
            raise AssertionError(f"tokenizer produced id {int(flat.max())} ≥ vocab size {self.vocab_size}")
        if self.eos_id is not None:
            # Insert EOS at each document's end: positions are the cumulative lengths.
            flat = np.insert(flat, np.cumsum(lengths), self.eos_id)
            lengths += 1
        return flat.astype(self.dtype), lengths


_WORKER_ENCODER: ChunkEncoder | None = None


def _init_worker(spec: TokenizerSpec, parent_pid: int) -> None:
    """Process-pool initializer: die with the parent (`procs`), then one single-threaded tokenizer per worker."""
    global _WORKER_ENCODER
    die_with_parent(parent_pid)
    # Workers are the parallelism; nested rayon threads would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_ENCODER = ChunkEncoder(spec)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_ENCODER is not None, "worker used before its initializer ran"  # the pool runs it first
    return _WORKER_ENCODER(texts)


class ParallelEncoder:
    """Encode chunks in order, in this process (workers=1) or in a spawned pool (workers>1).

    Use as a context manager; `map` yields results in input order with a bounded number of chunks
    in flight, so output order (and bytes) never depend on worker count or timing.
    """

    def __init__(self, spec: TokenizerSpec, workers: int):
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {workers})")
        self.spec, self.workers = spec, workers
        self._pool: ProcessPoolExecutor | None = None
        self._local: ChunkEncoder | None = None

    def __enter__(self) -> ParallelEncoder:
        if self.workers == 1:
            self._local = ChunkEncoder(self.spec)
        else:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.spec, os.getpid()),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, chunks: Iterable[tuple[list[str], Any]]) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        """For each (texts, tag) yield (ids, lengths, tag) in input order; tags stay in this process."""
        if self._local is not None:
            for texts, tag in chunks:
                yield (*self._local(texts), tag)
            return
        assert self._pool is not None, "ParallelEncoder used outside its `with` block"  # a caller's bug
        pending: deque[tuple[Future, Any]] = deque()
        try:
            for texts, tag in chunks:
                pending.append((self._pool.submit(_encode_in_worker, texts), tag))
                if len(pending) >= IN_FLIGHT_PER_WORKER * self.workers:
                    fut, t = pending.popleft()
                    yield (*fut.result(), t)
            while pending:
                fut, t = pending.popleft()
                yield (*fut.result(), t)
        except BrokenProcessPool:
            raise UserError(
                f"a tokenize worker process died (out of memory?); retry with fewer than "
                f"{self.workers} workers or a smaller tokenize.batch_size"
            ) from None


# The files of a HF tokenizer directory that define the tokenizer (a model directory also holds
# weights, which must not be hashed or depended on just to record the tokenizer).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "config.json",
)


def tokenizer_files(path: str | Path) -> list[Path]:
    """The tokenizer-defining files present in a tokenizer (or model) directory, for the manifest."""
    return [Path(path) / name for name in TOKENIZER_FILES if (Path(path) / name).is_file()]


def find_splits(root: str | Path) -> list[SplitInput]:
    """List the `<root>/<slug>/<split>/part-*.parquet` shards, sorted by slug, split and file name."""
    root = Path(root)
    splits = [
        SplitInput(d.parent.name, d.name, tuple(sorted(d.glob("part-*.parquet"))))
        for d in sorted(root.glob("*/*"))
        if d.is_dir()
    ]
    if not splits:
        raise UserError(f"no <subset>/<split> folders under {root}; run `biomed-llama extract` first")
    return splits


def count_docs(files: Iterable[Path]) -> int:
    """Total rows of Parquet files, from their footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _texts(col, where: Path, first_row: int) -> list[str]:
    """The column's strings; a value that is not UTF-8 (Parquet does not check) is a BadRecordError naming its row."""
    try:
        return col.to_pylist()
    except UnicodeDecodeError:
        import pyarrow as pa

        for i, raw in enumerate(col.cast(pa.binary()).to_pylist()):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadRecordError(
                    f"{where}: row {first_row + i + 1}: text is not valid UTF-8 "
                    f"(byte {e.start}); the file was not written by `biomed-llama extract`"
                ) from None
        raise


def read_text_chunks(files: Iterable[Path], batch_size: int) -> Iterator[tuple[list[str], int]]:
    """Yield (texts, UTF-8 bytes of those texts) of the `text` column, ≤ batch_size rows at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        if pf.schema_arrow.get_field_index("text") < 0:
            raise UserError(f"{f}: no `text` column (not an extract output?)")
        row = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
            col = batch.column(0)
            if col.null_count:
                raise UserError(f"{f}: {col.null_count} rows with null text")
            nbytes = pc.sum(pc.binary_length(col)).as_py() or 0
            yield _texts(col, f, row), nbytes
            row += len(col)


def tokenize_split(
    split: SplitInput,
    encoder: ParallelEncoder,
    out_dir: Path,
    batch_size: int,
    on_chunk: Callable[[int, int], None] = lambda docs, nbytes: None,
) -> dict[str, int]:
    """Tokenize one subset/split into the token store `out_dir`; return its docs/tokens/bytes counts."""
    spec = encoder.spec
    text_bytes = 0
    with TokenWriter(out_dir, vocab_size=spec.vocab_size, bos_id=spec.bos_id, eos_id=spec.eos_id) as writer:
        for ids, lengths, nbytes in encoder.map(read_text_chunks(split.files, batch_size)):
            writer.append(ids, lengths)
            text_bytes += nbytes
            on_chunk(len(lengths), nbytes)
    meta = writer.meta
    assert meta is not None  # set when the writer closed without an error
    return {"docs": meta["n_docs"], "tokens": meta["n_tokens"], "text_bytes": text_bytes}


class TokenizeProgress:
    """A rich progress bar over documents that also shows MB/s of text; a no-op when disabled."""

    def __init__(self, total_docs: int, *, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("tokenize {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("docs  {task.fields[mbps]:.2f} MB/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("", total=total_docs, mbps=0.0)
        self._bytes = 0
        self._start = time.perf_counter()

    def __enter__(self) -> TokenizeProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def describe(self, name: str) -> None:
        """Show which subset/split is being tokenized."""
        self._progress.update(self._task, description=name)

    def advance(self, docs: int, nbytes: int) -> None:
        """Count a finished chunk of `docs` documents and `nbytes` bytes of text."""
        self._bytes += nbytes
        mbps = self._bytes / 1e6 / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(self._task, advance=docs, mbps=mbps)


def tokenize_tree(
    splits: list[SplitInput],
    spec: TokenizerSpec,
    out_root: str | Path,
    *,
    workers: int,
    batch_size: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize every split into `out_root/<slug>/<split>/`; return metrics (per split and totals).

    This is the whole stage minus input verification and the manifest (`run_tokenize` adds those).
    """
    out_root = Path(out_root)
    per_split: dict[str, dict[str, int]] = {}
    start = time.perf_counter()
    total_docs = sum(count_docs(s.files) for s in splits)
    with TokenizeProgress(total_docs, enabled=progress) as bar, ParallelEncoder(spec, workers) as encoder:
        for split in splits:
            bar.describe(split.name)
            per_split[split.name] = tokenize_split(
                split, encoder, out_root / split.slug / split.split, batch_size, on_chunk=bar.advance
            )
    seconds = time.perf_counter() - start
    totals = {k: sum(s[k] for s in per_split.values()) for k in ("docs", "tokens", "text_bytes")}
    return {
        "splits": per_split,
        "total": {
            **totals,
            "seconds": round(seconds, 3),
            "workers": workers,
            "tokens_per_s": round(totals["tokens"] / seconds, 1),
            "mb_per_s": round(totals["text_bytes"] / 1e6 / seconds, 3),
        },
    }


def run_tokenize(cfg: TokenizeConfig, workers: int | None = None) -> dict[str, Any]:
    """Run the `tokenize` stage with its section `cfg`: verify inputs, tokenize, write manifest + metrics."""
    from rich.console import Console

    workers = cfg.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    require_verified(cfg.input)
    spec = load_tokenizer_spec(cfg.tokenizer, append_eos=cfg.append_eos)
    splits = find_splits(cfg.input)
    recorded = {k: v for k, v in cfg.section_dict().items() if k not in NOT_RECORDED}
    with atomic_dir(cfg.output) as tmp:
        metrics = tokenize_tree(splits, spec, tmp, workers=workers, batch_size=cfg.batch_size)
        write_manifest(tmp, stage="tokenize", params=recorded, inputs=[cfg.input, *tokenizer_files(cfg.tokenizer)])
    write_metrics(cfg.metrics, metrics, HEADLINE)
    t = metrics["total"]
    Console(stderr=True).print(
        f"tokenize: {t['docs']:,} documents, {t['tokens']:,} tokens, {t['text_bytes'] / 1e6:.1f} MB of text "
        f"in {t['seconds']:.1f} s ({t['tokens_per_s']:,.0f} tokens/s, {t['mb_per_s']:.2f} MB/s, "
        f"{workers} worker{'s' if workers > 1 else ''}) → {cfg.output}"
    )
    return metrics
