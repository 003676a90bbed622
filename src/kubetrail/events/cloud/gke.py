"""Google GKE audit logs: Cloud Logging LogEntries rebuilt into Events (cloud-log-formats.md §2).

GKE never exposes the original Event; each LogEntry carries about fifteen of its fields
under other names. :func:`rebuild` maps them back by the rules of §2.4 and leaves out what
GKE lost (groups, uid, the query string, the second timestamp) rather than inventing it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..decode import Rejected, Shape, excerpt
from ..timeparse import micro_time, parse_time
from .eks import accept, unwrap

if TYPE_CHECKING:
    from ..decode import Decoder, Item

__all__ = ["ENTRY", "GRPC_TO_HTTP", "PUBSUB", "object_ref", "rebuild"]

FORMAT = "gke"
_AUDIT_TYPE = "google.cloud.audit.AuditLog"
_STATUS_TYPE = "core.k8s.io/v1.Status"
_PLACEHOLDER_IPS = frozenset({"private", "gce-internal-ip"})
_UPGRADES = frozenset({"exec", "attach", "portforward"})
_NOT_ANNOTATIONS = frozenset({"cluster_version"})
_log = logging.getLogger(__name__)

#: google.rpc code → HTTP status for entries whose response is not a Status object (§2.4).
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}


def object_ref(method: str, resource_name: str) -> dict[str, str] | None:
    """objectRef from ``resourceName``, disambiguated by ``methodName`` (§2.4 algorithm).

    Without the methodName check ``core/v1/namespaces/foo/status`` (the Namespace's status
    subresource) and ``core/v1/namespaces/foo/pods`` (a list of pods) look alike.
    """
    toks = method.split(".")
    if len(toks) <= 3:  # io.k8s.<verb>: a non-resource request
        return None
    p = resource_name.split("/")
    if len(p) < 2:
        return None
    group = "" if p[0] == "core" else p[0]
    version = p[1]
    mres = msub = None
    for v in range(len(toks) - 2, -1, -1):
        if toks[v] == version:
            mres = toks[v + 1] if v + 1 < len(toks) - 1 else None
            msub = toks[v + 2] if v + 2 < len(toks) - 1 else ""
            break
    namespace = name = sub = ""
    if mres == "namespaces" and len(p) >= 3 and p[2] == "namespaces":
        resource = "namespaces"
        if len(p) > 3:
            name = namespace = p[3]
        sub = p[4] if len(p) > 4 else ""
    elif len(p) >= 5 and p[2] == "namespaces":
        namespace, resource = p[3], p[4]
        name = p[5] if len(p) > 5 else ""
        sub = p[6] if len(p) > 6 else ""
    elif len(p) >= 3:
        resource = p[2]
        name = p[3] if len(p) > 3 else ""
        sub = p[4] if len(p) > 4 else ""
    else:
        resource = mres or ""
    if mres is not None and (resource != mres or sub != msub):
        _log.debug("GKE methodName %s disagrees with resourceName %s; keeping the latter",
                   method, resource_name)
    ref = {"resource": resource, "namespace": namespace, "name": name, "apiGroup": group,
           "apiVersion": version, "subresource": sub}
    return {k: val for k, val in ref.items() if val}


def _request_uri(resource_name: str, ref: dict[str, str] | None, verb: str) -> str:
    """The path upstream would have logged, without the query string GKE dropped."""
    if ref is None:
        return "/" + resource_name
    p = resource_name.split("/")
    prefix = "/api/" + p[1] if p[0] == "core" else f"/apis/{p[0]}/{p[1]}"
    segs = p[2:]
    name = ref.get("name")
    if verb == "create" and name and "subresource" not in ref and segs and segs[-1] == name:
        segs = segs[:-1]  # a create is a POST to the collection
    return "/".join([prefix, *segs])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _without_type(body: Any) -> Any:
    if isinstance(body, dict) and "@type" in body:
        return {k: v for k, v in body.items() if k != "@type"}
    return body


def _response_status(pp: dict[str, Any], verb: str, ref: dict[str, str] | None) -> dict[str, Any]:
    response = pp.get("response")
    if isinstance(response, dict) and (
        response.get("@type") == _STATUS_TYPE or response.get("kind") == "Status"
    ):
        status: dict[str, Any] = {"metadata": {}}
        for key in ("status", "message", "reason", "details", "code"):
            if key in response:
                status[key] = response[key]
        if "code" in status:
            return status
    else:
        status = {"metadata": {}}
    rpc = pp.get("status")
    rpc = rpc if isinstance(rpc, dict) else {}
    grpc = rpc.get("code") or 0
    if grpc == 0:
        sub = ref.get("subresource") if ref else None
        status["code"] = 101 if sub in _UPGRADES else 201 if verb == "create" else 200
        return status
    status["code"] = GRPC_TO_HTTP.get(grpc, 500) if isinstance(grpc, int) else 500
    if len(status) == 2:  # no Status body: say what the gRPC status says
        status["status"] = "Failure"
        if rpc.get("message"):
            status["message"] = rpc["message"]
    return status


def rebuild(entry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The audit.k8s.io/v1 Event a k8s.io LogEntry stands for, and whether GKE cut it."""
    pp = entry["protoPayload"]
    method = _text(pp.get("methodName"))
    resource_name = _text(pp.get("resourceName"))
    verb = method.rsplit(".", 1)[-1]
    op = entry.get("operation")
    op = op if isinstance(op, dict) else {}
    ref = object_ref(method, resource_name)
    auth = pp.get("authenticationInfo")
    auth = auth if isinstance(auth, dict) else {}
    meta = pp.get("requestMetadata")
    meta = meta if isinstance(meta, dict) else {}
    labels = entry.get("labels")
    labels = labels if isinstance(labels, dict) else {}
    stamp = parse_time(entry.get("timestamp"))
    when = micro_time(stamp) if stamp else entry.get("timestamp")

    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse" if "response" in pp
        else "Request" if "request" in pp else "Metadata",
        "auditID": op.get("id") or entry.get("insertId"),
        "stage": "ResponseStarted" if op.get("first") and not op.get("last")
        else "ResponseComplete",
        "requestURI": _request_uri(resource_name, ref, verb),
        "verb": verb,
    }
    username = auth.get("principalEmail") or auth.get("principalSubject")
    event["user"] = {"username": username} if username else {}
    impersonated = auth.get("authoritySelector")
    if impersonated and impersonated != username:
        event["impersonatedUser"] = {"username": impersonated}
    ip = meta.get("callerIp")
    if ip and ip not in _PLACEHOLDER_IPS:
        event["sourceIPs"] = [ip]
    if meta.get("callerSuppliedUserAgent"):
        event["userAgent"] = meta["callerSuppliedUserAgent"]
    if ref is not None:
        if verb == "create" and "name" not in ref:
            response = pp.get("response")
            metadata = response.get("metadata") if isinstance(response, dict) else None
            if isinstance(metadata, dict) and metadata.get("name"):
                ref["name"] = metadata["name"]
        event["objectRef"] = ref
    event["responseStatus"] = _response_status(pp, verb, ref)
    if "request" in pp:
        event["requestObject"] = _without_type(pp["request"])
    if "response" in pp:
        event["responseObject"] = _without_type(pp["response"])
    event["requestReceivedTimestamp"] = when
    event["stageTimestamp"] = when
    annotations = {k: v for k, v in labels.items() if k not in _NOT_ANNOTATIONS}
    if annotations:
        event["annotations"] = annotations
    truncated = labels.get("audit.k8s.io/truncated") not in (None, "false", False)
    return event, truncated


def _is_entry(v: dict[str, Any]) -> bool:
    return "protoPayload" in v


def _decode_entry(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    pp = v["protoPayload"]
    if not isinstance(pp, dict) or not str(pp.get("@type", "")).endswith(_AUDIT_TYPE):
        yield Rejected("LogEntry payload is not a Cloud Audit Log", excerpt(v), skipped=True)
        return
    service = pp.get("serviceName")
    if service != "k8s.io":
        yield Rejected(f"Cloud Audit Log of service {service!r}, not Kubernetes (k8s.io)",
                       excerpt(v), skipped=True)
        return
    event, truncated = rebuild(v)
    resource = v.get("resource")
    labels = resource.get("labels") if isinstance(resource, dict) else None
    cluster = labels.get("cluster_name") if isinstance(labels, dict) else None
    yield accept(event, dec, FORMAT, cluster, "gke-truncated" if truncated else None)


def _is_pubsub(v: dict[str, Any]) -> bool:
    message = v.get("message")
    return isinstance(message, dict) and "data" in message and (
        "subscription" in v or "ackId" in v)


def _decode_pubsub(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    yield from unwrap(v["message"]["data"], dec, FORMAT, "Pub/Sub message")


ENTRY = Shape("gke-entry", FORMAT, _is_entry, _decode_entry,
              "Cloud Logging LogEntry with a k8s.io AuditLog (gcloud, sinks)")
PUBSUB = Shape("gke-pubsub", FORMAT, _is_pubsub, _decode_pubsub,
               "Pub/Sub push body or pulled message holding a LogEntry")
