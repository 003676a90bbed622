"""Background traffic: heartbeats, probes, informer watches and add-on chatter.

This is ~99 % of a real audit stream (cluster-traffic.md §3). Each source is a closure that
issues its request and re-schedules itself with the jitter the real client uses; first runs
are phase-shifted at random so sources do not tick in lock-step. Periods are the defaults of
the components (``Profile`` holds the ones worth turning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import bodies
from .cluster import Cluster, Node
from .engine import Engine, Event, Template
from .identity import DISCOVERY
from .vocab import MIN, SEC, Identity, go_duration, oref, path_of
from .workload import cron_run


@dataclass(frozen=True, slots=True)
class Profile:
    """Periods of the periodic sources, in seconds; mostly the components' own defaults.

    Two knobs are set for a calibrated stream (~290k events/day for 5 nodes, leases ~48 %):
    ``readyz`` is 10 s where kubeadm probes every 1 s, and ``heartbeat_request_received`` is
    False because the simulated policy, like many production ones, omits the RequestReceived
    stage for leases and health probes (half the stream otherwise, for no information).
    """

    node_lease: float = 10.0
    leader_retry: float = 2.0
    apiserver_lease: float = 10.0
    readyz: float = 10.0
    livez: float = 10.0
    reconcile: float = 10.0
    node_status: float = 300.0
    token_refresh: float = 2886.0
    argocd_resync: float = 180.0
    discovery: float = 60.0
    heartbeat_request_received: bool = False


Source = Callable[[int], Event | None]
_SETTLE = 20_000  # first runs start 20 ms in, so no request is received before the start
_RV0 = "allowWatchBookmarks=true"
_TIMEOUTS = {s: f"timeout={go_duration(s * SEC)}&timeoutSeconds={s}&watch=true"
             for s in range(300, 600)}
_KCM_TYPES = (
    ("pods", ""), ("nodes", ""), ("namespaces", ""), ("services", ""), ("endpoints", ""),
    ("configmaps", ""), ("secrets", ""), ("serviceaccounts", ""), ("persistentvolumes", ""),
    ("persistentvolumeclaims", ""), ("resourcequotas", ""), ("limitranges", ""),
    ("replicationcontrollers", ""), ("podtemplates", ""), ("endpointslices", "discovery.k8s.io"),
    ("deployments", "apps"), ("replicasets", "apps"), ("daemonsets", "apps"),
    ("statefulsets", "apps"), ("controllerrevisions", "apps"), ("jobs", "batch"),
    ("cronjobs", "batch"), ("horizontalpodautoscalers", "autoscaling"),
    ("poddisruptionbudgets", "policy"), ("leases", "coordination.k8s.io"),
    ("certificatesigningrequests", "certificates.k8s.io"), ("storageclasses", "storage.k8s.io"),
    ("csinodes", "storage.k8s.io"), ("csidrivers", "storage.k8s.io"),
    ("volumeattachments", "storage.k8s.io"), ("clusterroles", "rbac.authorization.k8s.io"),
    ("ingresses", "networking.k8s.io"),
)
_META_TYPES = (
    ("roles", "rbac.authorization.k8s.io"), ("rolebindings", "rbac.authorization.k8s.io"),
    ("networkpolicies", "networking.k8s.io"), ("applications", "argoproj.io"),
    ("ippools", "crd.projectcalico.org"),
)
_SCHED_TYPES = (
    ("nodes", ""), ("namespaces", ""), ("services", ""), ("persistentvolumes", ""),
    ("persistentvolumeclaims", ""), ("replicationcontrollers", ""),
    ("replicasets", "apps"), ("statefulsets", "apps"), ("poddisruptionbudgets", "policy"),
    ("storageclasses", "storage.k8s.io"), ("csinodes", "storage.k8s.io"),
    ("csidrivers", "storage.k8s.io"), ("csistoragecapacities", "storage.k8s.io"),
)
_ARGO_TYPES = (
    ("applications", "argoproj.io"), ("appprojects", "argoproj.io"), ("pods", ""),
    ("services", ""), ("configmaps", ""), ("deployments", "apps"), ("replicasets", "apps"),
    ("statefulsets", "apps"), ("jobs", "batch"), ("cronjobs", "batch"),
    ("ingresses", "networking.k8s.io"),
)
_VERSIONS = {"argoproj.io": "v1alpha1", "autoscaling": "v2"}
_NOT_HEADLESS = ("labelSelector=%21service.kubernetes.io%2Fheadless%2C"
                 "%21service.kubernetes.io%2Fservice-proxy-name")


def watch(eng: Engine, who: Identity, resource: str, group: str = "", namespace: str = "",
          *, field: str = "", label: str = "", name: str = "") -> None:
    """An informer's watch: 300–599 s long, then re-established at once (forever)."""
    ref = oref(resource, namespace, name, group, _VERSIONS.get(group, "v1"))
    query = _RV0 + (f"&fieldSelector={field}" if field else "") + (f"&{label}" if label else "")
    prefix = f"{path_of(ref, named=False)}?{query}&resourceVersion="
    tpl = Template(eng, who, "watch", prefix, ref)
    rng = eng.rng

    def fire(t: int) -> Event | None:
        secs = 300 + rng.randrange(300)
        end = t + secs * SEC + rng.randrange(3000)
        eng.at(end + 500 + rng.randrange(30_000), fire)
        return tpl.emit(t, end, f"{prefix}{eng.rv_now()}&{_TIMEOUTS[secs]}", long=True, now=True)

    eng.at(eng.start + rng.randrange(599 * SEC), fire)


def every(eng: Engine, period_s: float, fn: Source, jitter: float = 0.0) -> None:
    """Run ``fn`` every ``period_s`` seconds (stretched by up to ``jitter``), phase-shifted."""
    period = int(period_s * SEC)

    def fire(t: int) -> Event | None:
        eng.at(t + (eng.jitter(period, jitter) if jitter else period), fire)
        return fn(t)

    eng.at(eng.start + _SETTLE + eng.rng.randrange(period), fire)


def _lease(eng: Engine, who: Identity, ns: str, name: str, timeout: str, omit_rr: bool,
           period_s: float, jitter: float = 0.0) -> None:
    """Renew a lease every ``period_s`` (optimistic PUT: client-go's leader-election fast path).

    The hottest source of all (half the stream), hence self-scheduling, no helpers, and (when
    RequestReceived is omitted) firing at completion time so its one event needs no queueing.
    """
    group = "coordination.k8s.io"
    uri = f"/apis/{group}/v1/namespaces/{ns}/leases/{name}?timeout={timeout}"
    tpl = Template(eng, who, "update", uri, oref("leases", ns, name, group), omit_rr=omit_rr)
    ref = oref("leases", ns, name, group, uid=eng.uuid(), rv="0")
    period = int(period_s * SEC)
    stretch = period * jitter
    rand, emit, fast, at, rv = eng.rng.random, tpl.emit, eng.fast, eng.at, eng.rv

    finish = tpl.finish

    def fire(t: int) -> Event | None:
        r = ref.copy()
        r["resourceVersion"] = rv()
        at(t + period + int(stretch * rand()), fire)
        if omit_rr:
            return finish(t - fast(), t, r)
        return emit(t, t + fast(), "", r, False, True)

    at(eng.start + _SETTLE + eng.rng.randrange(period), fire)


def install(eng: Engine, cl: Cluster, prof: Profile) -> None:
    """Register every background source of ``cl`` on ``eng``."""
    omit = not prof.heartbeat_request_received
    _control_plane(eng, cl, prof, omit)
    for node in cl.nodes:
        _kubelet(eng, cl, node, prof, omit)
        _node_agents(eng, cl, node)
    _addons(eng, cl, prof)


def _control_plane(eng: Engine, cl: Cluster, prof: Profile, omit: bool) -> None:
    w = cl.who
    _lease(eng, w["kcm-le"], "kube-system", "kube-controller-manager", "5s", omit,
           prof.leader_retry, 0.02)
    _lease(eng, w["sched-le"], "kube-system", "kube-scheduler", "5s", omit, prof.leader_retry,
           0.02)
    for n in cl.control_plane[1:]:
        # Standby replicas poll the lock every retry period without renewing it.
        for lock, le in (("kube-controller-manager", "kcm-le"), ("kube-scheduler", "sched-le")):
            standby = Identity(w[le].user, [n.ip], w[le].ua, w[le].allow)
            uri = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lock}?timeout=5s"
            ref = oref("leases", "kube-system", lock, "coordination.k8s.io")
            tpl = Template(eng, standby, "get", uri, ref, omit_rr=omit)
            every(eng, prof.leader_retry, _poll(eng, tpl, omit), 0.02)
    api = w["apiserver"]
    for n in cl.control_plane:
        server_id = f"apiserver-{eng.uuid().replace('-', '')[:26]}"
        _lease(eng, api, "kube-system", server_id, "10s", omit, prof.apiserver_lease)
        probe = w[f"probe:{n.name}"]
        for path, period in (("/readyz", prof.readyz), ("/livez", prof.livez)):
            every(eng, period, _probe(eng, probe, path, omit))
    every(eng, prof.reconcile, _get(eng, api, "/api/v1/namespaces/default/services/kubernetes",
                                    oref("services", "default", "kubernetes")))
    for resource, group in _KCM_TYPES:
        watch(eng, w["kcm"], resource, group)
    for resource, group in _META_TYPES:
        watch(eng, w["kcm-meta"], resource, group)
    phase_filter = "status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed"
    watch(eng, w["sched"], "pods", field=phase_filter)
    for resource, group in _SCHED_TYPES:
        watch(eng, w["sched"], resource, group)
    for sa in ("generic-garbage-collector", "resourcequota-controller"):
        every(eng, prof.discovery, _discovery(eng, w[sa]))


def _probe(eng: Engine, who: Identity, path: str, omit: bool) -> Source:
    tpl = Template(eng, who, "get", path, None, omit_rr=omit)
    if omit:
        return lambda t: tpl.finish(t - eng.tiny(), t)
    return lambda t: tpl.emit(t, t + eng.tiny(), now=True)


def _poll(eng: Engine, tpl: Template, omit: bool) -> Source:
    if omit:
        return lambda t: tpl.finish(t - eng.fast(), t)
    return lambda t: tpl.emit(t, t + eng.fast(), now=True)


def _get(eng: Engine, who: Identity, uri: str, ref: dict[str, str] | None) -> Source:
    tpl = Template(eng, who, "get", uri, ref)
    return lambda t: tpl.emit(t, t + eng.fast(), now=True)


def _discovery(eng: Engine, who: Identity) -> Source:
    """Aggregated discovery (1.27+): two GETs where older clients fetched every group-version."""
    api = Template(eng, who, "get", "/api?timeout=32s", None, ann=DISCOVERY)
    apis = Template(eng, who, "get", "/apis?timeout=32s", None, ann=DISCOVERY)

    def fire(t: int) -> Event | None:
        apis.emit(t + 2000, t + 2000 + eng.fast())
        return api.emit(t, t + eng.tiny(), now=True)
    return fire


def _kubelet(eng: Engine, cl: Cluster, node: Node, prof: Profile, omit: bool) -> None:
    k = node.kubelet
    _lease(eng, k, "kube-node-lease", node.name, "10s", omit, prof.node_lease, 0.04)
    status = oref("nodes", name=node.name, sub="status")
    def node_status(t: int) -> None:
        eng.call(t, k, "patch", status, query="?timeout=10s", req=bodies.node_status(eng.ts(t)))
    every(eng, prof.node_status, node_status)
    watch(eng, k, "pods", field=f"spec.nodeName%3D{node.name}")
    watch(eng, k, "nodes", field=f"metadata.name%3D{node.name}", name=node.name)
    watch(eng, k, "services")
    watch(eng, k, "csidrivers", "storage.k8s.io")
    watch(eng, k, "runtimeclasses", "node.k8s.io")
    objects = sorted({(p.namespace, "configmaps", c) for p in node.pods for c in p.configmaps}
                     | {(p.namespace, "secrets", s) for p in node.pods for s in p.secrets})
    for ns, resource, name in objects:
        watch(eng, k, resource, namespace=ns, field=f"metadata.name%3D{name}", name=name)

    def refresh(t: int) -> None:
        # Projected SA tokens are renewed at 80 % of their life; one pod's token per tick.
        if node.pods:
            p = node.pods[eng.rng.randrange(len(node.pods))]
            eng.call(t, k, "create", oref("serviceaccounts", p.namespace, p.sa, sub="token"),
                     req=bodies.token_request(p.name, p.uid))
    pods = max(len(node.pods), 1)
    every(eng, prof.token_refresh / pods, refresh, 0.2)


def _node_agents(eng: Engine, cl: Cluster, node: Node) -> None:
    proxy = cl.who[f"kube-proxy:{node.name}"]
    watch(eng, proxy, "services", label=_NOT_HEADLESS)
    watch(eng, proxy, "endpointslices", "discovery.k8s.io", label=_NOT_HEADLESS)
    watch(eng, proxy, "nodes", field=f"metadata.name%3D{node.name}", name=node.name)
    calico = cl.who[f"calico:{node.name}"]
    watch(eng, calico, "nodes")
    watch(eng, calico, "networkpolicies", "networking.k8s.io")


def _addons(eng: Engine, cl: Cluster, prof: Profile) -> None:
    w = cl.who
    for i in range(2):
        for resource, group in (("services", ""), ("endpointslices", "discovery.k8s.io"),
                                ("namespaces", "")):
            watch(eng, w[f"coredns:{i}"], resource, group)
    watch(eng, w["metrics-server"], "nodes")
    argo = w["argocd"]
    for resource, group in _ARGO_TYPES:
        watch(eng, argo, resource, group)
    apps = sorted({wl.namespace for wl in cl.workloads})
    revision = f"{eng.rng.getrandbits(160):040x}"
    for app in apps:
        ref = oref("applications", "argocd", app, "argoproj.io", "v1alpha1")

        def resync(t: int, ref: dict[str, str] = ref, app: str = app) -> None:
            eng.call(t, argo, "patch", ref, req=bodies.app_status(app, eng.ts(t), revision))
        every(eng, prof.argocd_resync, resync, 0.05)
    for ns in apps[-1:]:
        uid = eng.uuid()

        def tick(t: int, ns: str = ns, uid: str = uid) -> None:
            cron_run(eng, cl, t, ns, "report", uid)
            eng.at(_next_quarter(t), tick)
        eng.at(_next_quarter(eng.start), tick)


def _next_quarter(t: int) -> int:
    """CronJob ``*/15 * * * *`` fires on quarter-hour boundaries."""
    q = 15 * MIN
    return (t // q + 1) * q
