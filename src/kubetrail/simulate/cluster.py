"""The simulated cluster's inventory: nodes, namespaces, workloads, pods and the people.

Everything here is decided once per cluster from the seeded generator, so a cluster looks the
same for a given seed (names, IPs, UIDs, versions) and every background or scenario request can
refer to objects that "exist". Rollouts replace a workload's pods; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import identity as idn
from .engine import Engine
from .vocab import Identity

# name, GKE-style location, server version, its commit, UTC offset of the team running it
_CLUSTERS = (
    ("prod-eu", "europe-west1", "v1.31.4", "a78aa47", 1),
    ("prod-us", "us-central1", "v1.31.4", "a78aa47", -5),
    ("staging", "europe-west4", "v1.32.2", "67a30c0", 1),
    ("dev", "us-east1", "v1.32.2", "67a30c0", -5),
    ("prod-ap", "asia-southeast1", "v1.30.8", "354eac7", 8),
    ("qa", "europe-north1", "v1.31.0", "9edcffc", 2),
)
# namespace -> deployments (name, image); the first four namespaces exist everywhere.
_APPS = {
    "shop": (("web", "nginx"), ("cart", "cart"), ("catalog", "catalog")),
    "payments": (("api", "payments-api"), ("worker", "payments-worker")),
    "checkout": (("checkout-api", "checkout"),),
    "analytics": (("ingest", "ingest"),),
    "search": (("indexer", "indexer"), ("query", "query")),
    "notifications": (("mailer", "mailer"),),
}
_SYSTEM_NS = ("default", "kube-system", "kube-public", "kube-node-lease", "argocd", "monitoring")
CONTROLLERS = (
    "deployment-controller", "replicaset-controller", "endpointslice-controller",
    "endpoint-controller", "job-controller", "cronjob-controller", "generic-garbage-collector",
    "resourcequota-controller", "node-controller", "disruption-controller",
    "ttl-after-finished-controller", "pod-garbage-collector",
)
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names
# (key, username, groups, role, namespaces, kubectl UA, source IP)
_PEOPLE = (
    ("alice", "alice@example.com", ["sre"], "sre", (),
     "kubectl/v1.31.2 (darwin/arm64) kubernetes/5864a46", "203.0.113.24"),
    ("bob", "bob@example.com", ["shop-devs", "developers"], "dev", ("shop", "payments"),
     "kubectl/v1.30.1 (darwin/arm64) kubernetes/6911225", "198.51.100.37"),
    ("erin", "erin@example.com", ["data-devs", "developers"], "dev", ("analytics", "search"),
     "kubectl.exe/v1.29.3 (windows/amd64) kubernetes/6813625", "203.0.113.58"),
    ("dana", "dana@example.com", ["sre"], "sre", (),
     "kubectl/v1.32.2 (linux/amd64) kubernetes/67a30c0", "198.51.100.24"),
    ("frank", "frank@example.com", ["checkout-devs", "developers"], "dev",
     ("checkout", "notifications"), "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
     "198.51.100.81"),
)
SRE_REASON = idn.crb("sre-cluster-admin", "cluster-admin", "Group", "sre")
DEV_VIEW = idn.crb("developers-view", "view", "Group", "developers")
CI_REASON = idn.crb("ci-deployer", "ci-deployer", "ServiceAccount", "deployer/ci")


def generated(rng_bits: int, n: int) -> str:
    """A generated name suffix (``7d9f8c6b5``, ``x2kqp``) from random bits."""
    out = []
    for _ in range(n):
        rng_bits, i = divmod(rng_bits, len(_SAFE))
        out.append(_SAFE[i])
    return "".join(out)


@dataclass(slots=True)
class Node:
    """A node: its kubelet identity and the pods it runs (which drive kubelet traffic)."""

    name: str
    ip: str
    uid: str
    control_plane: bool
    kubelet: Identity
    pods: list[Pod] = field(default_factory=list)


@dataclass(slots=True)
class Pod:
    """A pod; ``configmaps``/``secrets`` are what its kubelet watches object by object."""

    name: str
    namespace: str
    uid: str
    node: Node
    ip: str
    sa: str
    app: str
    configmaps: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


@dataclass(slots=True)
class Workload:
    """A Deployment with its current ReplicaSet hash and pods."""

    namespace: str
    name: str
    image: str
    tag: int
    replicas: int
    uid: str
    rs_hash: str
    pods: list[Pod] = field(default_factory=list)

    @property
    def rs_name(self) -> str:
        return f"{self.name}-{self.rs_hash}"


@dataclass(slots=True)
class Person:
    """A human (or the CI bot) with kubectl, an address and an RBAC scope."""

    key: str
    ident: Identity
    role: str
    namespaces: tuple[str, ...]
    tz: int
    _cache: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def kubectl_minor(self) -> int:
        return int(self.ident.ua.split("/v1.")[1].split(".")[0])

    def authorize(self, verb: str, resource: str, namespace: str) -> dict[str, str] | None:
        """Annotations when allowed, ``None`` when RBAC would deny (then log 403/forbid)."""
        if self.role == "sre":
            reason = SRE_REASON
        elif self.role == "ci":
            reason = CI_REASON if namespace and namespace not in _SYSTEM_NS else ""
        elif resource == "selfsubjectaccessreviews":
            reason = idn.crb("system:basic-user", "system:basic-user", "Group", "system:authenticated")
        elif namespace in self.namespaces:
            group = next(g for g in self.ident.user["groups"] if g.endswith("-devs"))
            reason = idn.rb(group, namespace, "edit", "Group", group)
        elif namespace and verb in ("get", "list", "watch") and resource != "secrets":
            reason = DEV_VIEW
        else:
            reason = ""
        if not reason:
            return None
        ann = self._cache.get(reason)
        if ann is None:
            ann = self._cache[reason] = idn.allow(reason)
        return ann


@dataclass(slots=True)
class Cluster:
    """One simulated cluster: versions, nodes, workloads, identities (``who``) and people."""

    name: str
    index: int
    location: str
    version: str
    commit: str
    tz: int
    nodes: list[Node]
    workloads: list[Workload]
    namespaces: list[str]
    who: dict[str, Identity]
    people: list[Person]
    ci: Person
    system_pods: dict[str, list[Pod]]

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    @property
    def control_plane(self) -> list[Node]:
        return [n for n in self.nodes if n.control_plane]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.control_plane] or self.nodes

    def ua(self, binary: str, suffix: str = "") -> str:
        return idn.client_ua(binary, self.version, self.commit, suffix)

    def pod_ip(self, node: Node, host: int = -1) -> str:
        """An address in ``node``'s pod CIDR (10.244.<node>.0/24 in the first cluster)."""
        if host < 0:
            host = 10 + len(node.pods) % 230
        return f"10.{(244 + self.index) % 256}.{self.nodes.index(node) % 256}.{host}"


def cluster_name(index: int) -> str:
    """Stable cluster names: the first six are named, then ``cluster-<n>``."""
    return _CLUSTERS[index][0] if index < len(_CLUSTERS) else f"cluster-{index}"


def build(index: int, eng: Engine, nodes: int) -> Cluster:
    """Create cluster number ``index`` with ``nodes`` nodes (1 control plane below 10 nodes)."""
    name, location, version, commit, tz = (
        _CLUSTERS[index] if index < len(_CLUSTERS) else
        (cluster_name(index), "us-west1", "v1.31.4", "a78aa47", 0))
    n_cp = 1 if nodes < 10 else 3
    node_list: list[Node] = []
    for i in range(max(nodes, 1)):
        cp = i < n_cp
        nname = f"{name}-cp-{i + 1}" if cp else f"{name}-worker-{i - n_cp + 1}"
        net = index % 244  # node networks 10.<n>.x.x stay clear of the pod networks
        ip = f"10.{net}.0.{11 + i}" if cp else f"10.{net}.{1 + i // 200}.{20 + i % 200}"
        # Kubelets may lag the control plane; one worker in three runs a minor behind.
        kver, kcommit = (version, commit) if cp or i % 3 else ("v1.30.8", "354eac7")
        kubelet = idn.node(nname, ip, idn.client_ua("kubelet", kver, kcommit))
        node_list.append(Node(nname, ip, eng.uuid(), cp, kubelet))
    app_ns = list(_APPS) if not name.startswith(("staging", "dev", "qa")) else list(_APPS)[:4]
    cl = Cluster(name, index, location, version, commit, tz, node_list, [],
                 [*_SYSTEM_NS, *app_ns], {}, [], Person("ci", Identity({}, [], "", {}), "ci", (), 0),
                 {})
    _components(cl, eng)
    workers = cl.workers
    slot = 0
    for ns in app_ns:
        for dname, image in _APPS[ns]:
            replicas = 2 + (eng.rng.random() < 0.4) if name.startswith("prod") else 1
            w = Workload(ns, dname, f"registry.example.com/{ns}/{image}", 40 + eng.rng.randrange(60),
                         replicas, eng.uuid(), generated(eng.rng.getrandbits(64), 9 + slot % 2))
            for _ in range(replicas):
                add_pod(cl, eng, w, workers[slot % len(workers)])
                slot += 1
            cl.workloads.append(w)
    _people(cl)
    return cl


def add_pod(cl: Cluster, eng: Engine, w: Workload, node: Node) -> Pod:
    """Place a new pod of ``w`` on ``node`` (its name follows the ReplicaSet hash)."""
    name = f"{w.rs_name}-{generated(eng.rng.getrandbits(32), 5)}"
    # Every pod mounts kube-root-ca.crt; some workloads also read a ConfigMap or a Secret,
    # which the kubelet then watches object by object.
    cms = ("kube-root-ca.crt", f"{w.name}-config") if w.uid[0] in "01234567" else (
        "kube-root-ca.crt",)
    secrets = (f"{w.name}-credentials",) if w.namespace in ("payments", "shop") and \
        w.uid[1] in "0123" else ()
    pod = Pod(name, w.namespace, eng.uuid(), node, cl.pod_ip(node), w.name, w.name, cms, secrets)
    node.pods.append(pod)
    w.pods.append(pod)
    return pod


def remove_pod(w: Workload, pod: Pod) -> None:
    if pod in w.pods:
        w.pods.remove(pod)
    if pod in pod.node.pods:
        pod.node.pods.remove(pod)


def _addon(cl: Cluster, eng: Engine, key: str, ns: str, app: str, node: Node, ua: str,
           binding: str, role: str, replicaset: bool = True) -> None:
    """Run an add-on pod on ``node`` and register its pod-bound service-account identity."""
    bits = eng.rng.getrandbits
    name = (f"{app}-{generated(bits(64), 10)}-{generated(bits(32), 5)}" if replicaset
            else f"{app}-{generated(bits(32), 5)}")
    host_net = app in ("kube-proxy", "calico-node")
    pod = Pod(name, ns, eng.uuid(), node, node.ip if host_net else cl.pod_ip(node), app, app,
              ("kube-root-ca.crt",))
    node.pods.append(pod)
    cl.system_pods.setdefault(app, []).append(pod)
    claims = idn.pod_claims(eng.uuid(), node.name, node.uid, pod.name, pod.uid)
    if cl.minor < 30:  # node and credential claims arrived in 1.30
        claims = {k: claims[k] for k in ("pod-name", "pod-uid")}
    reason = idn.crb(binding, role, "ServiceAccount", f"{app}/{ns}")
    cl.who[key] = idn.service_account(ns, app, eng.uuid(), ua, pod.ip, reason, claims)


def _components(cl: Cluster, eng: Engine) -> None:
    """Control-plane identities and the add-ons every cluster runs."""
    cp = cl.control_plane[0]
    w = cl.who
    kcm = cl.ua("kube-controller-manager")
    sched = cl.ua("kube-scheduler")
    w["kcm-le"] = idn.system_component("system:kube-controller-manager", f"{kcm}/leader-election", cp.ip)
    w["kcm"] = idn.system_component("system:kube-controller-manager", f"{kcm}/shared-informers", cp.ip)
    w["kcm-meta"] = idn.system_component("system:kube-controller-manager", f"{kcm}/metadata-informers",
                                         cp.ip)
    w["sched-le"] = idn.system_component("system:kube-scheduler", f"{sched}/leader-election", cp.ip)
    w["sched"] = idn.system_component("system:kube-scheduler", f"{sched}/scheduler", cp.ip)
    w["apiserver"] = idn.loopback(eng.uuid(), cl.ua("kube-apiserver"))
    for sa in CONTROLLERS:
        w[sa] = idn.controller(sa, eng.uuid(), kcm, cp.ip, eng.uuid())
    for n in cl.control_plane:
        w[f"probe:{n.name}"] = idn.anonymous_probe(n.ip, f"1.{cl.minor}")
    calico_ua = "calico-node/v0.0.0 (linux/amd64) kubernetes/$Format"
    for n in cl.nodes:
        _addon(cl, eng, f"kube-proxy:{n.name}", "kube-system", "kube-proxy", n, cl.ua("kube-proxy"),
               "kubeadm:node-proxier", "system:node-proxier", replicaset=False)
        _addon(cl, eng, f"calico:{n.name}", "kube-system", "calico-node", n, calico_ua,
               "calico-node", "calico-node", replicaset=False)
    workers = cl.workers
    for i in range(2):
        _addon(cl, eng, f"coredns:{i}", "kube-system", "coredns", workers[i % len(workers)],
               "coredns/v1.11.3 (linux/amd64) kubernetes/$Format", "system:coredns",
               "system:coredns")
    _addon(cl, eng, "metrics-server", "kube-system", "metrics-server", workers[-1],
           "Go-http-client/2.0", "system:metrics-server", "system:metrics-server")
    _addon(cl, eng, "argocd", "argocd", "argocd-application-controller", workers[0],
           "argocd-application-controller/v2.13.2 (linux/amd64)",
           "argocd-application-controller", "argocd-application-controller")


def _people(cl: Cluster) -> None:
    """The humans and the CI bot that use this cluster (a rotating subset of the team)."""
    roster = [p for i, p in enumerate(_PEOPLE) if (i + cl.index) % 5 != 4]
    for key, username, groups, role, nss, ua, ip in roster:
        u = idn.user(username, [*groups, idn.AUTHENTICATED])
        ident = Identity(u, [ip], ua, idn.allow(SRE_REASON if role == "sre" else DEV_VIEW))
        tz = cl.tz if cl.index % 2 == 0 or role == "dev" else cl.tz + 6
        cl.people.append(Person(key, ident, role, nss, tz))
    ci = idn.service_account("ci", "deployer", "6b1f3c2e-0d4a-4c55-9a1e-7c3b2d1e0f9a",
                             "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", "198.51.100.200",
                             CI_REASON)
    apps = tuple(ns for ns in cl.namespaces if ns in _APPS)
    cl.ci = Person("ci", ci, "ci", apps, cl.tz)
