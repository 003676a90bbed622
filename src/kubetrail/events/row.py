"""One row per audit event: the archive's columns and how an Event fills them.

This is the hot path of ingestion (hundreds of thousands of events a second), so rows are
plain tuples built by one function and turned into Arrow columns in bulk; timestamps are
parsed and latency computed column-wise by Arrow rather than per event in Python.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COLUMNS", "SCHEMA", "RowBuilder", "event_row", "exec_command"]

_STR = pa.string()
_LIST = pa.list_(pa.string())
_TS = pa.timestamp("us", tz="UTC")

#: (column, Arrow type, description). The order is the order of the tuple `event_row` makes.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("cluster", _STR, "cluster the event came from (flag, config or the cloud record)"),
    ("time", _TS, "stageTimestamp: when this stage of the request happened (UTC)"),
    ("received", _TS, "requestReceivedTimestamp: when the API server got the request"),
    ("audit_id", _STR, "auditID, shared by every stage of one request"),
    ("stage", _STR, "RequestReceived, ResponseStarted, ResponseComplete or Panic"),
    ("level", _STR, "audit level of the matched policy rule"),
    ("verb", _STR, "Kubernetes verb (get, list, watch, create, ...) or lower-case HTTP method"),
    ("request_uri", _STR, "path and query string as sent by the client"),
    ("user", _STR, "authenticated user name (before impersonation)"),
    ("user_uid", _STR, "authenticated user's uid"),
    ("groups", _LIST, "authenticated user's groups"),
    ("impersonated_user", _STR, "user the request impersonated, if any"),
    ("impersonated_groups", _LIST, "groups the request impersonated, if any"),
    ("sa_namespace", _STR, "namespace of the service account, when the user is one"),
    ("sa_name", _STR, "name of the service account, when the user is one"),
    ("source_ips", _LIST, "client IPs (X-Forwarded-For chain, then the connection's)"),
    ("source_ip", _STR, "first source IP"),
    ("user_agent", _STR, "User-Agent header"),
    ("api_group", _STR, "API group of the object ('' for the core group)"),
    ("api_version", _STR, "API version of the object"),
    ("resource", _STR, "resource (pods, secrets, deployments, ...)"),
    ("subresource", _STR, "subresource (exec, log, status, ...)"),
    ("namespace", _STR, "namespace of the object"),
    ("name", _STR, "name of the object"),
    ("object_uid", _STR, "uid of the object, when recorded"),
    ("code", pa.int32(), "HTTP response code"),
    ("status_reason", _STR, "responseStatus.reason (Forbidden, NotFound, ...)"),
    ("status_message", _STR, "responseStatus.message"),
    ("decision", _STR, "authorization decision: allow or forbid"),
    ("reason", _STR, "authorization reason text"),
    ("command", _LIST, "command of an exec/attach request, from its command= parameters"),
    ("container", _STR, "container of an exec/attach/log request"),
    ("latency_ms", pa.float64(), "stageTimestamp - requestReceivedTimestamp in milliseconds"),
    ("truncated", _STR, "which truncation marker fired, if the event is incomplete"),
    ("source_format", _STR, "input shape: native, eks, gke or aks"),
    ("event", _STR, "the whole event as JSON text"),
]

SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in COLUMNS])
_NAMES = [c[0] for c in COLUMNS]
_TIME_I = _NAMES.index("time")
_RECV_I = _NAMES.index("received")
_LAT_I = _NAMES.index("latency_ms")
_SA_PREFIX = "system:serviceaccount:"
_EXEC_SUBS = frozenset({"exec", "attach", "log", "portforward"})


def exec_command(request_uri: str) -> tuple[list[str] | None, str | None]:
    """The ``command=`` arguments (repeated, URL-encoded) and ``container=`` of a request URI."""
    _, _, query = request_uri.partition("?")
    if not query:
        return None, None
    params = parse_qs(query, keep_blank_values=True)
    container = params.get("container")
    return params.get("command"), (container[0] if container else None)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _strings(value: Any) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value]
    return [str(value)]


def event_row(
    event: dict[str, Any],
    cluster: str,
    source_format: str = "native",
    truncated: str | None = None,
    text: str | None = None,
) -> tuple[Any, ...]:
    """The row for one Event dict. `text` is its JSON when the caller already has it."""
    user = event.get("user") or {}
    if not isinstance(user, dict):
        user = {}
    imp = event.get("impersonatedUser") or {}
    if not isinstance(imp, dict):
        imp = {}
    ref = event.get("objectRef") or {}
    if not isinstance(ref, dict):
        ref = {}
    status = event.get("responseStatus") or {}
    if not isinstance(status, dict):
        status = {}
    ann = event.get("annotations") or {}
    if not isinstance(ann, dict):
        ann = {}
    username = _text(user.get("username"))
    sa_ns = sa_name = None
    if username and username.startswith(_SA_PREFIX):
        sa_ns, _, sa_name = username[len(_SA_PREFIX):].partition(":")
    ips = _strings(event.get("sourceIPs"))
    uri = _text(event.get("requestURI")) or ""
    sub = _text(ref.get("subresource"))
    command = container = None
    if sub in _EXEC_SUBS and "?" in uri:
        command, container = exec_command(uri)
    code = status.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not -(2**31) <= code < 2**31:
        code = None
    if truncated is None and ann.get("audit.k8s.io/truncated") == "true":
        truncated = "annotation"
    return (
        cluster,
        _text(event.get("stageTimestamp")),
        _text(event.get("requestReceivedTimestamp")),
        _text(event.get("auditID")),
        _text(event.get("stage")),
        _text(event.get("level")),
        _text(event.get("verb")),
        uri,
        username,
        _text(user.get("uid")),
        _strings(user.get("groups")),
        _text(imp.get("username")),
        _strings(imp.get("groups")),
        sa_ns,
        sa_name,
        ips,
        ips[0] if ips else None,
        _text(event.get("userAgent")),
        _text(ref.get("apiGroup")) or ("" if ref else None),
        _text(ref.get("apiVersion")),
        _text(ref.get("resource")),
        sub,
        _text(ref.get("namespace")),
        _text(ref.get("name")),
        _text(ref.get("uid")),
        code,
        _text(status.get("reason")),
        _text(status.get("message")),
        _text(ann.get("authorization.k8s.io/decision")),
        _text(ann.get("authorization.k8s.io/reason")),
        command,
        container,
        None,
        truncated,
        source_format,
        text if text is not None else orjson.dumps(event).decode(),
    )


def _timestamps(values: list[Any]) -> pa.Array:
    """Parse RFC 3339 strings column-wise; odd precisions and offsets go the slow way."""
    arr = pa.array(values, type=_STR)
    try:
        return pc.cast(arr, _TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        from .timeparse import parse_time

        return pa.array([parse_time(v) for v in values], type=_TS)


class RowBuilder:
    """Collects rows and hands them over as an Arrow table of :data:`SCHEMA`."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: tuple[Any, ...]) -> None:
        self.rows.append(row)

    def take(self) -> pa.Table:
        rows, self.rows = self.rows, []
        if not rows:
            return SCHEMA.empty_table()
        columns = list(zip(*rows, strict=True))
        arrays: list[pa.Array] = []
        for i, (_, typ, _) in enumerate(COLUMNS):
            if i in (_TIME_I, _RECV_I):
                arrays.append(_timestamps(list(columns[i])))
            elif i == _LAT_I:
                arrays.append(pa.nulls(len(rows), pa.float64()))
            else:
                arrays.append(pa.array(columns[i], type=typ))
        time, received = arrays[_TIME_I], arrays[_RECV_I]
        micros = pc.subtract(pc.cast(time, pa.int64()), pc.cast(received, pa.int64()))
        arrays[_LAT_I] = pc.divide(pc.cast(micros, pa.float64()), 1000.0)
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
