"""People and CI: kubectl sessions in office hours, deploys with cascades, stale credentials.

Humans are a rounding error in volume but the point of most investigations, so their requests
follow kubectl exactly: ``?limit=500`` lists, describe = get + events list, exec/logs/port-forward
as long-running requests preceded by a pod GET, apply = GET + PATCH followed by the rollout
cascade, plus the odd 404 (typo), 403 (outside their RBAC scope) and 401 (expired login).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import bodies
from .cluster import Cluster, Person, Workload
from .engine import Engine
from .identity import DISCOVERY
from .vocab import DAY_US, FORBID, MIN, SEC, forbidden, latency_annotations, not_found, oref
from .workload import rollout

_HOUR = 60 * MIN
_CMDS = {
    "sre": (("get-pods", 20), ("get-all-pods", 8), ("get-nodes", 6), ("describe", 10),
            ("logs", 10), ("exec", 4), ("get-deploy", 8), ("restart", 1), ("edit-cm", 2),
            ("get-secret", 2), ("top", 3), ("port-forward", 1), ("typo", 2)),
    "dev": (("get-pods", 25), ("describe", 10), ("logs", 14), ("get-deploy", 8), ("exec", 2),
            ("port-forward", 3), ("get-secret", 2), ("get-nodes", 1), ("can-i", 1),
            ("apply", 1), ("typo", 3), ("other-secret", 1)),
}


def _choose(eng: Engine, weighted: tuple[tuple[str, int], ...]) -> str:
    total = sum(w for _, w in weighted)
    x = eng.rng.randrange(total)
    for name, w in weighted:
        x -= w
        if x < 0:
            return name
    return weighted[-1][0]


class Kubectl:
    """Issues the requests of one kubectl command for a person; returns when it finished."""

    def __init__(self, eng: Engine, cl: Cluster, person: Person) -> None:
        self.eng, self.cl, self.p = eng, cl, person

    def req(self, t: int, verb: str, ref: dict[str, str] | None, *, query: str = "",
            uri: str = "", **kw: Any) -> int:
        """One request, authorized (or denied) by the person's RBAC scope."""
        eng, who = self.eng, self.p.ident
        if ref is None:
            return eng.request(t, who, verb, uri, None, lat=eng.tiny(), ann=DISCOVERY)
        ann = self.p.authorize(verb, ref["resource"], ref.get("namespace", ""))
        if ann is None:
            return self.deny(t, verb, ref, query)
        return eng.call(t, who, verb, ref, query=query, uri=uri, ann=ann, **kw)

    def deny(self, t: int, verb: str, ref: dict[str, str], query: str = "") -> int:
        """An RBAC denial: 403, decision forbid, empty reason, no bodies."""
        eng, who = self.eng, self.p.ident
        st = forbidden(who.username, verb, ref["resource"], ref.get("apiGroup", ""),
                       ref.get("namespace", ""), ref.get("name", ""))
        return eng.call(t, who, verb, ref, query=query, code=403, status=st, ann=FORBID,
                        lat=eng.tiny())

    def stream(self, t: int, pod_ref: dict[str, str], sub: str, query: str, seconds: float,
               code: int, ws_since: int = 30) -> int:
        """GET the pod, then a long-running exec/log/portforward subresource request."""
        eng = self.eng
        t = self.req(t, "get", pod_ref) + 2000
        ref = {**pod_ref, "subresource": sub}
        # kubectl exec >= 1.30 (port-forward >= 1.31) talks WebSocket to a server that can:
        # the upgrade is then a GET instead of an SPDY POST.
        ws = min(self.p.kubectl_minor, self.cl.minor) >= ws_since
        verb = "get" if ws or sub == "log" else "create"
        end = t + int(seconds * SEC)
        ann = self.p.authorize("create", "pods", pod_ref["namespace"])
        if ann is not None and end - t > 500_000:
            ann = latency_annotations(end - t, ann)
        if ann is None:  # exec/attach/portforward need "create" on the subresource
            return self.deny(t, "create", ref, query)
        return eng.call(t, self.p.ident, verb, ref, query=query, end=end, code=code, ann=ann)

    def run(self, t: int, cmd: str, ns: str, w: Workload) -> int:
        eng, rng = self.eng, self.eng.rng
        pod = w.pods[rng.randrange(len(w.pods))] if w.pods else None
        pod_ref = oref("pods", ns, pod.name if pod else w.name)
        if cmd == "get-pods":
            return self.req(t, "list", oref("pods", ns), query="?limit=500")
        if cmd == "get-all-pods":
            return self.req(t, "list", oref("pods"), query="?limit=500")
        if cmd == "get-nodes":
            return self.req(t, "list", oref("nodes"), query="?limit=500")
        if cmd == "get-deploy":
            return self.req(t, "list", oref("deployments", ns, group="apps"), query="?limit=500")
        if cmd == "describe" and pod:
            t = self.req(t, "get", pod_ref) + 3000
            fs = quote(f"involvedObject.name={pod.name},involvedObject.namespace={ns},"
                       f"involvedObject.uid={pod.uid}", safe="")
            return self.req(t, "list", oref("events", ns), query=f"?fieldSelector={fs}&limit=500")
        if cmd == "logs":
            follow = rng.random() < 0.3
            q = "?container=app" + ("&follow=true" if follow else "") + "&tailLines=100"
            return self.stream(t, pod_ref, "log", q, rng.uniform(30, 600) if follow else
                               rng.uniform(0.05, 0.4), 200)
        if cmd == "exec":
            shell = "%2Fbin%2Fbash" if rng.random() < 0.5 else "%2Fbin%2Fsh"
            return self.stream(t, pod_ref, "exec",
                               f"?command={shell}&container=app&stdin=true&stdout=true&tty=true",
                               rng.uniform(20, 600), 101)
        if cmd == "port-forward":
            ws = min(self.p.kubectl_minor, self.cl.minor) >= 31
            return self.stream(t, pod_ref, "portforward", "?ports=8080" if ws else "",
                               rng.uniform(60, 1800), 101, ws_since=31)
        if cmd == "get-secret":
            return self.req(t, "get", oref("secrets", ns, f"{w.name}-credentials"))
        if cmd == "other-secret":
            return self.req(t, "list", oref("secrets", "kube-system"), query="?limit=500")
        if cmd == "edit-cm":
            ref = oref("configmaps", ns, f"{w.name}-config")
            t = self.req(t, "get", ref) + 20 * SEC + rng.randrange(60 * SEC)
            return self.req(t, "patch", ref, query="?fieldManager=kubectl-edit&fieldValidation=Strict")
        if cmd == "top":
            ms = self.cl.who["metrics-server"]
            eng.call(t + 4000, ms, "create", oref("subjectaccessreviews", group="authorization.k8s.io"))
            return self.req(t, "list", oref("pods", ns, group="metrics.k8s.io", version="v1beta1"))
        if cmd == "can-i":
            return self.req(t, "create", oref("selfsubjectaccessreviews", group="authorization.k8s.io"))
        if cmd == "typo":
            name = w.name[:-1] if len(w.name) > 3 else w.name + "x"
            return eng.call(t, self.p.ident, "get", oref("deployments", ns, name, "apps"), code=404,
                            status=not_found("deployments", name, "apps"), lat=eng.tiny(),
                            ann=self.p.authorize("get", "deployments", ns))
        if cmd in ("apply", "restart"):
            return self.deploy(t, w, "kubectl-client-side-apply" if cmd == "apply" else "kubectl-rollout")
        return self.req(t, "list", oref("pods", ns), query="?limit=500")

    def deploy(self, t: int, w: Workload, manager: str) -> int:
        """GET + PATCH of a Deployment, then the rollout cascade if the patch was allowed."""
        ref = oref("deployments", w.namespace, w.name, "apps")
        t = self.req(t, "get", ref) + 5000
        if self.p.authorize("patch", "deployments", w.namespace) is None:
            return self.req(t, "patch", ref)
        w.tag += 1
        rv = self.eng.rv()
        done = self.req(t, "patch", ref, query=f"?fieldManager={manager}&fieldValidation=Strict",
                        req=bodies.deployment_patch(w),
                        resp=bodies.deployment(w, self.eng.ts(t), rv, w.tag))
        return rollout(self.eng, self.cl, done, w)


def session(eng: Engine, cl: Cluster, person: Person, start: int, commands: int) -> None:
    """A burst of commands 5–60 s apart in one or two namespaces."""
    rng = eng.rng
    k = Kubectl(eng, cl, person)
    scope = [w for w in cl.workloads if not person.namespaces or w.namespace in person.namespaces]
    focus = scope[rng.randrange(len(scope))]
    left = [commands]

    def step(t: int) -> None:
        nonlocal focus
        if rng.random() < 0.2:
            focus = scope[rng.randrange(len(scope))]
        done = k.run(t, _choose(eng, _CMDS["sre" if person.role == "sre" else "dev"]),
                     focus.namespace, focus)
        left[0] -= 1
        if left[0] > 0:
            eng.at(max(done, t) + 5 * SEC + rng.randrange(55 * SEC), step)

    def begin(t: int) -> None:
        if rng.random() < 0.08:  # an expired OIDC token: one 401, then a fresh login
            eng.unauthenticated(t, "get", "/api?timeout=32s", None, person.ident.ips,
                                person.ident.ua)
            t += 20 * SEC
        if rng.random() < 0.3:  # cold discovery cache
            k.req(t, "get", None, uri="/api?timeout=32s")
            k.req(t + 8000, "get", None, uri="/apis?timeout=32s")
            t += 60_000
        eng.at(t, step)

    eng.at(start, begin)


def ci_deploy(eng: Engine, cl: Cluster, t: int) -> None:
    """A pipeline run: fresh discovery, apply, ``kubectl rollout status`` watching to the end."""
    rng = eng.rng
    k = Kubectl(eng, cl, cl.ci)
    w = cl.workloads[rng.randrange(len(cl.workloads))]
    k.req(t, "get", None, uri="/api?timeout=32s")
    k.req(t + 9000, "get", None, uri="/apis?timeout=32s")
    t += 80_000
    if rng.random() < 0.15:  # a pipeline step probing for cluster-wide rights it lacks
        k.req(t, "list", oref("clusterrolebindings", group="rbac.authorization.k8s.io"),
              query="?limit=500")
        t += 5000
    done = k.deploy(t, w, "kubectl-client-side-apply")
    field = quote(f"metadata.name={w.name}", safe="")
    k.req(t + 300_000, "watch", oref("deployments", w.namespace, w.name, "apps"),
          query=f"?fieldSelector={field}&resourceVersion={eng.rv_now()}&watch=true",
          end=done + 400_000)


def stale_client(eng: Engine, cl: Cluster) -> None:
    """A pod still using a token whose service account was deleted: 401s on each relist."""
    node = cl.workers[-1]
    ip = cl.pod_ip(node, 250)
    rng = eng.rng

    def relist(t: int) -> None:
        for i, res in enumerate(("pods", "nodes")):
            uri = f"/api/v1/{res}?limit=500&resourceVersion={eng.rv_now()}&resourceVersionMatch=NotOlderThan"
            eng.unauthenticated(t + i * 900, "list", uri, oref(res), [ip], "Go-http-client/2.0")
        eng.at(t + 60 * SEC + rng.randrange(120 * SEC), relist)

    eng.at(eng.start + rng.randrange(120 * SEC), relist)


def install(eng: Engine, cl: Cluster) -> None:
    """Plan each simulated day's sessions and deploys (office hours in the team's zone)."""
    stale_client(eng, cl)

    def plan(day_start: int) -> None:
        rng = eng.rng
        weekday = (day_start // DAY_US + 3) % 7 < 5  # 1970-01-01 was a Thursday
        for p in cl.people:
            n = rng.randint(1, 4 if p.role == "sre" else 3) if weekday else int(rng.random() < 0.15)
            for _ in range(n):
                local = rng.uniform(8.5, 18.0) if weekday else rng.uniform(9, 22)
                at = day_start + int((local - p.tz) * _HOUR)
                if at >= eng.now:
                    session(eng, cl, p, at, rng.randint(4, 20))
        deploys = rng.randint(4, 9) if weekday else int(rng.random() < 0.2)
        for _ in range(deploys):
            at = day_start + int((rng.uniform(9, 18) - cl.tz) * _HOUR)
            if at >= eng.now:
                eng.at(at, _ci(eng, cl))
        eng.at(day_start + DAY_US, plan)

    eng.at(eng.start, lambda t: plan(t - t % DAY_US))


def _ci(eng: Engine, cl: Cluster) -> Callable[[int], None]:
    return lambda t: ci_deploy(eng, cl, t)
