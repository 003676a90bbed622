"""Text → JSON values: BOMs and UTF-16, and values written back to back or as an array."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["BadJSON", "iter_values", "to_text"]


def to_text(data: bytes) -> str:
    if data[:3] == codecs.BOM_UTF8:
        return data[3:].decode("utf-8")
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return data.decode("utf-16")
    return data.decode("utf-8")


_WS = " \t\r\n"


def iter_values(text: str, base_line: int) -> Iterator[tuple[Any, int, int]]:
    """(value, line, end offset in characters) for JSON values written back to back."""
    decoder = json.JSONDecoder(strict=False)
    pos, n = 0, len(text)
    line, counted = base_line + 1, 0  # the line of `counted`; counting moves forward only
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
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise BadJSON(exc.msg, line, pos) from None
        yield value, line, end
        pos = end


class BadJSON(Exception):
    def __init__(self, msg: str, line: int, pos: int) -> None:
        super().__init__(msg)
        self.msg, self.line, self.pos = msg, line, pos
