"""Attack scenarios injected into the background, and the registry they live in.

Each scenario is a function that schedules its requests from a start time on one cluster's
engine. Register more with :func:`register_scenario` (or the :func:`scenario` decorator); the
built-ins below use the same path. Actors are the cluster's own identities used from unusual
addresses or tools, which is what stolen credentials look like in an audit log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote_plus

from . import bodies
from . import identity as idn
from .cluster import Cluster, Pod, generated
from .engine import Engine
from .vocab import FORBID, SEC, Identity, forbidden, latency_annotations, oref
from .workload import start_pod, with_psa


@dataclass(frozen=True, slots=True)
class ScenarioContext:
    """What a scenario gets: the cluster, its engine (clock, RNG, heap) and its start time."""

    eng: Engine
    cluster: Cluster
    t: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named attack pattern. ``span`` is how long its events take (used to place it)."""

    name: str
    description: str
    inject: Callable[[ScenarioContext], None]
    span: dt.timedelta = dt.timedelta(minutes=3)


SCENARIOS: dict[str, Scenario] = {}


def register_scenario(s: Scenario, *, replace: bool = False) -> Scenario:
    """Add ``s`` to :data:`SCENARIOS`; refuse to shadow an existing name unless ``replace``."""
    if s.name in SCENARIOS and not replace:
        raise ValueError(f"scenario {s.name!r} is already registered")
    SCENARIOS[s.name] = s
    return s


def scenario(name: str, description: str, span: dt.timedelta = dt.timedelta(minutes=3)
             ) -> Callable[[Callable[[ScenarioContext], None]], Callable[[ScenarioContext], None]]:
    """Decorator form of :func:`register_scenario`."""
    def deco(fn: Callable[[ScenarioContext], None]) -> Callable[[ScenarioContext], None]:
        register_scenario(Scenario(name, description, fn, span))
        return fn
    return deco


def _as(base: Identity, ip: str, ua: str = "", reason: str | None = None) -> Identity:
    """The same user from another address/tool (stolen credentials)."""
    allow = base.allow if reason is None else idn.allow(reason)
    return Identity(base.user, [ip], ua or base.ua, allow)


def _person(cl: Cluster, role: str) -> Identity:
    for p in cl.people:
        if p.role == role:
            return p.ident
    return cl.people[0].ident


_OLD_KUBECTL = "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819"


@scenario("exec-shell", "Interactive shell in a production pod that reads the pod's "
          "service-account token (pods/exec create, 101, /bin/sh -c ...) from a new address.")
def _exec_shell(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    w = next((w for w in cl.workloads if w.namespace == "shop" and w.pods), cl.workloads[0])
    pod = w.pods[0]
    who = _as(_person(cl, "dev"), "203.0.113.66", _OLD_KUBECTL,
              idn.rb("shop-devs", w.namespace, "edit", "Group", "shop-devs"))
    ref = oref("pods", w.namespace, pod.name)
    t = eng.call(t, who, "get", ref) + 3000
    argv = ["/bin/sh", "-c", "id; cat /var/run/secrets/kubernetes.io/serviceaccount/token"]
    q = "".join(f"&command={quote_plus(a, safe='')}" for a in argv)[1:]
    end = t + 40 * SEC + eng.rng.randrange(60 * SEC)
    eng.call(t, who, "create", {**ref, "subresource": "exec"},
             query=f"?{q}&container=app&stdin=true&stdout=true&tty=true", code=101, end=end,
             ann=latency_annotations(end - t, who.allow))


@scenario("secrets-dump", "A stolen service-account token lists and reads secrets across "
          "every namespace from an external host with a scripting client (some 403s).")
def _secrets_dump(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    node = cl.workers[0]
    claims = idn.pod_claims(eng.uuid(), node.name, node.uid, "telemetry-agent-6d8f9c7b54-q4x7z",
                            eng.uuid())
    who = idn.service_account("monitoring", "telemetry-agent", eng.uuid(),
                              "OpenAPI-Generator/31.0.0/python", "198.51.100.77", "", claims)
    user = who.username
    gap = lambda: 150_000 + eng.rng.randrange(900_000)  # noqa: E731
    for ref in (oref("secrets"), oref("namespaces")):
        eng.call(t, who, "list", ref, query="?limit=500", code=403, ann=FORBID, lat=eng.tiny(),
                 status=forbidden(user, "list", ref["resource"]))
        t += gap()
    for ns in cl.namespaces:
        if ns in ("kube-node-lease", "kube-public"):
            continue
        allowed = ns not in ("kube-system", "argocd", "default")
        ref = oref("secrets", ns)
        if not allowed:
            eng.call(t, who, "list", ref, query="?limit=500", code=403, ann=FORBID,
                     lat=eng.tiny(), status=forbidden(user, "list", "secrets", namespace=ns))
            t += gap()
            continue
        ann = idn.allow(idn.rb("telemetry-agent", ns, "secret-reader", "ServiceAccount",
                               "telemetry-agent/monitoring"))
        t = eng.call(t, who, "list", ref, query="?limit=500", ann=ann) + gap()
        names = [f"{w.name}-credentials" for w in cl.workloads if w.namespace == ns][:3]
        for name in [*names, "registry-pull", "tls-internal"]:
            t = eng.call(t, who, "get", oref("secrets", ns, name), ann=ann) + gap() // 3


@scenario("bind-cluster-admin", "A ClusterRoleBinding granting cluster-admin to a workload's "
          "service account, created from an unfamiliar address, then used to list secrets.")
def _bind_cluster_admin(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "203.0.113.200", "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc")
    rbac = "rbac.authorization.k8s.io"
    t = eng.call(t, who, "get", oref("clusterroles", name="cluster-admin", group=rbac)) + 4 * SEC
    name = "ops-maintenance"
    subjects = [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}]
    ts = eng.ts(t)
    done = eng.call(t, who, "create", oref("clusterrolebindings", group=rbac),
                    query="?fieldManager=kubectl-create&fieldValidation=Strict",
                    rc_ref=oref("clusterrolebindings", name=name, group=rbac),
                    req=bodies.cluster_role_binding(name, "cluster-admin", subjects),
                    resp=bodies.cluster_role_binding(name, "cluster-admin", subjects, ts,
                                                     eng.uuid(), eng.rv()))
    pod = next((p for w in cl.workloads if w.namespace == "shop" for p in w.pods), None)
    ip = pod.ip if pod else "10.244.0.99"
    sa = idn.service_account("shop", "default", eng.uuid(), "curl/8.7.1", ip,
                             idn.crb(name, "cluster-admin", "ServiceAccount", "default/shop"))
    eng.call(done + 45 * SEC, sa, "list", oref("secrets"), query="?limit=500")


_PRIV_VIOLATIONS = (
    'would violate PodSecurity "restricted:latest": host namespaces (hostPID=true), privileged '
    '(container "shell" must not set securityContext.privileged=true), allowPrivilegeEscalation '
    '!= false (container "shell" must set securityContext.allowPrivilegeEscalation=false), '
    'restricted volume types (volume "host-root" uses restricted volume type "hostPath"), '
    'runAsNonRoot != true (pod or container "shell" must set securityContext.runAsNonRoot=true)'
)


@scenario("privileged-pod", "A privileged pod with hostPID and the node's / mounted via "
          "hostPath, created with the kubeadm admin credentials from an external address.")
def _privileged_pod(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    admin = Identity(idn.user("kubernetes-admin", ["kubeadm:cluster-admins", idn.AUTHENTICATED]),
                     ["198.51.100.99"], "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
                     idn.allow(idn.crb("kubeadm:cluster-admins", "cluster-admin", "Group",
                                       "kubeadm:cluster-admins")))
    node = cl.workers[-1]
    p = Pod(f"node-shell-{generated(eng.rng.getrandbits(32), 5)}", "default", eng.uuid(), node,
            cl.pod_ip(node), "default", "node-shell")
    spec = {"hostPID": True,
            "containers": [{"name": "shell", "image": "docker.io/library/alpine:3.20",
                            "command": ["nsenter", "--target", "1", "--mount", "--uts", "--ipc",
                                        "--net", "--pid", "--", "sh"],
                            "stdin": True, "tty": True,
                            "securityContext": {"privileged": True},
                            "volumeMounts": [{"name": "host-root", "mountPath": "/host"}]}],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/", "type": ""}}],
            "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}]}
    ann = with_psa(admin.allow, "privileged:latest")
    ann["pod-security.kubernetes.io/audit-violations"] = _PRIV_VIOLATIONS
    ts = eng.ts(t)
    done = eng.call(t, admin, "create", oref("pods", "default"), query="?fieldManager=kubectl-run",
                    rc_ref=oref("pods", "default", p.name),
                    req=bodies.pod(p, None, "", None, spec=spec),
                    resp=bodies.pod(p, None, ts, None, uid=p.uid, rv=eng.rv(), spec=spec),
                    ann=dict(sorted(ann.items())))
    start_pod(eng, cl, done, p, None)


@scenario("brute-force", "Forty failed authentications (401, bearer and basic) from one "
          "external address in under two minutes against sensitive paths.",
          dt.timedelta(minutes=2))
def _brute_force(ctx: ScenarioContext) -> None:
    eng, t = ctx.eng, ctx.t
    targets = (
        ("list", "/api/v1/namespaces/kube-system/secrets", oref("secrets", "kube-system")),
        ("list", "/api/v1/secrets", oref("secrets")),
        ("get", "/api", None), ("get", "/apis", None), ("get", "/version", None),
        ("list", "/api/v1/pods", oref("pods")),
        ("list", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         oref("clusterrolebindings", group="rbac.authorization.k8s.io")),
    )
    for i in range(40):
        verb, uri, ref = targets[i % len(targets)]
        method = "basic" if i % 5 == 4 else "bearer"
        eng.unauthenticated(t, verb, uri, ref, ["203.0.113.77"], "curl/8.7.1", method)
        t += 1_200_000 + eng.rng.randrange(1_600_000)


@scenario("token-mint", "A person mints a one-year token (TokenRequest) for a privileged "
          "kube-system service account, which is then used from outside the cluster.")
def _token_mint(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _person(cl, "sre")
    sa = "clusterrole-aggregation-controller"
    body = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"audiences": None, "expirationSeconds": 31536000, "boundObjectRef": None},
            "status": {"token": "", "expirationTimestamp": None}}
    done = eng.call(t, who, "create", oref("serviceaccounts", "kube-system", sa, sub="token"),
                    req=body)
    stolen = cl.who[sa] if sa in cl.who else idn.service_account(
        "kube-system", sa, eng.uuid(), "", "", idn.crb(
            f"system:controller:{sa}", f"system:controller:{sa}", "ServiceAccount",
            f"{sa}/kube-system"))
    use = Identity(stolen.user, ["203.0.113.150"], "curl/8.7.1", idn.allow(idn.crb(
        f"system:controller:{sa}", f"system:controller:{sa}", "ServiceAccount",
        f"{sa}/kube-system")))
    eng.call(done + 90 * SEC, use, "list",
             oref("clusterroles", group="rbac.authorization.k8s.io"), query="?limit=500")
