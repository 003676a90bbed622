"""Following a live audit log: tailed across rotation, resumed after a restart, no loss.

Every poll lists the live file and its backups (:func:`~kubetrail.sources.files.rotated_set`)
and reads what is new through one long-lived :class:`~kubetrail.ingest.IngestSession`, so
the archive writer loads each partition's keys once per run, not once per poll. Each file
resumes from its checkpoint, found by a fingerprint of its first bytes:

* rename-and-create (the API server's ``--audit-log-maxsize`` rotation): the renamed file
  keeps its fingerprint and is finished from its checkpoint; the new live file has another
  one and is read from its start;
* copytruncate (logrotate): the copy holds the old content under the checkpointed
  fingerprint and is finished from there; the truncated live file has another fingerprint,
  and a file smaller than its checkpoint is read again from its start, never past its end;
* a last line still being written is left until its newline arrives.

A checkpoint is saved only once the rows before it are durable, and the archive drops what
it already holds, so killing a follow at any moment and starting it again stores every event
exactly once. A file whose inode, size and times are those of the last poll is not opened:
an idle poll is a directory listing and a stat per file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .events.decode import Decoder
from .ingest import IngestReport, IngestSession, RowsFn
from .sources.files import InputFile, rotated_set
from .store.archive import Archive

__all__ = ["Poll", "follow"]

_Signature = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Poll:
    """What one poll read: counts, the files it read from, and inputs it could not read."""

    read: int
    stored: int
    duplicate: int
    quarantined: int
    files: tuple[str, ...]
    errors: tuple[str, ...]


#: on_poll(poll) — called after each poll that read something, once its rows are durable.
PollFn = Callable[[Poll], None]


def follow(
    archive: Archive,
    path: str | Path,
    *,
    cluster: str = "default",
    fmt: str = "auto",
    poll_seconds: float = 1.0,
    batch_events: int = 50_000,
    on_rows: RowsFn | None = None,
    on_poll: PollFn | None = None,
    stop: threading.Event | None = None,
) -> IngestReport:
    """Tail the live log `path` and its rotated backups into the archive until `stop` is set.

    Holds the archive's writer lock throughout. `on_rows` sees every newly stored batch
    (never a duplicate) on the pipeline's write thread, as in :func:`~kubetrail.ingest.ingest`;
    `on_poll` runs on the calling thread between polls, while no batch is in flight (the
    place to flush a detector). Once `stop` is set, reading stops at the next committed
    batch; what was read is made durable and checkpointed before this returns the counts
    of the whole run.

    >>> stop = threading.Event()  # set it from a signal handler      # doctest: +SKIP
    >>> report = follow(Archive(Path("/tmp/kt")), "/var/log/kubernetes/audit.log",
    ...                 cluster="prod", stop=stop)                       # doctest: +SKIP
    """
    Decoder(fmt=fmt)  # validates the format name before anything is read
    live = Path(path).expanduser()
    if live.is_dir():
        raise InputError("follow takes the live log file, not a directory", path=str(path),
                         hint="name the file the API server writes (--audit-log-path); its "
                         "rotated backups next to it are followed too")
    if not rotated_set(live):
        raise InputError("no such file, and no rotated backups of it", path=str(path),
                         hint="check the path: it is the API server's --audit-log-path")
    stop = stop or threading.Event()
    started = time.monotonic()
    seen: dict[Path, _Signature] = {}
    with archive.writer_lock(), IngestSession(archive, batch_events=batch_events,
                                              on_rows=on_rows, stop=stop) as session:
        while True:
            poll = _poll(session, live, seen, cluster, fmt)
            if on_poll is not None and (poll.files or poll.errors):
                on_poll(poll)
            if stop.is_set() or stop.wait(poll_seconds):
                break
    report = session.report
    report.seconds = time.monotonic() - started
    return report


def _poll(session: IngestSession, live: Path, seen: dict[Path, _Signature], cluster: str,
          fmt: str) -> Poll:
    """Read what changed since the last poll; `seen` is updated to this poll's files."""
    current: dict[Path, _Signature] = {}
    changed: list[Path] = []
    for path in rotated_set(live):
        sig = _signature(path)
        if sig is None:
            continue
        current[path] = sig
        if seen.get(path) != sig:
            changed.append(path)
    report = session.report
    before, errors_before = report.totals(), len(report.errors)
    reports = session.read([InputFile(p, str(p)) for p in changed], cluster=cluster, fmt=fmt)
    read: list[str] = []
    for path, file_report in zip(changed, reports, strict=False):
        if file_report.status == "stopped":
            current.pop(path)  # resumed from its checkpoint by the next run
        elif file_report.status == "failed" and _signature(path) != current[path]:
            # Renamed or replaced while it was opened (rotation): the next poll sees it anew.
            current.pop(path)
            report.errors[errors_before:] = [e for e in report.errors[errors_before:]
                                             if not e.startswith(file_report.error or "")]
        elif file_report.events or file_report.quarantined:
            read.append(path.name)
    for path in changed[len(reports):]:  # not reached: `stop` was set
        current.pop(path)
    seen.clear()
    seen.update(current)
    after = report.totals()
    return Poll(read=after.read - before.read, stored=after.stored - before.stored,
                duplicate=after.duplicate - before.duplicate,
                quarantined=after.quarantined - before.quarantined,
                files=tuple(read), errors=tuple(report.errors[errors_before:]))


def _signature(path: Path) -> _Signature | None:
    """What changes when a file is written, truncated or replaced; None once it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
