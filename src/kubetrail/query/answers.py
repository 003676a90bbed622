"""The questions people ask first: which events, who is this, what happened to this object,
when, and who or what is loudest. Each is one function over a DuckDB connection that has
the `events` view (see :meth:`kubetrail.store.archive.Archive.connect`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from ..errors import QueryError, StoreError
from ..events.model import AuditEvent
from ..events.row import SCHEMA
from .diff import Change, object_changes
from .filters import DENIED_SQL, IP6_HEX_MACRO, EventFilter, parse_duration

__all__ = [
    "DEFAULT_FIELDS",
    "TOP_DIMENSIONS",
    "HistoryEntry",
    "UserProfile",
    "archive_stats",
    "object_history",
    "query_events",
    "run_sql",
    "timeline",
    "top",
    "who",
]

DEFAULT_FIELDS = ("time", "cluster", "user", "verb", "resource", "subresource", "namespace",
                  "name", "code", "decision", "source_ip")

#: `kubetrail top X` → (SQL expression for the key, extra condition).
TOP_DIMENSIONS: dict[str, tuple[str, str | None]] = {
    "users": ('"user"', None),
    "resources": ("concat_ws('/', resource || CASE WHEN api_group <> '' "
                  "THEN '.' || api_group ELSE '' END, subresource)", "resource IS NOT NULL"),
    "verbs": ("verb", None),
    "namespaces": ("namespace", "namespace IS NOT NULL"),
    "source-ips": ("source_ip", "source_ip IS NOT NULL"),
    "user-agents": ("user_agent", "user_agent IS NOT NULL"),
    "denied": ("concat_ws(' ', \"user\", verb, concat_ws('/', resource, subresource), "
               "CASE WHEN namespace IS NOT NULL THEN '-n ' || namespace END)",
               DENIED_SQL),
    "clusters": ("cluster", None),
}


#: Stage preference when one row per request is wanted: the most complete stage wins.
STAGE_RANK_SQL = ("CASE stage WHEN 'ResponseComplete' THEN 4 WHEN 'Panic' THEN 4 "
                  "WHEN 'ResponseStarted' THEN 2 ELSE 1 END")


def _prepare(con: duckdb.DuckDBPyConnection, flt: EventFilter) -> tuple[str, list[Any]]:
    if flt.needs_ip6():
        con.execute(IP6_HEX_MACRO)
    return flt.where()


def _limit(limit: int | None) -> str:
    if limit is None or limit == 0:
        return ""
    if limit < 0:
        raise QueryError(f"--limit must be 0 (no limit) or more, got {limit}")
    return f" LIMIT {int(limit)}"


def _requests(where: str, all_stages: bool) -> str:
    """Matching events; one per request (its most complete stage) unless all stages."""
    if all_stages:
        return f"SELECT * FROM events WHERE {where}"
    return (f"SELECT * FROM events WHERE {where} QUALIFY row_number() OVER "
            f"(PARTITION BY cluster, audit_id ORDER BY {STAGE_RANK_SQL} DESC, \"time\" DESC) = 1")


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pa.Table:
    """Run one query of ours; a failure means the archive is damaged or unreadable."""
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the archive: {str(exc).splitlines()[0]}",
                         hint="`kubetrail stats` lists the segments; a damaged one can be "
                         "moved away and its input ingested again") from None


def query_events(
    con: duckdb.DuckDBPyConnection,
    flt: EventFilter,
    *,
    fields: tuple[str, ...] | None = None,
    limit: int | None = 100,
    all_stages: bool = False,
    newest_first: bool = False,
) -> pa.Table:
    """The events matching `flt`, oldest first (newest first if asked), as Arrow."""
    cols = fields or DEFAULT_FIELDS
    unknown = [c for c in cols if c not in SCHEMA.names]
    if unknown:
        raise QueryError(f"unknown field(s): {', '.join(unknown)}",
                         hint="fields are: " + ", ".join(SCHEMA.names))
    where, params = _prepare(con, flt)
    select = ", ".join(f'"{c}"' for c in cols)
    order = "DESC" if newest_first else "ASC"
    sql = (f"SELECT {select} FROM ({_requests(where, all_stages)}) "
           f"ORDER BY \"time\" {order}, audit_id" + _limit(limit))
    return _sql(con, sql, params)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Any read-only SQL over the `events` view."""
    try:
        rel = con.sql(sql)
        if rel is None:
            raise QueryError("the SQL returned no rows to show",
                             hint="write a query, e.g. SELECT count(*) FROM events")
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {str(exc).splitlines()[0]}",
                         hint="the view is named events; see `kubetrail query --fields` "
                         "for its columns") from None


@dataclass
class UserProfile:
    """Everything one user or service account did, summarised."""

    user: str
    requests: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    denied: int = 0
    failed: int = 0
    clusters: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    source_ips: list[tuple[str, int]] = field(default_factory=list)
    user_agents: list[tuple[str, int]] = field(default_factory=list)
    verbs: list[tuple[str, int]] = field(default_factory=list)
    touched: list[dict[str, Any]] = field(default_factory=list)
    impersonated_by: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(self).items()}


def who(con: duckdb.DuckDBPyConnection, user: str, flt: EventFilter | None = None,
        *, limit: int | None = 20) -> UserProfile:
    """What `user` (a name or glob; matched as the acting or the impersonated user) did."""
    lim = _limit(limit)
    base = EventFilter(**{**(vars(flt) if flt else {}), "users": (user,)})
    where, params = _prepare(con, base)
    reqs = f"({_requests(where, False)})"

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in _sql(con, sql, params).to_pylist()]

    profile = UserProfile(user)
    head = rows(f"SELECT count(*), min(\"time\"), max(\"time\"), "
                f"count(*) FILTER {DENIED_SQL}, "
                f"count(*) FILTER (code >= 400), list(DISTINCT cluster ORDER BY cluster) "
                f"FROM {reqs}")[0]
    profile.requests, profile.first_seen, profile.last_seen = head[0], head[1], head[2]
    profile.denied, profile.failed, profile.clusters = head[3], head[4], head[5] or []
    if not profile.requests:
        return profile
    profile.groups = [r[0] for r in rows(
        f"SELECT DISTINCT unnest(groups) g FROM {reqs} ORDER BY g")]
    profile.source_ips = rows(f"SELECT unnest(source_ips) ip, count(*) n FROM {reqs} "
                              f"GROUP BY ip ORDER BY n DESC, ip{lim}")
    profile.user_agents = rows(f"SELECT user_agent, count(*) n FROM {reqs} WHERE user_agent "
                               f"IS NOT NULL GROUP BY 1 ORDER BY n DESC, 1{lim}")
    profile.verbs = rows(f"SELECT verb, count(*) n FROM {reqs} GROUP BY 1 ORDER BY n DESC, 1")
    profile.touched = _sql(
        con, f"SELECT verb, concat_ws('/', resource, subresource) AS resource, namespace, "
        f"count(*) AS requests, count(*) FILTER {DENIED_SQL} AS denied, "
        f"max(\"time\") AS last FROM {reqs} WHERE resource IS NOT NULL "
        f"GROUP BY ALL ORDER BY requests DESC, resource{lim}", params).to_pylist()
    profile.impersonated_by = rows(
        f"SELECT \"user\", count(*) n FROM {reqs} WHERE impersonated_user IS NOT NULL "
        f"AND \"user\" IS DISTINCT FROM impersonated_user GROUP BY 1 ORDER BY n DESC")
    return profile


@dataclass
class HistoryEntry:
    """One request that touched an object, with what it changed when bodies were recorded."""

    time: datetime
    cluster: str
    namespace: str | None
    user: str | None
    verb: str | None
    subresource: str | None
    code: int | None
    decision: str | None
    audit_id: str
    changes: list[Change] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k != "changes"}
        d["time"] = self.time.isoformat()
        d["changes"] = [c.to_dict() for c in self.changes]
        return d


_WRITES = ("create", "update", "patch", "delete", "deletecollection")
_HISTORY_FIELDS = ("time", "cluster", "namespace", "user", "verb", "subresource", "code",
                   "decision", "audit_id")


def object_history(con: duckdb.DuckDBPyConnection, target: str, namespace: str | None = None,
                   *, cluster: str | None = None, include_reads: bool = True,
                   limit: int | None = None) -> list[HistoryEntry]:
    """Every request on one object (`pods/web-1`, `deployments.apps/api`), oldest first."""
    resource, _, name = target.partition("/")
    if not name:
        raise QueryError(f"cannot read object {target!r}",
                         hint="write it as RESOURCE/NAME, e.g. deployments/web or "
                         "configmaps/app-config")
    flt = EventFilter(resources=(resource,), names=(name,),
                      namespaces=(namespace,) if namespace else (),
                      clusters=(cluster,) if cluster else (),
                      verbs=() if include_reads else _WRITES)
    where, params = _prepare(con, flt)
    sql = (f"SELECT \"time\", cluster, namespace, \"user\", verb, subresource, code, decision, "
           f"audit_id, level, event FROM ({_requests(where, False)}) ORDER BY \"time\", audit_id"
           + _limit(limit))
    entries: list[HistoryEntry] = []
    # Objects of the same name in other namespaces or clusters are other objects.
    previous: dict[tuple[str, str | None], Any] = {}
    for row in _sql(con, sql, params).to_pylist():
        entry = HistoryEntry(**{k: row[k] for k in _HISTORY_FIELDS})
        key = (entry.cluster, entry.namespace)
        if entry.verb in _WRITES and (entry.code is None or entry.code < 400):
            event = AuditEvent.from_json(row["event"])
            after, kind = _object_after(event)
            if kind == "patch":
                entry.note = "patch: " + orjson.dumps(event.request_object).decode()[:300]
            if entry.verb in ("delete", "deletecollection"):
                entry.note = entry.note or "deleted"
                previous.pop(key, None)
            elif after is not None:
                entry.changes = object_changes(previous.get(key), after)
                previous[key] = after
            else:  # what it changed is unknown, so the next diff must not start from here
                previous.pop(key, None)
                if row["level"] == "Metadata":
                    entry.note = "bodies not recorded (audit level Metadata)"
        entries.append(entry)
    return entries


def _object_after(event: AuditEvent) -> tuple[Any, str]:
    """The object as it was after the request, when the event recorded it."""
    response = event.response_object
    if isinstance(response, dict) and response.get("kind") != "Status":
        return response, "response"
    request = event.request_object
    if event.verb == "patch":
        return None, "patch"
    if isinstance(request, dict) and request.get("kind") != "DeleteOptions" \
            and "metadata" in request:
        return request, "request"
    return None, "none"


def timeline(con: duckdb.DuckDBPyConnection, flt: EventFilter, bucket: str = "1h"
             ) -> list[dict[str, Any]]:
    """Requests per time bucket, with how many were denied and how many failed."""
    width = parse_duration(bucket)
    if width is None:
        raise QueryError(f"cannot read bucket {bucket!r}", hint="use e.g. 5m, 1h, 1d")
    seconds = int(width.total_seconds())
    if seconds <= 0:
        raise QueryError("the bucket must be at least one second long")
    where, params = _prepare(con, flt)
    sql = (f"SELECT time_bucket(INTERVAL '{seconds} seconds', \"time\") AS bucket, "
           f"count(*) AS requests, "
           f"count(*) FILTER {DENIED_SQL} AS denied, "
           f"count(*) FILTER (code >= 400) AS failed, count(DISTINCT \"user\") AS users "
           f"FROM ({_requests(where, False)}) GROUP BY 1 ORDER BY 1")
    return _sql(con, sql, params).to_pylist()


def top(con: duckdb.DuckDBPyConnection, dimension: str, flt: EventFilter, *,
        limit: int | None = 10) -> list[dict[str, Any]]:
    """The most frequent values of one dimension among the matching requests."""
    if dimension not in TOP_DIMENSIONS:
        raise QueryError(f"unknown dimension {dimension!r}",
                         hint="use one of: " + ", ".join(TOP_DIMENSIONS))
    key, cond = TOP_DIMENSIONS[dimension]
    where, params = _prepare(con, flt)
    extra = f"WHERE {cond}" if cond else ""
    sql = (f"SELECT {key} AS value, count(*) AS requests, "
           f"count(*) FILTER {DENIED_SQL} AS denied, "
           f"min(\"time\") AS first, max(\"time\") AS last "
           f"FROM ({_requests(where, False)}) {extra} GROUP BY 1 "
           f"ORDER BY requests DESC, value{_limit(limit)}")
    return _sql(con, sql, params).to_pylist()


def archive_stats(con: duckdb.DuckDBPyConnection, bytes_on_disk: int, segments: int
                  ) -> dict[str, Any]:
    """Size and span of the archive, per cluster and in total."""
    per = _sql(
        con, "SELECT cluster, count(*) AS events, count(DISTINCT audit_id) AS requests, "
        "min(\"time\") AS first, max(\"time\") AS last FROM events GROUP BY 1 ORDER BY 1"
    ).to_pylist()
    events = sum(r["events"] for r in per)
    return {
        "events": events,
        "requests": sum(r["requests"] for r in per),
        "clusters": per,
        "first": min((r["first"] for r in per), default=None),
        "last": max((r["last"] for r in per), default=None),
        "segments": segments,
        "bytes_on_disk": bytes_on_disk,
        "bytes_per_event": round(bytes_on_disk / events, 1) if events else None,
    }
