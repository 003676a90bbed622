"""The HTTP surface of `kubetrail serve`: the audit webhook, the query API, health, metrics.

The webhook takes exactly what kube-apiserver's webhook backend sends: an audit.k8s.io/v1
EventList, POSTed with the credentials of the kubeconfig `kubetrail policy flags
--webhook-url` writes. It answers 200 only once the batch is durable; the API server retries
anything else, so every refusal says why in its body and is counted by reason.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import duckdb
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..errors import KubetrailError
from ..query.filters import EventFilter, parse_when
from ..store.archive import Archive
from .auth import Token, TokenSet
from .metrics import Metrics
from .runtime import Overloaded, Runtime, RuntimeOptions

__all__ = ["ServiceConfig", "create_app"]


@dataclass
class ServiceConfig:
    """What `kubetrail serve` was asked for (flags, config file and environment merged)."""

    data_dir: str
    cluster: str = "default"  # for POST /v1/audit
    write_tokens: TokenSet | None = None
    read_tokens: TokenSet | None = None
    open_reads: bool = False  # reads need no token (only when no authentication is set up)
    open_writes: bool = False  # writes need no token (mTLS, or --no-auth on loopback)
    max_body_bytes: int = 64 * 1024 * 1024
    signing_key: Path | None = None  # signs the manifest head after every compaction
    redaction: dict[str, Any] = field(default_factory=dict)  # the `redaction:` settings
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                    media_type="application/json", headers=headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _authorise(tokens: TokenSet | None, open_access: bool, request: Request,
               cluster: str | None) -> Token | None:
    if tokens is None:
        if open_access:
            return None
        raise _Refused(403, "forbidden", "this endpoint is not enabled: start the service with "
                       "--read-tokens-file to allow queries")
    presented = _bearer(request)
    if presented is None:
        raise _Refused(401, "unauthenticated", "no bearer token",
                       {"WWW-Authenticate": 'Bearer realm="kubetrail"'})
    token = tokens.find(presented)
    if token is None:
        raise _Refused(401, "unauthenticated", "unknown bearer token",
                       {"WWW-Authenticate": 'Bearer realm="kubetrail", error="invalid_token"'})
    if cluster is not None and not token.allows(cluster):
        raise _Refused(403, "forbidden", f"this token may not write cluster {cluster!r}")
    return token


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _Refused(413, "too_large", f"body of {int(length)} bytes is over the limit of "
                       f"{limit} (--max-body); lower --audit-webhook-batch-max-size")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, "too_large", f"body is over the limit of {limit} bytes "
                           "(--max-body); lower --audit-webhook-batch-max-size")
        chunks.append(chunk)
    return b"".join(chunks)


# Four parses of the body by DuckDB (yyjson, without the interpreter lock, so batches are
# checked on both cores): building Python objects for a 400-event batch costs more and holds
# the lock.
_CHECK_SQL = """
SELECT json_type(b, ['$', '$.kind', '$.apiVersion', '$.items']) AS types,
       json_extract_string(b, ['$.kind', '$.apiVersion']) AS head,
       CASE WHEN types[4] = 'ARRAY' THEN json_type(b, '$.items[*]') END AS items,
       CASE WHEN types[4] = 'ARRAY' THEN json_extract_string(b, '$.items[*].apiVersion') END
           AS versions
FROM (SELECT ?::VARCHAR AS b)
"""
_checkers = threading.local()


def count_events(body: bytes) -> int:
    """The events in an EventList body, checked as the archive will read it (400 for
    anything else); the body itself is logged as it came."""
    con = getattr(_checkers, "con", None)
    if con is None:
        con = _checkers.con = duckdb.connect()
        con.execute("SET threads = 1")
    try:
        types, head, items, versions = con.execute(_CHECK_SQL, [body.decode()]).fetchall()[0]
    except (UnicodeDecodeError, duckdb.Error) as exc:
        reason = str(exc).splitlines()[0]
        raise _Refused(400, "invalid_json", f"body is not JSON: {reason}") from None
    kind, version = head
    if types[0] != "OBJECT" or kind != "EventList":
        raise _Refused(400, "not_eventlist", "expected an audit.k8s.io/v1 EventList, got "
                       + (repr(kind) if types[0] == "OBJECT" else f"a JSON {types[0].lower()}"))
    if version not in (None, "audit.k8s.io/v1"):
        raise _Refused(400, "bad_version", f"EventList apiVersion {version!r} is not "
                       "supported; configure the API server with "
                       "--audit-webhook-version=audit.k8s.io/v1")
    if types[3] is None or types[3] == "NULL":
        return 0
    if items is None:
        raise _Refused(400, "not_eventlist", "EventList.items is not a list")
    for i, item_type in enumerate(items):
        if item_type != "OBJECT":
            raise _Refused(400, "not_eventlist", f"EventList.items[{i}] is not an object")
    for item_version in versions or ():
        if item_version not in (None, "audit.k8s.io/v1"):
            raise _Refused(400, "bad_version", f"an item of the EventList has apiVersion "
                           f"{item_version!r}; only audit.k8s.io/v1 is supported")
    return len(items)


def create_app(config: ServiceConfig) -> FastAPI:
    """The service as an ASGI app; the pipeline starts and stops with the app's lifespan."""
    metrics = Metrics()
    archive = Archive(Path(config.data_dir), signing_key=config.signing_key,
                      redaction=config.redaction)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(archive, config.runtime, metrics)
        app.state.runtime = runtime
        app.state.started = time.time()
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.close)

    app = FastAPI(title="kubetrail", version="1", lifespan=lifespan,
                  description="Kubernetes audit events in (the API server's webhook), answers "
                  "out. Read endpoints take a read token; the webhook a write token.")

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        metrics.rejected.labels(reason=exc.reason).inc()
        return _json({"error": exc.reason, "message": exc.message}, exc.status, exc.headers)

    @app.exception_handler(KubetrailError)
    async def failed(request: Request, exc: KubetrailError) -> Response:
        return _json({"error": "failed", "message": exc.message, "hint": exc.hint}, 400)

    async def receive(request: Request, cluster: str) -> Response:
        started = time.perf_counter()
        _authorise(config.write_tokens, config.open_writes, request, cluster)
        body = await _body(request, config.max_body_bytes)
        count = await asyncio.to_thread(count_events, body)
        if count:  # secrets go before the batch is written anywhere
            body = await asyncio.to_thread(archive.redactor.body, body)
        if count:
            runtime: Runtime = request.app.state.runtime
            try:
                future = runtime.submit(cluster, body)
            except Overloaded as exc:
                raise _Refused(429, "overloaded", "the write-ahead log queue is full; retry",
                               {"Retry-After": str(exc.retry_after)}) from None
            except KubetrailError as exc:
                raise _Refused(503, "unavailable", exc.message) from None
            try:
                await asyncio.wrap_future(future)
            except KubetrailError as exc:
                raise _Refused(503, "unavailable", exc.message) from None
            metrics.received.labels(cluster=cluster).inc(count)
        metrics.ack_seconds.observe(time.perf_counter() - started)
        return _json({"accepted": count})

    @app.post("/v1/audit", summary="Receive an EventList (the API server's audit webhook)")
    async def audit(request: Request) -> Response:
        return await receive(request, config.cluster)

    @app.post("/v1/clusters/{cluster}/audit", summary="Receive an EventList for a cluster")
    async def cluster_audit(request: Request, cluster: str) -> Response:
        return await receive(request, cluster)

    def reader(request: Request) -> str:
        """Who is reading (a read token's name, or `anonymous` with --no-auth)."""
        token = _authorise(config.read_tokens, config.open_reads, request, None)
        return f"token {token.name}" if token is not None else "anonymous"

    def recorded(who: str, action: str, what: Any, rows: int | None) -> None:
        from ..store.access import describe_filter, record_access

        record_access(archive, who=who, action=action, what=describe_filter(what), rows=rows)

    @app.get("/v1/events", summary="Events, filtered as with `kubetrail query`")
    async def events(
        request: Request,
        user: Annotated[list[str] | None, Query(description="User (glob)")] = None,
        group: Annotated[list[str] | None, Query()] = None,
        verb: Annotated[list[str] | None, Query()] = None,
        resource: Annotated[list[str] | None, Query(description="pods, pods/exec, ...")] = None,
        namespace: Annotated[list[str] | None, Query()] = None,
        name: Annotated[list[str] | None, Query()] = None,
        code: Annotated[list[str] | None, Query(description="403, 4xx or 400-499")] = None,
        decision: Annotated[str | None, Query(pattern="^(allow|forbid)$")] = None,
        source_ip: Annotated[list[str] | None, Query(description="Address or CIDR")] = None,
        user_agent: Annotated[list[str] | None, Query()] = None,
        cluster: Annotated[list[str] | None, Query()] = None,
        since: Annotated[str | None, Query(description="24h, 7d or an RFC 3339 time")] = None,
        until: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        who = reader(request)
        flt = EventFilter(
            users=tuple(user or ()), groups=tuple(group or ()), verbs=tuple(verb or ()),
            resources=tuple(resource or ()), namespaces=tuple(namespace or ()),
            names=tuple(name or ()), codes=tuple(code or ()), decision=decision,
            source_ips=tuple(source_ip or ()), user_agents=tuple(user_agent or ()),
            clusters=tuple(cluster or ()), since=parse_when(since) if since else None,
            until=parse_when(until) if until else None)
        runtime: Runtime = request.app.state.runtime
        rows = await asyncio.to_thread(_query, archive, runtime, flt, limit, offset)
        page = rows[:limit]
        await asyncio.to_thread(recorded, who, "api events", flt, len(page))
        out: dict[str, Any] = {"items": page, "offset": offset, "limit": limit}
        if len(rows) > limit:
            out["next_offset"] = offset + limit
        return _json(out)

    @app.get("/v1/alerts", summary="Stored alerts, oldest first")
    async def alerts(
        request: Request,
        rule: Annotated[list[str] | None, Query()] = None,
        min_severity: Annotated[str | None, Query(
            pattern="^(info|low|medium|high|critical)$")] = None,
        cluster: Annotated[list[str] | None, Query()] = None,
        since: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        from ..detect.store import AlertFilter, read_alerts

        who = reader(request)
        flt = AlertFilter(rules=tuple(rule or ()), min_severity=min_severity,
                          clusters=tuple(cluster or ()),
                          since=parse_when(since) if since else None)
        found = await asyncio.to_thread(read_alerts, archive, flt)
        page = found[offset:offset + limit]
        await asyncio.to_thread(recorded, who, "api alerts", flt, len(page))
        out: dict[str, Any] = {"items": page, "offset": offset, "limit": limit,
                               "total": len(found)}
        if offset + limit < len(found):
            out["next_offset"] = offset + limit
        return _json(out)

    @app.get("/v1/stats", summary="Archive size and span, and the service's state")
    async def stats(request: Request) -> Response:
        from ..query.answers import archive_stats

        who = reader(request)
        runtime: Runtime = request.app.state.runtime
        await asyncio.to_thread(recorded, who, "api stats", {}, None)

        def collect() -> dict[str, Any]:
            con = archive.connect(runtime.pending_rows())
            try:
                return archive_stats(con, archive.bytes_on_disk(), len(archive.segment_files()))
            finally:
                con.close()

        out = await asyncio.to_thread(collect)
        out["service"] = {"wal_bytes": runtime.wal.bytes(),
                          "uptime_seconds": round(time.time() - request.app.state.started, 1),
                          "ready": runtime.ready}
        return _json(out)

    @app.get("/healthz", summary="The process is up", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/readyz", summary="Batches are being accepted and compacted")
    async def readyz(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        if runtime.ready:
            return PlainTextResponse("ok")
        return JSONResponse({"ready": False, "reason": runtime.failure or "stopping"}, 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _query(archive: Archive, runtime: Runtime, flt: EventFilter, limit: int, offset: int
           ) -> list[dict[str, Any]]:
    from ..query.answers import DEFAULT_FIELDS, query_events

    con = archive.connect(runtime.pending_rows())
    try:
        table = query_events(con, flt, fields=DEFAULT_FIELDS, limit=offset + limit + 1)
    finally:
        con.close()
    rows = table.slice(offset).to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.isoformat()
    return rows
