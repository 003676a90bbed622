"""The detection engine: the condition language and its SQL, rule files and their errors,
stateful rules (threshold, distinct count, first-seen terms, sequences), suppression,
state that survives a restart, and events that lack what a rule reads."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import T0, audit_id, micro, request_events, user_info
from kubetrail.detect import CompileError, Engine, RuleError, compile_condition, load_rules
from kubetrail.detect.condition import parse_condition
from kubetrail.detect.examples import rows_from_events

ALICE = user_info("alice@example.com", ["developers", "system:authenticated"])


def rules_file(tmp_path: Path, entries: list[dict[str, Any]], name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def ruleset(tmp_path: Path, *entries: dict[str, Any]) -> Any:
    return load_rules([rules_file(tmp_path, list(entries))], builtin=False)


def rule(rid: str, condition: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"rule": rid, "title": rid.replace("-", " "), "severity": "medium",
            "condition": condition, **extra}


def run(rs: Any, events: list[dict[str, Any]], **kw: Any) -> list[Any]:
    rows = rows_from_events(events).sort_by("time")
    with Engine(rs, **kw) as engine:
        engine.note_time(rows.column("time")[0].as_py())
        return engine.process(rows) + engine.flush()


def pod_create(n: int, *, privileged: bool = False, kind: str = "containers", image: str = "nginx:1.27",
               at_min: int = 0, user: dict[str, Any] = ALICE, ns: str = "shop") -> list[dict[str, Any]]:
    container: dict[str, Any] = {"name": "c", "image": image}
    if privileged:
        container["securityContext"] = {"privileged": True}
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox"}]}
    spec.setdefault(kind, []).append(container)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{n}", "namespace": ns},
            "spec": spec}
    return request_events(audit_id(n), at=T0 + timedelta(minutes=at_min), verb="create",
                          uri=f"/api/v1/namespaces/{ns}/pods", user=user, level="Request",
                          object_ref={"resource": "pods", "namespace": ns, "name": f"p{n}",
                                      "apiVersion": "v1"},
                          code=201, request_object=body)


def failed_login(n: int, ip: str, at_sec: int) -> list[dict[str, Any]]:
    return request_events(audit_id(n), stages=("ResponseStarted",), at=T0 + timedelta(seconds=at_sec),
                          verb="get", uri="/api/v1/secrets", user={}, code=401, decision=None,
                          source_ips=(ip,), object_ref={"resource": "secrets", "apiVersion": "v1"})


# -- the language and its SQL ------------------------------------------------------------


@pytest.mark.parametrize(("condition", "sql"), [
    ({"verb": "delete"}, """("verb" = 'delete')"""),
    ({"verb": ["create", "update"], "resource": "pods"},
     """(("verb" IN ('create', 'update')) AND ("resource" = 'pods'))"""),
    ({"code": {"gte": 400}}, """(TRY_CAST("code" AS DOUBLE) >= 400.0)"""),
    ({"user": {"glob": "system:*"}}, """(("user" GLOB 'system:*'))"""),
    ({"groups": "system:masters"}, """list_has_any("groups", ['system:masters'])"""),
    ({"containers": {"image": {"glob": "*:latest"}}},
     """(len(list_filter(COALESCE(kt_containers, []), lambda x1: """
     """(len(list_filter(COALESCE((CASE WHEN json_type(x1, '$.image') = 'ARRAY' THEN """
     """CAST(json_extract(x1, '$.image') AS VARCHAR[]) ELSE [json_extract_string(x1, '$.image')] """
     """END), []), lambda v: ((v GLOB '*:latest')))) > 0))) > 0)"""),
    # Under NOT a missing value must count as false first, hence COALESCE.
    ({"not": {"namespace": "kube-system"}}, """(NOT COALESCE(("namespace" = 'kube-system'), FALSE))"""),
    ({"name": "o'brien"}, """("name" = 'o''brien')"""),
])
def test_conditions_compile_to_stable_sql(condition: dict[str, Any], sql: str) -> None:
    assert compile_condition(parse_condition(condition)) == sql


def test_containers_look_at_every_kind_and_every_template() -> None:
    from kubetrail.detect.condition import POD_PARTS_SQL as sql

    for path in ("$.requestObject.spec.containers[*]", "$.requestObject.spec.initContainers[*]",
                 "$.requestObject.spec.ephemeralContainers[*]",
                 "$.requestObject.spec.template.spec.containers[*]",
                 "$.requestObject.spec.jobTemplate.spec.template.spec.initContainers[*]"):
        assert path in sql


@pytest.mark.parametrize(("condition", "message"), [
    ({"verbb": "get"}, "unknown field 'verbb'"),
    ({"verb": {"like": "get"}}, "unknown operator 'like'"),
    ({"verb": {"regex": "("}}, "bad regular expression"),
    ({"verb": {"list": "nope"}}, "unknown list 'nope'"),
    ({"macro": "nope"}, "unknown macro 'nope'"),
    ({"source_ip": {"cidr": "10.0.0.0/33"}}, "not an address or network"),
    ({"code": {"gt": "four"}}, "`gt` takes one number"),
    ({"any": []}, "`any` takes a non-empty list"),
    ({"some": {"path": "requestObject.subjects"}}, "`some` takes {path"),
    ({"requestObject.spec[": 1}, "cannot read the field path"),
])
def test_condition_errors_name_the_construct(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(CompileError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_condition(condition)


def test_recursive_macros_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="refers to itself"):
        ruleset(tmp_path, {"macro": "a", "condition": {"macro": "b"}},
                {"macro": "b", "condition": {"macro": "a"}}, rule("r", {"macro": "a"}))


# -- rule files ------------------------------------------------------------------------------


def test_every_problem_of_every_file_is_reported_with_file_and_line(tmp_path: Path) -> None:
    good = rules_file(tmp_path, [rule("fine", {"verb": "get"})], "a.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("- rule: one\n  title: One\n  severity: severe\n  condition: {verb: get}\n"
                   "- rule: two\n  title: Two\n  severity: low\n  condition: {verb: get}\n"
                   "  colour: red\n"
                   "- list: things\n")
    worse = tmp_path / "c.yaml"
    worse.write_text("- rule: [unclosed\n")
    with pytest.raises(RuleError) as err:
        load_rules([good, bad, worse], builtin=False)
    text = str(err.value)
    assert f"{bad}:3" in text and "severe" in text
    assert f"{bad}:9" in text and "colour" in text
    assert f"{bad}:10" in text and "items" in text
    assert f"{worse}:" in text and "not valid YAML" in text
    assert "nothing was loaded" in text


def test_compile_errors_name_the_rule_and_its_place(tmp_path: Path) -> None:
    path = rules_file(tmp_path, [rule("ok", {"verb": "get"}), rule("broken", {"verbb": "get"})])
    with pytest.raises(RuleError, match=r"rules.yaml:\d+: rule 'broken': condition: unknown field"):
        load_rules([path], builtin=False)


def test_lists_append_macros_override_and_rules_take_overrides(tmp_path: Path) -> None:
    base = rules_file(tmp_path, [
        {"list": "bad_users", "items": ["mallory"]},
        rule("bad-user", {"user": {"list": "bad_users"}}, exceptions={"namespaces": ["lab"]}),
    ], "base.yaml")
    local = rules_file(tmp_path, [
        {"list": "bad_users", "items": ["alice@example.com"], "append": True},
        {"override": "bad-user", "severity": "high", "exceptions": {"namespaces": ["sandbox"]}},
    ], "local.yaml")
    rs = load_rules([base, local], builtin=False)
    r = rs.get("bad-user")
    assert r.severity == "high" and rs.lists["bad_users"] == ("mallory", "alice@example.com")
    assert r.spec["exceptions"] == {"namespaces": ["lab", "sandbox"]}
    fired = run(rs, pod_create(1) + pod_create(2, ns="sandbox") + pod_create(3, ns="lab"))
    assert [a.namespace for a in fired] == ["shop"]


def test_redefining_a_rule_needs_an_override(tmp_path: Path) -> None:
    a = rules_file(tmp_path, [rule("r", {"verb": "get"})], "a.yaml")
    b = rules_file(tmp_path, [rule("r", {"verb": "list"})], "b.yaml")
    with pytest.raises(RuleError, match="defined twice"):
        load_rules([a, b], builtin=False)


# -- running ---------------------------------------------------------------------------------


def test_any_container_kind_matches_and_one_alert_per_request(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("privileged", {"verb": "create", "containers": {
        "securityContext.privileged": True}}, output="{user} made {name} privileged"))
    events = (pod_create(1, privileged=True) + pod_create(2, privileged=True, kind="initContainers")
              + pod_create(3, privileged=True, kind="ephemeralContainers") + pod_create(4))
    events += request_events(audit_id(1), stages=("ResponseComplete",), at=T0, verb="create",
                             uri="/api/v1/namespaces/shop/pods", user=ALICE, level="Request",
                             object_ref={"resource": "pods", "namespace": "shop", "name": "p1",
                                         "apiVersion": "v1"}, code=201,
                             request_object=events[0].get("requestObject"))  # a duplicate stage
    alerts = run(rs, events)
    assert sorted(a.name for a in alerts) == ["p1", "p2", "p3"]
    assert alerts[0].message == "alice@example.com made p1 privileged"


def test_missing_fields_never_crash_and_never_match(tmp_path: Path) -> None:
    rs = ruleset(tmp_path,
                 rule("deep", {"requestObject.spec.template.spec.hostPID": True}),
                 rule("neg", {"not": {"requestObject.spec.hostNetwork": True}, "verb": "get"}),
                 rule("ip", {"source_ip": {"public": True}}),
                 rule("param", {"uri.param.command": {"glob": "*sh"}}))
    events = request_events(audit_id(7), at=T0, verb="get", uri="/version", user={}, source_ips=(),
                            user_agent=None, decision=None)
    alerts = run(rs, events)
    assert [a.rule for a in alerts] == ["neg"]  # "not hostNetwork" holds when there is none


def test_ip_tests(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("public", {"source_ip": {"public": True}}),
                 rule("corp", {"source_ip": {"cidr": ["10.0.0.0/8", "2001:db8::/32"]}}))
    ips = ["10.1.2.3", "203.0.113.7", "192.168.1.1", "2001:db8::5", "fd00::1", "8.8.8.8", "::1"]
    events = [e for n, ip in enumerate(ips) for e in request_events(
        audit_id(n), at=T0, verb="get", uri="/api/v1/pods", user=ALICE, source_ips=(ip,),
        object_ref={"resource": "pods", "apiVersion": "v1"})]
    alerts = run(rs, events)
    got = {(a.rule, a.source_ips[0]) for a in alerts}
    assert {ip for r, ip in got if r == "public"} == {"203.0.113.7", "8.8.8.8", "2001:db8::5"}
    assert {ip for r, ip in got if r == "corp"} == {"10.1.2.3", "2001:db8::5"}
    chain = ruleset(tmp_path, rule("via-proxy", {"source_ips": {"cidr": ["10.0.0.0/8", "fd00::/8"]}}),
                    rule("any-public", {"source_ips": {"public": True}}))
    events = [e for n, ips in enumerate([("203.0.113.1", "10.0.0.9"), ("192.168.0.1",),
                                         ("fd00::7", "172.16.0.1"), ()])
              for e in request_events(audit_id(n), at=T0, verb="get", uri="/api/v1/pods",
                                      user=ALICE, source_ips=ips,
                                      object_ref={"resource": "pods", "apiVersion": "v1"})]
    fired = {(a.rule, a.source_ips[0] if a.source_ips else None) for a in run(chain, events)}
    assert fired == {("via-proxy", "203.0.113.1"), ("via-proxy", "fd00::7"),
                     ("any-public", "203.0.113.1")}


def test_threshold_fires_once_per_burst_with_group_count_and_window(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, {**rule("burst", {"code": 401}), "stages": ["ResponseStarted"],
                            "threshold": {"count": 5, "window": "1m", "by": ["source_ip"]}})
    events = [e for i in range(12) for e in failed_login(i, "198.51.100.9", i * 3)]
    events += [e for i in range(4) for e in failed_login(100 + i, "198.51.100.10", i)]
    events += [e for i in range(5) for e in failed_login(200 + i, "198.51.100.11", i * 30)]  # slow
    alerts = run(rs, events)
    assert [(a.group, a.count) for a in alerts] == [({"source_ip": "198.51.100.9"}, 5),
                                                    ({"source_ip": "198.51.100.9"}, 5)]
    assert alerts[0].window[1] - alerts[0].window[0] == timedelta(seconds=12)


def test_distinct_count(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("many-secrets", {"resource": "secrets", "verb": "get"},
                                threshold={"count": 3, "window": "10m", "by": ["user"],
                                           "distinct": "name"}))

    def get(n: int, name: str) -> list[dict[str, Any]]:
        return request_events(audit_id(n), at=T0 + timedelta(seconds=n), verb="get",
                              uri=f"/api/v1/namespaces/a/secrets/{name}", user=ALICE,
                              object_ref={"resource": "secrets", "namespace": "a", "name": name,
                                          "apiVersion": "v1"})

    assert run(rs, get(1, "a") + get(2, "a") + get(3, "b") + get(4, "b")) == []
    fired = run(rs, get(1, "a") + get(2, "b") + get(3, "a") + get(4, "c"))
    assert len(fired) == 1 and fired[0].count == 3


def test_new_terms_learn_first_and_state_survives_a_restart(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("new-ip", {"resource": "pods"},
                                new_term={"fields": ["user", "source_ip"], "baseline": "1h"}))
    state = tmp_path / "state.json"

    def req(n: int, minutes: int, ip: str) -> list[dict[str, Any]]:
        return request_events(audit_id(n), at=T0 + timedelta(minutes=minutes), verb="get",
                              uri="/api/v1/namespaces/a/pods", user=ALICE, source_ips=(ip,),
                              object_ref={"resource": "pods", "namespace": "a", "apiVersion": "v1"})

    learning = req(1, 0, "10.0.0.1") + req(2, 50, "10.0.0.1")
    assert run(rs, learning, state_path=state) == []  # inside the baseline: learning
    later = req(3, 90, "10.0.0.1") + req(4, 95, "203.0.113.50") + req(5, 96, "203.0.113.50")
    fired = run(rs, later, state_path=state)  # a new engine: state read from disk
    assert [a.source_ips[0] for a in fired] == ["203.0.113.50"]
    # A term unseen for longer than the baseline is new again (a history window, as Elastic).
    assert [a.source_ips[0] for a in run(rs, req(6, 200, "10.0.0.1"), state_path=state)] == \
        ["10.0.0.1"]
    assert json.loads(state.read_text())["new_term"]["new-ip"]["terms"]


def test_sequence_by_user_within_a_span(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, {"rule": "bind-then-run", "title": "t", "severity": "high",
                            "sequence": {"by": ["user"], "within": "5m", "steps": [
                                {"resource": "clusterrolebindings", "verb": "create"},
                                {"resource": "pods", "verb": "create"}]}})

    def binding(n: int, minute: int, user: dict[str, Any] = ALICE) -> list[dict[str, Any]]:
        return request_events(audit_id(n), at=T0 + timedelta(minutes=minute), verb="create",
                              uri="/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                              user=user, code=201,
                              object_ref={"resource": "clusterrolebindings", "name": "b",
                                          "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"})

    bob = user_info("bob@example.com", ["system:authenticated"])
    in_order = binding(1, 0) + pod_create(2, at_min=3)
    too_late = binding(3, 0) + pod_create(4, at_min=9)
    other_user = binding(5, 0, bob) + pod_create(6, at_min=1)
    reversed_ = pod_create(7, at_min=0) + binding(8, 1)
    assert [a.group for a in run(rs, in_order)] == [{"user": "alice@example.com"}]
    for events in (too_late, other_user, reversed_):
        assert run(rs, events) == []


def test_suppression_turns_a_burst_into_one_alert_and_a_count(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("pods", {"resource": "pods", "verb": "create"},
                                suppress={"window": "10m", "by": ["user"]}))
    alerts = run(rs, [e for n in range(6) for e in pod_create(n, at_min=n)])
    assert [a.count for a in alerts] == [None, 6]


def test_disabled_rules_do_not_run_unless_asked_for(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("off", {"verb": "create"}, enabled=False))
    assert run(rs, pod_create(1)) == []
    assert len(run(rs, pod_create(1), rule_ids=["off"])) == 1


def test_alert_shapes(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("p", {"verb": "create", "containers": {"image": {"glob": "nginx*"}}},
                                tags=["T1610"], behaviours=["B1"]))
    [alert] = run(rs, pod_create(1))
    d = alert.to_dict()
    for key in ("rule", "title", "severity", "behaviours", "tags", "time", "cluster", "auditID",
                "user", "verb", "resource", "subresource", "namespace", "name", "sourceIPs",
                "userAgent", "message", "evidence"):
        assert key in d
    assert d["time"] == micro(T0 + timedelta(milliseconds=12, microseconds=345))
    assert d["evidence"]["verb"] == "create"
    falco = alert.to_falco()
    assert falco["priority"] == "Warning" and falco["source"] == "k8s_audit"
    assert falco["output_fields"]["ka.user.name"] == "alice@example.com"


def test_ingest_detect_stores_alerts_and_sends_them_to_the_configured_sinks(tmp_path: Path) -> None:
    from conftest import run_cli

    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for n in range(3) for e in pod_create(
        n, privileged=True)))
    rules = rules_file(tmp_path, [rule("priv", {"containers": {"securityContext.privileged": True}},
                                       severity="high")])
    sent = tmp_path / "sent.jsonl"
    config = tmp_path / "kubetrail.yaml"
    config.write_text(yaml.safe_dump({"alerts": {"min_severity": "medium", "sinks": [
        {"type": "file", "path": str(sent)}]}}))
    data = tmp_path / "data"
    code, _, err = run_cli("--config", config, "--data-dir", data, "--no-progress", "ingest",
                           "--detect", "--rules", rules, log)
    assert code == 0, err
    assert "alerts stored" in err
    sent_rules = [json.loads(line)["rule"] for line in sent.read_text().splitlines()]
    assert sent_rules.count("priv") == 3  # the pack's own rules may fire too
    code, out, err = run_cli("--data-dir", data, "alerts", "--rule", "priv", "-o", "json")
    assert code == 0 and len(out.splitlines()) == 3, err
    code, out, _ = run_cli("--data-dir", data, "alerts", "--severity", "critical")
    assert "no alerts" in out
    # Ingesting the same file again stores nothing twice, so no alert is repeated.
    run_cli("--config", config, "--data-dir", data, "--no-progress", "ingest", "--force",
            "--detect", "--rules", rules, log)
    assert len(sent.read_text().splitlines()) == len(sent_rules)


def test_detect_cli_outputs_and_exit_codes(tmp_path: Path) -> None:
    from conftest import run_cli

    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in pod_create(1, privileged=True)))
    rules = rules_file(tmp_path, [rule("priv", {"containers": {"securityContext.privileged": True}})])
    args = ["detect", "--no-builtin", "--rules", rules, "--stateless"]
    code, out, err = run_cli(*args, log, "-o", "json")
    assert code == 0, err
    alert = json.loads(out)
    assert alert["rule"] == "priv" and alert["evidence"] == {}
    code, out, _ = run_cli(*args, log, "-o", "falco")
    assert json.loads(out)["output_fields"]["ka.target.name"] == "p1"
    damaged = tmp_path / "damaged.log"
    damaged.write_text(log.read_text() + "{not json\n")
    code, out, err = run_cli(*args, damaged, "-o", "json")
    assert code == 3 and json.loads(out)["rule"] == "priv" and "damaged.log:2" in err
    code, _, err = run_cli(*args, tmp_path / "missing.log")
    assert code == 1 and "missing.log" in err and "Traceback" not in err
    bad_rules = tmp_path / "bad.yaml"
    bad_rules.write_text("- rule: x\n  title: x\n  severity: urgent\n  condition: {verb: get}\n")
    code, _, err = run_cli("detect", "--rules", bad_rules, log)
    assert code == 1 and "bad.yaml:3" in err and "urgent" in err


def test_an_empty_allow_list_matches_nothing(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, {"list": "trusted", "items": []},
                 rule("in-empty", {"user": {"glob": {"list": "trusted"}}}),
                 rule("outside-empty", {"verb": "create", "user": {"not_in": {"list": "trusted"}}}),
                 rule("images", {"verb": "create"},
                      exceptions={"images": ["nginx*", "busybox"]}))
    assert sorted(a.rule for a in run(rs, pod_create(1))) == ["outside-empty"]
    assert sorted(a.rule for a in run(rs, pod_create(2, image="evil/miner", kind="initContainers"))) \
        == ["images", "outside-empty"]
