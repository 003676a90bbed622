"""Recorded traffic as request classes: what a policy decides on, counted once per class.

A million events hold a few thousand distinct request-attribute tuples (user, groups,
verb, resource, namespace, name, path). Replaying a policy therefore groups the events by
request (auditID) and the requests by attributes in DuckDB, and evaluates the policy once
per class in Python. Per class it keeps what is needed to estimate volume under another
policy: the stages a request goes through and the sizes of a metadata-only event and of
the request and response bodies where they were recorded.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from ..errors import InputError, StoreError
from ..events.batches import Rejects, read_batches
from ..query.filters import EventFilter
from ..store.archive import Archive, connection
from .model import Attributes

__all__ = ["LONG_RUNNING_SUBRESOURCES", "RequestClass", "Traffic", "describe", "load_traffic",
           "traffic_from_archive", "traffic_from_files"]

#: Subresources kube-apiserver treats as long-running (a ResponseStarted event is emitted).
LONG_RUNNING_SUBRESOURCES = ("attach", "exec", "proxy", "log", "portforward")
_WORKERS = 2


@dataclass(frozen=True)
class RequestClass:
    """Requests that look the same to any policy, and their recorded volume."""

    attributes: Attributes
    requests: int
    failed_authn: int  # of those, requests that failed authentication (one event each)
    panics: int  # of those, requests that ended in a Panic stage
    events: int  # as recorded
    bytes: int  # as recorded
    meta_bytes: float  # mean size of one of its events without bodies
    request_body: float | None  # mean requestObject size where recorded, else None
    response_body: float | None
    request_managed: float  # mean size of requestObject.metadata.managedFields, where recorded
    response_managed: float
    codes: tuple[tuple[int, int], ...] = ()  # (response code, requests); empty: not known

    @property
    def long_running(self) -> bool:
        a = self.attributes
        if a.verb in ("watch", "proxy"):
            return True
        if a.resource_request:
            return a.subresource in LONG_RUNNING_SUBRESOURCES
        return a.path.startswith("/debug/pprof/")


@dataclass(frozen=True)
class Traffic:
    """Request classes over a time span (`days` scales volumes to a day)."""

    classes: tuple[RequestClass, ...]
    first: datetime | None
    last: datetime | None
    unreadable: int = 0  # records that were not usable events (skipped, not counted)

    @property
    def days(self) -> float:
        """The span covered, in days (at least one hour, so short samples are not inflated
        beyond what they show)."""
        if self.first is None or self.last is None:
            return 1.0
        return max((self.last - self.first).total_seconds(), 3600.0) / 86400.0

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.classes)

    @classmethod
    def of(cls, counts: Iterable[tuple[Attributes, int]], *, days: float = 1.0) -> Traffic:
        """Traffic written by hand: (attributes, requests) over `days`; sizes unknown, one
        event per request as recorded."""
        if days <= 0:
            raise InputError(f"days must be positive, not {days}")
        classes = tuple(RequestClass(a, n, 0, 0, n, 0, 0.0, None, None, 0.0, 0.0)
                        for a, n in counts)
        if any(c.requests < 0 for c in classes):
            raise InputError("request counts must be zero or more")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        return cls(classes, start, start + timedelta(days=days))

    @property
    def events(self) -> int:
        return sum(c.events for c in self.classes)


# Per event: the attributes the policy saw, and sizes. A create without a subresource has no
# name in its path (objectRef.name was filled from the body afterwards). Two sources: the
# archive's columns, and raw Event texts (a slim parse of only what a policy needs).
_ARCHIVE_EVENT_SQL = """
SELECT hash(cluster, audit_id) AS rid, "time",
       (("user" IS NOT NULL AND "user" <> '') OR len(COALESCE(groups, [])) > 0) AS has_user,
       COALESCE("user", '') AS username, COALESCE(groups, []) AS groups,
       COALESCE(verb, '') AS verb, api_group IS NOT NULL AS resource_request,
       CASE WHEN api_group IS NULL
            THEN url_decode(split_part(COALESCE(request_uri, ''), '?', 1)) ELSE '' END AS path,
       COALESCE(namespace, '') AS namespace, COALESCE(api_group, '') AS api_group,
       COALESCE(api_version, '') AS api_version, COALESCE(resource, '') AS resource,
       COALESCE(subresource, '') AS subresource,
       CASE WHEN verb = 'create' AND subresource IS NULL THEN '' ELSE COALESCE(name, '') END
           AS name,
       COALESCE(code, 0) AS code, stage, level,
       CASE WHEN level IN ('Request', 'RequestResponse')
            THEN json_extract(event, '$.requestObject') END AS req_obj,
       CASE WHEN level = 'RequestResponse'
            THEN json_extract(event, '$.responseObject') END AS resp_obj,
       strlen(event) + 1 AS size
FROM events
WHERE {where}
"""

_SLIM_SHAPE = (
    '{"level":"VARCHAR","auditID":"VARCHAR","stage":"VARCHAR","requestURI":"VARCHAR",'
    '"verb":"VARCHAR","user":{"username":"VARCHAR","groups":["VARCHAR"]},'
    '"objectRef":{"resource":"VARCHAR","namespace":"VARCHAR","name":"VARCHAR",'
    '"apiGroup":"VARCHAR","apiVersion":"VARCHAR","subresource":"VARCHAR"},'
    '"responseStatus":{"code":"BIGINT"},"stageTimestamp":"VARCHAR",'
    '"requestObject":"JSON","responseObject":"JSON"}'
)

_RAW_EVENT_SQL = f"""
-- No WHERE on `e`: a filter pushed below this projection would parse every event again
-- (measured 1.5x slower). Rows without an auditID get a NULL rid and are dropped after.
WITH parsed AS (
    SELECT cluster, TRY(json_transform(text, '{_SLIM_SHAPE}')) AS e, strlen(text) + 1 AS size
    FROM raw)
SELECT CASE WHEN e.auditID <> '' THEN hash(cluster, e.auditID) END AS rid,
       TRY_CAST(e.stageTimestamp AS TIMESTAMPTZ) AS "time",
       ((e."user".username IS NOT NULL AND e."user".username <> '')
        OR len(COALESCE(e."user".groups, [])) > 0) AS has_user,
       COALESCE(e."user".username, '') AS username, COALESCE(e."user".groups, []) AS groups,
       COALESCE(e.verb, '') AS verb, e.objectRef IS NOT NULL AS resource_request,
       CASE WHEN e.objectRef IS NULL
            THEN url_decode(split_part(COALESCE(e.requestURI, ''), '?', 1)) ELSE '' END AS path,
       COALESCE(e.objectRef.namespace, '') AS namespace,
       COALESCE(e.objectRef.apiGroup, '') AS api_group,
       COALESCE(e.objectRef.apiVersion, '') AS api_version,
       COALESCE(e.objectRef.resource, '') AS resource,
       COALESCE(e.objectRef.subresource, '') AS subresource,
       CASE WHEN e.verb = 'create' AND e.objectRef.subresource IS NULL THEN ''
            ELSE COALESCE(e.objectRef.name, '') END AS name,
       COALESCE(e.responseStatus.code, 0) AS code, e.stage AS stage, e.level AS level,
       CASE WHEN e.level IN ('Request', 'RequestResponse') THEN e.requestObject END AS req_obj,
       CASE WHEN e.level = 'RequestResponse' THEN e.responseObject END AS resp_obj, size
FROM parsed
"""

_KEYS = ("has_user", "username", "groups", "verb", "resource_request", "path", "namespace",
         "api_group", "api_version", "resource", "subresource", "name")

# Each event's class as a 128-bit key (two independent 64-bit hashes of its attributes), so
# that requests are merged across batches on narrow numeric rows; the attributes themselves
# travel once per class and batch. Two classes sharing a key is detected, never merged.
_KEYED_SQL = f"""
CREATE OR REPLACE TEMP TABLE kt_keyed AS
SELECT rid, "time", code, stage, size,
       {{'a': hash({", ".join(_KEYS)}), 'b': hash('kubetrail', {", ".join(_KEYS)})}} AS class,
       CASE level WHEN 'RequestResponse' THEN 3 WHEN 'Request' THEN 2
                  WHEN 'Metadata' THEN 1 ELSE 0 END AS level_rank,
       strlen(req_obj::VARCHAR) AS req_body, strlen(resp_obj::VARCHAR) AS resp_body,
       strlen(json_extract(req_obj, '$.metadata.managedFields')::VARCHAR) AS req_managed,
       strlen(json_extract(resp_obj, '$.metadata.managedFields')::VARCHAR) AS resp_managed,
       {", ".join(_KEYS)}
FROM (%EVENTS%)
"""

# Per request (or the part of a request inside one batch: merged again by _CLASS_SQL).
_REQUEST_SQL = """
SELECT rid, any_value(class) AS class, min("time") AS first, max("time") AS last,
       max(code) AS code, bool_or(stage = 'Panic') AS panic, max(level_rank) AS level_rank,
       count(*) AS events, sum(size) AS bytes,
       sum(size - COALESCE(req_body, 0) - COALESCE(resp_body, 0)) AS meta_bytes,
       max(req_body) AS req_body, max(resp_body) AS resp_body,
       max(req_managed) AS req_managed, max(resp_managed) AS resp_managed
FROM kt_keyed
WHERE rid IS NOT NULL
GROUP BY rid
"""

_CLASS_KEYS_SQL = f"SELECT DISTINCT class, {', '.join(_KEYS)} FROM kt_keyed WHERE rid IS NOT NULL"

_CLASS_SQL = """
WITH requests AS (
    SELECT rid, any_value(class) AS class, min(first) AS first, max(last) AS last,
           max(code) AS code, bool_or(panic) AS panic, max(level_rank) AS level_rank,
           sum(events) AS events, sum(bytes) AS bytes, sum(meta_bytes) AS meta_bytes,
           max(req_body) AS req_body, max(resp_body) AS resp_body,
           max(req_managed) AS req_managed, max(resp_managed) AS resp_managed
    FROM kt_requests GROUP BY rid
), classes AS (
    SELECT class,
           count(*) AS requests,
           count(*) FILTER (WHERE code = 401) AS code_401,
           count(*) FILTER (WHERE panic) AS panics,
           sum(events) AS events, sum(bytes) AS bytes,
           sum(meta_bytes) / sum(events) AS meta_bytes,
           avg(req_body) AS request_body, avg(resp_body) AS response_body,
           COALESCE(avg(req_managed) FILTER (WHERE req_body IS NOT NULL), 0) AS request_managed,
           COALESCE(avg(resp_managed) FILTER (WHERE resp_body IS NOT NULL), 0) AS response_managed,
           histogram(code) AS codes,
           min(first) AS first, max(last) AS last
    FROM requests GROUP BY class
)
SELECT k.*, c.* EXCLUDE (class),
       CASE WHEN k.has_user THEN 0 ELSE c.code_401 END AS failed_authn
FROM classes c JOIN (SELECT DISTINCT * FROM kt_class_keys) k USING (class)
"""


def _summarise(con: duckdb.DuckDBPyConnection, events_sql: str, params: list[Any] | None = None
               ) -> tuple[pa.Table, pa.Table, int]:
    """(request rows, class keys, events without an auditID) of the events `events_sql`
    yields."""
    con.execute(_KEYED_SQL.replace("%EVENTS%", events_sql), params or [])
    try:
        requests = con.sql(_REQUEST_SQL).to_arrow_table()
        keys = con.sql(_CLASS_KEYS_SQL).to_arrow_table()
        (no_id,) = con.execute("SELECT count(*) FROM kt_keyed WHERE rid IS NULL").fetchone() or (0,)
    finally:
        con.execute("DROP TABLE kt_keyed")
    return requests, keys, int(no_id)


def _classes(con: duckdb.DuckDBPyConnection, parts: list[tuple[pa.Table, pa.Table]],
             unreadable: int) -> Traffic:
    if not parts:
        return Traffic((), None, None, unreadable)
    con.register("kt_requests", pa.concat_tables([r for r, _ in parts]))
    con.register("kt_class_keys", pa.concat_tables([k for _, k in parts]))
    try:
        clash = con.sql("SELECT class FROM (SELECT DISTINCT * FROM kt_class_keys) "
                        "GROUP BY class HAVING count(*) > 1 LIMIT 1").fetchall()
        if clash:  # two 64-bit hashes agreeing by chance: about once in 10^30 replays
            raise StoreError("two different request classes got the same key; the replay "
                             "would merge them", hint="report this at the kubetrail issue "
                             "tracker, with the log if you can")
        relation = con.sql(_CLASS_SQL)
        columns = relation.columns
        rows = relation.fetchall()
    finally:
        con.unregister("kt_requests")
        con.unregister("kt_class_keys")
    classes = []
    first: datetime | None = None
    last: datetime | None = None
    for values in rows:
        r = dict(zip(columns, values, strict=True))
        attrs = Attributes(
            user=r["username"] if r["has_user"] else None,
            groups=tuple(r["groups"]) if r["has_user"] else (), verb=r["verb"],
            resource_request=r["resource_request"], path=r["path"],
            namespace=r["namespace"], api_group=r["api_group"],
            api_version=r["api_version"], resource=r["resource"],
            subresource=r["subresource"], name=r["name"])
        classes.append(RequestClass(
            attrs, r["requests"], r["failed_authn"], r["panics"], int(r["events"]),
            int(r["bytes"]), float(r["meta_bytes"]), r["request_body"], r["response_body"],
            float(r["request_managed"]), float(r["response_managed"]),
            tuple(sorted((int(k), int(v)) for k, v in (r["codes"] or {}).items()))))
        if r["first"] is not None and (first is None or r["first"] < first):
            first = r["first"]
        if r["last"] is not None and (last is None or r["last"] > last):
            last = r["last"]
    classes.sort(key=lambda c: -c.events)
    return Traffic(tuple(classes), first, last, unreadable)


def traffic_from_archive(archive: Archive, flt: EventFilter | None = None) -> Traffic:
    """The request classes of the archived events that `flt` selects."""
    where, params = (flt or EventFilter()).where()
    con = archive.connect()
    try:
        requests, keys, _ = _summarise(con, _ARCHIVE_EVENT_SQL.format(where=where), params)
        return _classes(con, [(requests, keys)], 0)
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the archive {archive.root}: {exc}",
                         hint="run `kubetrail verify` or re-ingest the logs") from exc
    finally:
        con.close()


def traffic_from_files(paths: Sequence[str], *, cluster: str = "default", fmt: str = "auto",
                       batch_events: int = 50_000) -> Traffic:
    """The request classes of the events in audit log files of any supported shape.

    Reading runs on this thread while DuckDB parses and groups earlier batches on worker
    threads, each with its own connection."""
    rejected = [0]  # parsed, but not an event (no auditID)
    rejects = Rejects()
    local = threading.local()
    connections: list[duckdb.DuckDBPyConnection] = []

    def summarise(raw: pa.Table) -> tuple[pa.Table, pa.Table]:
        con = getattr(local, "con", None)
        if con is None:
            con = local.con = connection()
            con.execute("SET threads = 1")  # one per worker: the workers fill the cores
            connections.append(con)
        con.register("raw", raw)
        try:
            requests, keys, no_id = _summarise(con, _RAW_EVENT_SQL)
        finally:
            con.unregister("raw")
        rejected[0] += no_id
        return requests, keys

    parts: list[tuple[pa.Table, pa.Table]] = []
    try:
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="kubetrail-traffic") as pool:
            pending: deque[Future[tuple[pa.Table, pa.Table]]] = deque()
            for raw in read_batches(paths, cluster=cluster, fmt=fmt, batch_events=batch_events,
                                    rejects=rejects):
                pending.append(pool.submit(summarise, raw))
                while len(pending) > _WORKERS:
                    parts.append(pending.popleft().result())
            parts.extend(f.result() for f in pending)
        con = connection()
        connections.append(con)
        return _classes(con, parts, rejected[0] + len(rejects))
    finally:
        for con in connections:
            con.close()


def load_traffic(paths: Sequence[str] | None = None, *, archive: Archive | None = None,
                 flt: EventFilter | None = None, cluster: str = "default",
                 fmt: str = "auto") -> Traffic:
    """Traffic from log files, or else from the archive."""
    if paths:
        return traffic_from_files(paths, cluster=cluster, fmt=fmt)
    if archive is None:
        raise InputError("no traffic to replay", hint="give audit log files or --archive")
    return traffic_from_archive(archive, flt)


def describe(attrs: Attributes) -> dict[str, Any]:
    """A compact, readable form of a request class (for reports)."""
    what = attrs.path
    if attrs.resource_request:
        what = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        if attrs.api_group:
            what += f".{attrs.api_group}"
    return {"user": attrs.user if attrs.user is not None else "(unauthenticated)",
            "verb": attrs.verb, "what": what, "namespace": attrs.namespace or None,
            "name": attrs.name or None}
