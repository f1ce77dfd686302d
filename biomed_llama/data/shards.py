"""Deterministic Parquet files of extracted documents: columns `text`, `source`, `line`.

Bytes depend only on the rows and their order: every file is written with the same fixed
options, row groups hold exactly `ROW_GROUP_ROWS` rows (the last one fewer), and each row group
is made contiguous before writing, so neither how the rows arrived (batch sizes, chunking) nor
which process wrote the file changes it. Parquet footers carry no timestamps.

Output parts are planned from row counts alone (`plan_parts`: which slice of which
intermediate file goes into part k), so every part can be written by a different process and
the result is the same as one sequential pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("text", pa.string()), ("source", pa.string()), ("line", pa.int64())])
ROW_GROUP_ROWS = 1024
# Fixed writer options: changing any of them changes every output byte.
WRITE_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=["source"],
    write_statistics=["line"],
    version="2.6",
    data_page_version="1.0",
)


def part_name(i: int) -> str:
    """File name of output part `i` (`part-00000.parquet`)."""
    return f"part-{i:05d}.parquet"


class ParquetRows:
    """Write one Parquet file from tables of any size and chunking, in row groups of ROW_GROUP_ROWS rows.

    `close` writes the rest and returns the row count; a file with no rows is still written
    (with the schema), so every subset/split folder exists downstream.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = pq.ParquetWriter(path, SCHEMA, **WRITE_OPTIONS)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def _emit(self, n: int) -> None:
        table = pa.concat_tables(self._pending)
        group, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        self._writer.write_table(group, row_group_size=n)
        self.rows += n

    def write(self, table: pa.Table) -> None:
        """Append rows (a table with SCHEMA's columns)."""
        if table.num_rows == 0:
            return
        self._pending.append(table.select(SCHEMA.names).cast(SCHEMA))
        self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._emit(ROW_GROUP_ROWS)

    def close(self) -> int:
        """Flush the remaining rows, close the file and return its number of rows."""
        if self._pending_rows:
            self._emit(self._pending_rows)
        self._writer.close()
        return self.rows


class RowSink:
    """Collect (text, source, line) rows one by one and write them to a ParquetRows in row-group batches."""

    def __init__(self, path: Path):
        self.writer = ParquetRows(path)
        self._cols: tuple[list[str], list[str], list[int]] = ([], [], [])

    def add(self, text: str, source: str, line: int) -> None:
        """Append one row."""
        texts, sources, lines = self._cols
        texts.append(text)
        sources.append(source)
        lines.append(line)
        if len(self._cols[0]) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._cols[0]:
            self.writer.write(pa.table(list(self._cols), schema=SCHEMA))
            self._cols = ([], [], [])

    def close(self) -> int:
        """Write what is left and close the file; return its number of rows."""
        self._flush()
        return self.writer.close()


def iter_slice(path: str | Path, start: int, stop: int) -> Iterator[pa.Table]:
    """Yield rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    pf = pq.ParquetFile(path)
    first = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(start, first), min(stop, first + n)
        if lo < hi:
            yield pf.read_row_group(g, columns=SCHEMA.names).slice(lo - first, hi - lo)
        first += n
        if first >= stop:
            break


Piece = tuple[str, int, int]  # (intermediate file, first row, end row)


def plan_parts(sources: list[tuple[str, int]], rows_per_part: int) -> list[list[Piece]]:
    """Cut the concatenation of `sources` [(file, rows)] into parts of `rows_per_part` rows (the last fewer).

    Returns, per part, the slices of the sources it holds; no rows at all gives one empty part.
    """
    parts: list[list[Piece]] = [[]]
    room = rows_per_part
    for path, rows in sources:
        start = 0
        while start < rows:
            if room == 0:
                parts.append([])
                room = rows_per_part
            take = min(room, rows - start)
            parts[-1].append((path, start, start + take))
            start += take
            room -= take
    return parts


@dataclass(frozen=True)
class PartTask:
    """One output part: where to write it and which slices of which intermediates it holds."""

    path: str
    pieces: tuple[Piece, ...]


def write_part(task: PartTask) -> int:
    """Write one output part from its pieces; return its number of rows (runs in worker processes)."""
    out = ParquetRows(Path(task.path))
    for path, start, stop in task.pieces:
        for table in iter_slice(path, start, stop):
            out.write(table)
    return out.close()
