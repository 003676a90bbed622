"""Small, realistic request/response bodies for the events the policy logs with bodies.

Bodies are what detections look into (privileged containers, hostPath volumes, roleRefs), so
they use the real field names and nesting. They stay small and never carry secret material:
anything that would be a credential is an obvious placeholder.
"""

from __future__ import annotations

from typing import Any

from .cluster import Pod, Workload


def when(ts: str) -> str:
    """Object timestamps are RFC 3339 with second precision (``metav1.Time``)."""
    return ts[:19] + "Z"


def meta(name: str, namespace: str = "", *, uid: str = "", rv: str = "", ts: str = "",
         labels: dict[str, str] | None = None, owner: dict[str, Any] | None = None,
         generate: str = "") -> dict[str, Any]:
    """ObjectMeta in API field order, empty fields left out."""
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if generate:
        out["generateName"] = generate
    if namespace:
        out["namespace"] = namespace
    if uid:
        out["uid"] = uid
    if rv:
        out["resourceVersion"] = rv
    out["creationTimestamp"] = when(ts) if ts else None
    if labels:
        out["labels"] = labels
    if owner:
        out["ownerReferences"] = [owner]
    return out


def owner(kind: str, name: str, uid: str, api: str = "apps/v1") -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def container(w: Workload) -> dict[str, Any]:
    return {"name": "app", "image": f"{w.image}:1.{w.tag}.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "envFrom": [{"configMapRef": {"name": f"{w.name}-config"}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"memory": "256Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}}}


def pod_template(w: Workload) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": None, "labels": {"app": w.name}},
            "spec": {"serviceAccountName": w.name, "containers": [container(w)],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30}}


def deployment_patch(w: Workload) -> dict[str, Any]:
    """What ``kubectl apply`` sends when only the image changed (client-side apply)."""
    return {"spec": {"template": {"spec": {"containers": [{"image": f"{w.image}:1.{w.tag}.0",
                                                           "name": "app"}]}}}}


def deployment(w: Workload, ts: str, rv: str, generation: int) -> dict[str, Any]:
    return {"kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {**meta(w.name, w.namespace, uid=w.uid, rv=rv, ts=ts,
                                labels={"app": w.name}), "generation": generation},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": {"app": w.name}},
                     "template": pod_template(w),
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}},
            "status": {"observedGeneration": generation - 1, "replicas": w.replicas,
                       "readyReplicas": w.replicas}}


def replicaset(w: Workload, ts: str, uid: str = "", rv: str = "", replicas: int = 1) -> dict[str, Any]:
    m = meta(w.rs_name, w.namespace, uid=uid, rv=rv, ts=ts,
             labels={"app": w.name, "pod-template-hash": w.rs_hash},
             owner=owner("Deployment", w.name, w.uid))
    return {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": m,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": w.name}},
                     "template": pod_template(w)},
            "status": {"replicas": 0}}


def pod(p: Pod, w: Workload | None, ts: str, owner_ref: dict[str, Any] | None, *, uid: str = "",
        rv: str = "", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Pod as created by a controller (``w`` given) or from a custom ``spec``."""
    labels = {"app": p.app}
    if w is not None:
        labels["pod-template-hash"] = w.rs_hash
    m = meta(p.name, p.namespace, uid=uid, rv=rv, ts=ts, labels=labels, owner=owner_ref)
    s = spec if spec is not None else pod_template(w)["spec"] if w is not None else {}
    out: dict[str, Any] = {"kind": "Pod", "apiVersion": "v1", "metadata": m, "spec": s}
    out["status"] = {"phase": "Pending", "qosClass": "Burstable"} if uid else {}
    return out


def delete_options(pod_uid: str = "", grace: int | None = None, propagation: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if grace is not None:
        out["gracePeriodSeconds"] = grace
    if pod_uid:
        out["preconditions"] = {"uid": pod_uid}
    if propagation:
        out["propagationPolicy"] = propagation
    return out


def binding(p: Pod) -> dict[str, Any]:
    return {"kind": "Binding", "apiVersion": "v1",
            "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid,
                         "creationTimestamp": None},
            "target": {"kind": "Node", "name": p.node.name}}


def token_request(pod_name: str, pod_uid: str, seconds: int = 3607,
                  audiences: tuple[str, ...] = ("https://kubernetes.default.svc.cluster.local",)
                  ) -> dict[str, Any]:
    """A TokenRequest body; the response (which holds the token) is never logged."""
    spec: dict[str, Any] = {"audiences": list(audiences), "expirationSeconds": seconds}
    if pod_name:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod_name,
                                  "uid": pod_uid}
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec,
            "status": {"token": "", "expirationTimestamp": None}}


def pod_status(p: Pod, ts: str, phase: str, ready: bool) -> dict[str, Any]:
    """The strategic-merge patch a kubelet sends to ``pods/<p>/status``."""
    t = when(ts)
    conds = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": t},
             {"type": "ContainersReady", "status": "True" if ready else "False",
              "lastTransitionTime": t}]
    status: dict[str, Any] = {"$setElementOrder/conditions": [{"type": c["type"]} for c in conds],
                              "conditions": conds, "phase": phase}
    if phase != "Pending":
        status["podIP"] = p.ip
        status["podIPs"] = [{"ip": p.ip}]
    return {"metadata": {"uid": p.uid}, "status": status}


def node_status(ts: str) -> dict[str, Any]:
    t = when(ts)
    kinds = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
    return {"status": {"$setElementOrder/conditions": [{"type": k} for k in kinds],
                       "conditions": [{"lastHeartbeatTime": t, "type": k} for k in kinds]}}


def status_update(kind: str, api: str, name: str, namespace: str, uid: str, rv: str,
                  status: dict[str, Any]) -> dict[str, Any]:
    """An update of a ``/status`` subresource (controllers PUT the whole object)."""
    return {"kind": kind, "apiVersion": api,
            "metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "resourceVersion": rv, "creationTimestamp": None},
            "status": status}


def endpoint_slice(name: str, w: Workload, rv: str) -> dict[str, Any]:
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "namespace": w.namespace, "resourceVersion": rv,
                         "creationTimestamp": None,
                         "labels": {"kubernetes.io/service-name": w.name,
                                    "endpointslice.kubernetes.io/managed-by":
                                        "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                           "nodeName": p.node.name,
                           "targetRef": {"kind": "Pod", "namespace": p.namespace, "name": p.name,
                                         "uid": p.uid}} for p in w.pods],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}


def job(name: str, namespace: str, cronjob: str, cronjob_uid: str, ts: str, uid: str = "",
        rv: str = "") -> dict[str, Any]:
    o = owner("CronJob", cronjob, cronjob_uid, "batch/v1")
    return {"kind": "Job", "apiVersion": "batch/v1",
            "metadata": meta(name, namespace, uid=uid, rv=rv, ts=ts,
                             labels={"app": cronjob}, owner=o),
            "spec": {"backoffLimit": 2, "template": {
                "metadata": {"creationTimestamp": None, "labels": {"app": cronjob}},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "report", "image": f"registry.example.com/{namespace}/report:2.4.1",
                    "args": ["--since=15m"]}]}}},
            "status": {}}


def cluster_role_binding(name: str, role: str, subjects: list[dict[str, str]], ts: str = "",
                         uid: str = "", rv: str = "") -> dict[str, Any]:
    return {"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": meta(name, uid=uid, rv=rv, ts=ts),
            "subjects": subjects,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role}}


def app_status(app: str, ts: str, revision: str) -> dict[str, Any]:
    """Argo CD's merge patch of an Application's status after a resync."""
    return {"status": {"reconciledAt": when(ts),
                       "sync": {"status": "Synced", "revision": revision},
                       "health": {"status": "Healthy"}},
            "metadata": {"name": app}}
