"""Alerts: what a rule raises, in kubetrail's JSON shape or Falco's, and suppression."""

from __future__ import annotations

import heapq
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = ["Alert", "Suppressor", "render_message", "template_fields"]

_FALCO_PRIORITY = {"info": "Informational", "low": "Notice", "medium": "Warning",
                   "high": "Error", "critical": "Critical"}


@dataclass(frozen=True)
class Alert:
    """One detection. `group`, `count` and `window` are set by stateful rules."""

    rule: str
    title: str
    severity: str
    behaviours: tuple[str, ...]
    tags: tuple[str, ...]
    time: datetime
    cluster: str
    audit_id: str
    user: str | None
    verb: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    source_ips: tuple[str, ...]
    user_agent: str | None
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    group: Mapping[str, Any] | None = None
    count: int | None = None
    window: tuple[datetime, datetime] | None = None
    stage: str | None = None
    code: int | None = None
    decision: str | None = None

    def with_count(self, count: int, window: tuple[datetime, datetime]) -> Alert:
        return replace(self, count=count, window=window)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule, "title": self.title, "severity": self.severity,
            "behaviours": list(self.behaviours), "tags": list(self.tags),
            "time": self.time.isoformat().replace("+00:00", "Z"), "cluster": self.cluster,
            "auditID": self.audit_id, "user": self.user, "verb": self.verb,
            "resource": self.resource, "subresource": self.subresource,
            "namespace": self.namespace, "name": self.name, "sourceIPs": list(self.source_ips),
            "userAgent": self.user_agent, "stage": self.stage, "code": self.code,
            "decision": self.decision, "message": self.message, "evidence": dict(self.evidence),
        }
        if self.group is not None:
            out["group"] = dict(self.group)
        if self.count is not None:
            out["count"] = self.count
        if self.window is not None:
            out["window"] = {"start": self.window[0].isoformat().replace("+00:00", "Z"),
                             "end": self.window[1].isoformat().replace("+00:00", "Z")}
        return out

    def to_falco(self) -> dict[str, Any]:
        """Falco's JSON output shape (as Falcosidekick accepts it)."""
        fields = {"ka.auditid": self.audit_id, "ka.user.name": self.user, "ka.verb": self.verb,
                  "ka.target.resource": self.resource, "ka.target.subresource": self.subresource,
                  "ka.target.namespace": self.namespace, "ka.target.name": self.name,
                  "ka.sourceips": list(self.source_ips), "ka.useragent": self.user_agent,
                  "ka.response.code": self.code, "ka.auth.decision": self.decision,
                  "k8s.cluster.name": self.cluster}
        if self.count is not None:
            fields["kubetrail.count"] = self.count
        return {
            "uuid": f"{self.rule}:{self.cluster}:{self.audit_id}",
            "output": f"{self.time.isoformat()}: {_FALCO_PRIORITY[self.severity]} {self.message}",
            "priority": _FALCO_PRIORITY[self.severity],
            "rule": self.title,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "output_fields": fields,
            "source": "k8s_audit",
            "tags": [*self.tags, *self.behaviours, self.rule],
            "hostname": self.cluster,
        }


class _Defaulting(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return f"<{key}?>"


def template_fields(template: str) -> list[str]:
    """The placeholders of an output template (raises ValueError when malformed)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_message(template: str, values: Mapping[str, Any], fallback: str) -> str:
    """Fill `{field}` placeholders; a missing value shows as `<field?>`, never an error."""
    if not template:
        return fallback
    shown = _Defaulting({k: ("-" if v is None else " ".join(map(str, v))
                             if isinstance(v, list | tuple) else v) for k, v in values.items()})
    try:
        return template.format_map(shown)
    except (ValueError, KeyError, IndexError, AttributeError):
        return fallback


class Suppressor:
    """The same rule and key within a window become one alert with a count.

    The first alert of a window is let through at once; repeats inside the window are
    counted, and when the window has passed (or on :meth:`flush`) one more alert carries the
    count, so a sink sees a burst as two messages, not hundreds."""

    def __init__(self) -> None:
        # (rule, key) → [window end, first alert, repeats, last alert's time, build the last]
        self._open: dict[tuple[str, tuple[Any, ...]], list[Any]] = {}
        self._ends: list[tuple[datetime, int, tuple[str, tuple[Any, ...]]]] = []  # a heap
        self._opened = 0

    def offer(self, alert: Alert, window: timedelta, key: tuple[Any, ...]) -> list[Alert]:
        return self.offer_lazy(alert.rule, alert.time, window, key, lambda: alert)

    def offer_lazy(self, rule: str, time: datetime, window: timedelta, key: tuple[Any, ...],
                   build: Callable[[], Alert]) -> list[Alert]:
        """As :meth:`offer`, for an alert made by `build` only if it is to be shown."""
        out = self._expired(time)
        slot = (rule, key)
        entry = self._open.get(slot)
        if entry is None:
            alert = build()
            self._open[slot] = [time + window, alert, 0, time, lambda: alert]
            self._opened += 1
            heapq.heappush(self._ends, (time + window, self._opened, slot))
            out.append(alert)
        else:
            entry[2] += 1
            entry[3] = time
            entry[4] = build
        return out

    @staticmethod
    def _summary(entry: list[Any]) -> Alert | None:
        _, first, repeats, _, build = entry
        if not repeats:
            return None
        last = build()
        return last.with_count(repeats + 1, (first.time, last.time))

    def _expired(self, now: datetime) -> list[Alert]:
        out = []
        while self._ends and self._ends[0][0] <= now:
            end, _, slot = heapq.heappop(self._ends)
            entry = self._open.get(slot)
            if entry is None or entry[0] != end:
                continue
            del self._open[slot]
            summary = self._summary(entry)
            if summary is not None:
                out.append(summary)
        return out

    def flush(self) -> list[Alert]:
        out = [a for entry in self._open.values() if (a := self._summary(entry)) is not None]
        self._open.clear()
        self._ends.clear()
        return out
