"""Replaying policies over recorded traffic: request classes, volume estimates, diffs.

The traffic is a handful of requests whose every byte is known, so the estimates are
checked against figures computed here from the log itself (reference §3: which stages a
request emits; §2: what each level adds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    T0,
    WriteLog,
    assert_clean,
    audit_id,
    compact,
    ingest_into,
    request_events,
    run_cli,
    user_info,
)
from kubetrail.policy import load_policy
from kubetrail.policy.replay import diff_policies, simulate_policy
from kubetrail.policy.traffic import Traffic, traffic_from_archive, traffic_from_files
from kubetrail.simulate import write_simulation

ALICE = user_info("alice@example.com", ["developers", "system:authenticated"])
BOB = user_info("bob@example.com", ["system:authenticated"])
KUBELET = user_info("system:node:node-1", ["system:nodes", "system:authenticated"])

MANAGED = [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
DEPLOY_IN = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": "app", "managedFields": MANAGED},
             "spec": {"replicas": 2}}
DEPLOY_OUT = {**DEPLOY_IN, "metadata": {**DEPLOY_IN["metadata"], "uid": "u-1",
                                        "resourceVersion": "42"}}


def _ref(resource: str, namespace: str | None = None, name: str | None = None,
         group: str | None = None, subresource: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource}
    if namespace:
        ref["namespace"] = namespace
    if name:
        ref["name"] = name
    if group:
        ref["apiGroup"] = group
    ref["apiVersion"] = "v1"
    if subresource:
        ref["subresource"] = subresource
    return ref


def known_traffic() -> list[dict[str, Any]]:
    """Five requests: a create recorded with bodies, a secret read, a watch, a failed login,
    and an exec (recorded as a 2026 policy with RequestReceived kept for some would)."""
    at = T0
    events: list[dict[str, Any]] = []
    events += request_events(audit_id(1), stages=("RequestReceived", "ResponseComplete"),
                             at=at, verb="create", uri="/apis/apps/v1/namespaces/app/deployments",
                             user=ALICE, level="RequestResponse", code=201,
                             object_ref=_ref("deployments", "app", "web", "apps"),
                             request_object=DEPLOY_IN, response_object=DEPLOY_OUT)
    events += request_events(audit_id(2), at=at + timedelta(minutes=1), verb="get",
                             uri="/api/v1/namespaces/app/secrets/db", user=BOB,
                             object_ref=_ref("secrets", "app", "db"))
    events += request_events(audit_id(3), stages=("ResponseStarted", "ResponseComplete"),
                             at=at + timedelta(minutes=2), verb="watch",
                             uri="/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=true",
                             user=KUBELET, object_ref=_ref("pods"))
    events += request_events(audit_id(4), stages=("ResponseStarted",),
                             at=at + timedelta(minutes=3), verb="list", uri="/api/v1/secrets",
                             user={}, code=401, decision=None, object_ref=_ref("secrets"),
                             status={"metadata": {}, "status": "Failure", "code": 401,
                                     "message": "Authentication failed, attempted: bearer"})
    events += request_events(audit_id(5), stages=("RequestReceived", "ResponseStarted",
                                                  "ResponseComplete"),
                             at=at + timedelta(hours=2), verb="create",
                             uri="/api/v1/namespaces/app/pods/web-1/exec?command=sh&stdin=true",
                             user=ALICE, code=101, started_code=101,
                             object_ref=_ref("pods", "app", "web-1", subresource="exec"))
    return events


def policy(text: str) -> Any:
    return load_policy("apiVersion: audit.k8s.io/v1\nkind: Policy\n" + text)


@pytest.fixture
def known(write_log: WriteLog) -> tuple[Path, Traffic]:
    log = write_log("audit.log", known_traffic())
    return log, traffic_from_files([str(log)])


def test_classes_count_requests_once_whatever_stages_were_recorded(known: tuple[Path, Traffic]
                                                                   ) -> None:
    _, traffic = known
    assert traffic.requests == 5 and traffic.events == 9
    by_verb = {(c.attributes.verb, c.attributes.resource): c for c in traffic.classes}
    create = by_verb[("create", "deployments")]
    assert create.events == 2 and create.requests == 1
    assert create.attributes.name == ""  # the policy saw no name: it came from the body
    failed = by_verb[("list", "secrets")]
    assert failed.failed_authn == 1 and failed.attributes.user is None
    assert by_verb[("watch", "pods")].long_running
    assert by_verb[("create", "pods")].long_running  # exec
    assert traffic.days == pytest.approx(2 / 24, rel=0.01)


@pytest.mark.parametrize(("rules", "events"), [
    # Every stage each request emits: 2 + 2 + 3 (watch) + 1 (failed login) + 3 (exec).
    ("rules:\n- level: Metadata\n", 11),
    ("omitStages: [RequestReceived]\nrules:\n- level: Metadata\n", 7),
    ("rules:\n- level: Metadata\n  omitStages: [RequestReceived, ResponseStarted]\n", 4),
    ("rules:\n- level: None\n", 0),
    # Nothing matches the deployment create (the only rule is for secrets): default None.
    ("rules:\n- level: Metadata\n  resources: [{group: '', resources: [secrets]}]\n", 3),
])
def test_events_follow_the_stages_the_api_server_emits(known: tuple[Path, Traffic], rules: str,
                                                       events: int) -> None:
    _, traffic = known
    assert simulate_policy(policy(rules), traffic).after.events == events


def _line_sizes(events: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """auditID → [(bytes of the line with its newline, bytes of its bodies)]."""
    out: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        bodies = sum(len(compact(e[k])) for k in ("requestObject", "responseObject") if k in e)
        out.setdefault(e["auditID"], []).append((len(compact(e)) + 1, bodies))
    return out


def test_bytes_add_bodies_by_level_and_drop_managed_fields(known: tuple[Path, Traffic]) -> None:
    _, traffic = known
    sizes = _line_sizes(known_traffic())[audit_id(1)]
    meta = sum(s - b for s, b in sizes) / len(sizes)
    req, resp = len(compact(DEPLOY_IN)), len(compact(DEPLOY_OUT))
    managed = len(compact(MANAGED))
    deploy = ("rules:\n- level: {level}\n  resources: [{{group: apps}}]\n"
              "  omitStages: [RequestReceived]\n{extra}")

    def volume(level: str, extra: str = "") -> float:
        sim = simulate_policy(policy(deploy.format(level=level, extra=extra)), traffic)
        assert sim.rules[0].volume.requests == 1
        return sim.rules[0].volume.bytes

    assert volume("Metadata") == pytest.approx(meta)
    assert volume("Request") == pytest.approx(meta + req)
    assert volume("RequestResponse") == pytest.approx(meta + req + resp)
    assert volume("RequestResponse", "  omitManagedFields: true\n") == \
        pytest.approx(meta + req + resp - 2 * managed)


def test_recorded_totals_are_the_log_itself(known: tuple[Path, Traffic]) -> None:
    log, traffic = known
    sim = simulate_policy(policy("rules:\n- level: Metadata\n"), traffic)
    assert sim.before.events == 9
    assert sim.before.bytes == log.stat().st_size


def test_a_body_never_recorded_is_borrowed_or_reported(write_log: WriteLog) -> None:
    """Two creates of deployments, one recorded at Metadata: its body size is borrowed from
    the other; a patch of configmaps (never recorded with a body) is reported unknown."""
    events = known_traffic()[:2]
    events += request_events(audit_id(9), at=T0, verb="create",
                             uri="/apis/apps/v1/namespaces/ops/deployments", user=BOB,
                             object_ref=_ref("deployments", "ops", None, "apps"), code=201)
    events += request_events(audit_id(10), at=T0, verb="patch",
                             uri="/api/v1/namespaces/ops/configmaps/cfg", user=BOB,
                             object_ref=_ref("configmaps", "ops", "cfg"))
    traffic = traffic_from_files([str(write_log("a.log", events))])
    sim = simulate_policy(policy("rules:\n- level: Request\n"), traffic)
    assert sim.estimated_bodies == 1  # bob's create borrowed alice's body size
    assert sim.unknown_bodies == 1  # the configmap patch
    assert any("never recorded" in w for w in sim.warnings)


def test_traffic_is_the_same_from_a_log_and_from_its_archive(tmp_path: Path,
                                                              known: tuple[Path, Traffic]) -> None:
    log, from_log = known
    archive, report = ingest_into(tmp_path / "data", [log])
    assert report.exit_code == 0
    from_archive = traffic_from_archive(archive)
    key = lambda c: repr(c.attributes)  # noqa: E731
    assert sorted(from_log.classes, key=key) == sorted(from_archive.classes, key=key)


def test_every_shape_of_the_simulators_log_is_replayed_whole(tmp_path: Path) -> None:
    """Cloud exports carry the same events inside other records: all of them are counted,
    and the policy is replayed over them."""
    rules = policy("omitStages: [RequestReceived]\nrules:\n- level: Metadata\n")
    for fmt, name in (("jsonl", "sim.log"), ("gke", "sim-gke.json.gz"), ("aks", "sim-aks.json"),
                      ("eks", "sim-eks.json")):
        path = tmp_path / name
        write_simulation(path, events=3000, seed=5, scenarios=("exec-shell",), fmt=fmt)
        traffic = traffic_from_files([str(path)])
        assert traffic.events == 3000 and traffic.unreadable == 0, fmt
        assert 1000 < traffic.requests < 3000 and len(traffic.classes) > 50, fmt
        sim = simulate_policy(rules, traffic)
        assert sim.after.events >= traffic.requests - sum(c.failed_authn for c in traffic.classes)


def test_unreadable_records_are_counted_not_fatal(write_log: WriteLog, tmp_path: Path) -> None:
    good = write_log("good.log", known_traffic())
    bad = tmp_path / "bad.log"
    bad.write_text(good.read_text() + "{not json\n" + json.dumps({"kind": "Event"}) + "\n")
    traffic = traffic_from_files([str(bad)])
    assert traffic.requests == 5 and traffic.unreadable == 2


def test_diff_groups_the_requests_whose_record_changes(known: tuple[Path, Traffic]) -> None:
    _, traffic = known
    a = policy("omitStages: [RequestReceived]\nrules:\n- level: Metadata\n")
    b = policy("omitStages: [RequestReceived]\nrules:\n"
               "- level: None\n  resources: [{group: '', resources: [secrets]}]\n"
               "  verbs: [get]\n"
               "- level: RequestResponse\n  resources: [{group: apps}]\n"
               "- level: Metadata\n")
    result = diff_policies(a, b, traffic)
    changes = {(c.before, c.after, c.verb, c.what): c for c in result.changes}
    assert set(changes) == {("Metadata", "None", "get", "secrets"),
                            ("Metadata", "RequestResponse", "create", "deployments.apps")}
    dropped = changes[("Metadata", "None", "get", "secrets")]
    assert dropped.requests == 1 and dropped.events_after == 0 and dropped.kind == "less"
    assert dropped.examples == ("bob@example.com",) and dropped.rule_after == 0
    assert result.unchanged_requests == 3
    assert diff_policies(a, a, traffic).changes == ()


def test_cli_simulate_and_diff_on_logs_and_on_the_archive(tmp_path: Path, write_log: WriteLog
                                                          ) -> None:
    log = write_log("audit.log", known_traffic())
    data = tmp_path / "data"
    ingest_into(data, [log])
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
                 "rules:\n- level: Metadata\n")
    q = tmp_path / "q.yaml"
    q.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"
                 "  nonResourceURLs: ['*']\n- level: Request\n")
    code, out, err = run_cli("policy", "simulate", p, log, "-o", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["before"]["events"] == 9 and result["after"]["events"] == 7
    code, out2, err = run_cli("--data-dir", data, "policy", "simulate", p, "--archive", "-o", "json")
    assert code == 0, err
    assert json.loads(out2)["after"] == result["after"]
    code, out, err = run_cli("policy", "simulate", p, log)
    assert code == 0 and "Volume per rule" in out, err
    code, out, err = run_cli("policy", "diff", p, q, log, "-o", "json")
    assert code == 0, err
    assert {c["to"] for c in json.loads(out)["changes"]} == {"Request"}
    code, out, err = run_cli("policy", "diff", p, q, log)
    assert code == 0 and "Metadata → Request" in out, err
    code, _, err = run_cli("policy", "simulate", p)  # neither logs nor --archive
    assert code == 1 and "--archive" in err
    assert_clean(err)


def test_simulate_names_the_detection_rules_a_policy_would_blind(known: tuple[Path, Traffic],
                                                                 tmp_path: Path) -> None:
    import yaml

    from kubetrail.detect import load_rules

    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump([
        {"rule": "replicas", "title": "t", "severity": "high",
         "condition": {"resource": "deployments", "requestObject.spec.replicas": {"gt": 1}}},
        {"rule": "exec", "title": "t", "severity": "medium", "stages": ["ResponseStarted"],
         "condition": {"subresource": "exec"}},
        {"rule": "secret-read", "title": "t", "severity": "low",
         "condition": {"resource": "secrets", "verb": "get"}},
        {"rule": "logins", "title": "t", "severity": "high",
         "condition": {"code": 401, "verb": "get"}},
    ]))
    rules = load_rules([rules_path], builtin=False).rules
    _, traffic = known
    careful = policy("omitStages: [RequestReceived]\nrules:\n"
                     "- level: RequestResponse\n  resources: [{group: apps}]\n"
                     "- level: Metadata\n")
    assert simulate_policy(careful, traffic, detection_rules=rules).blind == ()
    sloppy = policy("omitStages: [RequestReceived, ResponseStarted]\nrules:\n"
                    "- level: None\n  resources: [{group: '', resources: [secrets]}]\n"
                    "- level: Metadata\n")
    blind = {b.rule: b for b in simulate_policy(sloppy, traffic, detection_rules=rules).blind}
    assert set(blind) == {"replicas", "exec", "secret-read"}  # no 401 on a get was seen
    assert blind["replicas"].needs == "Request" and "without the body" in blind["replicas"].reasons[0]
    assert "stages ResponseStarted are omitted" in blind["exec"].reasons[0]
    assert blind["secret-read"].blind == 1 and "level None by rules[0]" in blind["secret-read"].reasons[0]
    assert simulate_policy(sloppy, traffic, detection_rules=rules).blind[0].rule == "replicas"
