"""The embedded archive: Parquet segments under a data dir, queried by DuckDB.

Layout (ARCHITECTURE.md decision 1)::

    <data-dir>/segments/cluster=<name>/date=<YYYY-MM-DD>/seg-<start>-<id>.parquet
    <data-dir>/manifest.jsonl        one line per sealed segment, hash-chained
    <data-dir>/state/checkpoints.json where each input was read up to
    <data-dir>/quarantine/quarantine.jsonl  records that were not usable events

Segments are written to a temporary name, fsynced and renamed, so a reader never sees a
partial file and a killed writer leaves nothing half-done. Deduplication on (cluster,
auditID, stage) happens at commit time against the segments of the same cluster and day
(the day is derived from the stage timestamp, which all copies of one stage share).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import StoreError
from ..events.row import SCHEMA, UNIQUE_COLUMNS

if TYPE_CHECKING:
    from ..redact import Redactor
    from .evidence import Signer
    from .writer import ArchiveWriter

__all__ = ["Archive", "CommitResult", "connection"]

_DICTIONARY_COLUMNS = [n for n in SCHEMA.names if n not in UNIQUE_COLUMNS]
_STATISTICS_COLUMNS = [n for n in SCHEMA.names if n != "event"]  # min/max of whole events: useless
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class CommitResult:
    """How many rows of a batch were new and how many were already in the archive."""

    stored: int
    duplicates: int
    segments: tuple[Path, ...] = ()
    per_cluster: tuple[tuple[str, int, int], ...] = ()  # (cluster, stored, duplicates)


def _cluster_dir(cluster: str) -> str:
    return "cluster=" + (cluster if _SAFE.match(cluster) else quote(cluster, safe=""))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create `path` and any missing parents, each private to the owner (0700)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def connection(*, ordered: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    if not ordered:
        con.execute("SET preserve_insertion_order = false")
    return con


def chain_head(fh: IO[bytes], window: int = 8192) -> tuple[int, str]:
    """(sequence number, hash) of the last whole entry of an open hash-chained JSON-lines
    file (the manifest, the access log); (0, '') when it has none."""
    fh.seek(0, os.SEEK_END)
    fh.seek(max(0, fh.tell() - window))
    for line in reversed(fh.read().splitlines()):
        try:
            entry = orjson.loads(line)
            return int(entry["seq"]), str(entry["hash"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return 0, ""


class Archive:
    """A data directory holding the audit archive.

    >>> archive = Archive(Path("/tmp/kt-doc"))          # doctest: +SKIP
    >>> archive.connect().sql("select count(*) from events").fetchone()  # doctest: +SKIP
    """

    def __init__(self, data_dir: Path, *, create: bool = True,
                 signing_key: Path | None = None,
                 redaction: Mapping[str, Any] | None = None) -> None:
        self.root = Path(data_dir).expanduser()
        self.signer: Signer | None = None
        self._redaction = redaction
        self._redactor: Redactor | None = None
        self.segments_dir = self.root / "segments"
        self.state_dir = self.root / "state"
        self.quarantine_dir = self.root / "quarantine"
        self.manifest_path = self.root / "manifest.jsonl"
        if create:
            try:
                for d in (self.root, self.segments_dir, self.state_dir, self.quarantine_dir):
                    ensure_dir(d)
            except OSError as exc:
                raise StoreError(f"cannot create the data dir {self.root}: {exc.strerror}",
                                 hint="choose another with --data-dir or KUBETRAIL_DATA_DIR"
                                 ) from None
        elif not self.root.is_dir():
            raise StoreError(f"no archive at {self.root}",
                             hint="ingest something first, or point --data-dir at the archive")
        if signing_key is not None:
            from .evidence import Signer

            self.signer = Signer.load(Path(signing_key).expanduser())

    # -- writing -----------------------------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        """What every writer puts events through before they are stored (on unless the
        `redaction:` settings disable it); its key lives in the data dir."""
        if self._redactor is None:
            from ..redact import load_redactor

            self._redactor = load_redactor(self.root, self._redaction)
        return self._redactor

    @contextlib.contextmanager
    def writer_lock(self, wait_seconds: float = 30.0) -> Iterator[None]:
        """One writer at a time; readers never wait."""
        path = self.root / ".writer.lock"
        try:
            fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the context
        except OSError as exc:
            raise StoreError(f"cannot write to the archive {self.root}: {exc.strerror}",
                             hint="check the data dir's permissions, or choose another "
                             "with --data-dir") from None
        deadline = time.monotonic() + wait_seconds
        try:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"another kubetrail process is writing to {self.root}",
                            hint="wait for it to finish, or use another --data-dir") from None
                    time.sleep(0.1)
            yield
        finally:
            fh.close()

    def segment_files(self, cluster: str | None = None) -> list[Path]:
        base = self.segments_dir / _cluster_dir(cluster) if cluster else self.segments_dir
        return sorted(base.glob("**/*.parquet") if cluster else base.glob("*/*/*.parquet"))

    def writer(self) -> ArchiveWriter:
        """A writer that keeps its connection and the keys it has seen between commits.

        Hold :meth:`writer_lock` while using it: its key cache assumes no other writer."""
        from .writer import ArchiveWriter

        return ArchiveWriter(self)

    def partition_files(self, cluster: str, date: str) -> list[Path]:
        return sorted((self.segments_dir / _cluster_dir(cluster) / f"date={date}").glob("*.parquet"))

    def write_segment(self, part: pa.Table, cluster: str, date: str) -> Path:
        """Write one sealed segment atomically and record it in the manifest."""
        directory = self.segments_dir / _cluster_dir(cluster) / f"date={date}"
        ensure_dir(directory)
        times = part.column("time")
        first, last = pc.min(times).as_py(), pc.max(times).as_py()
        path = directory / f"seg-{first:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = directory / f".{path.name}.tmp"
        pq.write_table(part, tmp, compression="zstd", compression_level=1,
                       row_group_size=128 * 1024, use_dictionary=_DICTIONARY_COLUMNS,
                       write_statistics=_STATISTICS_COLUMNS)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        _fsync_dir(directory)
        self._append_manifest({
            "segment": str(path.relative_to(self.root)),
            "sha256": digest,
            "rows": part.num_rows,
            "bytes": path.stat().st_size,
            "min_time": first.isoformat(),
            "max_time": last.isoformat(),
            "cluster": cluster,
        })
        return path

    def _append_manifest(self, entry: dict[str, Any]) -> None:
        from .evidence import append_signature, entry_hash

        prev = self.manifest_head()
        entry = {"seq": prev[0] + 1, **entry,
                 "sealed": datetime.now(UTC).isoformat(timespec="seconds"), "prev": prev[1]}
        entry["hash"] = entry_hash(entry)
        with open(self.manifest_path, "ab") as fh:
            fh.write(orjson.dumps(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(self.manifest_path, 0o600)
        if self.signer is not None:
            append_signature(self.root, self.signer, entry["seq"], entry["hash"])

    def delete_segment(self, path: Path, reason: str) -> None:
        """Remove a sealed segment and record it in the manifest (retention): verification
        then knows it was removed on purpose."""
        relative = str(path.relative_to(self.root))
        listed = next((e for e in reversed(self.manifest()) if e.get("segment") == relative
                       and e.get("op") != "delete"), None)
        if listed is None:
            raise StoreError(f"{relative} is not a sealed segment of this archive",
                             hint="retention only removes segments the manifest lists")
        self._append_manifest({"op": "delete", "segment": relative, "sha256": listed["sha256"],
                               "rows": listed["rows"], "cluster": listed.get("cluster"),
                               "reason": reason})
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def manifest_head(self) -> tuple[int, str]:
        """(sequence number, hash) of the last manifest entry; (0, '') when empty."""
        if not self.manifest_path.exists():
            return 0, ""
        with open(self.manifest_path, "rb") as fh:
            return chain_head(fh)

    def manifest(self) -> list[dict[str, Any]]:
        if not self.manifest_path.exists():
            return []
        return [orjson.loads(line) for line in self.manifest_path.read_bytes().splitlines()
                if line.strip()]

    def quarantine(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        redactor = self.redactor
        records = [{**r, "excerpt": redactor.text(r["excerpt"])} if r.get("excerpt") else r
                   for r in records]
        path = self.quarantine_dir / "quarantine.jsonl"
        with open(path, "ab") as fh:
            for record in records:
                fh.write(orjson.dumps(record) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, 0o600)

    @property
    def quarantine_path(self) -> Path:
        return self.quarantine_dir / "quarantine.jsonl"

    # -- reading -----------------------------------------------------------------------

    def connect(self, unsealed: pa.Table | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with a view `events` over every segment (empty if none), and
        the `unsealed` rows (SCHEMA: events logged but not yet in a segment) that the
        segments do not already hold."""
        con = self._connect_segments()
        if unsealed is not None and unsealed.num_rows:
            times = unsealed.column("time")
            low, high = (f"TIMESTAMPTZ '{t.isoformat()}'" for t in
                         (pc.min(times).as_py(), pc.max(times).as_py()))
            con.register("kt_unsealed", unsealed.select(SCHEMA.names))
            con.execute("ALTER VIEW events RENAME TO kt_sealed")
            # Only the sealed rows of the unsealed rows' time span are looked at.
            con.execute(
                "CREATE VIEW events AS SELECT * FROM kt_sealed UNION ALL BY NAME "
                "SELECT * FROM (SELECT DISTINCT ON (cluster, audit_id, stage) * FROM kt_unsealed) u "
                f"WHERE NOT EXISTS (SELECT 1 FROM kt_sealed s WHERE s.\"time\" BETWEEN {low} AND "
                f"{high} AND s.cluster = u.cluster AND s.audit_id = u.audit_id AND s.stage = u.stage)")
        return con

    def _connect_segments(self) -> duckdb.DuckDBPyConnection:
        con = connection(ordered=True)
        files = [str(p) for p in self.segment_files()]
        if files:
            try:
                con.execute("CREATE VIEW events AS SELECT * FROM read_parquet("
                            + "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                            + "], union_by_name = true)")
            except duckdb.Error as exc:
                raise StoreError(f"cannot read the archive {self.root}: "
                                 f"{str(exc).splitlines()[0]}",
                                 hint="a segment may be damaged: move it out of segments/ "
                                 "and ingest its input again") from None
        else:
            con.register("_empty_events", SCHEMA.empty_table())
            con.execute("CREATE VIEW events AS SELECT * FROM _empty_events")
        return con

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.segment_files())
