"""Alerts kept in the archive: appended as JSON lines, listed with filters by DuckDB.

`ingest --detect` and `hunt --store` append here; `kubetrail alerts` reads. The file lives
beside the segments (`<data-dir>/alerts/alerts.jsonl`, mode 0600) and each batch of alerts
is flushed and fsynced before the ingest moves on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from ..errors import StoreError
from ..store.archive import Archive, connection, ensure_dir
from .alert import Alert

__all__ = ["AlertFilter", "append_alerts", "read_alerts"]

_SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def _path(archive: Archive) -> Any:
    return archive.root / "alerts" / "alerts.jsonl"


def append_alerts(archive: Archive, alerts: Iterable[Alert]) -> int:
    """Append alerts durably; returns how many."""
    lines = [orjson.dumps(a.to_dict()) + b"\n" for a in alerts]
    if not lines:
        return 0
    path = _path(archive)
    try:
        ensure_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StoreError(f"cannot write alerts to {path}: {exc.strerror or exc}",
                         hint="check the data directory's space and permissions") from None
    return len(lines)


@dataclass(frozen=True)
class AlertFilter:
    rules: tuple[str, ...] = ()
    min_severity: str | None = None
    users: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    behaviours: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["TRUE"], []

        def globs(column: str, values: tuple[str, ...]) -> None:
            if values:
                clauses.append("(" + " OR ".join(f"{column} GLOB ?" for _ in values) + ")")
                params.extend(values)

        globs("rule", self.rules)
        globs('"user"', self.users)
        globs("namespace", self.namespaces)
        globs("cluster", self.clusters)
        if self.behaviours:
            clauses.append("len(list_intersect(behaviours, ?)) > 0")
            params.append(list(self.behaviours))
        if self.min_severity:
            clauses.append("severity_rank >= ?")
            params.append(_SEVERITY_RANK[self.min_severity])
        if self.since:
            clauses.append('"time" >= ?')
            params.append(self.since)
        if self.until:
            clauses.append('"time" < ?')
            params.append(self.until)
        return " AND ".join(clauses), params


def read_alerts(archive: Archive, flt: AlertFilter | None = None, limit: int = 0
                ) -> list[dict[str, Any]]:
    """Stored alerts, oldest first."""
    path = _path(archive)
    if not path.exists():
        return []
    where, params = (flt or AlertFilter()).where()
    ranks = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _SEVERITY_RANK.items())
    sql = (f"SELECT * EXCLUDE (severity_rank) FROM (SELECT *, CASE severity {ranks} END AS "
           f"severity_rank FROM read_json('{path}', format='newline_delimited', "
           f"union_by_name=true, timestampformat='%Y-%m-%dT%H:%M:%S.%fZ')) WHERE {where} "
           f'ORDER BY "time"' + (f" LIMIT {int(limit)}" if limit else ""))
    con = connection()
    try:
        relation = con.sql(sql, params=params)
        columns = relation.columns
        out = []
        for row in relation.fetchall():
            alert = dict(zip(columns, row, strict=True))
            if isinstance(alert.get("time"), datetime) and alert["time"].tzinfo is None:
                alert["time"] = alert["time"].replace(tzinfo=UTC)  # written as UTC with Z
            out.append(alert)
        return out
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the alerts in {path}: {exc}",
                         hint="the file holds one JSON alert per line") from None
    finally:
        con.close()
