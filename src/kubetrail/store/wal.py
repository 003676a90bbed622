"""The write-ahead log: batches of events made durable before they are acknowledged.

The service answers an API server only once a batch is on disk (fsync), and turns the log
into Parquet segments in the background. Records are framed so that a crash in the middle
of a write is recognised: a record whose length or checksum does not hold ends the readable
log, and as it was never acknowledged, dropping it loses nothing. Compaction records how far
it has got in `compacted` (written atomically); files wholly before that are deleted.

Layout of `<data-dir>/wal/`: `wal-<seq>.log` files, each a run of records

    b"KTW1" | length (u32, big-endian) | crc32 (u32) | payload

where a payload is the cluster name, a newline, and the batch as it was received (an
EventList document).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..errors import StoreError
from .archive import ensure_dir, write_atomic

__all__ = ["WalPosition", "WalRecord", "WriteAheadLog", "read_records"]

_MAGIC = b"KTW1"
_HEADER = struct.Struct(">4sII")
_FILE_BYTES = 64 * 1024 * 1024  # a new file after this many bytes


@dataclass(frozen=True, order=True)
class WalPosition:
    """Where a record ends: the file's sequence number and the offset after the record."""

    seq: int
    offset: int


@dataclass(frozen=True)
class WalRecord:
    cluster: str
    body: bytes
    end: WalPosition
    size: int  # bytes on disk


def _name(seq: int) -> str:
    return f"wal-{seq:012d}.log"


def _files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for path in directory.glob("wal-*.log"):
        try:
            out.append((int(path.stem[4:]), path))
        except ValueError:
            continue
    return sorted(out)


def encode_payload(cluster: str, body: bytes) -> bytes:
    return cluster.encode() + b"\n" + body


def read_records(directory: Path, after: WalPosition | None = None
                 ) -> Iterator[WalRecord]:
    """Every whole record after `after`, in order; stops at the first torn one."""
    for seq, path in _files(directory):
        if after is not None and seq < after.seq:
            continue
        start = after.offset if after is not None and seq == after.seq else 0
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # compacted and deleted meanwhile
            continue
        pos = start
        while pos + _HEADER.size <= len(data):
            magic, length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size: pos + _HEADER.size + length]
            if magic != _MAGIC or len(body) != length or zlib.crc32(body) != crc:
                return  # torn by a crash: never acknowledged
            pos += _HEADER.size + length
            cluster, _, rest = body.partition(b"\n")
            yield WalRecord(cluster.decode(), rest, WalPosition(seq, pos), _HEADER.size + length)
        if pos != len(data):
            return


class WriteAheadLog:
    """Appends batches durably; one writer (the service) per data dir."""

    def __init__(self, directory: Path, *, file_bytes: int = _FILE_BYTES) -> None:
        self.directory = directory
        self.file_bytes = file_bytes
        ensure_dir(directory)
        self._lock = threading.Lock()
        self.compacted = self._read_checkpoint()
        files = _files(directory)
        self._seq = files[-1][0] if files else max(self.compacted.seq, 1)
        self._fh = open(directory / _name(self._seq), "ab")  # noqa: SIM115 - kept open
        self._cut_torn_tail()
        os.chmod(directory / _name(self._seq), 0o600)

    # -- appending -----------------------------------------------------------------------

    def _cut_torn_tail(self) -> None:
        """Drop a record a crash left half-written at the end of the current file, so that
        new records follow the last whole one."""
        path = self.directory / _name(self._seq)
        size = path.stat().st_size
        good = self.compacted.offset if self.compacted.seq == self._seq else 0
        for record in read_records(self.directory, WalPosition(self._seq, good)):
            if record.end.seq != self._seq:
                break
            good = record.end.offset
        if good < size:
            self._fh.truncate(good)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def append(self, batches: Sequence[tuple[str, bytes]]) -> list[WalPosition]:
        """Write batches (cluster, EventList body) and fsync once for all of them."""
        with self._lock:
            ends = []
            try:
                for cluster, document in batches:
                    body = encode_payload(cluster, document)
                    self._fh.write(_HEADER.pack(_MAGIC, len(body), zlib.crc32(body)))
                    self._fh.write(body)
                    ends.append(WalPosition(self._seq, self._fh.tell()))
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                raise StoreError(f"cannot write the write-ahead log in {self.directory}: "
                                 f"{exc.strerror or exc}",
                                 hint="free some space or fix the permissions") from None
            if self._fh.tell() >= self.file_bytes:
                self._rotate()
            return ends

    def _rotate(self) -> None:
        self._fh.close()
        self._seq += 1
        self._fh = open(self.directory / _name(self._seq), "ab")  # noqa: SIM115
        os.chmod(self.directory / _name(self._seq), 0o600)

    def bytes(self) -> int:
        """Bytes of the log not yet compacted."""
        total = 0
        for seq, path in _files(self.directory):
            if seq < self.compacted.seq:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            total += size - (self.compacted.offset if seq == self.compacted.seq else 0)
        return max(total, 0)

    # -- compaction ----------------------------------------------------------------------

    def pending(self) -> Iterator[WalRecord]:
        """The records not yet compacted."""
        return read_records(self.directory, self.compacted)

    def mark_compacted(self, upto: WalPosition) -> None:
        """Everything up to `upto` is in the archive: remember it and delete old files."""
        write_atomic(self.directory / "compacted",
                     orjson.dumps({"seq": upto.seq, "offset": upto.offset}))
        self.compacted = upto
        for seq, path in _files(self.directory):
            if seq < upto.seq:
                path.unlink(missing_ok=True)

    def _read_checkpoint(self) -> WalPosition:
        path = self.directory / "compacted"
        if not path.exists():
            return WalPosition(1, 0)
        try:
            data = orjson.loads(path.read_bytes())
            return WalPosition(int(data["seq"]), int(data["offset"]))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"cannot read the write-ahead log checkpoint {path}: {exc}",
                             hint="if it is damaged, delete it: every batch is then compacted "
                             "again, and duplicates are dropped") from None

    def close(self) -> None:
        with self._lock:
            self._fh.close()
