"""One row per audit event: the archive's columns and how an Event's JSON fills them.

This is the hot path of ingestion (hundreds of thousands of events a second). Python only
finds the Event JSON texts (most lines of an API-server log are recognised by their first
bytes without parsing) and hands them over as an Arrow table of :data:`RAW_SCHEMA`; DuckDB
then parses and derives every column in one multi-threaded SQL pass (:data:`NORMALIZE_SQL`).
Every input shape goes through that one SQL, so there is a single definition of a row.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "COLUMNS", "NORMALIZE_SQL", "PASSTHROUGH", "RAW_SCHEMA", "SCHEMA", "STAGES", "UNIQUE_COLUMNS",
]

_STR = pa.string()
_LIST = pa.list_(pa.string())
_TS = pa.timestamp("us", tz="UTC")

#: (column, Arrow type, description), in the order of the segments' columns.
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

#: Columns whose values are mostly unique: dictionary-encoding them in Parquet is wasted
#: work (the writer tries, then falls back), so segments encode them plainly.
UNIQUE_COLUMNS = frozenset({"event", "audit_id", "request_uri", "object_uid", "status_message",
                            "time", "received", "latency_ms"})

SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in COLUMNS])

#: What Python hands to the normaliser: the Event's JSON text and where it came from.
RAW_SCHEMA = pa.schema([
    ("text", _STR),
    ("line", pa.int64()),
    ("cluster", _STR),
    ("source_format", _STR),
    ("truncated", _STR),
    ("file", _STR),
])

#: Columns taken from RAW_SCHEMA as they are (the archive column, and the raw column).
PASSTHROUGH = (("cluster", "cluster"), ("source_format", "source_format"), ("event", "text"))

STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")

# The structure json_transform parses each Event into (lenient: a wrong type gives NULL).
_SHAPE = (
    '{"level":"VARCHAR","auditID":"VARCHAR","stage":"VARCHAR","requestURI":"VARCHAR",'
    '"verb":"VARCHAR","user":{"username":"VARCHAR","uid":"VARCHAR","groups":["VARCHAR"]},'
    '"impersonatedUser":{"username":"VARCHAR","groups":["VARCHAR"]},'
    '"sourceIPs":["VARCHAR"],"userAgent":"VARCHAR",'
    '"objectRef":{"resource":"VARCHAR","namespace":"VARCHAR","name":"VARCHAR","uid":"VARCHAR",'
    '"apiGroup":"VARCHAR","apiVersion":"VARCHAR","subresource":"VARCHAR"},'
    '"responseStatus":{"code":"BIGINT","reason":"VARCHAR","message":"VARCHAR"},'
    '"requestReceivedTimestamp":"VARCHAR","stageTimestamp":"VARCHAR",'
    # Only the annotations a column needs: a struct of three keys parses ~3x faster than a map.
    '"annotations":{"authorization.k8s.io/decision":"VARCHAR",'
    '"authorization.k8s.io/reason":"VARCHAR","audit.k8s.io/truncated":"VARCHAR"}}'
)

def _ts(column: str) -> str:
    """A cast timestamp, or NULL outside what every engine and Python's datetime can hold."""
    return (f"CASE WHEN {column} BETWEEN TIMESTAMPTZ '1970-01-01 00:00:00+00' "
            f"AND TIMESTAMPTZ '9999-12-31 23:59:59+00' THEN {column} END")


#: SELECT over a relation `raw` (RAW_SCHEMA) → the columns of SCHEMA that are derived from
#: the Event (all but PASSTHROUGH), plus `day` (the partition) and `problem` (why the row
#: cannot be stored; NULL for a good event). Rows come out in input order, so the
#: pass-through columns (the Event text above all) are joined back without a copy.
NORMALIZE_SQL = f"""
WITH parsed AS (
    -- TRY: a line that is not a JSON object gives NULL (one parse, no separate json_valid)
    SELECT *, TRY(json_transform(text, '{_SHAPE}')) AS e
    FROM raw
), cast_times AS (
    SELECT *, TRY_CAST(e.stageTimestamp AS TIMESTAMPTZ) AS ts_stage,
              TRY_CAST(e.requestReceivedTimestamp AS TIMESTAMPTZ) AS ts_received
    FROM parsed
), typed AS (
    SELECT *,
        COALESCE({_ts("ts_stage")}, {_ts("ts_received")}) AS t_stage,
        COALESCE({_ts("ts_received")}, {_ts("ts_stage")}) AS t_received,
        COALESCE(e.requestURI, '') AS uri
    FROM cast_times
)
SELECT
    t_stage AS "time",
    t_received AS received,
    e.auditID AS audit_id,
    e.stage AS stage,
    e.level AS level,
    e.verb AS verb,
    uri AS request_uri,
    e."user".username AS "user",
    e."user".uid AS user_uid,
    NULLIF(e."user".groups, []) AS groups,
    e.impersonatedUser.username AS impersonated_user,
    NULLIF(e.impersonatedUser.groups, []) AS impersonated_groups,
    CASE WHEN starts_with(e."user".username, 'system:serviceaccount:')
         THEN split_part(e."user".username, ':', 3) END AS sa_namespace,
    CASE WHEN starts_with(e."user".username, 'system:serviceaccount:')
         THEN NULLIF(regexp_extract(e."user".username, '^system:serviceaccount:[^:]*:(.*)$', 1),
                     '') END AS sa_name,
    NULLIF(e.sourceIPs, []) AS source_ips,
    e.sourceIPs[1] AS source_ip,
    e.userAgent AS user_agent,
    CASE WHEN e.objectRef IS NOT NULL THEN COALESCE(e.objectRef.apiGroup, '') END AS api_group,
    e.objectRef.apiVersion AS api_version,
    e.objectRef.resource AS resource,
    e.objectRef.subresource AS subresource,
    e.objectRef.namespace AS namespace,
    e.objectRef.name AS name,
    e.objectRef.uid AS object_uid,
    CASE WHEN e.responseStatus.code BETWEEN -2147483648 AND 2147483647
         THEN e.responseStatus.code::INTEGER END AS code,
    e.responseStatus.reason AS status_reason,
    e.responseStatus.message AS status_message,
    e.annotations."authorization.k8s.io/decision" AS decision,
    e.annotations."authorization.k8s.io/reason" AS reason,
    CASE WHEN e.objectRef.subresource IN ('exec', 'attach') AND contains(uri, 'command=')
         THEN list_transform(regexp_extract_all(uri, '[?&]command=([^&]*)', 1),
                             lambda x: url_decode(replace(x, '+', ' '))) END AS command,
    CASE WHEN e.objectRef.subresource IN ('exec', 'attach', 'log', 'portforward')
         THEN NULLIF(url_decode(replace(regexp_extract(uri, '[?&]container=([^&]*)', 1),
                                        '+', ' ')), '') END AS container,
    (epoch_us(t_stage) - epoch_us(t_received)) / 1000.0 AS latency_ms,
    COALESCE(truncated, CASE WHEN e.annotations."audit.k8s.io/truncated" = 'true'
                             THEN 'annotation' END) AS truncated,
    (epoch_us(t_stage) // 86400000000)::INTEGER AS day,  -- days since 1970: the partition
    CASE
        WHEN e IS NULL THEN 'invalid JSON'
        WHEN e.auditID IS NULL OR e.auditID = '' THEN 'event has no auditID'
        WHEN e.stage IS NULL OR e.stage NOT IN {STAGES!r}
            THEN 'event has no valid stage (got ' || COALESCE('"' || e.stage || '"', 'none') || ')'
        WHEN t_stage IS NULL THEN 'event has no valid timestamp (stageTimestamp '
            || COALESCE('"' || e.stageTimestamp || '"', 'missing') || ')'
    END AS problem
FROM typed
"""
