"""Big JSON documents read one element at a time, with flat memory.

`aws logs filter-log-events` prints one document for all pages and `gcloud logging read
--format=json` one array: such exports reach gigabytes. A top-level array is streamed by
element; in a top-level object, the array under one of :data:`STREAM_KEYS` is streamed and
each element is handed on wrapped in the object's earlier members (``{"kind": "EventList",
..., "items": [element]}``), so classification sees the shape it knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["STREAM_KEYS", "iter_stream_values"]

#: Members whose array value is streamed: EventList, CloudWatch, Azure and Insights shapes.
STREAM_KEYS = frozenset({"items", "events", "logEvents", "records", "results"})

_NON_WS = re.compile(r"[^ \t\r\n]")
_DECODER = json.JSONDecoder(strict=False)
_MAX_ELEMENT = 256 << 20  # one element larger than this is not an audit record


class StreamError(Exception):
    """The document is not valid JSON at `line`."""

    def __init__(self, msg: str, line: int) -> None:
        super().__init__(msg)
        self.msg, self.line = msg, line


class _Buffer:
    def __init__(self, chunks: Iterator[str], base_line: int) -> None:
        self._chunks = chunks
        self.text = ""
        self.pos = 0
        self._line = base_line  # lines before the start of `text`
        self.eof = False

    def line(self) -> int:
        return self._line + self.text.count("\n", 0, self.pos) + 1

    def fill(self) -> bool:
        nxt = next(self._chunks, None)
        if nxt is None:
            self.eof = True
            return False
        if self.pos > 1 << 20:  # drop what was read, keeping memory flat
            self._line += self.text.count("\n", 0, self.pos)
            self.text, self.pos = self.text[self.pos:], 0
        self.text += nxt
        return True

    def peek(self) -> str | None:
        """The next character that is not white space, or None at the end."""
        while True:
            m = _NON_WS.search(self.text, self.pos)
            if m:
                self.pos = m.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            if not self.fill():
                return None

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise StreamError(f"expected {char!r}", self.line())
        self.pos += 1

    def value(self) -> Any:
        """One JSON value; reads more when it runs past the end of what is buffered."""
        start_len = len(self.text) - self.pos
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.text) - self.pos - start_len < _MAX_ELEMENT and self.fill():
                    continue
                raise StreamError(exc.msg, self.line()) from None
            if (not isinstance(value, (dict, list, str)) and len(self.text) - end < 64
                    and not self.eof and self.fill()):
                continue  # a number cut by the chunk ("2." of "2.5") may go on in the next
            self.pos = end
            return value


def iter_stream_values(chunks: Iterator[str], base_line: int = 0) -> Iterator[tuple[Any, int]]:
    """(value, line) for every value of a document given as text chunks."""
    buf = _Buffer(chunks, base_line)
    while (char := buf.peek()) is not None:
        if char == "[":
            buf.pos += 1
            yield from _array(buf, None)
        elif char == "{":
            yield from _object(buf)
        else:
            line = buf.line()
            yield buf.value(), line


def _array(buf: _Buffer, wrap: Callable[[Any], Any] | None) -> Iterator[tuple[Any, int]]:
    first = True
    while True:
        char = buf.peek()
        if char is None:
            raise StreamError("the document ends inside an array", buf.line())
        if char == "]":
            buf.pos += 1
            return
        if not first:
            buf.expect(",")
            buf.peek()
        first = False
        line = buf.line()
        value = buf.value()
        yield (wrap(value) if wrap else value), line


def _object(buf: _Buffer) -> Iterator[tuple[Any, int]]:
    line = buf.line()
    buf.expect("{")
    members: dict[str, Any] = {}
    streamed = False
    while True:
        char = buf.peek()
        if char == "}":
            buf.pos += 1
            break
        if char == ",":
            buf.pos += 1
            continue
        if char != '"':
            raise StreamError("expected a member name", buf.line())
        key = buf.value()
        buf.expect(":")
        if buf.peek() == "[" and key in STREAM_KEYS and not streamed:
            buf.pos += 1
            streamed = True
            outer = dict(members)
            yield from _array(buf, lambda v, k=key, o=outer: {**o, k: [v]})  # type: ignore[misc]
        else:
            members[key] = buf.value()
    if not streamed:
        yield members, line
