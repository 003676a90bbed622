"""Builders for the identities that appear in audit events, with their authorizer fingerprints.

The exact texts matter to detections and to people reading the log: RBAC allows carry a long
reason naming the binding, the Node authorizer and ``system:masters`` give an empty reason,
service accounts carry their groups and (for projected tokens) the pod they are bound to.
"""

from __future__ import annotations

from typing import Any

from .vocab import Identity

AUTHENTICATED = "system:authenticated"


def allow(reason: str) -> dict[str, str]:
    """Annotations of an allowed request (keys sorted, as Go writes map keys)."""
    return {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": reason}


def _discovery() -> dict[str, str]:
    return allow(crb("system:discovery", "system:discovery", "Group", AUTHENTICATED))


def crb(binding: str, role: str, kind: str, subject: str) -> str:
    """RBAC reason for a ClusterRoleBinding; ``kind`` is User, Group or ServiceAccount."""
    return f'RBAC: allowed by ClusterRoleBinding "{binding}" of ClusterRole "{role}" to {kind} "{subject}"'


DISCOVERY = _discovery()
"""Annotations of an allowed discovery request (``/api``, ``/apis``, ``/version``)."""


def rb(binding: str, namespace: str, role: str, kind: str, subject: str, cluster_role: bool = True) -> str:
    """RBAC reason for a RoleBinding (namespaced), bound to a ClusterRole or a Role."""
    role_kind = "ClusterRole" if cluster_role else "Role"
    return (f'RBAC: allowed by RoleBinding "{binding}/{namespace}" of {role_kind} "{role}" '
            f'to {kind} "{subject}"')


def client_ua(binary: str, version: str, commit: str, suffix: str = "", os_arch: str = "linux/amd64") -> str:
    """client-go's default user agent, ``<binary>/<version> (<os>/<arch>) kubernetes/<sha>``."""
    ua = f"{binary}/{version} ({os_arch}) kubernetes/{commit}"
    return f"{ua}/{suffix}" if suffix else ua


def user(username: str, groups: list[str], uid: str = "",
         extra: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A UserInfo block in field order with empty fields omitted."""
    out: dict[str, Any] = {"username": username}
    if uid:
        out["uid"] = uid
    out["groups"] = groups
    if extra:
        out["extra"] = dict(sorted(extra.items()))
    return out


def service_account(
    namespace: str, name: str, uid: str, ua: str, ip: str, reason: str,
    bound: dict[str, str] | None = None,
) -> Identity:
    """A service-account caller; ``bound`` holds the projected token's pod/node claims (1.30+)."""
    extra = None
    if bound:
        extra = {f"authentication.kubernetes.io/{k}": [v] for k, v in bound.items()}
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED]
    u = user(f"system:serviceaccount:{namespace}:{name}", groups, uid, extra)
    return Identity(u, [ip], ua, allow(reason))


def pod_claims(jti: str, node: str, node_uid: str, pod: str, pod_uid: str) -> dict[str, str]:
    """Claims of a pod-bound projected token as they appear in ``user.extra``."""
    return {"credential-id": f"JTI={jti}", "node-name": node, "node-uid": node_uid,
            "pod-name": pod, "pod-uid": pod_uid}


def node(name: str, ip: str, ua: str) -> Identity:
    """A kubelet: Node authorizer allows, so the reason is empty."""
    return Identity(user(f"system:node:{name}", ["system:nodes", AUTHENTICATED]), [ip], ua,
                    allow(""))


def system_component(username: str, ua: str, ip: str) -> Identity:
    """``system:kube-controller-manager`` / ``system:kube-scheduler`` with their bootstrap binding."""
    role = username
    return Identity(user(username, [AUTHENTICATED]), [ip], ua,
                    allow(crb(role, role, "User", username)))


def loopback(uid: str, ua: str) -> Identity:
    """The API server talking to itself over loopback (``system:masters``: empty reason)."""
    return Identity(user("system:apiserver", [AUTHENTICATED, "system:masters"], uid), ["::1"], ua,
                    allow(""))


def anonymous_probe(ip: str, minor: str) -> Identity:
    """kubelet's HTTP probe of the static API server pod (anonymous, public-info-viewer)."""
    reason = crb("system:public-info-viewer", "system:public-info-viewer", "Group",
                 "system:unauthenticated")
    return Identity(user("system:anonymous", ["system:unauthenticated"]), [ip],
                    f"kube-probe/{minor}", allow(reason))


def controller(sa: str, uid: str, kcm_ua: str, ip: str, jti: str) -> Identity:
    """A kube-controller-manager controller writing with its own service account."""
    reason = crb(f"system:controller:{sa}", f"system:controller:{sa}", "ServiceAccount",
                 f"{sa}/kube-system")
    ident = service_account("kube-system", sa, uid, f"{kcm_ua}/system:serviceaccount:kube-system:{sa}",
                            ip, reason, {"credential-id": f"JTI={jti}"})
    return ident
