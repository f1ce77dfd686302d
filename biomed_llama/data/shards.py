"""Deterministic Parquet shards of extracted documents: columns `text`, `source`, `line`.

Bytes depend only on the rows and their order: every file is written with the same fixed
options, row groups hold exactly `ROW_GROUP_ROWS` rows (the last one fewer), and each row group
is made contiguous before writing, so neither how the rows arrived (batch sizes, chunking) nor
how many processes produced them changes the file. Parquet footers carry no timestamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("text", pa.string()), ("source", pa.string()), ("line", pa.int64())])
ROW_GROUP_ROWS = 1024
# Fixed writer options: changing any of them changes every output byte.
WRITE_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=["source"],
                     write_statistics=["line"], version="2.6", data_page_version="1.0")


def part_name(i: int) -> str:
    """File name of output part `i` (`part-00000.parquet`)."""
    return f"part-{i:05d}.parquet"


class PartWriter:
    """Cut a stream of rows into Parquet files of `rows_per_part` rows (None: one file), row groups of ROW_GROUP_ROWS.

    `write` accepts tables of any size and chunking; `close` flushes the rest and returns
    [(file name, rows)]. With `always_one`, a stream with no rows still yields one empty part, so
    every subset/split folder exists downstream.
    """

    def __init__(self, folder: Path, rows_per_part: int | None, *, name: str | None = None,
                 always_one: bool = True):
        self.folder, self.rows_per_part, self.name, self.always_one = folder, rows_per_part, name, always_one
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._part_rows = 0
        self.parts: list[tuple[str, int]] = []

    def _open(self) -> None:
        fname = self.name or part_name(len(self.parts))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.folder / fname, SCHEMA, **WRITE_OPTIONS)
        self.parts.append((fname, 0))
        self._part_rows = 0

    def _close_part(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        self.parts[-1] = (self.parts[-1][0], self._part_rows)
        self._part_rows = 0

    def _next_group_size(self) -> int:
        if self.rows_per_part is None:
            return ROW_GROUP_ROWS
        return min(ROW_GROUP_ROWS, self.rows_per_part - self._part_rows)

    def _emit(self, n: int) -> None:
        table = pa.concat_tables(self._pending)
        group, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self._writer is None:
            self._open()
        self._writer.write_table(group, row_group_size=n)
        self._part_rows += n
        if self.rows_per_part is not None and self._part_rows == self.rows_per_part:
            self._close_part()

    def write(self, table: pa.Table) -> None:
        """Append rows (a table with SCHEMA's columns)."""
        if table.num_rows == 0:
            return
        self._pending.append(table.select(SCHEMA.names).cast(SCHEMA))
        self._pending_rows += table.num_rows
        while self._pending_rows >= self._next_group_size():
            self._emit(self._next_group_size())

    def close(self) -> list[tuple[str, int]]:
        """Flush the remaining rows, close the last file and return [(file name, rows)]."""
        if self._pending_rows:
            self._emit(self._pending_rows)
        if self._writer is not None:
            self._close_part()
        if not self.parts and self.always_one:
            self._open()
            self._close_part()
        return self.parts


class RowSink:
    """Collect (text, source, line) rows one by one and write them through a PartWriter in row-group batches."""

    def __init__(self, writer: PartWriter):
        self.writer = writer
        self._text: list[str] = []
        self._source: list[str] = []
        self._line: list[int] = []

    def add(self, text: str, source: str, line: int) -> None:
        """Append one row."""
        self._text.append(text)
        self._source.append(source)
        self._line.append(line)
        if len(self._text) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._text:
            self.writer.write(pa.table([self._text, self._source, self._line], schema=SCHEMA))
            self._text, self._source, self._line = [], [], []

    def close(self) -> list[tuple[str, int]]:
        """Write what is left and close the writer; return its parts."""
        self._flush()
        return self.writer.close()


def iter_tables(path: Path) -> Iterator[pa.Table]:
    """Yield the rows of a Parquet file as tables of at most ROW_GROUP_ROWS rows."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=ROW_GROUP_ROWS, columns=SCHEMA.names):
        yield pa.Table.from_batches([batch])
