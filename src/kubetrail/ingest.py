"""Ingestion: inputs → decoded events → rows → deduplicated segments, resumable.

The same pipeline serves files, directories, rotated sets and stdin; only the source
differs. Batches are committed at line boundaries, and a checkpoint is saved only after
its rows are durable, so killing an ingest at any moment and running it again stores
every event exactly once.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow as pa

from .errors import InputError, KubetrailError, LegacyFormatError, StoreError
from .events.compression import open_stream, stream_error
from .events.decode import Decoded, Decoder, excerpt
from .events.normalize import RawBatch, normalize_with
from .events.reader import FastLines, Position, iter_items, json_error
from .redact import redact_rows
from .sources.files import InputFile, expand_paths
from .store.archive import Archive, CommitResult, connection
from .store.checkpoint import Checkpoint, CheckpointStore
from .store.writer import ArchiveWriter, Plan

__all__ = ["ClusterCounts", "FileReport", "IngestReport", "IngestSession", "ingest"]

#: progress(events_so_far, bytes_so_far) — called every few thousand events.
ProgressFn = Callable[[int, int], None]
#: on_rows(rows) — called with each batch of newly stored rows once they are durable.
RowsFn = Callable[[pa.Table], None]


@dataclass
class ClusterCounts:
    """Per-cluster outcome of an ingest."""

    read: int = 0
    stored: int = 0
    duplicate: int = 0
    quarantined: int = 0
    skipped: int = 0


@dataclass
class FileReport:
    """What happened to one input."""

    label: str
    status: str = "read"  # read | resumed | unchanged | partial | failed
    events: int = 0
    quarantined: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    """The summary of one ingest: counts per cluster, per file, and what went wrong."""

    clusters: dict[str, ClusterCounts] = field(default_factory=dict)
    files: list[FileReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # why records were quarantined
    quarantine_path: Path | None = None
    seconds: float = 0.0

    def totals(self) -> ClusterCounts:
        total = ClusterCounts()
        for c in self.clusters.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(c, name))
        return total

    @property
    def exit_code(self) -> int:
        """0 all stored, 3 some input quarantined (the rest stored), 1 an input was unreadable."""
        if self.errors:
            return 1
        return 3 if self.totals().quarantined else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": {k: vars(v) for k, v in sorted(self.clusters.items())},
            "files": [vars(f) for f in self.files],
            "errors": self.errors,
            "quarantine_reasons": dict(self.reasons.most_common()),
            "quarantine": str(self.quarantine_path) if self.quarantine_path else None,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
        }


class _Pipeline:
    """Holds the batch in flight and the checkpoints it will make true once committed."""

    def __init__(self, archive: Archive, batch_events: int, progress: ProgressFn | None,
                 on_rows: RowsFn | None = None, stop: threading.Event | None = None) -> None:
        self.archive = archive
        self.on_rows = on_rows
        self.stop = stop  # checked where a batch is committed: reading stops there
        self.batch_events = max(1, batch_events)
        self.progress = progress
        self.raw = RawBatch()
        self.quarantine: list[dict[str, Any]] = []
        self.pending: dict[str, Checkpoint] = {}
        self.checkpoints = CheckpointStore(archive.state_dir)
        self.report = IngestReport(quarantine_path=archive.quarantine_path)
        self.file_reports: dict[str, FileReport] = {}
        self.events = 0
        self.bytes_done = 0
        self._next_progress = 0
        # Three stages after reading, each on its own thread so that they overlap: DuckDB
        # parses batch N+2 while batch N+1 is deduplicated and batch N written.
        self._normalizer = ThreadPoolExecutor(1, thread_name_prefix="kubetrail-normalize")
        self._planner = ThreadPoolExecutor(1, thread_name_prefix="kubetrail-dedupe")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kubetrail-write")
        self._inflight: deque[Future[tuple[CommitResult, list[dict[str, Any]]]]] = deque()
        self._norm_con: duckdb.DuckDBPyConnection | None = None
        self._archive_writer: ArchiveWriter | None = None
        self._failed: str | None = None  # set by the dedupe or write stage when a batch fails

    def counts(self, cluster: str) -> ClusterCounts:
        c = self.report.clusters.get(cluster)
        if c is None:
            c = self.report.clusters[cluster] = ClusterCounts()
        return c

    def flush(self, *, wait: bool = False) -> None:
        """Hand the batch to the normalise, dedupe and write stages; reading goes on.

        At most two batches are in the stages while the next one is read, results are
        applied in order, and the writer saves checkpoints only after their rows are
        durable, so a crash loses nothing."""
        raw, quarantine, pending = self.raw.take(), self.quarantine, self.pending
        self.raw, self.quarantine, self.pending = RawBatch(), [], {}
        normalized = self._normalizer.submit(self._normalize, raw)
        planned = self._planner.submit(self._plan, normalized)
        self._inflight.append(self._writer.submit(self._commit, planned, quarantine, pending))
        while len(self._inflight) > (0 if wait else 2):
            self._apply(self._inflight.popleft())

    def _apply(self, future: Future[tuple[CommitResult, list[dict[str, Any]]]]) -> None:
        """Count the outcome of one committed batch (raising what it raised)."""
        result, quarantined = future.result()
        for record in quarantined:
            self._count_quarantined(record["cluster"], record["reason"], read=False)
            self.file_reports[record["file"]].quarantined += 1
            self.file_reports[record["file"]].events -= 1
        for cluster, stored, dupes in result.per_cluster:
            counts = self.counts(cluster)
            counts.stored += stored
            counts.duplicate += dupes

    def _normalize(self, raw: pa.Table) -> tuple[pa.Table | None, list[dict[str, Any]]]:
        """Normalise stage (its own thread and DuckDB connection)."""
        if not raw.num_rows:
            return None, []
        if self._norm_con is None:
            self._norm_con = connection(ordered=True)
            # The stages already keep every core busy; DuckDB's own threads on a 50k-event
            # batch only add contention (measured ~5 % faster with one).
            self._norm_con.execute("SET threads = 1")
        rows, problems = normalize_with(self._norm_con, raw)
        # Secrets go before anything is written (quarantined texts: Archive.quarantine).
        return redact_rows(self._norm_con, rows, self.archive.redactor), problems

    def _plan(self, normalized: Future[tuple[pa.Table | None, list[dict[str, Any]]]]
              ) -> tuple[Plan | None, list[dict[str, Any]]]:
        """Dedupe stage (its own thread: the archive writer's DuckDB connection lives here)."""
        rows, problems = normalized.result()
        if self._failed is not None or rows is None:
            return None, problems
        if self._archive_writer is None:
            self._archive_writer = self.archive.writer()
        try:
            return self._archive_writer.plan(rows), problems
        except Exception as exc:
            self._fail(exc)
            raise

    def _commit(self, planned: Future[tuple[Plan | None, list[dict[str, Any]]]],
                quarantine: list[dict[str, Any]], pending: dict[str, Checkpoint]
                ) -> tuple[CommitResult, list[dict[str, Any]]]:
        """Write stage: segments, then quarantine, then checkpoints.

        Once a batch fails, every later batch fails too without saving its checkpoints: a
        checkpoint past a batch that was not stored would lose that batch for good."""
        try:
            plan, problems = planned.result()
            if self._failed is not None:
                raise StoreError(f"not written: an earlier batch failed ({self._failed})")
            writer = self._archive_writer  # made by the dedupe stage with the first plan
            result = writer.seal(plan) if plan is not None and writer else CommitResult(0, 0)
            if self.on_rows is not None and plan is not None:
                for rows, _, _ in plan.segments:  # now durable: e.g. detection
                    self.on_rows(rows)
            rejected = [_quarantine_record(row["file"], row["cluster"], row["line"],
                                           json_error(row["event"])
                                           if row["problem"] == "invalid JSON" else row["problem"],
                                           excerpt(row["event"]))
                        for row in problems]
            self.archive.quarantine(quarantine + rejected)
            for key, cp in pending.items():
                self.checkpoints.save(key, cp)
            return result, rejected
        except KubetrailError:
            self._fail_quietly()
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    def _fail(self, exc: BaseException) -> StoreError:
        """Poison the pipeline; the error to show for `exc`."""
        self._failed = self._failed or (str(exc).splitlines()[0] if str(exc)
                                        else type(exc).__name__)
        return StoreError(f"cannot write to the archive {self.archive.root}: {self._failed}",
                          hint="free some space or fix the permissions, then run the same "
                          "ingest again: it resumes where the archive stopped")

    @property
    def idle(self) -> bool:
        """Nothing read that is not yet durable (a pass that found nothing new)."""
        return not (len(self.raw) or self.quarantine or self.pending or self._inflight)

    def _fail_quietly(self) -> None:
        self._failed = self._failed or "an earlier batch failed"

    def close(self) -> None:
        while self._inflight:  # after an error: let what was started finish
            with contextlib.suppress(Exception):
                self._inflight.popleft().result()
        if self._norm_con is not None:
            self._normalizer.submit(self._norm_con.close).result()
        if self._archive_writer is not None:
            self._planner.submit(self._archive_writer.close).result()
        for stage in (self._normalizer, self._planner, self._writer):
            stage.shutdown(wait=True)

    def run_file(self, inp: InputFile, cluster: str, fmt: str, force: bool) -> FileReport:
        report = self.file_reports[inp.label] = FileReport(inp.label)
        try:
            raw = inp.open()
        except InputError as exc:
            return self._failed_file(report, exc)
        try:
            return self._run_open_file(inp, raw, report, cluster, fmt, force)
        finally:
            if inp.path is not None:
                raw.close()

    def _run_open_file(self, inp: InputFile, raw: IO[bytes], report: FileReport, cluster: str,
                       fmt: str, force: bool) -> FileReport:
        try:
            # From the open file, not its path: a file renamed and replaced meanwhile (log
            # rotation) must not be resumed from the other one's checkpoint.
            fingerprint, size, compressed = inp.identify(raw)
        except InputError as exc:
            return self._failed_file(report, exc)
        key = CheckpointStore.key(fingerprint, cluster, fmt) if fingerprint else None
        start = start_line = 0
        if key and not force:
            cp = self.checkpoints.get(key)
            if cp and cp.done and cp.size == size:
                report.status = "unchanged"
                self.bytes_done += size
                return report
            if cp and cp.offset and size > cp.offset and size >= cp.size and not compressed:
                start, start_line, report.status = cp.offset, cp.line, "resumed"
        if size == 0 and inp.path is not None:
            report.error = "empty file, nothing to read"
            if key:
                self.pending[key] = Checkpoint(inp.label, 0, 0, True)
            return report
        decoder = Decoder(cluster=cluster, fmt=fmt)
        last = Position(start_line, start, start_line)
        stream = raw
        try:
            stream = open_stream(raw, inp.label)
            for entry in iter_items(stream, inp.label, decoder, start, start_line):
                pos = Position(entry.end_line, entry.offset, entry.end_line) \
                    if isinstance(entry, FastLines) else entry[0]
                if len(self.raw) >= self.batch_events:
                    # A checkpoint only where a record ends (the offset moved on) and reading
                    # can restart; inside a document or a line, the batch goes without one.
                    if key and last.resumable and pos.offset != last.offset:
                        self.pending[key] = Checkpoint(inp.label, last.offset, size,
                                                       line=last.end_line)
                    self.flush()
                    if self.stop is not None and self.stop.is_set():
                        report.status = "stopped"  # the next run resumes at the checkpoint
                        return report
                if self.progress and self.events >= self._next_progress:
                    self._next_progress = self.events + 10_000  # a few updates a second
                    self.progress(self.events, self.bytes_done + last.offset - start)
                last = pos
                if isinstance(entry, FastLines):
                    n = len(entry.texts)
                    self.raw.add_fast(entry, cluster, inp.label)
                    self.counts(cluster).read += n
                    report.events += n
                    self.events += n
                    continue
                item = entry[1]
                if isinstance(item, Decoded):
                    c = item.cluster or cluster
                    self.raw.add(item, pos.line, c, inp.label)
                    self.counts(c).read += 1
                    report.events += 1
                    self.events += 1
                elif item.skipped:
                    self.counts(cluster).skipped += 1
                elif item.pending:
                    report.error = item.reason
                else:
                    self._quarantine(inp.label, cluster, pos.line, item.reason, item.excerpt)
                    report.quarantined += 1
        except LegacyFormatError:
            raise
        except InputError as exc:
            return self._failed_file(report, exc)
        except OSError as exc:
            return self._failed_file(report, InputError(f"read error: {exc.strerror or exc}",
                                                        path=inp.label))
        damage = stream_error(stream)
        if damage:
            reason = f"{damage}; the {report.events} events before it were read"
            report.status, report.error = "partial", reason
            self._quarantine(inp.label, cluster, last.end_line, reason, "")
            report.quarantined += 1
        if key:  # a document (not JSON lines) that grows is read again from its start
            # A file that grew while it was read counts as the size read (never more), so
            # that the next run finds it unchanged, or resumes it, instead of reading it all.
            seen = size if compressed or not last.resumable else max(size, last.offset)
            self.pending[key] = Checkpoint(inp.label, last.offset if last.resumable else 0,
                                           seen, True, line=last.end_line if last.resumable else 0)
        self.bytes_done += size
        return report

    def _failed_file(self, report: FileReport, exc: InputError) -> FileReport:
        report.status, report.error = "failed", exc.message
        self.report.errors.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        return report

    def _quarantine(self, label: str, cluster: str, line: int, reason: str, excerpt: str) -> None:
        self._count_quarantined(cluster, reason)
        self.quarantine.append(_quarantine_record(label, cluster, line, reason, excerpt))

    def _count_quarantined(self, cluster: str, reason: str, *, read: bool = True) -> None:
        counts = self.counts(cluster)
        counts.read += read
        counts.quarantined += 1
        self.report.reasons[_reason_kind(reason)] += 1


class IngestSession:
    """One pipeline and archive writer kept open across several passes over the inputs.

    :func:`ingest` makes one pass; :func:`kubetrail.follow.follow` makes one every poll, so
    that the writer loads the keys of each (cluster, day) partition once, not once a pass.
    Hold :meth:`Archive.writer_lock` while it is open (the checkpoints are read under it).
    Setting `stop` ends a pass at the next committed batch; the next run resumes there.

    >>> with archive.writer_lock(), IngestSession(archive) as session:  # doctest: +SKIP
    ...     reports = session.read(expand_paths(["audit.log"]), cluster="prod")
    >>> session.report.totals().stored  # doctest: +SKIP
    21
    """

    def __init__(self, archive: Archive, *, batch_events: int = 50_000,
                 progress: ProgressFn | None = None, on_rows: RowsFn | None = None,
                 stop: threading.Event | None = None) -> None:
        self._pipeline = _Pipeline(archive, batch_events, progress, on_rows, stop)

    def __enter__(self) -> IngestSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def report(self) -> IngestReport:
        """Counts over every pass so far (the caller fills in `files` and `seconds`)."""
        return self._pipeline.report

    def read(self, inputs: list[InputFile], *, cluster: str = "default", fmt: str = "auto",
             force: bool = False) -> list[FileReport]:
        """One pass: each input from its checkpoint, in order; returns once all that was read
        is durable and checkpointed (an input skipped because `stop` was set has no report)."""
        pipeline = self._pipeline
        reports: list[FileReport] = []
        try:
            for inp in inputs:
                if pipeline.stop is not None and pipeline.stop.is_set():
                    break
                reports.append(pipeline.run_file(inp, cluster, fmt, force))
        except StoreError:
            raise
        except KubetrailError:  # e.g. a legacy-format file: keep what was read before it
            pipeline.flush(wait=True)
            raise
        if not pipeline.idle:
            pipeline.flush(wait=True)
        return reports

    def close(self) -> None:
        self._pipeline.close()


def _quarantine_record(label: str, cluster: str, line: int, reason: str, excerpt: str
                       ) -> dict[str, Any]:
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "file": label, "line": line,
            "cluster": cluster, "reason": reason, "excerpt": excerpt}


_DETAIL = re.compile(r":? line \d+ column \d+ \(char \d+\)| \(got [^)]*\)|\(stageTimestamp [^)]*\)")


def _reason_kind(reason: str) -> str:
    """The reason without positions and values, so that equal causes are counted together."""
    return _DETAIL.sub("", reason)[:160]


def ingest(
    archive: Archive,
    paths: list[str],
    *,
    cluster: str = "default",
    fmt: str = "auto",
    batch_events: int = 50_000,
    force: bool = False,
    progress: ProgressFn | None = None,
    on_rows: RowsFn | None = None,
) -> IngestReport:
    """Read every input into the archive; see :class:`IngestReport` for the outcome.

    `on_rows` sees every newly stored batch (never a duplicate), on one thread, in order:
    `ingest --detect` runs the rules there.

    >>> report = ingest(Archive(Path("/tmp/kt")), ["audit.log"], cluster="prod")  # doctest: +SKIP
    >>> report.exit_code  # doctest: +SKIP
    0
    """
    Decoder(fmt=fmt)  # validates the format name before anything is read
    inputs = expand_paths(paths)
    started = time.monotonic()
    with archive.writer_lock(), IngestSession(archive, batch_events=batch_events,
                                              progress=progress, on_rows=on_rows) as session:
        session.report.files.extend(session.read(inputs, cluster=cluster, fmt=fmt, force=force))
    pipeline = session._pipeline
    if progress:
        progress(pipeline.events, pipeline.bytes_done)
    pipeline.report.seconds = time.monotonic() - started
    return pipeline.report
