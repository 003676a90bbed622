"""Undoing compression: gzip (every member), bzip2, zstd and base64-of-gzip, by magic bytes.

Streams hand out all good data before reporting a damaged tail, so that a cut or corrupt
file still yields every event before the damage.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import zlib
from typing import IO, Any

from ..errors import InputError

__all__ = ["decompress", "is_compressed", "open_stream", "stream_error"]

_GZIP, _BZ2, _ZSTD, _B64GZ = b"\x1f\x8b", b"BZh", b"\x28\xb5\x2f\xfd", b"H4sI"


def _compression_of(head: bytes) -> str | None:
    """"gzip", "bzip2" or "zstd" when the first bytes carry that magic, else None."""
    if head[:2] == _GZIP:
        return "gzip"
    if head[:3] == _BZ2:
        return "bzip2"
    if head[:4] == _ZSTD:
        return "zstd"
    return None


def is_compressed(head: bytes) -> bool:
    """Whether the first bytes of a file name a compression we undo (offsets then count
    decompressed bytes, so a compressed file cannot be resumed by seeking)."""
    return _compression_of(head) is not None


def decompress(data: bytes) -> bytes:
    """Undo gzip (all members), bzip2, zstd and base64-of-gzip layers, repeatedly.

    Raises InputError when the data claims a compression (by its magic bytes) but is
    corrupt or cut off."""
    for _ in range(4):
        kind = _compression_of(data[:4])
        try:
            if kind == "gzip":
                data = gzip.decompress(data)
            elif kind == "bzip2":
                data = bz2.decompress(data)
            elif kind == "zstd":
                data = _zstd_decompress(data)
            elif data[:4] == _B64GZ:
                decoded = base64.b64decode(data.strip(), validate=False)
                if decoded[:2] != _GZIP:
                    return data
                data = decoded
            else:
                return data
        except (EOFError, OSError, ValueError, zlib.error) as exc:
            raise InputError(f"corrupt or cut-off {kind or 'base64-gzip'} data: {exc}",
                             hint="check that the file was copied completely") from None
    return data


def _zstd_decompress(data: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        raise InputError("input is zstd-compressed",
                         hint="decompress it first (zstd -d) or pip install zstandard") from None
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)  # type: ignore[no-any-return]


class _Decompressing(io.RawIOBase):
    """Streams gzip or bzip2, every member, handing out all good data before reporting
    a cut-off or corrupt tail in :attr:`error` (never raising mid-read, so no event
    decoded before the damage is lost)."""

    def __init__(self, raw: IO[bytes], kind: str) -> None:
        self._raw, self.kind = raw, kind
        self._dec = self._new()
        self._out = b""
        self._done = False
        self._in_member = False
        self.error: str | None = None

    def _new(self) -> Any:
        return zlib.decompressobj(wbits=31) if self.kind == "gzip" else bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out and not self._done:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                self._done = True
                if self._in_member:
                    self.error = f"{self.kind} data is cut off (the file ends mid-stream)"
                break
            self._feed(chunk)
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, chunk: bytes) -> None:
        while chunk and not self._done:
            try:
                self._out += self._dec.decompress(chunk)
            except (zlib.error, OSError, EOFError) as exc:
                self.error, self._done = f"corrupt {self.kind} data: {exc}", True
                return
            self._in_member = not self._dec.eof
            chunk = self._dec.unused_data if self._dec.eof else b""
            if self._dec.eof:
                magic = _GZIP if self.kind == "gzip" else _BZ2
                if chunk and not chunk.startswith(magic[: len(chunk)]):
                    self.error = f"{len(chunk)} bytes of trailing garbage after the {self.kind} data"
                    self._done = True
                    return
                self._dec = self._new()


class _ZstdStream(io.RawIOBase):
    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard  # type: ignore[import-not-found]

        self._reader = zstandard.ZstdDecompressor().stream_reader(raw)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        chunk = self._reader.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def open_stream(raw: IO[bytes], name: str) -> IO[bytes]:
    """Wrap a binary stream so that reading it yields decompressed bytes."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    kind = _compression_of(buffered.peek(4)[:4])
    if kind in ("gzip", "bzip2"):
        return io.BufferedReader(_Decompressing(buffered, kind), 1 << 20)
    if kind == "zstd":
        try:
            return io.BufferedReader(_ZstdStream(buffered))
        except ImportError:
            raise InputError("input is zstd-compressed", path=name,
                             hint="decompress it first (zstd -d) or pip install zstandard") from None
    return buffered


def stream_error(stream: IO[bytes]) -> str | None:
    """What went wrong decompressing `stream` after its good data was read, if anything."""
    return getattr(getattr(stream, "raw", None), "error", None)
