"""Events → the shapes EKS, GKE and AKS export them in: the inverse of the decoders.

Used by the traffic simulator to write realistic provider exports. Each provider's losses
are reproduced (GKE drops groups, uid, extra, the query string and RequestReceived; codes
become gRPC codes), so that an encode → decode round trip shows what a real export keeps.
Per-event functions (:func:`eks_log_event`, :func:`gke_entry`, :func:`aks_record`) serve
streaming writers; the ``to_*`` functions produce a whole file's bytes. Output is
deterministic: ids are derived from the events, never random.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Literal

import orjson

from ..timeparse import micro_time, parse_time
from .eks import AUDIT_STREAM_PREFIX, TRUNCATED_MARK

__all__ = [
    "EKS_MAX_MESSAGE",
    "HTTP_TO_GRPC",
    "aks_record",
    "aks_resource_id",
    "eks_envelope",
    "eks_log_event",
    "eks_log_group",
    "eks_stream",
    "gke_entry",
    "gke_method",
    "gke_resource_name",
    "to_aks",
    "to_eks",
    "to_gke",
    "to_gke_lines",
]

Event = Mapping[str, Any]
EksStyle = Literal["filter-log-events", "subscription", "lambda", "firehose"]

#: CloudWatch's historical per-event limit; longer messages are cut and marked (§1.8).
EKS_MAX_MESSAGE = 256 * 1024
_ENVELOPE_EVENTS = 100  # log events per subscription envelope (one gzip member each)
_OWNER = "111122223333"

#: HTTP status → google.rpc code as GKE writes it (§2.4: 409 became ABORTED, not 6).
HTTP_TO_GRPC: dict[int, int] = {
    400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 422: 3, 429: 8, 499: 1,
    500: 13, 501: 12, 503: 14, 504: 4,
}
_READ_VERBS = frozenset({"get", "list", "watch"})
_LONG_RUNNING_SUBS = frozenset({"exec", "attach", "proxy", "log", "portforward"})


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _millis(value: Any) -> int:
    stamp = parse_time(value) if isinstance(value, str) else None
    if stamp is None:
        return 0
    return int(stamp.timestamp()) * 1000 + stamp.microsecond // 1000


def _event_json(event: Event) -> str:
    """Compact Event JSON with kind and apiVersion first, as the API server writes it."""
    return orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event}).decode()


def _time(event: Event) -> str:
    return str(event.get("stageTimestamp") or event.get("requestReceivedTimestamp") or "")


# --- EKS ------------------------------------------------------------------------------------


def eks_log_group(cluster: str) -> str:
    """The log group EKS writes a cluster's control-plane logs to."""
    return f"/aws/eks/{cluster}/cluster"


def eks_stream(cluster: str) -> str:
    """A stable audit stream name, ``kube-apiserver-audit-<32 hex>``."""
    return AUDIT_STREAM_PREFIX + _digest("stream", cluster)[:32]


def eks_log_event(
    event: Event, *, stream: str | None = None, max_message: int | None = EKS_MAX_MESSAGE
) -> dict[str, Any]:
    """One ``filter-log-events`` element; messages over `max_message` bytes are cut."""
    message = _event_json(event)
    if max_message is not None and len(message.encode()) > max_message:
        keep = max_message - len(TRUNCATED_MARK)
        message = message.encode()[:keep].decode(errors="ignore") + TRUNCATED_MARK
    ms = _millis(_time(event))
    out: dict[str, Any] = {}
    if stream is not None:
        out["logStreamName"] = stream
    out["timestamp"] = ms
    out["message"] = message
    out["ingestionTime"] = ms + 1500
    out["eventId"] = _event_id(event, ms)
    return out


def _event_id(event: Event, ms: int) -> str:
    """A 56-digit decimal id like CloudWatch's: time first, so ids sort roughly by time."""
    salt = int(_digest(str(event.get("auditID")), str(event.get("stage")))[:24], 16)
    return f"{ms:020d}{salt % 10**36:036d}"


def eks_envelope(
    log_events: list[Mapping[str, Any]], cluster: str, *, stream: str | None = None
) -> dict[str, Any]:
    """A subscription DATA_MESSAGE carrying `log_events` (as made by :func:`eks_log_event`)."""
    return {
        "messageType": "DATA_MESSAGE",
        "owner": _OWNER,
        "logGroup": eks_log_group(cluster),
        "logStream": stream or eks_stream(cluster),
        "subscriptionFilters": ["kubetrail-audit"],
        "logEvents": [{"id": e["eventId"], "timestamp": e["timestamp"], "message": e["message"]}
                      for e in log_events],
    }


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def to_eks(
    events: Iterable[Event],
    cluster: str,
    *,
    style: EksStyle = "filter-log-events",
    max_message: int | None = EKS_MAX_MESSAGE,
) -> bytes:
    """A whole EKS export of `events`.

    ``filter-log-events``: the CLI's JSON document. ``subscription``: what Firehose writes
    to S3, one gzip member per envelope, concatenated with no separator. ``lambda``: JSON
    lines of ``{"awslogs": {"data": …}}``. ``firehose``: one HTTP-endpoint delivery body.
    """
    if style not in ("filter-log-events", "subscription", "lambda", "firehose"):
        raise ValueError(f"unknown EKS style {style!r}")
    stream = eks_stream(cluster)
    log_events = [eks_log_event(e, stream=stream, max_message=max_message) for e in events]
    if style == "filter-log-events":
        return orjson.dumps({"events": log_events, "searchedLogStreams": []},
                            option=orjson.OPT_INDENT_2) + b"\n"
    members = [gzip.compress(orjson.dumps(eks_envelope(batch, cluster, stream=stream)), mtime=0)
               for batch in _chunks(log_events, _ENVELOPE_EVENTS)]
    if style == "subscription":
        return b"".join(members)
    datas = [base64.b64encode(m).decode() for m in members]
    if style == "lambda":
        return b"".join(orjson.dumps({"awslogs": {"data": d}}) + b"\n" for d in datas)
    rid = _digest("firehose", cluster, *datas[:1])
    body = {"requestId": f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:32]}",
            "timestamp": max((e["timestamp"] for e in log_events), default=0) + 5000,
            "records": [{"data": d} for d in datas]}
    return orjson.dumps(body) + b"\n"


# --- GKE ------------------------------------------------------------------------------------


def _group_prefix(group: str) -> str:
    """API group → methodName prefix: labels reversed; dotless groups under ``io.k8s``."""
    if not group:
        return "io.k8s.core"
    if "." not in group:
        return "io.k8s." + group
    return ".".join(reversed(group.split(".")))


def gke_method(event: Event) -> str:
    """methodName, e.g. ``io.k8s.core.v1.pods.exec.create`` or ``io.k8s.get``."""
    verb = str(event.get("verb") or "")
    ref = event.get("objectRef")
    if not isinstance(ref, Mapping):
        return f"io.k8s.{verb}"
    parts = [_group_prefix(str(ref.get("apiGroup") or "")), str(ref.get("apiVersion") or "v1"),
             str(ref.get("resource") or "")]
    if ref.get("subresource"):
        parts.append(str(ref["subresource"]))
    return ".".join([*parts, verb])


def gke_resource_name(event: Event) -> str:
    """resourceName, e.g. ``core/v1/namespaces/shop/pods/api-7f9c/exec``; path for others."""
    ref = event.get("objectRef")
    if not isinstance(ref, Mapping):
        return str(event.get("requestURI") or "/").split("?", 1)[0].lstrip("/")
    segs = [str(ref.get("apiGroup") or "core"), str(ref.get("apiVersion") or "v1")]
    resource, name = str(ref.get("resource") or ""), ref.get("name")
    if resource == "namespaces":
        segs.append("namespaces")
        if name or ref.get("namespace"):
            segs.append(str(name or ref.get("namespace")))
    else:
        if ref.get("namespace"):
            segs += ["namespaces", str(ref["namespace"])]
        segs.append(resource)
        if name:
            segs.append(str(name))
    if ref.get("subresource") and len(segs) > 3:
        segs.append(str(ref["subresource"]))
    return "/".join(segs)


def _type_url(body: Any, verb: str) -> str:
    """The ``@type`` GKE adds to a body, from the body's own apiVersion and kind."""
    if not isinstance(body, Mapping) or "kind" not in body:
        return "k8s.io/Patch" if verb == "patch" else "k8s.io/Object"
    group, _, version = str(body.get("apiVersion") or "v1").rpartition("/")
    if not group:
        group = "core.k8s.io"
    elif "." not in group:
        group += ".k8s.io"
    return f"{group}/{version}.{body['kind']}"


def _typed(body: Any, verb: str) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return {"@type": _type_url(body, verb), **body}
    return {"@type": _type_url(body, verb), "value": body}


def _rpc_status(event: Event) -> dict[str, Any]:
    status = event.get("responseStatus")
    status = status if isinstance(status, Mapping) else {}
    code = status.get("code")
    if not isinstance(code, int) or code < 400:
        return {}
    rpc = HTTP_TO_GRPC.get(code, 13 if code >= 500 else 3)
    out: dict[str, Any] = {"code": rpc}
    if status.get("message"):
        out["message"] = status["message"]
    return out


def _long_running(event: Event) -> bool:
    ref = event.get("objectRef")
    sub = ref.get("subresource") if isinstance(ref, Mapping) else None
    return event.get("verb") in ("watch", "proxy") or sub in _LONG_RUNNING_SUBS


def gke_entry(
    event: Event,
    cluster: str,
    project: str = "sim-project",
    location: str = "europe-west1",
    *,
    max_body: int | None = None,
) -> dict[str, Any] | None:
    """The Cloud Logging LogEntry GKE writes for `event`; None for stages GKE never logs.

    Bodies whose JSON exceeds `max_body` bytes are dropped and labelled
    ``audit.k8s.io/truncated``, as GKE does for oversized bodies.
    """
    stage = event.get("stage")
    if stage not in ("ResponseStarted", "ResponseComplete", "Panic"):
        return None
    audit_id = str(event.get("auditID") or "")
    verb = str(event.get("verb") or "")
    method, resource_name = gke_method(event), gke_resource_name(event)
    user = event.get("user")
    user = user if isinstance(user, Mapping) else {}
    imp = event.get("impersonatedUser")
    annotations = event.get("annotations")
    labels = ({str(k): str(v) for k, v in annotations.items()}
              if isinstance(annotations, Mapping) else {})

    auth: dict[str, Any] = {}
    if user.get("username"):
        auth["principalEmail"] = user["username"]
    if isinstance(imp, Mapping) and imp.get("username"):
        auth["authoritySelector"] = imp["username"]
    info: dict[str, Any] = {"permission": method, "resource": resource_name}
    if labels.get("authorization.k8s.io/decision") == "allow":
        info["granted"] = True  # proto3 JSON omits false
    meta: dict[str, Any] = {}
    ips = event.get("sourceIPs")
    if isinstance(ips, list) and ips:
        meta["callerIp"] = ips[0]
    if event.get("userAgent"):
        meta["callerSuppliedUserAgent"] = event["userAgent"]
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": auth,
        "authorizationInfo": [info],
        "methodName": method,
        "requestMetadata": meta,
        "resourceName": resource_name,
        "serviceName": "k8s.io",
        "status": _rpc_status(event),
    }
    for field, key in (("requestObject", "request"), ("responseObject", "response")):
        if field not in event:
            continue
        body = _typed(event[field], verb)
        if max_body is not None and len(orjson.dumps(body)) > max_body:
            labels["audit.k8s.io/truncated"] = "true"
            continue
        payload[key] = body

    when = _time(event)
    stamp = parse_time(when)
    received = micro_time(stamp + timedelta(seconds=2))[:-1] + "000Z" if stamp else when
    operation: dict[str, Any] = {"id": audit_id, "producer": "k8s.io"}
    if stage == "ResponseStarted":
        operation["first"] = True
    elif _long_running(event):
        operation["last"] = True
    else:
        operation.update(first=True, last=True)
    entry: dict[str, Any] = {
        "protoPayload": payload,
        "insertId": audit_id if "first" in operation and "last" in operation
        else _digest(audit_id, str(stage))[:12],
        "resource": {"type": "k8s_cluster", "labels": {
            "cluster_name": cluster, "location": location, "project_id": project}},
        "timestamp": micro_time(stamp) if stamp else when,
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2F"
                   + ("data_access" if verb in _READ_VERBS else "activity"),
        "operation": operation,
        "receiveTimestamp": received,
    }
    if labels:
        entry["labels"] = labels
    if payload["status"]:
        entry["severity"] = "ERROR"
    return entry


def _gke_entries(events: Iterable[Event], cluster: str, project: str, location: str,
                 max_body: int | None) -> Iterator[dict[str, Any]]:
    for event in events:
        entry = gke_entry(event, cluster, project, location, max_body=max_body)
        if entry is not None:
            yield entry


def to_gke(
    events: Iterable[Event],
    cluster: str,
    project: str = "sim-project",
    location: str = "europe-west1",
    *,
    max_body: int | None = None,
) -> bytes:
    """``gcloud logging read --format=json`` output: a pretty-printed array, newest first."""
    entries = list(_gke_entries(events, cluster, project, location, max_body))
    entries.sort(key=lambda e: e["timestamp"], reverse=True)
    return orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n"


def to_gke_lines(
    events: Iterable[Event],
    cluster: str,
    project: str = "sim-project",
    location: str = "europe-west1",
    *,
    max_body: int | None = None,
) -> bytes:
    """A Cloud Storage sink object: one LogEntry per line, in input order."""
    return b"".join(orjson.dumps(e) + b"\n"
                    for e in _gke_entries(events, cluster, project, location, max_body))


# --- AKS ------------------------------------------------------------------------------------


def aks_resource_id(cluster: str, subscription: str = "00000000-0000-0000-0000-000000000000",
                    resource_group: str = "rg-sim") -> str:
    """The ARM id of a managed cluster, upper-cased as diagnostic records carry it."""
    return (f"/SUBSCRIPTIONS/{subscription}/RESOURCEGROUPS/{resource_group}/PROVIDERS/"
            f"MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/{cluster}").upper()


def aks_record(
    event: Event,
    cluster: str,
    *,
    category: str = "kube-audit",
    max_log: int | None = None,
) -> dict[str, Any]:
    """One diagnostic-setting record; `max_log` cuts ``properties.log`` like Azure/AKS#4635."""
    log = _event_json(event) + "\n"
    if max_log is not None and len(log.encode()) > max_log:
        log = log.encode()[:max_log].decode(errors="ignore")
    stamp = parse_time(_time(event))
    # The record time is the collector's, a little after the event; Azure writes 7 digits.
    when = micro_time(stamp + timedelta(microseconds=120))[:-1] + "0Z" if stamp else _time(event)
    pod_hash = _digest("pod", cluster)
    return {
        "time": when,
        "resourceId": aks_resource_id(cluster),
        "category": category,
        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "properties": {
            "log": log,
            "stream": "stdout",
            "pod": f"kube-apiserver-{pod_hash[:10]}-{pod_hash[10:15]}",
            "containerID": _digest("container", cluster),
        },
        "serviceBuild": "na",
    }


def to_aks(events: Iterable[Event], cluster: str, *, max_log: int | None = None) -> bytes:
    """A storage-account ``PT1H.json`` blob: one resource-log record per line."""
    return b"".join(orjson.dumps(aks_record(e, cluster, max_log=max_log)) + b"\n"
                    for e in events)
