"""What every alert sink shares: the `Sink` protocol, severity ranks and payload formats."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..detect.alert import Alert

__all__ = ["FORMATS", "SEVERITY_RANK", "Failure", "Sink", "Undelivered", "dumps"]

#: Severities from least to most urgent; `min_severity: low` lets low and above through.
SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in
                                    enumerate(("info", "low", "medium", "high", "critical"))}

#: Body shapes a stream, file or webhook sink can write, by the name used in `format:`.
FORMATS: Mapping[str, Callable[[Alert], dict[str, Any]]] = {
    "json": Alert.to_dict,
    "falco": Alert.to_falco,
}


def dumps(payload: Any) -> bytes:
    """Compact JSON; evidence values JSON cannot hold are written as their text."""
    return orjson.dumps(payload, default=str)


class Undelivered(Exception):
    """A sink gave up on one alert; the message says why (shown to the operator)."""


class Sink(Protocol):
    """Where alerts go. `deliver` raises :class:`Undelivered` when it gives up; any other
    exception is treated the same way by the dispatcher, so one broken sink never stops the
    others."""

    #: How the sink is named in reports and on stderr, e.g. ``webhook[2] https://example``.
    label: str

    def deliver(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Failure:
    """One alert a sink could not deliver, after its retries.

    >>> str(Failure("webhook[0] https://example", "exec-into-pod", "a1", "HTTP 400 (not retried)"))
    'alert sink webhook[0] https://example failed for rule exec-into-pod (auditID a1): HTTP 400 (not retried)'
    """

    sink: str
    rule: str
    audit_id: str
    reason: str

    def __str__(self) -> str:
        return (f"alert sink {self.sink} failed for rule {self.rule} (auditID {self.audit_id}): "
                f"{self.reason}")
