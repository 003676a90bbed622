"""Bytes of any supported input → audit Events, one :class:`Decoded` or :class:`Rejected` each.

Decoding runs in layers (see shared/reference/cloud-log-formats.md §4): decompress by magic
bytes, strip BOMs and decode UTF-16, then read JSON values (one per line when the input is
JSON Lines, back to back otherwise), then classify each value by its keys through the
:data:`SHAPES` registry: native Events and EventLists here, cloud exports in ``cloud/``.
Nothing here raises for one bad record; it is yielded as :class:`Rejected` with a reason.
"""

from __future__ import annotations

import base64
import bz2
import codecs
import functools
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, LegacyFormatError

__all__ = [
    "FORMATS",
    "NATIVE_SHAPES",
    "Decoded",
    "Decoder",
    "Rejected",
    "Shape",
    "all_shapes",
    "decompress",
    "open_stream",
    "stream_error",
]

_GZIP, _BZ2, _ZSTD, _B64GZ = b"\x1f\x8b", b"BZh", b"\x28\xb5\x2f\xfd", b"H4sI"


@dataclass(slots=True)
class Decoded:
    """One audit Event recovered from an input, with what its carrier said about it."""

    event: dict[str, Any]
    cluster: str | None = None
    source_format: str = "native"
    truncated: str | None = None
    text: str | None = None  # the Event's JSON text, when the input held it verbatim


@dataclass(slots=True)
class Rejected:
    """A record that is not a usable audit Event; goes to quarantine with its reason."""

    reason: str
    excerpt: str = ""
    skipped: bool = False  # True for records that are fine but not audit data (counted apart)


Item = Decoded | Rejected


@dataclass(frozen=True)
class Shape:
    """A recognisable JSON shape: `match` tests a dict's keys, `decode` yields its events."""

    name: str
    family: str
    match: Callable[[dict[str, Any]], bool]
    decode: Callable[[dict[str, Any], Decoder], Iterator[Item]]
    description: str = ""


def dumps_text(value: Any) -> str:
    """JSON text of a decoded value; integers beyond 64 bits (which orjson refuses) too."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else dumps_text(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _native_event(event: dict[str, Any], dec: Decoder, text: str | None = None) -> Item:
    """A native Event; only its apiVersion is checked here, the rest by the row SQL."""
    version = event.get("apiVersion")
    if version is not None and version != "audit.k8s.io/v1":
        if version in ("audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1"):
            return Rejected(
                f"apiVersion {version} is not supported: it was removed in Kubernetes 1.24; "
                "re-export the log from a cluster that writes audit.k8s.io/v1",
                _excerpt(text or event),
            )
        return Rejected(f"unknown audit apiVersion {version!r} (expected audit.k8s.io/v1)",
                        _excerpt(text or event))
    return Decoded(event, dec.cluster, "native", None, text)


def _decode_event(value: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    yield _native_event(value, dec)


def _decode_event_list(value: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    items = value.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        yield Rejected("EventList.items is not a list", _excerpt(value))
        return
    version = value.get("apiVersion")
    for item in items:
        if not isinstance(item, dict):
            yield Rejected("EventList item is not an object", _excerpt(item))
            continue
        if version and "apiVersion" not in item:
            item["apiVersion"] = version
        yield _native_event(item, dec)


def _is_event(v: dict[str, Any]) -> bool:
    return v.get("kind") == "Event" and str(v.get("apiVersion", "")).startswith("audit.k8s.io/")


def _is_bare_event(v: dict[str, Any]) -> bool:
    return "kind" not in v and "auditID" in v and "stage" in v and "verb" in v


NATIVE_SHAPES: list[Shape] = [
    Shape("event", "native", _is_event, _decode_event, "audit.k8s.io/v1 Event"),
    Shape("eventlist", "native", lambda v: v.get("kind") == "EventList", _decode_event_list,
          "audit.k8s.io/v1 EventList (the webhook body)"),
    Shape("bare-event", "native", _is_bare_event, _decode_event,
          "Event without kind/apiVersion (list item, stripped export)"),
]


@functools.cache
def all_shapes() -> tuple[Shape, ...]:
    """The registry: native shapes first, then each provider's (imported lazily)."""
    from .cloud import CLOUD_SHAPES

    return tuple(NATIVE_SHAPES + CLOUD_SHAPES)

#: --format names → the shape families they admit (None = all).
FORMATS: dict[str, frozenset[str] | None] = {
    "auto": None,
    "native": frozenset({"native"}),
    "jsonl": frozenset({"native"}),
    "eventlist": frozenset({"native"}),
    "event": frozenset({"native"}),
    "eks": frozenset({"eks"}),
    "gke": frozenset({"gke"}),
    "aks": frozenset({"aks"}),
}


def decompress(data: bytes) -> bytes:
    """Undo gzip (all members), bzip2, zstd and base64-of-gzip layers, repeatedly.

    Raises InputError when the data claims a compression (by its magic bytes) but is
    corrupt or cut off."""
    for _ in range(4):
        head = data[:4]
        try:
            if head[:2] == _GZIP:
                data = gzip.decompress(data)
            elif head[:3] == _BZ2:
                data = bz2.decompress(data)
            elif head == _ZSTD:
                data = _zstd_decompress(data)
            elif head == _B64GZ:
                decoded = base64.b64decode(data.strip(), validate=False)
                if decoded[:2] != _GZIP:
                    return data
                data = decoded
            else:
                return data
        except (EOFError, OSError, ValueError, zlib.error) as exc:
            kind = {_GZIP: "gzip", _BZ2[:2]: "bzip2"}.get(head[:2], "compressed")
            raise InputError(f"corrupt or cut-off {kind} data: {exc}",
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
    head = buffered.peek(4)[:4]
    if head[:2] == _GZIP:
        return io.BufferedReader(_Decompressing(buffered, "gzip"), 1 << 20)
    if head[:3] == _BZ2:
        return io.BufferedReader(_Decompressing(buffered, "bzip2"), 1 << 20)
    if head == _ZSTD:
        try:
            return io.BufferedReader(_ZstdStream(buffered))
        except ImportError:
            raise InputError("input is zstd-compressed", path=name,
                             hint="decompress it first (zstd -d) or pip install zstandard") from None
    return buffered


def stream_error(stream: IO[bytes]) -> str | None:
    """What went wrong decompressing `stream` after its good data was read, if anything."""
    return getattr(getattr(stream, "raw", None), "error", None)


@dataclass
class Position:
    """Where a record came from: 1-based line (or value) number and the byte offset after it."""

    line: int = 0
    offset: int = 0
    end_line: int = 0  # lines before `offset` (what a checkpoint at `offset` must remember)


@dataclass
class Decoder:
    """Turns JSON values into Items; shared by every shape so they can recurse."""

    cluster: str | None = None
    fmt: str = "auto"
    shapes: list[Shape] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise InputError(f"unknown format {self.fmt!r}",
                             hint="use one of: " + ", ".join(FORMATS))
        families = FORMATS[self.fmt]
        self.shapes = [s for s in all_shapes() if families is None or s.family in families]

    def classify(self, value: Any) -> Iterator[Item]:
        """Every Event inside one JSON value (which may be a container of many)."""
        if isinstance(value, list):
            for element in value:
                yield from self.classify(element)
            return
        if not isinstance(value, dict):
            yield Rejected(f"JSON {type(value).__name__} is not an audit event", _excerpt(value))
            return
        kind = value.get("kind")
        if kind == "Event" and self.shapes and self.shapes[0].family == "native":
            yield _native_event(value, self)  # the hot path: skip the registry walk
            return
        for shape in self.shapes:
            if shape.match(value):
                yield from shape.decode(value, self)
                return
        if kind == "Event":
            yield _native_event(value, self)
            return
        expected = "an audit event" if self.fmt == "auto" else f"a {self.fmt} record"
        yield Rejected(f"JSON object is not {expected} (keys: {', '.join(list(value)[:8])})",
                       _excerpt(value))

    def event_from_text(self, text: str, source_format: str, cluster: str | None) -> Item:
        """An Event held as JSON text inside a carrier (CloudWatch message, AKS log)."""
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Rejected(f"embedded event is not valid JSON: {exc}", _excerpt(text))
        if not isinstance(value, dict):
            return Rejected("embedded event is not a JSON object", _excerpt(text))
        item = _native_event(value, self, text.strip())
        if isinstance(item, Decoded):
            item.source_format = source_format
            item.cluster = cluster or self.cluster
        return item

    def values(self, data: bytes) -> Iterator[Any]:
        """Every JSON value in a blob: decompressed, then back to back or one per line."""
        text = _to_text(decompress(data))
        yield from (value for value, _, _ in _iter_values(text, 0))


def _to_text(data: bytes) -> str:
    if data[:3] == codecs.BOM_UTF8:
        return data[3:].decode("utf-8")
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return data.decode("utf-16")
    return data.decode("utf-8")


_WS = " \t\r\n"


def _iter_values(text: str, base_line: int) -> Iterator[tuple[Any, int, int]]:
    """(value, line, end offset in characters) for JSON values written back to back."""
    decoder = json.JSONDecoder(strict=False)
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _WS:
            pos += 1
        if pos >= n:
            return
        if text[pos] == "[" and pos == 0 and base_line == 0:
            try:
                array = orjson.loads(text)
            except orjson.JSONDecodeError:
                array = None
            if isinstance(array, list):
                for i, element in enumerate(array, 1):
                    yield element, i, n
                return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _BadJSON(exc.msg, base_line + text.count("\n", 0, pos) + 1, pos) from None
        yield value, base_line + text.count("\n", 0, pos) + 1, end
        pos = end


class _BadJSON(Exception):
    def __init__(self, msg: str, line: int, pos: int) -> None:
        super().__init__(msg)
        self.msg, self.line, self.pos = msg, line, pos


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    if sample[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return False
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 4  # a cut multi-byte char at the end is fine
    return False


def _legacy(line: bytes) -> bool:
    return b' AUDIT: id="' in line[:200]


_FAST_PREFIX = '{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
_CHUNK = 8 << 20


@dataclass(slots=True)
class FastLines:
    """API-server log lines recognised as v1 Events by their first bytes, left unparsed."""

    texts: pa.Array  # string
    lines: pa.Array  # int64, 1-based line numbers
    offset: int  # byte offset after the block they came from
    end_line: int  # lines before `offset`


def iter_items(
    stream: IO[bytes], name: str, dec: Decoder, start_offset: int = 0, start_line: int = 0
) -> Iterator[tuple[Position, Item] | FastLines]:
    """Every Item of one decompressed byte stream, with its position.

    JSON Lines are read in blocks of a few MB; lines that start the way the API server
    writes an Event are passed on unparsed in :class:`FastLines` (the row SQL parses them),
    other lines are decoded here one by one. Anything that is not JSON Lines (a
    pretty-printed document, an EventList, a ``gcloud`` array, concatenated objects) is
    read as one document of back-to-back values.
    """
    sample = stream.peek(8192)[:8192] if hasattr(stream, "peek") else b""  # type: ignore[attr-defined]
    if _looks_binary(sample):
        raise InputError("binary data, not an audit log (no JSON text found)", path=name,
                         hint="pass the audit log file itself; compressed files must be gzip, "
                         "bzip2 or zstd")
    if sample[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        yield from _document_items(stream.read(), name, dec, 0)
        return
    if start_offset:
        _skip(stream, start_offset)
    offset, line_no = start_offset, start_line
    while True:  # the first non-empty line decides what kind of input this is
        raw = stream.readline()
        if not raw:
            return
        line_no += 1
        offset += len(raw)
        line = raw.strip()
        if line:
            break
    if line[:3] == codecs.BOM_UTF8:
        line = line[3:]
    if _legacy(line):
        raise LegacyFormatError(
            "this is the API server's legacy text audit format, which drops the objectRef, "
            "bodies and annotations", path=name,
            hint="restart kube-apiserver with --audit-log-format=json (the default) and "
            "ingest the JSON log")
    if line[:1] in (b"{", b"[") and not _is_complete_json(line):
        # Either a document spread over lines, or JSON Lines whose first line is cut
        # (a copy started mid-write): the next line tells which.
        consumed = raw
        second = b""
        while not second:
            more = stream.readline()
            if not more:
                break
            consumed += more
            second = more.strip()
        if not (second[:1] == b"{" and _is_complete_json(second)):
            yield from _document_items(consumed + stream.read(), name, dec, offset - len(raw),
                                       base_line=line_no - 1)
            return
        yield from _line_items(line, Position(line_no, offset, line_no), dec)
        line_no += consumed.count(b"\n", len(raw))
        offset += len(consumed) - len(raw)
        line = second
    yield from _line_items(line, Position(line_no, offset, line_no), dec)
    fast = bool(dec.shapes) and dec.shapes[0].family == "native"
    carry = b""
    while True:
        data = stream.read(_CHUNK)
        if data:
            data = carry + data
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1:]
        elif carry:
            block, carry = carry, b""
        else:
            return
        lines = pc.list_flatten(pc.split_pattern(pa.array([block], pa.binary()), b"\n"))
        if block.endswith(b"\n"):
            offset += len(block)
            lines = lines.slice(0, len(lines) - 1)
            yield from _block_items(lines, b"\r" in block, line_no, offset, line_no + len(lines),
                                    dec, fast)
        else:
            # A last line with no newline may still be being written: it is read now, but
            # its position stays before it, so a later run reads it again once complete.
            yield from _block_items(lines, b"\r" in block, line_no, offset, line_no, dec, fast)
            offset += len(block)
        line_no += len(lines)


def _block_items(
    lines: pa.Array, has_cr: bool, line_no: int, offset: int, end: int, dec: Decoder, fast: bool
) -> Iterator[tuple[Position, Item] | FastLines]:
    numbers = pa.array(range(line_no + 1, line_no + 1 + len(lines)), pa.int64())
    try:
        texts = lines.cast(pa.string())
        if has_cr:  # CRLF files: the JSON is fine, the \r must not stay in the text
            texts = pc.utf8_rtrim_whitespace(texts)
    except pa.ArrowInvalid:  # some line is not UTF-8: sort them out one at a time
        for i, raw in enumerate(lines.to_pylist()):
            line = raw.strip()
            if not line:
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Position(line_no + 1 + i, offset, end), Rejected(
                    f"not UTF-8 text (byte {exc.start} of the line)",
                    _excerpt(line.decode("utf-8", "replace")))
                continue
            yield from _line_items(line, Position(line_no + 1 + i, offset, end), dec)
        return
    if fast:
        mask = pc.starts_with(texts, _FAST_PREFIX)
        if pc.all(mask).as_py():
            yield FastLines(texts, numbers, offset, end)
            return
        if pc.any(mask).as_py():
            yield FastLines(texts.filter(mask), numbers.filter(mask), offset, end)
        rest = pc.invert(mask)
        texts, numbers = texts.filter(rest), numbers.filter(rest)
    for text, number in zip(texts.to_pylist(), numbers.to_pylist(), strict=True):
        line = text.strip()
        if line:
            yield from _line_items(line.encode(), Position(number, offset, end), dec)


def _skip(stream: IO[bytes], count: int) -> None:
    remaining = count
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 20))
        if not chunk:
            break
        remaining -= len(chunk)


def _is_complete_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def json_error(text: str | bytes) -> str:
    """Why a line is not JSON, in words a person can act on."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text.rstrip().endswith("[Truncated...]"):
            return "event was truncated by the log pipeline ('[Truncated...]' suffix)"
        if "unexpected end" in msg.lower() or "eof" in msg.lower():
            return f"truncated JSON: the line ends before the object closes ({msg})"
        return f"invalid JSON: {msg}"
    return "invalid JSON"


def _line_items(line: bytes, pos: Position, dec: Decoder) -> Iterator[tuple[Position, Item]]:
    if line[:1] != b"{" and line[:1] != b"[":
        parts = line.split(None, 2)  # `aws logs tail`: <time> [<stream>] <json>
        if len(parts) >= 2 and parts[1][:1] == b"{":
            line = line.split(None, 1)[1]
        elif len(parts) == 3 and parts[2][:1] == b"{":
            line = parts[2]
        elif _legacy(line):
            yield pos, Rejected("legacy text audit format line (use --audit-log-format=json)",
                                _excerpt(line.decode("utf-8", "replace")))
            return
        else:
            yield pos, Rejected("not JSON (an audit log line starts with '{')",
                                _excerpt(line.decode("utf-8", "replace")))
            return
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        yield pos, Rejected(json_error(line), _excerpt(line.decode("utf-8", "replace")))
        return
    if isinstance(value, dict) and value.get("kind") == "Event":
        yield pos, _native_event(value, dec, line.decode("utf-8", "replace"))
        return
    for item in dec.classify(value):
        yield pos, item


def _document_items(
    data: bytes, name: str, dec: Decoder, offset: int, base_line: int = 0
) -> Iterator[tuple[Position, Item]]:
    try:
        text = _to_text(data)
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=name) from None
    end_offset = offset + len(data)
    end_line = base_line + text.count("\n") + (0 if text.endswith("\n") else 1)
    try:
        for value, line, _ in _iter_values(text, base_line):
            for item in dec.classify(value):
                yield Position(line, end_offset, end_line), item
    except _BadJSON as exc:
        near = text[exc.pos:exc.pos + 120]
        yield Position(exc.line, end_offset, end_line), Rejected(
            f"invalid JSON document from line {exc.line}: {exc.msg}; the rest of the "
            "document cannot be read", _excerpt(near))


def iter_bytes(data: bytes, name: str, dec: Decoder) -> Iterator[tuple[Position, Item]]:
    """Items of an in-memory input (a webhook body, a test), every Event parsed."""
    try:
        stream = io.BufferedReader(io.BytesIO(decompress(data)))  # type: ignore[arg-type]
        for entry in iter_items(stream, name, dec):
            if isinstance(entry, FastLines):
                for text, line in zip(entry.texts.to_pylist(), entry.lines.to_pylist(),
                                      strict=True):
                    yield from _line_items(text.encode(), Position(line, entry.offset), dec)
            else:
                yield entry
    except InputError as exc:
        yield Position(0, 0), Rejected(exc.message + (f" ({exc.hint})" if exc.hint else ""))


__all__ += ["FastLines", "Item", "Position", "dumps_text", "iter_bytes", "iter_items", "json_error"]
