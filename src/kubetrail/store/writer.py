"""Committing batches to the archive: normalise, drop what is already stored, seal segments.

One ArchiveWriter lives as long as one ingest (or the service): it keeps, per (cluster,
day) partition it has touched, the keys (cluster, auditID, stage) already archived, loaded
once from the partition's segments and extended with every commit. Deduplication therefore
costs one scan of a partition per run, not one per batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events.row import SCHEMA
from .archive import Archive, CommitResult, connection

__all__ = ["ArchiveWriter", "Plan"]

_KEY = ["cluster", "audit_id", "stage"]
_HASH_SQL = "SELECT hash(cluster, audit_id, stage) AS h FROM batch"


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
        # A key is first decided on its 64-bit hash alone (the common case: a hash never
        # seen). A hash that was seen is decided on the whole key, looked up in the key
        # tables, so a collision can never drop an event.
        self._hashes = np.empty(0, np.uint64)  # sorted
        self._keys: list[pa.Table] = []  # cluster, audit_id, stage, h of every archived key
        self._loaded: set[tuple[str, str]] = set()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def _remember(self, keys: pa.Table) -> None:
        """Count `keys` (cluster, audit_id, stage, h) as archived."""
        if keys.num_rows:
            for name in ("cluster", "stage"):  # few distinct values: a byte or two per key
                keys = keys.set_column(keys.schema.get_field_index(name), name,
                                       pc.dictionary_encode(keys.column(name)))
            self._keys.append(keys)
            new = np.sort(keys.column("h").to_numpy())
            self._hashes = np.insert(self._hashes, np.searchsorted(self._hashes, new), new)

    def _archived(self, hashes: np.ndarray) -> np.ndarray:
        """Which of `hashes` belong to an archived key (or collide with one)."""
        seen = self._hashes
        if not len(seen):
            return np.zeros(len(hashes), dtype=bool)
        at = np.minimum(np.searchsorted(seen, hashes), len(seen) - 1)
        return seen[at] == hashes

    def _load_keys(self, parts: list[tuple[str, str]]) -> None:
        files = [str(p) for part in parts if part not in self._loaded
                 for p in self.archive.partition_files(*part)]
        if files:
            self._remember(self._con.sql(
                "SELECT cluster, audit_id, stage, hash(cluster, audit_id, stage) AS h "
                "FROM read_parquet($files)", params={"files": files}).to_arrow_table())
        self._loaded.update(parts)

    def _archived_keys(self, hashes: pa.Array) -> set[tuple[str, str, str]]:
        """The whole keys archived under any of `hashes`."""
        found: set[tuple[str, str, str]] = set()
        for keys in self._keys:
            hits = keys.filter(pc.is_in(keys.column("h"), value_set=hashes))
            found.update(zip(*(hits.column(c).to_pylist() for c in _KEY), strict=True))
        return found

    def commit_rows(self, rows: pa.Table) -> CommitResult:
        """Write the new rows of normalised `rows` (SCHEMA plus `day`) as sealed segments."""
        return self.seal(self.plan(rows))

    def _fresh(self, rows: pa.Table, hashes: np.ndarray) -> np.ndarray:
        """Indexes of the rows to store: the first copy of each key not already archived."""
        unique, counts = np.unique(hashes, return_counts=True)
        # Hashes seen before (archived, or twice in this batch): decide on the whole key.
        doubtful = unique[(counts > 1) | self._archived(unique)]
        if not len(doubtful):
            return np.arange(len(hashes))  # the common case
        recheck = np.flatnonzero(np.isin(hashes, doubtful))
        known = self._archived_keys(pa.array(doubtful))
        picked = rows.select(_KEY).take(pa.array(recheck))
        keep = np.ones(len(hashes), dtype=bool)
        keep[recheck] = False
        for i, key in zip(recheck.tolist(), zip(*(picked.column(c).to_pylist() for c in _KEY),
                                                 strict=True), strict=True):
            if key not in known:
                known.add(key)
                keep[i] = True
        return np.flatnonzero(keep)

    def plan(self, rows: pa.Table) -> Plan:
        """Decide which rows are new, and count them as archived from now on.

        The keys are taken at once so that the next batch can be planned while this one is
        sealed; if sealing then fails, this writer must not be used again (a fresh one
        reloads the keys from the segments that really exist)."""
        if not rows.num_rows:
            return Plan([], CommitResult(0, 0))
        parts_table = rows.select(["cluster", "day"]).group_by(["cluster", "day"]).aggregate([])
        found = sorted(zip(parts_table.column("cluster").to_pylist(),
                           parts_table.column("day").to_pylist(), strict=True))
        self._load_keys([(cluster, _date(day)) for cluster, day in found])
        self._con.register("batch", rows.select(_KEY))
        try:
            hashes = self._con.sql(_HASH_SQL).to_arrow_table().column("h").to_numpy()
        finally:
            self._con.unregister("batch")
        fresh = self._fresh(rows, hashes)
        seen = _counts(rows.column("cluster"))
        index = pa.array(fresh)
        new_rows = rows if len(fresh) == rows.num_rows else rows.take(index)
        new = _counts(new_rows.column("cluster"))
        # take() copies: a column imported from DuckDB shares one allocation with the whole
        # batch it came with, which must not stay in memory for the life of the writer.
        self._remember(rows.select(_KEY).take(index).append_column("h", pa.array(hashes[fresh])))
        segments: list[tuple[pa.Table, str, str]] = []
        data = new_rows.select(SCHEMA.names)
        for cluster, day in found:  # input order is kept within each partition
            part = data if len(found) == 1 else data.filter(pc.and_(
                pc.equal(new_rows.column("cluster"), cluster),
                pc.equal(new_rows.column("day"), day)))
            if part.num_rows:
                segments.append((part, cluster, _date(day)))
        stored = len(fresh)
        per = tuple((c, new.get(c, 0), n - new.get(c, 0)) for c, n in sorted(seen.items()))
        return Plan(segments, CommitResult(stored, rows.num_rows - stored, (), per))

    def seal(self, plan: Plan) -> CommitResult:
        """Write the planned segments (no DuckDB: may run on another thread than `plan`)."""
        written = tuple(self.archive.write_segment(*segment) for segment in plan.segments)
        return dataclasses.replace(plan.result, segments=written)


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    return {row["values"]: row["counts"] for row in pc.value_counts(column).to_pylist()}
