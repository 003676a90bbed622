"""Retention: old segments removed by age and size, globally and per cluster, on the record.

Each removal is an entry in the manifest's hash chain (`op: delete`, with the reason), so
`kubetrail verify` tells a segment retention removed from one that went missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .archive import Archive

__all__ = ["Removal", "RetentionPolicy", "apply_retention", "parse_size", "plan_retention"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)B?\s*$", re.I)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|w|y)\s*$")
_AGE_UNITS = {"h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}


def parse_size(text: Any, where: str = "max_size") -> int:
    """`500MB`, `50GB`, `2GiB`, `1.5T` as bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"{where}: cannot read the size {text!r}",
                          hint="write e.g. 500MB, 50GB or 2TiB")
    power = " KMGTP".index(m.group(2).upper() or " ")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** power)


def _parse_age(text: Any, where: str) -> timedelta:
    m = _AGE.match(str(text))
    if not m:
        raise ConfigError(f"{where}: cannot read the age {text!r}",
                          hint="write e.g. 90d, 12w, 1y or 48h")
    return timedelta(seconds=float(m.group(1)) * _AGE_UNITS[m.group(2)])


@dataclass(frozen=True)
class RetentionPolicy:
    """How long and how much to keep (the `retention:` section of kubetrail.yaml)."""

    max_age: timedelta | None = None
    max_size: int | None = None
    clusters: Mapping[str, RetentionPolicy] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.max_age is None and self.max_size is None and not self.clusters

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "retention"
                     ) -> RetentionPolicy:
        data = dict(data or {})
        unknown = set(data) - {"max_age", "max_size", "clusters"}
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}",
                              hint="known: max_age, max_size, clusters")
        clusters = data.get("clusters") or {}
        if not isinstance(clusters, Mapping):
            raise ConfigError(f"{where}.clusters must map cluster names to settings")
        if where != "retention" and "clusters" in data:
            raise ConfigError(f"{where}: clusters cannot be nested")
        return cls(
            _parse_age(data["max_age"], f"{where}.max_age") if data.get("max_age") else None,
            parse_size(data["max_size"], f"{where}.max_size") if data.get("max_size") else None,
            {str(name): cls.from_mapping(value, f"{where}.clusters.{name}")
             for name, value in clusters.items()})


@dataclass(frozen=True)
class Removal:
    segment: Path
    cluster: str
    rows: int
    bytes: int
    max_time: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"segment": str(self.segment), "cluster": self.cluster, "rows": self.rows,
                "bytes": self.bytes, "max_time": self.max_time, "reason": self.reason}


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:g} {unit}"
        size = size / 1000  # type: ignore[assignment]
    return f"{size} B"


def _days(age: timedelta) -> str:
    return f"{age.total_seconds() / 86400:g}d"


def plan_retention(archive: Archive, policy: RetentionPolicy, now: datetime) -> list[Removal]:
    """The segments `policy` removes at `now`, oldest first (nothing is touched)."""
    live: dict[str, dict[str, Any]] = {}
    for entry in archive.manifest():
        if entry.get("op") == "delete":
            live.pop(str(entry.get("segment")), None)
        elif "segment" in entry:
            live[str(entry["segment"])] = entry
    segments = sorted((e for e in live.values() if (archive.root / e["segment"]).exists()),
                      key=lambda e: (str(e.get("max_time")), int(e.get("seq", 0))))
    removed: dict[str, Removal] = {}

    def remove(entry: dict[str, Any], reason: str) -> None:
        if entry["segment"] not in removed:
            removed[entry["segment"]] = Removal(
                archive.root / entry["segment"], str(entry.get("cluster")), int(entry["rows"]),
                int(entry.get("bytes") or 0), str(entry.get("max_time")), reason)

    def rule(cluster: str) -> tuple[timedelta | None, int | None, str]:
        own = policy.clusters.get(cluster)
        age = own.max_age if own and own.max_age is not None else policy.max_age
        size = own.max_size if own and own.max_size is not None else None
        return age, size, f" (cluster {cluster})" if own else ""

    for entry in segments:  # by age
        age, _, scope = rule(str(entry.get("cluster")))
        if age is not None and datetime.fromisoformat(str(entry["max_time"])) < now - age:
            remove(entry, f"max_age {_days(age)}{scope}")
    for cluster in sorted({str(e.get("cluster")) for e in segments}):  # by size, per cluster
        _, size, scope = rule(cluster)
        if size is None:
            continue
        mine = [e for e in segments if str(e.get("cluster")) == cluster
                and e["segment"] not in removed]
        total = sum(int(e.get("bytes") or 0) for e in mine)
        for entry in mine:
            if total <= size:
                break
            remove(entry, f"max_size {_human(size)}{scope}")
            total -= int(entry.get("bytes") or 0)
    if policy.max_size is not None:  # by size, everything
        rest = [e for e in segments if e["segment"] not in removed]
        total = sum(int(e.get("bytes") or 0) for e in rest)
        for entry in rest:
            if total <= policy.max_size:
                break
            remove(entry, f"max_size {_human(policy.max_size)}")
            total -= int(entry.get("bytes") or 0)
    return sorted(removed.values(), key=lambda r: (r.max_time, str(r.segment)))


def apply_retention(archive: Archive, policy: RetentionPolicy, now: datetime, *,
                    dry_run: bool = False, locked: bool = False) -> list[Removal]:
    """Remove what `policy` says at `now`, each removal recorded in the manifest. `locked`:
    the caller already holds the writer lock (the service)."""
    if dry_run:
        return plan_retention(archive, policy, now)
    if not locked:
        with archive.writer_lock():
            return apply_retention(archive, policy, now, locked=True)
    removals = plan_retention(archive, policy, now)
    for removal in removals:
        archive.delete_segment(removal.segment, removal.reason)
    return removals
