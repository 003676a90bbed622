"""Timestamps in every precision and spelling the inputs use, normalised to UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["micro_time", "parse_time"]

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 with 0-9 fractional digits, ``Z`` or an offset, or a space and no zone."""
    if not value or not isinstance(value, str):
        return None
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def micro_time(value: datetime) -> str:
    """The API server's MicroTime: UTC, six fractional digits, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
