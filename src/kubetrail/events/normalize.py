"""Raw Event texts → archive rows, in one DuckDB pass (see :data:`row.NORMALIZE_SQL`)."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .decode import Decoded, dumps_text
from .reader import FastLines
from .row import NORMALIZE_SQL, PASSTHROUGH, RAW_SCHEMA, SCHEMA

__all__ = ["RawBatch", "normalize_with"]



class RawBatch:
    """Event texts waiting to be normalised: Arrow blocks from the fast path plus
    Python-decoded events, kept as columns until the batch is taken."""

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._cols: tuple[list[Any], ...] = ([], [], [], [], [], [])
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add_fast(self, block: FastLines, cluster: str, file: str) -> None:
        n = len(block.texts)
        self._tables.append(pa.Table.from_arrays([
            block.texts, block.lines,
            pa.repeat(pa.scalar(cluster, pa.string()), n),
            pa.repeat(pa.scalar("native", pa.string()), n),
            pa.nulls(n, pa.string()),
            pa.repeat(pa.scalar(file, pa.string()), n),
        ], schema=RAW_SCHEMA))
        self._size += n

    def add(self, item: Decoded, line: int, cluster: str, file: str) -> None:
        text = item.text if item.text is not None else dumps_text(item.event)
        for col, value in zip(self._cols, (text, line, cluster, item.source_format,
                                           item.truncated, file), strict=True):
            col.append(value)
        self._size += 1

    def take(self) -> pa.Table:
        tables = self._tables
        if self._cols[0]:
            tables.append(pa.Table.from_arrays(
                [pa.array(c, f.type) for c, f in zip(self._cols, RAW_SCHEMA, strict=True)],
                schema=RAW_SCHEMA))
        self._tables, self._cols, self._size = [], ([], [], [], [], [], []), 0
        return pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()


def normalize_with(con: duckdb.DuckDBPyConnection, raw: pa.Table
                   ) -> tuple[pa.Table, list[dict[str, Any]]]:
    """(rows of SCHEMA plus `day` for the good events, [{problem, event, line, cluster, file}]
    for the rest), using `con`, which must preserve insertion order."""
    con.register("raw", raw)
    try:
        derived = con.sql(NORMALIZE_SQL).to_arrow_table()
    finally:
        con.unregister("raw")
    columns = {name: derived.column(name) for name in derived.column_names}
    for column, source in PASSTHROUGH:
        columns[column] = raw.column(source)
    rows = pa.table({name: columns[name] for name in [*SCHEMA.names, "day"]})
    bad = pc.is_valid(derived.column("problem"))
    problems: list[dict[str, Any]] = []
    if pc.any(bad).as_py():
        problems = pa.table({
            "problem": derived.column("problem"), "event": raw.column("text"),
            "line": raw.column("line"), "cluster": raw.column("cluster"),
            "file": raw.column("file"),
        }).filter(bad).to_pylist()
        rows = rows.filter(pc.invert(bad))
    return rows, problems
