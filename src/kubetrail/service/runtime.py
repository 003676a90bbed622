"""What runs behind the webhook: durable acknowledgement, compaction, detection.

A batch goes through three hands. The request handler checks it and queues it (a bounded
queue: when full, the caller is told to come back later rather than memory growing). The
WAL thread writes every queued batch and fsyncs once for all of them (group commit), then
acknowledges them. The compaction thread turns the log into Parquet segments every second
or so, dropping what is already archived (the API server retries, so duplicates are
normal), quarantining what is not a usable event, and handing the new rows to detection.
A crash at any point loses nothing acknowledged and stores nothing twice: the log is
compacted again from its checkpoint, and the archive drops what it already holds.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from ..errors import StoreError
from ..events.normalize import normalize_with
from ..events.reader import json_error
from ..events.row import RAW_SCHEMA
from ..store.archive import Archive, connection
from ..store.retention import RetentionPolicy, apply_retention
from ..store.wal import WalPosition, WalRecord, WriteAheadLog
from .metrics import Metrics

__all__ = ["Overloaded", "Runtime", "RuntimeOptions"]

log = logging.getLogger("kubetrail.service")


class Overloaded(Exception):
    """The queue to the write-ahead log is full: the client should retry later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"overloaded; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class RuntimeOptions:
    queue_bytes: int = 256 * 1024 * 1024  # accepted but not yet durable
    compact_seconds: float = 1.0
    compact_events: int = 50_000
    detect: bool = True
    rules: list[str] = field(default_factory=list)
    alerts: dict[str, Any] = field(default_factory=dict)
    retention: dict[str, Any] = field(default_factory=dict)  # applied hourly when set
    retention_seconds: float = 3600.0


@dataclass
class _Pending:
    cluster: str
    body: bytes
    size: int
    future: Future[WalPosition]
    received: float


class Runtime:
    """The service's pipeline over one data dir (which it holds the writer lock of)."""

    def __init__(self, archive: Archive, options: RuntimeOptions, metrics: Metrics) -> None:
        self.archive = archive
        self.options = options
        self.metrics = metrics
        self._lock_cm = archive.writer_lock(wait_seconds=5.0)
        self._lock_cm.__enter__()
        try:
            self.wal = WriteAheadLog(archive.root / "wal")
            self.detector = self._detector() if options.detect else None
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()
        self._appended = threading.Condition()
        self._oldest_unsealed: float | None = None
        self._stopping = threading.Event()
        self._failure: str | None = None
        policy = RetentionPolicy.from_mapping(options.retention)
        self._retention = None if policy.empty else policy
        self._next_retention = time.monotonic()
        self._wal_thread = threading.Thread(target=self._wal_loop, name="kubetrail-wal",
                                            daemon=True)
        self._compact_thread = threading.Thread(target=self._compact_loop,
                                                name="kubetrail-compact", daemon=True)
        self._writer = archive.writer()
        self._norm = connection(ordered=True)
        self._norm.execute("SET threads = 1")
        self._wal_thread.start()
        self._compact_thread.start()
        self.metrics.wal_bytes.set(self.wal.bytes())

    def _detector(self) -> Any:
        from ..detect.live import LiveDetector
        from ..detect.rules import load_rules
        from ..sinks import build_sinks

        def counted(alert: Any) -> None:
            self.metrics.alerts.labels(rule=alert.rule, severity=alert.severity).inc()

        return LiveDetector(self.archive, load_rules(self.options.rules),
                            build_sinks(self.options.alerts), on_alert=counted)

    # -- accepting -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return (self._failure is None and not self._stopping.is_set()
                and self._wal_thread.is_alive() and self._compact_thread.is_alive())

    @property
    def failure(self) -> str | None:
        return self._failure

    def submit(self, cluster: str, body: bytes) -> Future[WalPosition]:
        """Queue a batch (a checked EventList) for the log; the future is done once it is
        durable."""
        size = len(body)
        if self._failure is not None:
            raise StoreError(f"the service cannot store events: {self._failure}")
        with self._queued_lock:
            if self._queued_bytes and self._queued_bytes + size > self.options.queue_bytes:
                raise Overloaded(retry_after=1)
            self._queued_bytes += size
        future: Future[WalPosition] = Future()
        self._queue.put(_Pending(cluster, body, size, future, time.monotonic()))
        return future

    def _wal_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 256:
                    item = self._queue.get_nowait()
                    if item is None:
                        self._queue.put(None)  # stop after this group
                        break
                    batch.append(item)
            try:
                ends = self.wal.append([(p.cluster, p.body) for p in batch])
            except StoreError as exc:
                self._failure = exc.message
                for p in batch:
                    p.future.set_exception(exc)
                continue
            finally:
                with self._queued_lock:
                    self._queued_bytes -= sum(p.size for p in batch)
            with self._appended:
                if self._oldest_unsealed is None:
                    self._oldest_unsealed = min(p.received for p in batch)
                self._appended.notify()
            for p, end in zip(batch, ends, strict=True):
                p.future.set_result(end)

    # -- compacting ----------------------------------------------------------------------

    def _compact_loop(self) -> None:
        while not self._stopping.is_set():
            with self._appended:
                self._appended.wait(timeout=self.options.compact_seconds)
            try:
                self.compact()
            except Exception as exc:  # keep serving reads; /readyz says what broke
                self._failure = f"compaction failed: {exc}"
                log.exception("compaction failed")
                return
            if self.detector is not None:
                self.detector.flush()
            if self._retention is not None and time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + self.options.retention_seconds
                try:
                    apply_retention(self.archive, self._retention, datetime.now(UTC),
                                    locked=True)
                except Exception:  # the next hour tries again; serving goes on
                    log.exception("retention failed")

    def compact(self) -> int:
        """Move what the log holds into the archive; returns the events compacted."""
        done = 0
        records: list[WalRecord] = []
        count = 0
        for record in self.wal.pending():
            records.append(record)
            count += len(record.body) // 1000  # about a thousand bytes an event
            if count >= self.options.compact_events:
                done += self._seal(records)
                records, count = [], 0
        if records:
            done += self._seal(records)
        with self._appended:
            self._oldest_unsealed = None
        self.metrics.wal_bytes.set(self.wal.bytes())
        return done

    def _seal(self, records: list[WalRecord]) -> int:
        raw = raw_table(self._norm, records)
        rows, problems = normalize_with(self._norm, raw)
        plan = self._writer.plan(rows)
        result = self._writer.seal(plan)
        for cluster, stored, dupes in result.per_cluster:
            self.metrics.stored.labels(cluster=cluster).inc(stored)
            self.metrics.duplicate.labels(cluster=cluster).inc(dupes)
        quarantined = [{"file": "webhook", "line": p["line"], "cluster": p["cluster"],
                        "reason": json_error(p["event"]) if p["problem"] == "invalid JSON"
                        else p["problem"], "excerpt": str(p["event"])[:300]}
                       for p in problems]
        self.archive.quarantine(quarantined)
        for p in quarantined:
            self.metrics.quarantined.labels(cluster=p["cluster"]).inc()
        if self.detector is not None:
            for part, _, _ in plan.segments:
                self.detector.submit(part)
        self.wal.mark_compacted(records[-1].end)
        if self._oldest_unsealed is not None:
            self.metrics.compaction_lag.set(time.monotonic() - self._oldest_unsealed)
        return raw.num_rows

    def pending_rows(self) -> pa.Table:
        """The logged events not yet in a segment, as archive rows (queries add them)."""
        con = connection(ordered=True)
        try:
            rows, _ = normalize_with(con, raw_table(con, list(self.wal.pending())))
        finally:
            con.close()
        return rows.drop_columns(["day"]) if "day" in rows.column_names else rows

    # -- stopping ------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new batches, make the queued ones durable, compact, stop detection."""
        self._queue.put(None)
        self._wal_thread.join()
        self._stopping.set()
        with self._appended:
            self._appended.notify()
        self._compact_thread.join()
        try:
            if self._failure is None:
                self.compact()
        finally:
            try:
                if self.detector is not None:
                    self.detector.close()
            finally:
                self.wal.close()
                self._writer.close()
                self._norm.close()
                self._lock_cm.__exit__(None, None, None)


_HEADER = '{"kind":"Event","apiVersion":"audit.k8s.io/v1"}'
_PREFIX = '{"kind":"Event","apiVersion":"audit.k8s.io/v1",'

# Each EventList's items as Event texts, in order, split by DuckDB (parsed and written by
# yyjson, off the interpreter). The webhook backend leaves kind and apiVersion out of list
# items: they are put first, as in an Event read from a log file.
_ITEMS_SQL = f"""
WITH items AS (
    SELECT cluster, batch, unnest(json_extract(body, '$.items[*]'))::VARCHAR AS t,
           generate_subscripts(json_extract(body, '$.items[*]'), 1) AS i
    FROM kt_bodies)
SELECT CASE WHEN starts_with(t, '{_PREFIX}') THEN t
            WHEN json_exists(t, '$.kind') OR json_exists(t, '$.apiVersion')
                THEN json_merge_patch('{_HEADER}', t)::VARCHAR
            WHEN t = '{{}}' THEN '{_HEADER}'
            ELSE '{_PREFIX}' || substr(t, 2) END AS text,
       row_number() OVER (ORDER BY batch, i) AS line, cluster,
       'native' AS source_format, NULL::VARCHAR AS truncated, 'webhook' AS file
FROM items
ORDER BY batch, i
"""


def raw_table(con: duckdb.DuckDBPyConnection, records: list[WalRecord]) -> pa.Table:
    """Logged batches as the raw rows normalisation takes."""
    if not records:
        return RAW_SCHEMA.empty_table()
    bodies = pa.table({"cluster": [r.cluster for r in records],
                       "batch": list(range(len(records))),
                       "body": pa.array([r.body for r in records], pa.binary()).cast(pa.string())})
    con.register("kt_bodies", bodies)
    try:
        return con.sql(_ITEMS_SQL).to_arrow_table().cast(RAW_SCHEMA)
    finally:
        con.unregister("kt_bodies")
