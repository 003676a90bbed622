"""Azure AKS audit logs: resource-log records and Log Analytics rows (cloud-log-formats.md §3).

Diagnostic settings deliver the Event verbatim in ``properties.log`` (a JSON string, or an
object in some exports) beside klog text of other categories, which are skipped. Log
Analytics spreads the Event over PascalCase columns and replaces big bodies by a marker.
The cluster comes from the upper-cased ARM ``resourceId``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from ..decode import Rejected, Shape, excerpt
from ..timeparse import micro_time, parse_time
from .eks import accept, salvaged_event

if TYPE_CHECKING:
    from ..decode import Decoder, Item

__all__ = ["AUDIT_CATEGORIES", "DIAGNOSTICS", "LA_ROW", "RECORD", "RECORDS", "cluster_from_id"]

FORMAT = "aks"
AUDIT_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})
TOO_BIG = "skipped-too-big-size-object"
_MARK = "/MANAGEDCLUSTERS/"

#: Log Analytics AKSAudit/AKSAuditAdmin column → Event field (§3.5), in Event field order.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Level", "level"), ("AuditId", "auditID"), ("Stage", "stage"),
    ("RequestUri", "requestURI"), ("Verb", "verb"), ("User", "user"),
    ("SourceIps", "sourceIPs"), ("UserAgent", "userAgent"), ("ObjectRef", "objectRef"),
    ("ResponseStatus", "responseStatus"), ("RequestObject", "requestObject"),
    ("ResponseObject", "responseObject"), ("RequestReceivedTime", "requestReceivedTimestamp"),
    ("StageReceivedTime", "stageTimestamp"), ("Annotations", "annotations"),
)
_DYNAMIC = frozenset({"User", "SourceIps", "ObjectRef", "ResponseStatus", "RequestObject",
                      "ResponseObject", "Annotations"})
_BODIES = frozenset({"RequestObject", "ResponseObject"})
_TIMES = frozenset({"RequestReceivedTime", "StageReceivedTime"})
_EMPTY: tuple[Any, ...] = (None, "", {}, [])


def cluster_from_id(resource_id: Any, configured: str | None = None) -> str | None:
    """Cluster name from an ARM id; Azure upper-cases it, so prefer the configured spelling."""
    if not isinstance(resource_id, str):
        return None
    at = resource_id.upper().rfind(_MARK)
    if at < 0:
        return None
    name = resource_id[at + len(_MARK):].split("/", 1)[0].lower()
    if not name:
        return None
    if configured and configured.lower() == name:
        return configured
    return name


def _micro(value: Any) -> str | None:
    """Azure's 7-digit (.NET tick) datetimes as 6-digit MicroTime."""
    stamp = parse_time(value) if isinstance(value, str) else None
    return micro_time(stamp) if stamp else None


def _log_item(log: Any, dec: Decoder, cluster: str | None, fallback: Any, what: str) -> Item:
    """The Event in ``properties.log`` / ``log_s``: an object, a JSON string, or a cut string."""
    if isinstance(log, dict):
        return accept(log, dec, FORMAT, cluster)
    if not isinstance(log, str):
        return Rejected(f"{what} is missing or not a string", excerpt(log))
    text = log.strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # raw control characters inside strings have been seen in Azure bodies (§3.4)
            value = json.loads(text, strict=False)
        except ValueError:
            if not text.startswith("{"):
                return Rejected(f"{what} is not JSON (not an audit event)", excerpt(text))
            return salvaged_event(text, dec, FORMAT, cluster, "aks-truncated", _micro(fallback))
        text = ""  # not the strict JSON the archive stores verbatim: re-serialise instead
    if not isinstance(value, dict):
        return Rejected(f"{what} is not a JSON object", excerpt(text or log))
    return accept(value, dec, FORMAT, cluster, None, text or None)


def _is_records(v: dict[str, Any]) -> bool:
    records = v.get("records")
    return bool(records) and isinstance(records, list) and isinstance(records[0], dict) \
        and ("category" in records[0] or "properties" in records[0])


def _decode_records(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    for record in v["records"]:
        if isinstance(record, dict) and "category" in record and "properties" in record:
            yield from _decode_record(record, dec)
        else:
            yield from dec.classify(record)


def _is_record(v: dict[str, Any]) -> bool:
    return "category" in v and "properties" in v


def _decode_record(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    category = v["category"]
    if not isinstance(category, str) or category.lower() not in AUDIT_CATEGORIES:
        yield Rejected(f"AKS log category {category!r} is not an audit category",
                       excerpt(v), skipped=True)
        return
    props = v["properties"]
    if not isinstance(props, dict):
        yield Rejected("AKS record properties is not an object", excerpt(v))
        return
    cluster = cluster_from_id(v.get("resourceId") or v.get("ResourceId"), dec.cluster)
    yield _log_item(props.get("log"), dec, cluster, v.get("time"), "properties.log")


def _dynamic(value: Any) -> Any:
    """Log Analytics exports may hand dynamic columns back as JSON text."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            try:
                return json.loads(value, strict=False)
            except ValueError:
                return value
    return value


def _is_la_row(v: dict[str, Any]) -> bool:
    return "AuditId" in v and "Verb" in v


def _decode_la_row(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    event: dict[str, Any] = {"kind": "Event", "apiVersion": "audit.k8s.io/v1"}
    truncated = None
    for column, name in _COLUMNS:
        value = v.get(column)
        if column in _DYNAMIC:
            if column in _BODIES and value == TOO_BIG:
                truncated = "aks-too-big"
                continue
            value = _dynamic(value)
        elif column in _TIMES:
            value = _micro(value) or value
        if value in _EMPTY:
            continue
        event[name] = value
    event.setdefault("user", {})
    cluster = cluster_from_id(v.get("_ResourceId") or v.get("ResourceId"), dec.cluster)
    yield accept(event, dec, FORMAT, cluster, truncated)


def _is_diagnostics(v: dict[str, Any]) -> bool:
    return "log_s" in v and "Category" in v


def _decode_diagnostics(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    category = v["Category"]
    if not isinstance(category, str) or category.lower() not in AUDIT_CATEGORIES:
        yield Rejected(f"AzureDiagnostics category {category!r} is not an audit category",
                       excerpt(v), skipped=True)
        return
    cluster = cluster_from_id(v.get("_ResourceId") or v.get("ResourceId"), dec.cluster)
    if cluster is None and isinstance(v.get("Resource"), str) and v["Resource"]:
        cluster = cluster_from_id(_MARK + v["Resource"], dec.cluster)
    yield _log_item(v["log_s"], dec, cluster, v.get("TimeGenerated"), "log_s")


RECORDS = Shape("aks-records", FORMAT, _is_records, _decode_records,
                "Event Hub body or pre-2018 blob: {records: [resource-log record, …]}")
RECORD = Shape("aks-record", FORMAT, _is_record, _decode_record,
               "Azure resource-log record (storage account blob line)")
LA_ROW = Shape("aks-log-analytics", FORMAT, _is_la_row, _decode_la_row,
               "Log Analytics AKSAudit / AKSAuditAdmin row")
DIAGNOSTICS = Shape("aks-diagnostics", FORMAT, _is_diagnostics, _decode_diagnostics,
                    "Log Analytics AzureDiagnostics row (Category kube-audit, log_s)")
