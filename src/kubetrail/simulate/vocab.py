"""What simulated audit events are made of: levels, statuses, objectRefs, paths, identities.

The simulated cluster's audit policy lives here too (:func:`level_for`), written as code so it
costs nothing per event. All values follow the API server's formats exactly (field order,
Status wording, Go duration text), because that is what parsers and detections key on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

API_VERSION = "audit.k8s.io/v1"
META, REQUEST, REQRESP = "Metadata", "Request", "RequestResponse"
SEC = 1_000_000
MIN = 60 * SEC
DAY_US = 86_400 * SEC

STATUS: dict[int, dict[str, Any]] = {c: {"metadata": {}, "code": c} for c in (101, 200, 201, 304)}
FORBID: dict[str, str] = {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
READS = frozenset({"get", "list", "watch"})
_META_RESOURCES = frozenset(
    {"secrets", "configmaps", "tokenreviews", "subjectaccessreviews",
     "selfsubjectaccessreviews", "leases", "events"}
)
_STREAMS = frozenset({"exec", "attach", "portforward", "log", "proxy"})
_BODY_GROUPS = {
    "": frozenset({"pods", "services"}),
    "apps": frozenset({"deployments", "replicasets", "statefulsets", "daemonsets"}),
    "batch": frozenset({"jobs", "cronjobs"}),
}


def level_for(verb: str, group: str, resource: str, sub: str = "") -> str:
    """The simulated cluster's audit policy, written as code so it costs nothing per event.

    Reads and sensitive or noisy kinds stay at Metadata (bodies of secrets and tokens must never
    be logged), writes to RBAC and workload objects keep both bodies (what detections inspect),
    and every other write keeps its request body. TokenRequests log the request (audiences,
    expiry) but never the response, which holds the token.
    """
    if verb in READS or resource in _META_RESOURCES or sub in _STREAMS:
        return META
    if sub:
        return REQUEST
    if group == "rbac.authorization.k8s.io" or resource in _BODY_GROUPS.get(group, ()):
        return REQRESP
    return REQUEST


def go_duration(us: int) -> str:
    """Format like Go's ``time.Duration.String`` (``7m3s``, ``35.68s``, ``1.15ms``)."""
    if us < 1000:
        return f"{us}µs"
    if us < SEC:
        return f"{us / 1000:.3f}".rstrip("0").rstrip(".") + "ms"
    m, s = divmod(us, MIN)
    h, m = divmod(m, 60)
    frac = f"{s / SEC:.6f}".rstrip("0").rstrip(".")
    if h:
        return f"{h}h{m}m{frac}s"
    return f"{m}m{frac}s" if m else f"{frac}s"


def latency_annotations(total_us: int, base: dict[str, str]) -> dict[str, str]:
    """Slow requests (>500 ms) get the API server's latency-tracker annotations."""
    out = dict(base)
    out["apiserver.latency.k8s.io/etcd"] = go_duration(900 + total_us % 700)
    out["apiserver.latency.k8s.io/response-write"] = go_duration(3 + total_us % 11)
    out["apiserver.latency.k8s.io/total"] = go_duration(total_us)
    return dict(sorted(out.items()))


@dataclass(slots=True)
class Identity:
    """Who sends a request: the audit ``user`` block plus where it comes from and as what.

    ``allow`` is the annotation map the authorizer attaches when it allows this caller (an
    RBAC reason, or an empty reason for the Node authorizer and ``system:masters``).
    """

    user: dict[str, Any]
    ips: list[str]
    ua: str
    allow: dict[str, str]

    @property
    def username(self) -> str:
        return str(self.user.get("username", ""))


def oref(
    resource: str, namespace: str = "", name: str = "", group: str = "", version: str = "v1",
    sub: str = "", uid: str = "", rv: str = "",
) -> dict[str, str]:
    """An audit objectRef with the API server's field order and empty fields omitted."""
    out = {"resource": resource, "namespace": namespace, "name": name, "uid": uid,
           "apiGroup": group, "apiVersion": version, "resourceVersion": rv, "subresource": sub}
    return {k: v for k, v in out.items() if v}


def path_of(ref: dict[str, str], named: bool = True) -> str:
    """The request path for an objectRef (``named=False`` for collection requests)."""
    group = ref.get("apiGroup")
    base = f"/apis/{group}/{ref.get('apiVersion', 'v1')}" if group else "/api/v1"
    ns = ref.get("namespace")
    if ns and ref["resource"] != "namespaces":
        base += f"/namespaces/{ns}"
    base += "/" + ref["resource"]
    name = ref.get("name")
    if name and named:
        base += "/" + name
        if "subresource" in ref:
            base += "/" + ref["subresource"]
    return base


def forbidden(
    username: str, verb: str, resource: str, group: str = "", namespace: str = "", name: str = "",
) -> dict[str, Any]:
    """The Status an RBAC denial returns, worded exactly like the API server."""
    what = f'{resource} "{name}"' if name else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    details: dict[str, str] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    return {"metadata": {}, "status": "Failure",
            "message": f'{what} is forbidden: User "{username}" cannot {verb} resource '
                       f'"{resource}" in API group "{group}"{where}',
            "reason": "Forbidden", "details": details, "code": 403}


def not_found(resource: str, name: str, group: str = "") -> dict[str, Any]:
    """The Status of a 404 on a named object."""
    kind = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {
        "name": name, "kind": resource}
    return {"metadata": {}, "status": "Failure", "message": f'{kind} "{name}" not found',
            "reason": "NotFound", "details": details, "code": 404}


def conflict(resource: str, name: str, group: str = "") -> dict[str, Any]:
    """The Status of an optimistic-concurrency conflict (409), common for controllers."""
    kind = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {
        "name": name, "kind": resource}
    return {"metadata": {}, "status": "Failure",
            "message": f'Operation cannot be fulfilled on {kind} "{name}": the object has been '
                       "modified; please apply your changes to the latest version and try again",
            "reason": "Conflict", "details": details, "code": 409}
