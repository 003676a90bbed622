"""Shared fixtures: a scrubbed environment, realistic audit events built in code, input
files of every shape, ingested archives, and the CLI run in a real subprocess.

The events follow shared/reference/k8s-audit-semantics.md §1–3: key order as the API
server writes it (so the JSON Lines fast path sees them as it would in production), six
fractional digits in MicroTime, `apiGroup` omitted for the core group, RequestReceived
without responseStatus or annotations, a single ResponseStarted event for failed
authentication, and ResponseStarted for long-running requests.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import kubetrail
from kubetrail.ingest import IngestReport, ingest
from kubetrail.store.archive import Archive

#: The `src` directory the tests import kubetrail from; the CLI subprocess uses the same.
SRC = Path(kubetrail.__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
SAMPLE_PREFIX = "elastic_integrations_packages_kubernetes_data_stream_audit_logs__dev_test_pipeline_"

#: 2026-11-01 09:00 UTC: the start of the standard trail.
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

Event = dict[str, Any]


# -- environment -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KUBETRAIL_*/XDG_* variable leaks in, HOME is a fresh directory, and the working
    directory holds no kubetrail.yaml: no test reads or writes the real ~/.local/share."""
    for name in list(os.environ):
        if name.startswith(("KUBETRAIL_", "XDG_")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


# -- building events -------------------------------------------------------------------


def micro(t: datetime) -> str:
    """The API server's MicroTime: UTC, six fractional digits, Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_id(n: int) -> str:
    return f"{n:08x}-5a1e-4c0d-8e0f-{n:012x}"


def user_info(username: str | None, groups: Sequence[str] = (), uid: str | None = None
              ) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if username is not None:
        info["username"] = username
    if uid is not None:
        info["uid"] = uid
    if groups:
        info["groups"] = list(groups)
    return info


def request_events(
    auditid: str,
    *,
    stages: Sequence[str] = ("ResponseComplete",),
    at: datetime,
    verb: str,
    uri: str,
    user: dict[str, Any],
    level: str = "Metadata",
    object_ref: dict[str, Any] | None = None,
    code: int = 200,
    status: dict[str, Any] | None = None,
    started_code: int | None = None,
    source_ips: Sequence[str] = ("10.0.0.1",),
    user_agent: str | None = "kubectl/v1.31.0 (linux/amd64) kubernetes/6911225",
    decision: str | None = "allow",
    reason: str = "",
    annotations: Mapping[str, str] | None = None,
    impersonated: dict[str, Any] | None = None,
    request_object: Any = None,
    response_object: Any = None,
    latency: timedelta = timedelta(milliseconds=12, microseconds=345),
) -> list[Event]:
    """The events one request produces, one per stage, in the API server's key order."""
    out: list[Event] = []
    for stage in stages:
        e: Event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
                    "auditID": auditid, "stage": stage, "requestURI": uri, "verb": verb,
                    "user": user}
        if impersonated is not None:
            e["impersonatedUser"] = impersonated
        if source_ips:
            e["sourceIPs"] = list(source_ips)
        if user_agent:
            e["userAgent"] = user_agent
        if object_ref is not None:
            e["objectRef"] = object_ref
        if stage == "RequestReceived":
            stage_at = at
        elif stage == "ResponseStarted":
            stage_at = at + timedelta(microseconds=2_500)
            e["responseStatus"] = {"metadata": {}, "code": started_code or code}
        else:
            stage_at = at + latency
            e["responseStatus"] = status if status is not None else {"metadata": {}, "code": code}
        if stage != "RequestReceived" and level in ("Request", "RequestResponse") \
                and request_object is not None:
            e["requestObject"] = request_object
        if stage in ("ResponseComplete", "Panic") and level == "RequestResponse" \
                and response_object is not None:
            e["responseObject"] = response_object
        e["requestReceivedTimestamp"] = micro(at)
        e["stageTimestamp"] = micro(stage_at)
        notes: dict[str, str] = {}
        if stage != "RequestReceived" and decision is not None:
            notes["authorization.k8s.io/decision"] = decision
            notes["authorization.k8s.io/reason"] = reason
        notes.update(annotations or {})
        if notes:
            e["annotations"] = notes
        out.append(e)
    return out


def deployment(image: str, replicas: int, *, rv: str | None = None, generation: int | None = None,
               uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "shop", "labels": {"app": "web"}}
    if uid:
        meta.update(uid=uid, resourceVersion=rv, generation=generation,
                    creationTimestamp="2026-11-01T09:10:00Z",
                    managedFields=[{"manager": "kubectl", "operation": "Update"}])
    body: dict[str, Any] = {
        "kind": "Deployment", "apiVersion": "apps/v1", "metadata": meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": image,
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }
    if uid:
        body["status"] = {"observedGeneration": generation, "replicas": replicas}
    return body


ALICE = user_info("alice@example.com", ["developers", "system:authenticated"], "u-alice")
BOB = user_info("bob@example.com", ["ops", "system:authenticated"], "u-bob")
CAROL = user_info("carol@example.com", ["admins", "system:authenticated"])
MALLORY = user_info("mallory@example.com", ["contractors", "system:authenticated"])
KUBELET = user_info("system:node:node-1", ["system:nodes", "system:authenticated"])
SCHEDULER = user_info("system:kube-scheduler", ["system:authenticated"])
COREDNS = user_info("system:serviceaccount:kube-system:coredns",
                    ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                     "system:authenticated"])
DEPLOYER = user_info("system:serviceaccount:shop:deployer",
                     ["system:serviceaccounts", "system:serviceaccounts:shop",
                      "system:authenticated"])
UA_ALICE = "kubectl/v1.31.0 (linux/amd64) kubernetes/6911225"
UA_BOB = "kubectl/v1.30.2 (darwin/arm64) kubernetes/3968350"
UA_KUBELET = "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46"
DEPLOY_UID = "5e1f0a77-9d0b-4d7e-9a51-3c2f1b0d9e11"
EXEC_URI = ("/api/v1/namespaces/shop/pods/web-7d4b9c-x2x/exec?command=%2Fbin%2Fsh&command=-c"
            "&command=id&container=app&stdin=true&stdout=true&tty=true")


@dataclass(frozen=True)
class Trail:
    """The standard trail: every kind of request people ask about, with known ids."""

    events: list[Event]
    ids: dict[str, str]  # request name → auditID

    @property
    def requests(self) -> int:
        return len({e["auditID"] for e in self.events})

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if e["auditID"] == self.ids[name]]

    def names(self, ids: Sequence[str] | set[str]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id.get(i, i) for i in ids}


def audit_trail(base: datetime = T0, id_base: int = 1) -> Trail:
    """Fourteen requests (21 events) of a small cluster, spread over two days."""
    names = ["LEASE", "GET_PODS", "CREATE", "UPDATE", "PATCH", "DELETE", "EXEC", "FORBID",
             "AUTHN_401", "WATCH", "IMPERSONATE", "SA_LIST", "TRUNCATED", "CM_UPDATE"]
    ids = {name: audit_id(id_base + i) for i, name in enumerate(names)}
    m = timedelta(minutes=1)
    deploy_ref = {"resource": "deployments", "namespace": "shop", "name": "web",
                  "apiGroup": "apps", "apiVersion": "v1"}
    events: list[Event] = []
    events += request_events(
        ids["LEASE"], at=base, verb="update", user=KUBELET, user_agent=UA_KUBELET,
        uri="/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1?timeout=10s",
        object_ref={"resource": "leases", "namespace": "kube-node-lease", "name": "node-1",
                    "apiGroup": "coordination.k8s.io", "apiVersion": "v1"},
        source_ips=["10.0.1.11"])
    events += request_events(
        ids["GET_PODS"], stages=("RequestReceived", "ResponseComplete"), at=base + 5 * m,
        verb="list", user=ALICE, uri="/api/v1/namespaces/shop/pods?limit=500",
        object_ref={"resource": "pods", "namespace": "shop", "apiVersion": "v1"},
        source_ips=["203.0.113.9"], user_agent=UA_ALICE,
        reason='RBAC: allowed by RoleBinding "dev/shop" of ClusterRole "edit" to Group '
        '"developers"')
    events += request_events(
        ids["CREATE"], stages=("RequestReceived", "ResponseComplete"), at=base + 10 * m,
        verb="create", user=ALICE, level="RequestResponse", code=201,
        uri="/apis/apps/v1/namespaces/shop/deployments?fieldManager=kubectl-client-side-apply",
        object_ref=deploy_ref, source_ips=["203.0.113.9"], user_agent=UA_ALICE,
        request_object=deployment("nginx:1.25", 2),
        response_object=deployment("nginx:1.25", 2, rv="1001", generation=1, uid=DEPLOY_UID))
    events += request_events(
        ids["UPDATE"], at=base + 20 * m, verb="update", user=BOB, level="RequestResponse",
        uri="/apis/apps/v1/namespaces/shop/deployments/web", object_ref=deploy_ref,
        source_ips=["2001:db8::7"], user_agent=UA_BOB,
        request_object=deployment("nginx:1.26", 2, rv="1001", generation=1, uid=DEPLOY_UID),
        response_object=deployment("nginx:1.26", 2, rv="1042", generation=2, uid=DEPLOY_UID))
    events += request_events(
        ids["PATCH"], at=base + 30 * m, verb="patch", user=ALICE, level="RequestResponse",
        uri="/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=kubectl-patch",
        object_ref=deploy_ref, source_ips=["203.0.113.9"], user_agent=UA_ALICE,
        request_object={"spec": {"replicas": 3}},
        response_object=deployment("nginx:1.26", 3, rv="1077", generation=3, uid=DEPLOY_UID))
    events += request_events(
        ids["DELETE"], at=base + timedelta(hours=15, minutes=30), verb="delete", user=BOB,
        level="RequestResponse", uri="/apis/apps/v1/namespaces/shop/deployments/web",
        object_ref=deploy_ref, source_ips=["192.0.2.44"], user_agent=UA_BOB,
        request_object={"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1",
                        "propagationPolicy": "Background"},
        response_object={"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Success",
                         "details": {"name": "web", "group": "apps", "kind": "deployments",
                                     "uid": DEPLOY_UID}})
    events += request_events(
        ids["EXEC"], stages=("RequestReceived", "ResponseStarted", "ResponseComplete"),
        at=base + 40 * m, verb="create", user=BOB, level="Request", code=101, uri=EXEC_URI,
        object_ref={"resource": "pods", "namespace": "shop", "name": "web-7d4b9c-x2x",
                    "apiVersion": "v1", "subresource": "exec"},
        source_ips=["192.0.2.44"], user_agent=UA_BOB, latency=timedelta(seconds=42))
    events += request_events(
        ids["FORBID"], stages=("RequestReceived", "ResponseComplete"), at=base + 45 * m,
        verb="list", user=MALLORY, uri="/api/v1/namespaces/kube-system/secrets",
        object_ref={"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
        code=403, decision="forbid", reason="", source_ips=["198.51.100.77"],
        user_agent="curl/8.5.0",
        status={"metadata": {}, "status": "Failure",
                "message": 'secrets is forbidden: User "mallory@example.com" cannot list '
                'resource "secrets" in API group "" in the namespace "kube-system"',
                "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403})
    events += request_events(
        ids["AUTHN_401"], stages=("ResponseStarted",), at=base + 50 * m, verb="list", user={},
        uri="/api/v1/namespaces/kube-system/secrets",
        object_ref={"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
        code=401, started_code=401, decision=None, source_ips=["198.51.100.23"],
        user_agent="python-requests/2.31.0")
    events[-1]["responseStatus"] = {"metadata": {}, "status": "Failure",
                                    "message": "Authentication failed, attempted: bearer",
                                    "reason": "Unauthorized", "code": 401}
    events += request_events(
        ids["WATCH"], stages=("RequestReceived", "ResponseStarted", "ResponseComplete"),
        at=base + 55 * m, verb="watch", user=SCHEDULER,
        uri="/api/v1/pods?allowWatchBookmarks=true&resourceVersion=1234&timeout=8m&watch=true",
        object_ref={"resource": "pods", "apiVersion": "v1"}, source_ips=["10.0.0.2"],
        user_agent="kube-scheduler/v1.31.2 (linux/amd64) kubernetes/5864a46/scheduler",
        latency=timedelta(minutes=8, milliseconds=1))
    events += request_events(
        ids["IMPERSONATE"], at=base + 70 * m, verb="get", user=CAROL, impersonated=DEPLOYER,
        uri="/api/v1/namespaces/shop/configmaps/app-config",
        object_ref={"resource": "configmaps", "namespace": "shop", "name": "app-config",
                    "apiVersion": "v1"},
        source_ips=["203.0.113.200"], user_agent=UA_ALICE)
    events += request_events(
        ids["SA_LIST"], at=base + 80 * m, verb="list", user=COREDNS,
        uri="/apis/discovery.k8s.io/v1/endpointslices?limit=500&resourceVersion=0",
        object_ref={"resource": "endpointslices", "apiGroup": "discovery.k8s.io",
                    "apiVersion": "v1"},
        source_ips=["10.244.0.5"], user_agent="coredns/v1.11.3 (linux/amd64) kubernetes/c8d7a5c")
    events += request_events(
        ids["TRUNCATED"], at=base + 90 * m, verb="patch", user=KUBELET, level="Request",
        uri="/api/v1/namespaces/shop/pods/web-7d4b9c-x2x/status",
        object_ref={"resource": "pods", "namespace": "shop", "name": "web-7d4b9c-x2x",
                    "apiVersion": "v1", "subresource": "status"},
        source_ips=["203.0.113.50", "10.0.1.11"], user_agent=UA_KUBELET,
        annotations={"audit.k8s.io/truncated": "true"})
    events += request_events(
        ids["CM_UPDATE"], at=base + 120 * m, verb="update", user=BOB,
        uri="/api/v1/namespaces/shop/configmaps/app-config",
        object_ref={"resource": "configmaps", "namespace": "shop", "name": "app-config",
                    "apiVersion": "v1"},
        source_ips=["192.0.2.44"], user_agent=UA_BOB)
    return Trail(events, ids)


def bulk_events(n: int, *, start: int = 1_000_000, base: datetime = T0,
                pad: int = 0) -> list[Event]:
    """`n` distinct single-stage kubelet-like events (one audit ID each)."""
    out = []
    for i in range(n):
        (e,) = request_events(
            audit_id(start + i), at=base + timedelta(milliseconds=50 * i), verb="get",
            user=KUBELET, user_agent=UA_KUBELET, source_ips=["10.0.1.11"],
            uri=f"/api/v1/namespaces/ns-{i % 7}/pods/pod-{i}",
            object_ref={"resource": "pods", "namespace": f"ns-{i % 7}", "name": f"pod-{i}",
                        "apiVersion": "v1"},
            annotations={"note": "x" * pad} if pad else None)
        out.append(e)
    return out


# -- writing inputs --------------------------------------------------------------------


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_list(events: Sequence[Event]) -> dict[str, Any]:
    """An EventList webhook body; items without kind/apiVersion, as the server sends them."""
    items = [{k: v for k, v in e.items() if k not in ("kind", "apiVersion")} for e in events]
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
            "items": items}


def render(events: Sequence[Event], shape: str = "jsonl", newline: str = "\n") -> str:
    """Events as text of one input shape."""
    if shape == "jsonl":
        return "".join(compact(e) + newline for e in events)
    if shape == "eventlist":
        return compact(event_list(events)) + newline
    if shape == "eventlist-pretty":
        return json.dumps(event_list(events), indent=2).replace("\n", newline) + newline
    if shape == "pretty":
        return "".join(json.dumps(e, indent=2).replace("\n", newline) + newline for e in events)
    if shape == "concat":
        return "".join(compact(e) for e in events)
    if shape == "array":  # `jq -s`, `gcloud --format=json` style: one JSON array
        return json.dumps(list(events), indent=1).replace("\n", newline) + newline
    if shape == "aws-tail":  # `aws logs tail` (--format detailed, the default)
        return "".join(
            f"{e['stageTimestamp'].replace('Z', '+00:00')} kube-apiserver-audit-8f3c2 "
            f"{compact(e)}{newline}" for e in events)
    if shape == "aws-tail-short":  # `aws logs tail --format short`: no stream name
        return "".join(f"{e['stageTimestamp'].replace('Z', '+00:00')} {compact(e)}{newline}"
                       for e in events)
    raise ValueError(shape)


def encode(text: str, *, encoding: str = "utf-8", compress: str | None = None) -> bytes:
    """Text → bytes in an encoding ('utf-8', 'utf-8-sig' for a BOM, 'utf-16', 'utf-16-be'
    (with its BOM)), compressed
    with gzip, a two-member gzip ('gzip-multi'), or bzip2."""
    data = ("\ufeff" + text).encode(encoding) if encoding == "utf-16-be" else text.encode(encoding)
    if compress is None:
        return data
    if compress == "gzip":
        return gzip.compress(data)
    if compress == "gzip-multi":
        cut = len(data) // 2
        return gzip.compress(data[:cut]) + gzip.compress(data[cut:])
    if compress == "bzip2":
        return bz2.compress(data)
    raise ValueError(compress)


WriteLog = Callable[..., Path]


@pytest.fixture
def write_log(tmp_path: Path) -> WriteLog:
    """write_log(name, events, shape=..., compress=..., encoding=..., newline=...) → path."""
    inputs = tmp_path / "inputs"

    def write(name: str, events: Sequence[Event], *, shape: str = "jsonl",
              compress: str | None = None, encoding: str = "utf-8", newline: str = "\n") -> Path:
        path = inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(render(events, shape, newline), encoding=encoding,
                                compress=compress))
        return path

    return write


@pytest.fixture
def trail() -> Trail:
    return audit_trail()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def ingest_into(data: Path, paths: Sequence[Path | str], **kw: Any) -> tuple[Archive, IngestReport]:
    archive = Archive(data)
    return archive, ingest(archive, [str(p) for p in paths], **kw)


def rows(archive: Archive, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    con = archive.connect()
    try:
        return con.execute(sql, list(params or [])).fetchall()
    finally:
        con.close()


def quarantine_records(archive: Archive) -> list[dict[str, Any]]:
    path = archive.quarantine_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def trail_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, Trail]:
    """The standard trail ingested once (cluster 'prod') for read-only tests."""
    base = tmp_path_factory.mktemp("trail")
    t = audit_trail()
    log = base / "audit.log"
    log.write_text(render(t.events), encoding="utf-8")
    archive = Archive(base / "data")
    report = ingest(archive, [str(log)], cluster="prod")
    assert report.exit_code == 0, report.to_dict()
    return archive, t


# -- the CLI in a subprocess -----------------------------------------------------------


CliResult = tuple[int, str, str]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETRAIL_", "XDG_"))}
    env.update(PYTHONPATH=str(SRC), COLUMNS="250", PYTHONIOENCODING="utf-8")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


def run_cli(*args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            stdin: bytes | None = None, timeout: float = 120) -> CliResult:
    """`python -m kubetrail ARGS` in a subprocess → (exit code, stdout, stderr).

    The environment is the (scrubbed) test environment plus `env`; PYTHONPATH points at
    the kubetrail the tests import."""
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrail", *map(str, args)], input=stdin,
        capture_output=True, env=cli_env(env), cwd=cwd, timeout=timeout, check=False)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def run_cli_many(calls: Sequence[Sequence[str | Path]], *, env: Mapping[str, str] | None = None,
                 workers: int = 4) -> list[CliResult]:
    """Several independent read-only CLI runs at once (they are mostly interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: run_cli(*a, env=env), calls))


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return run_cli


def assert_clean(stderr: str) -> None:
    """A message for a person, never a Python traceback."""
    assert "Traceback" not in stderr, stderr
    assert 'File "' not in stderr, stderr


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
