"""Cascades: the controller, scheduler and kubelet requests that follow one workload change.

A human or CI write that is not followed by dozens of controller writes within seconds looks
fake (cluster-traffic.md §14). These functions schedule the whole chain at once, with the
real actors, verbs, subresources, status codes (201, the odd 409) and bodies.
"""

from __future__ import annotations

from typing import Any

from . import bodies
from .cluster import Cluster, Pod, Workload, add_pod, generated, remove_pod
from .engine import Engine
from .vocab import MIN, SEC, Identity, conflict, oref

_MS = 1000


def _event(eng: Engine, t: int, who: Identity, ns: str, new_api: bool = False) -> None:
    """An Event object written by a component (scheduler uses events.k8s.io)."""
    ref = oref("events", ns, group="events.k8s.io") if new_api else oref("events", ns)
    eng.call(t, who, "create", ref)


def slice_name(w: Workload) -> str:
    return f"{w.name}-{generated(int(w.uid[:8], 16), 5)}"


def endpoints_changed(eng: Engine, cl: Cluster, t: int, w: Workload) -> int:
    """endpointslice-controller and endpoint-controller react to a pod readiness change."""
    ts = eng.ts(t)
    name = slice_name(w)
    ref = oref("endpointslices", w.namespace, name, "discovery.k8s.io")
    eng.call(t + 2 * _MS, cl.who["endpointslice-controller"], "update", ref,
             req=bodies.endpoint_slice(name, w, eng.rv()))
    eng.call(t + 3 * _MS, cl.who["endpoint-controller"], "update",
             oref("endpoints", w.namespace, w.name),
             req={"kind": "Endpoints", "apiVersion": "v1",
                  "metadata": bodies.meta(w.name, w.namespace, rv=eng.rv(), ts=ts),
                  "subsets": [{"addresses": [{"ip": p.ip, "nodeName": p.node.name}
                                             for p in w.pods],
                               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]})
    return t + 10 * _MS


def start_pod(eng: Engine, cl: Cluster, t: int, p: Pod, w: Workload | None) -> int:
    """Scheduler binding, kubelet token, status patches and events; returns the ready time."""
    rng = eng.rng
    ns, kubelet = p.namespace, p.node.kubelet
    t += 4 * _MS + rng.randrange(20 * _MS)
    eng.call(t, cl.who["sched"], "create", oref("pods", ns, p.name, sub="binding"),
             req=bodies.binding(p))
    _event(eng, t + 3 * _MS, cl.who["sched"], ns, new_api=True)
    t += 30 * _MS + rng.randrange(200 * _MS)
    eng.call(t, kubelet, "create", oref("serviceaccounts", ns, p.sa, sub="token"),
             req=bodies.token_request(p.name, p.uid))
    status_ref = oref("pods", ns, p.name, sub="status")
    eng.call(t + 20 * _MS, kubelet, "patch", status_ref,
             req=bodies.pod_status(p, eng.ts(t), "Pending", False))
    pulled = t + SEC + rng.randrange(12 * SEC)
    for i, at in enumerate((t + 40 * _MS, pulled, pulled + 30 * _MS, pulled + 60 * _MS)):
        _event(eng, at + i, kubelet, ns)
    running = pulled + 200 * _MS
    eng.call(running, kubelet, "patch", status_ref,
             req=bodies.pod_status(p, eng.ts(running), "Running", False))
    ready = running + 2 * SEC + rng.randrange(8 * SEC)
    eng.call(ready, kubelet, "patch", status_ref,
             req=bodies.pod_status(p, eng.ts(ready), "Running", True))
    if w is not None:
        endpoints_changed(eng, cl, ready + 5 * _MS, w)
    return ready + 20 * _MS


def stop_pod(eng: Engine, cl: Cluster, t: int, p: Pod, w: Workload | None, who: Identity) -> int:
    """Graceful deletion: controller delete, endpoints update, kubelet final status and delete."""
    ts = eng.ts(t)
    ref = oref("pods", p.namespace, p.name)
    eng.call(t, who, "delete", ref, req=bodies.delete_options(p.uid),
             resp=bodies.pod(p, w, ts, None, uid=p.uid, rv=eng.rv()))
    if w is not None:
        endpoints_changed(eng, cl, t + 5 * _MS, w)
    kubelet = p.node.kubelet
    _event(eng, t + 30 * _MS, kubelet, p.namespace)
    gone = t + 2 * SEC + eng.rng.randrange(25 * SEC)
    eng.call(gone, kubelet, "patch", oref("pods", p.namespace, p.name, sub="status"),
             req=bodies.pod_status(p, eng.ts(gone), "Succeeded", False))
    eng.call(gone + 40 * _MS, kubelet, "delete", ref, req=bodies.delete_options(p.uid, grace=0),
             resp=bodies.pod(p, w, ts, None, uid=p.uid, rv=eng.rv()))
    return gone + 50 * _MS


def _status(eng: Engine, t: int, who: Identity, kind: str, resource: str, name: str, ns: str,
            uid: str, status: dict[str, Any], group: str = "apps", conflict_p: float = 0.0) -> int:
    """A controller's status update, sometimes losing an optimistic-concurrency race first."""
    ref = oref(resource, ns, name, group, sub="status")
    api = f"{group}/v1" if group else "v1"
    if eng.rng.random() < conflict_p:
        eng.call(t, who, "update", ref, code=409, status=conflict(resource, name, group),
                 req=bodies.status_update(kind, api, name, ns, uid, eng.rv(), status))
        t += 15 * _MS + eng.rng.randrange(40 * _MS)
    body = bodies.status_update(kind, api, name, ns, uid, eng.rv(), status)
    return eng.call(t, who, "update", ref, req=body)


def rollout(eng: Engine, cl: Cluster, t: int, w: Workload) -> int:
    """Roll a Deployment to a new image: new ReplicaSet, surge one pod at a time, retire old ones.

    Updates the inventory at once (new hash, new pods) so later requests name live pods.
    """
    rng = eng.rng
    dc, rsc = cl.who["deployment-controller"], cl.who["replicaset-controller"]
    old_pods, old_rs = list(w.pods), w.rs_name
    w.rs_hash = generated(rng.getrandbits(64), len(w.rs_hash))
    t += 3 * _MS + rng.randrange(10 * _MS)
    ts = eng.ts(t)
    rs_uid = eng.uuid()
    eng.call(t, dc, "create", oref("replicasets", w.namespace, group="apps"),
             rc_ref=oref("replicasets", w.namespace, w.rs_name, "apps"),
             req=bodies.replicaset(w, ts), resp=bodies.replicaset(w, ts, rs_uid, eng.rv()))
    _event(eng, t + 4 * _MS, dc, w.namespace)
    _status(eng, t + 8 * _MS, dc, "Deployment", "deployments", w.name, w.namespace, w.uid,
            {"observedGeneration": w.tag, "replicas": w.replicas + 1}, conflict_p=0.35)
    owner = bodies.owner("ReplicaSet", w.rs_name, rs_uid)
    cursor = t + 20 * _MS
    for i in range(w.replicas):
        node = cl.workers[(cl.workers.index(old_pods[i].node) + 1) % len(cl.workers)] \
            if i < len(old_pods) else cl.workers[i % len(cl.workers)]
        p = add_pod(cl, eng, w, node)
        pts = eng.ts(cursor)
        eng.call(cursor, rsc, "create", oref("pods", w.namespace),
                 rc_ref=oref("pods", w.namespace, p.name),
                 req=bodies.pod(p, w, "", owner), resp=bodies.pod(p, w, pts, owner, uid=p.uid,
                                                                  rv=eng.rv()),
                 ann=with_psa(rsc.allow))
        ready = start_pod(eng, cl, cursor, p, w)
        _status(eng, ready, rsc, "ReplicaSet", "replicasets", w.rs_name, w.namespace, rs_uid,
                {"replicas": i + 1, "readyReplicas": i + 1}, conflict_p=0.1)
        if i < len(old_pods):
            old = old_pods[i]
            remove_pod(w, old)
            scale = oref("replicasets", w.namespace, old_rs, "apps")
            body = {"kind": "ReplicaSet", "apiVersion": "apps/v1",
                    "metadata": {"name": old_rs, "namespace": w.namespace,
                                 "resourceVersion": eng.rv()},
                    "spec": {"replicas": len(old_pods) - i - 1}}
            eng.call(ready + 5 * _MS, dc, "update", scale, req=body,
                     resp={**body, "status": {"replicas": len(old_pods) - i}})
            stop_pod(eng, cl, ready + 12 * _MS, old, w, rsc)
        cursor = ready + 30 * _MS
    for old in old_pods[w.replicas:]:
        remove_pod(w, old)
        stop_pod(eng, cl, cursor, old, w, rsc)
    return _status(eng, cursor + 10 * _MS, dc, "Deployment", "deployments", w.name, w.namespace,
                   w.uid, {"observedGeneration": w.tag + 1, "replicas": w.replicas,
                           "updatedReplicas": w.replicas, "readyReplicas": w.replicas},
                   conflict_p=0.3)


def with_psa(base: dict[str, str], level: str = "restricted:latest") -> dict[str, str]:
    """Pod writes also carry Pod Security's enforce-policy annotation."""
    return {**base, "pod-security.kubernetes.io/enforce-policy": level}


def cron_run(eng: Engine, cl: Cluster, t: int, ns: str, name: str, cj_uid: str) -> None:
    """One CronJob tick: Job, pod, run to completion, status, old Job cleanup."""
    rng = eng.rng
    cjc, jc = cl.who["cronjob-controller"], cl.who["job-controller"]
    job = f"{name}-{t // MIN}"
    ts = eng.ts(t)
    job_uid = eng.uuid()
    t += 60 * _MS + rng.randrange(400 * _MS)
    eng.call(t, cjc, "create", oref("jobs", ns, group="batch"), rc_ref=oref("jobs", ns, job, "batch"),
             req=bodies.job(job, ns, name, cj_uid, ""),
             resp=bodies.job(job, ns, name, cj_uid, ts, job_uid, eng.rv()))
    _event(eng, t + 3 * _MS, cjc, ns)
    _status(eng, t + 6 * _MS, cjc, "CronJob", "cronjobs", name, ns, cj_uid,
            {"active": [{"kind": "Job", "name": job, "namespace": ns}],
             "lastScheduleTime": bodies.when(ts)}, group="batch")
    node = cl.workers[rng.randrange(len(cl.workers))]
    p = Pod(f"{job}-{generated(rng.getrandbits(32), 5)}", ns, eng.uuid(), node, cl.pod_ip(node),
            "default", name)
    t += 15 * _MS
    job_owner = bodies.owner("Job", job, job_uid, "batch/v1")
    spec = bodies.job(job, ns, name, cj_uid, "")["spec"]["template"]["spec"]
    eng.call(t, jc, "create", oref("pods", ns), rc_ref=oref("pods", ns, p.name),
             req=bodies.pod(p, None, "", job_owner, spec=spec),
             resp=bodies.pod(p, None, eng.ts(t), job_owner, uid=p.uid, rv=eng.rv(), spec=spec),
             ann=with_psa(jc.allow))
    ready = start_pod(eng, cl, t, p, None)
    done = ready + 20 * SEC + rng.randrange(70 * SEC)
    eng.call(done, node.kubelet, "patch", oref("pods", ns, p.name, sub="status"),
             req=bodies.pod_status(p, eng.ts(done), "Succeeded", False))
    _status(eng, done + 40 * _MS, jc, "Job", "jobs", job, ns, job_uid,
            {"succeeded": 1, "completionTime": bodies.when(eng.ts(done))}, group="batch",
            conflict_p=0.2)
    _event(eng, done + 45 * _MS, jc, ns)
    old = f"{name}-{t // MIN - 3 * 15}"
    eng.call(done + SEC, cjc, "delete", oref("jobs", ns, old, "batch"),
             req=bodies.delete_options(propagation="Background"),
             resp={"kind": "Job", "apiVersion": "batch/v1",
                   "metadata": bodies.meta(old, ns, ts=ts), "status": {"succeeded": 1}})
    gone = Pod(f"{old}-{generated(rng.getrandbits(32), 5)}", ns, eng.uuid(), node, p.ip,
               "default", name)
    eng.call(done + SEC + 30 * _MS, cl.who["generic-garbage-collector"], "delete",
             oref("pods", ns, gone.name), req=bodies.delete_options(propagation="Background"),
             resp=bodies.pod(gone, None, ts, None, uid=gone.uid, rv=eng.rv(), spec=spec))
