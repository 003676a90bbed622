"""The alert dispatcher: severity filter, suppression, then every sink in turn.

A sink that fails never stops the others and never raises into the detection loop: the
failure is returned, counted, and written to stderr. Not thread-safe; one detection loop owns
one dispatcher.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from ..detect.alert import Alert, Suppressor
from .base import SEVERITY_RANK, Failure, Sink

__all__ = ["AlertDispatcher", "Route", "suppression_key"]


@dataclass(frozen=True)
class Route:
    """A sink and the least severe alert it takes.

    >>> from kubetrail.sinks import StdoutSink
    >>> Route(StdoutSink(Alert.to_dict), min_severity="high").min_severity
    'high'
    """

    sink: Sink
    min_severity: str = "info"


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


def suppression_key(alert: Alert) -> tuple[Any, ...]:
    """What makes two alerts of one rule "the same": the rule's group when it has one
    (thresholds, sequences), else who did it to which object."""
    if alert.group is not None:
        return ("group", _hashable(alert.group))
    return (alert.user, alert.namespace, alert.name)


class AlertDispatcher:
    """Sends each alert to every sink that wants it; :meth:`close` flushes and closes.

    >>> import io
    >>> from kubetrail.sinks import StdoutSink
    >>> with AlertDispatcher([Route(StdoutSink(Alert.to_dict, stream=io.StringIO()))]) as d:
    ...     d.sent
    Counter()

    Usually built from configuration with :func:`kubetrail.sinks.build_sinks`.
    """

    def __init__(self, routes: Sequence[Route], *, min_severity: str = "info",
                 suppress: timedelta = timedelta(0), stderr: IO[str] | None = None) -> None:
        for severity in (min_severity, *(r.min_severity for r in routes)):
            if severity not in SEVERITY_RANK:
                raise ValueError(f"unknown severity {severity!r}")
        self.routes = tuple(routes)
        self.min_severity = min_severity
        self.suppress = suppress
        #: Alerts each sink took, and gave up on, by sink label.
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        #: The most recent failures (the oldest are dropped past 1000).
        self.failures: deque[Failure] = deque(maxlen=1000)
        #: Alerts dropped by `min_severity`, and held back as repeats by suppression.
        self.filtered = 0
        self.suppressed = 0
        self._stderr = stderr
        self._suppressor = Suppressor() if suppress > timedelta(0) else None
        self._closed = False

    def send(self, alert: Alert) -> list[Failure]:
        """Deliver `alert` (and any suppressed burst whose window has passed); the
        deliveries that failed, none if all went through."""
        if self._closed:
            raise RuntimeError("this AlertDispatcher is closed")
        if SEVERITY_RANK.get(alert.severity, 0) < SEVERITY_RANK[self.min_severity]:
            self.filtered += 1
            return []
        if self._suppressor is None:
            return self._deliver(alert)
        ready = self._suppressor.offer(alert, self.suppress, suppression_key(alert))
        if all(a is not alert for a in ready):
            self.suppressed += 1
        failures: list[Failure] = []
        for item in ready:
            failures += self._deliver(item)
        return failures

    def close(self) -> list[Failure]:
        """Send the counts of suppressed bursts, then close every sink (once)."""
        if self._closed:
            return []
        failures: list[Failure] = []
        if self._suppressor is not None:
            for item in self._suppressor.flush():
                failures += self._deliver(item)
        self._closed = True
        for route in self.routes:
            try:
                route.sink.close()
            except Exception as exc:  # a sink that cannot close must not keep others open
                self._log(f"alert sink {route.sink.label} did not close cleanly: {exc}")
        return failures

    def __enter__(self) -> AlertDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self, alert: Alert) -> list[Failure]:
        rank = SEVERITY_RANK.get(alert.severity, 0)
        failures = []
        for route in self.routes:
            if rank < SEVERITY_RANK[route.min_severity]:
                continue
            try:
                route.sink.deliver(alert)
            # Undelivered says why; anything else is a sink bug, still not the caller's problem.
            except Exception as exc:
                failure = Failure(route.sink.label, alert.rule, alert.audit_id,
                                  str(exc) or type(exc).__name__)
                failures.append(failure)
                self.failures.append(failure)
                self.failed[route.sink.label] += 1
                self._log(str(failure))
            else:
                self.sent[route.sink.label] += 1
        return failures

    def _log(self, line: str) -> None:
        stream = self._stderr if self._stderr is not None else sys.stderr
        with contextlib.suppress(OSError, ValueError):
            print(f"kubetrail: {line}", file=stream, flush=True)
