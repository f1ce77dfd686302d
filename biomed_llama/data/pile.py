"""Reading Pile-format shards: zstd-compressed JSON lines `{"text": …, "meta": {"pile_set_name": …}}`.

`iter_lines` streams a `*.jsonl.zst` file frame by frame and RAISES on a truncated or corrupt
stream. (zstandard's `stream_reader` returns a clean EOF when the input simply stops in the
middle of a frame, which would lose the rest of a truncated download without a word, so frames
are decoded with `decompressobj` and each must reach its end.) `parse_record` turns one line into
(subset, text) or raises `MalformedRecord` with a short reason. Remote sources (an http(s) URL
prefix or a Hub dataset) are resolved and downloaded here, only when a param names one.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import zstandard

from biomed_llama.data.config import HUB_PREFIX
from biomed_llama.errors import UserError

# Lazy imports: huggingface_hub is imported only for a `hf://` remote: local extraction never loads it.

READ_CHUNK = 1 << 20  # compressed bytes per read
GLOB_CHARS = set("*?[")


class MalformedRecord(ValueError):
    """A line that is not a usable Pile record; the message is the reason."""


class CorruptShard(Exception):
    """A zstd stream that is truncated or corrupt; `line` is the last complete line read before it."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}: corrupt or truncated zstd stream after line {line} ({reason})")
        self.path, self.line, self.reason = path, line, reason

    def __reduce__(self):  # picklable across worker processes
        return (CorruptShard, (self.path, self.line, self.reason))


def _decompressed_chunks(f) -> Iterator[bytes]:
    """Yield the decompressed bytes of every frame in the open binary file `f`; raise ZstdError on damage."""
    dctx = zstandard.ZstdDecompressor()
    obj, started = None, False
    pending = b""
    while True:
        data = pending or f.read(READ_CHUNK)
        pending = b""
        if not data:
            break
        if obj is None:
            obj, started = dctx.decompressobj(), True
        out = obj.decompress(data)
        if out:
            yield out
        if obj.eof:  # frame complete; whatever follows starts the next frame
            pending, obj = obj.unused_data, None
    if not started:
        raise zstandard.ZstdError("empty file, no zstd frame")
    if obj is not None:
        raise zstandard.ZstdError("stream ends inside a frame (truncated)")


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line without the newline) of a `*.jsonl.zst` file.

    Raises CorruptShard if the stream is truncated or corrupt; an incomplete line before the
    damage is never yielded. A last line without a trailing newline is yielded when the stream
    ends cleanly.
    """
    lineno = 0
    rest = b""
    with open(path, "rb") as f:
        try:
            for chunk in _decompressed_chunks(f):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    lineno += 1
                    yield lineno, line
        except zstandard.ZstdError as e:
            raise CorruptShard(str(path), lineno, str(e).removeprefix("zstd decompress error: ")) from None
    if rest:
        yield lineno + 1, rest


def parse_record(raw: bytes) -> tuple[str, str]:
    """Return (meta.pile_set_name, text) of one JSON line; raise MalformedRecord(reason) if unusable."""
    if not raw.strip():
        raise MalformedRecord("blank line")
    try:
        rec = json.loads(raw)
    except UnicodeDecodeError:
        raise MalformedRecord("invalid UTF-8") from None
    except json.JSONDecodeError as e:
        raise MalformedRecord(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise MalformedRecord("not a JSON object")
    meta = rec.get("meta")
    subset = meta.get("pile_set_name") if isinstance(meta, dict) else None
    if not isinstance(subset, str):
        raise MalformedRecord("no meta.pile_set_name")
    text = rec.get("text")
    if text is None:
        raise MalformedRecord("no text")
    if not isinstance(text, str):
        raise MalformedRecord("text is not a string")
    if not text.strip():
        raise MalformedRecord("empty text")
    _require_unicode(subset, "meta.pile_set_name")
    _require_unicode(text, "text")
    return subset, text


def _require_unicode(value: str, what: str) -> None:
    """JSON may escape half a surrogate pair (`\\ud800`), which decodes but is no text: it cannot be
    written as UTF-8 (to Parquet, to the metrics), so the record is malformed."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MalformedRecord(
            f"{what} is not valid Unicode (lone surrogate U+{ord(value[e.start]):04X} at character {e.start + 1})"
        ) from None


def expand(patterns: list[str], what: str) -> list[str]:
    """Expand local paths/globs into a sorted, de-duplicated list of files; a pattern matching nothing is an error."""
    files: set[str] = set()
    for pat in patterns:
        hits = [p for p in glob.glob(pat, recursive=True) if os.path.isfile(p)]
        if not hits:
            raise UserError(f"{what}: no file matches {pat!r}")
        files.update(Path(p).as_posix() for p in hits)
    return sorted(files)


# --- remote sources (only used when extract.remote is set) -----------------------------------


def remote_url(remote: str, name: str) -> str:
    """Resolve a shard `name` (e.g. `train/00.jsonl.zst`) against an http(s) URL prefix."""
    if not remote.startswith(("http://", "https://")):
        raise UserError(f"extract.remote {remote!r} is not an http(s) URL prefix")
    return remote.rstrip("/") + "/" + urllib.parse.quote(name.lstrip("/"))


def hub_repo(remote: str) -> tuple[str, str | None]:
    """Split `hf://datasets/owner/name[@revision]` into (repo id, revision or None)."""
    if not remote.startswith(HUB_PREFIX):
        raise UserError(f"extract.remote {remote!r} is not a hf://datasets/ path")
    repo, _, rev = remote[len(HUB_PREFIX) :].partition("@")
    return repo, rev or None


def remote_names(remote: str, patterns: list[str]) -> list[str]:
    """Names of remote shards for `patterns`: globs are matched against the Hub repo's file list (URLs take plain names)."""
    if not any(GLOB_CHARS & set(p) for p in patterns):
        return sorted(set(patterns))
    if not remote.startswith(HUB_PREFIX):
        raise UserError(f"extract.remote {remote!r}: glob patterns need a hf://datasets/ source; list the shard names")

    from huggingface_hub import HfApi

    repo, rev = hub_repo(remote)
    listing = HfApi().list_repo_files(repo, repo_type="dataset", revision=rev)
    names = sorted({n for n in listing for p in patterns if fnmatch.fnmatchcase(n, p)})
    if not names:
        raise UserError(f"extract.remote {remote}: nothing matches {patterns}")
    return names


def _download_url(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=READ_CHUNK)
        os.replace(tmp, dest)  # a complete download only ever appears under its final name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(remote: str, names: list[str], cache: str | Path) -> list[str]:
    """Download the shards `names` of `remote` into `cache` (skipping ones already there); return local paths."""
    cache = Path(cache)
    local = []
    for name in names:
        dest = cache / name
        if not dest.is_file():
            if remote.startswith(HUB_PREFIX):
                from huggingface_hub import hf_hub_download

                repo, rev = hub_repo(remote)
                hf_hub_download(repo, name, repo_type="dataset", revision=rev, local_dir=cache)
            else:
                _download_url(remote_url(remote, name), dest)
        local.append(dest.as_posix())
    return local
