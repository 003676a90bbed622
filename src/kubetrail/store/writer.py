"""Committing batches to the archive: normalise, drop what is already stored, seal segments.

One ArchiveWriter lives as long as one ingest (or the service): it keeps its DuckDB
connection and, per (cluster, day) partition it has touched, the keys (cluster, auditID,
stage) already archived, loaded once from the partition's segments and extended with every
commit. Deduplication therefore costs one scan of a partition per run, not one per batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc

from ..events.row import SCHEMA
from .archive import Archive, CommitResult, connection

__all__ = ["ArchiveWriter", "Plan"]


def _date(day: int) -> str:
    """The partition name of a day number (days since 1970-01-01, UTC)."""
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


@dataclass(frozen=True)
class Plan:
    """What one batch adds: its new rows cut into segments, and the counts."""

    segments: list[tuple[pa.Table, str, str]]  # (rows, cluster, date)
    result: CommitResult


class ArchiveWriter:
    """Commits batches to one archive; use as a context manager.

    >>> with archive.writer_lock(), archive.writer() as w:   # doctest: +SKIP
    ...     result = w.commit_rows(normalised_rows)
    """

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._con = connection(ordered=True)
        # h = hash of the key: the common case (a new key) is decided on it alone; a hash
        # that was seen is confirmed on the full key, so a collision can never drop an event.
        self._con.execute("CREATE TEMP TABLE seen_keys "
                          "(h UBIGINT, cluster VARCHAR, audit_id VARCHAR, stage VARCHAR)")
        self._loaded: set[tuple[str, str]] = set()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def _load_keys(self, parts: list[tuple[str, str]]) -> None:
        files = [str(p) for part in parts if part not in self._loaded
                 for p in self.archive.partition_files(*part)]
        if files:
            self._con.execute("INSERT INTO seen_keys SELECT hash(cluster, audit_id, stage), "
                              "cluster, audit_id, stage FROM read_parquet($files)",
                              {"files": files})
        self._loaded.update(parts)

    def commit_rows(self, rows: pa.Table) -> CommitResult:
        """Write the new rows of normalised `rows` (SCHEMA plus `day`) as sealed segments."""
        return self.seal(self.plan(rows))

    def plan(self, rows: pa.Table) -> Plan:
        """Decide which rows are new, and count them as archived from now on.

        The keys are taken at once so that the next batch can be planned while this one is
        sealed; if sealing then fails, this writer must not be used again (a fresh one
        reloads the keys from the segments that really exist)."""
        con = self._con
        rows = rows.append_column("rid", pa.array(range(rows.num_rows), pa.int64()))
        con.register("batch", rows)
        found = con.execute("SELECT DISTINCT cluster, day FROM batch ORDER BY ALL").fetchall()
        if not found:
            con.unregister("batch")
            return Plan([], CommitResult(0, 0))
        parts = [(cluster, _date(day)) for cluster, day in found]
        self._load_keys(parts)
        con.register("part_ids", pa.table({
            "cluster": [p[0] for p in found], "day": [p[1] for p in found],
            "part": list(range(len(found)))}))
        # Keys only: which rows are new (the first copy of each key not already archived).
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE firsts AS
            SELECT n.rid, p.part, n.cluster, n.audit_id, n.stage,
                   hash(n.cluster, n.audit_id, n.stage) AS h
            FROM batch n JOIN part_ids p ON p.cluster = n.cluster AND p.day = n.day
            QUALIFY row_number() OVER (PARTITION BY n.cluster, n.audit_id, n.stage
                                       ORDER BY n.rid) = 1
            """)
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE fresh AS
            WITH hits AS (SELECT * FROM firsts f SEMI JOIN seen_keys s ON s.h = f.h)
            SELECT * FROM firsts WHERE rid NOT IN (
                SELECT k.rid FROM hits k JOIN seen_keys e
                ON e.h = k.h AND e.cluster = k.cluster AND e.audit_id = k.audit_id
                   AND e.stage = k.stage)
            """)
        seen = dict(con.execute("SELECT cluster, count(*) FROM batch GROUP BY 1").fetchall())
        new = dict(con.execute("SELECT cluster, count(*) FROM fresh GROUP BY 1").fetchall())
        segments: list[tuple[pa.Table, str, str]] = []
        if new:
            # Input order is kept: a batch is one row group, so sorting buys no pruning.
            order = con.sql("SELECT rid, part FROM fresh ORDER BY part, rid").to_arrow_table()
            rids = order.column("rid")
            data = rows.select(SCHEMA.names)
            start = 0
            for run in pc.value_counts(order.column("part")).to_pylist():  # one run per part
                part_id, count = run["values"], run["counts"]
                idx = rids.slice(start, count)
                first = idx[0].as_py()
                contiguous = pc.all(pc.equal(
                    idx, pa.array(range(first, first + count), pa.int64()))).as_py()
                part = data.slice(first, count) if contiguous else data.take(idx)
                segments.append((part, *parts[part_id]))
                start += count
            con.execute("INSERT INTO seen_keys SELECT h, cluster, audit_id, stage FROM fresh")
        con.unregister("batch")
        con.unregister("part_ids")
        stored = sum(new.values())
        per = tuple((c, new.get(c, 0), n - new.get(c, 0)) for c, n in sorted(seen.items()))
        return Plan(segments, CommitResult(stored, sum(seen.values()) - stored, (), per))

    def seal(self, plan: Plan) -> CommitResult:
        """Write the planned segments (no DuckDB: may run on another thread than `plan`)."""
        written = tuple(self.archive.write_segment(*segment) for segment in plan.segments)
        return dataclasses.replace(plan.result, segments=written)
