"""Sigma rules for Kubernetes audit logs → kubetrail rules, run for real against events.

The sample rules in tests/data/sigma/ are written for these tests in the shape of SigmaHQ's
rules/application/kubernetes/audit/ rules; broken/ holds deliberately bad ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrail.detect.engine import Engine
from kubetrail.detect.examples import rows_from_events
from kubetrail.detect.rules import RuleSet, load_rules
from kubetrail.detect.sigma import FIELD_MAP, Conversion, convert_sigma, to_yaml

DATA = Path(__file__).parent / "data" / "sigma"
_ids = itertools.count(1)


def event(verb: str = "get", resource: str | None = "pods", *, user: str = "alice@example.com",
          groups: Sequence[str] = ("system:authenticated",), namespace: str | None = "shop",
          name: str | None = "web-1", subresource: str | None = None, api_group: str | None = None,
          code: int = 200, decision: str = "allow", source_ips: Sequence[str] = ("10.0.0.5",),
          user_agent: str | None = "kubectl/v1.30.0 (linux/amd64)", uri: str | None = None,
          request_object: dict[str, Any] | None = None, impersonate: str | None = None,
          stage: str = "ResponseComplete") -> dict[str, Any]:
    """One audit Event as the API server writes it."""
    ref: dict[str, Any] = {}
    if resource:
        ref = {"resource": resource, "namespace": namespace, "name": name, "apiVersion": "v1"}
        if api_group:
            ref["apiGroup"] = api_group
        if subresource:
            ref["subresource"] = subresource
        ref = {k: v for k, v in ref.items() if v is not None}
    if uri is None:
        uri = f"/api/v1/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "") + \
            (f"/{subresource}" if subresource else "")
    n = next(_ids)
    e: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request",
        "auditID": f"00000000-0000-0000-0000-{n:012d}", "stage": stage, "requestURI": uri,
        "verb": verb, "user": {"username": user, "groups": list(groups)},
        "sourceIPs": list(source_ips),
    }
    if impersonate:
        e["impersonatedUser"] = {"username": impersonate}
    if user_agent is not None:
        e["userAgent"] = user_agent
    if ref:
        e["objectRef"] = ref
    if request_object is not None:
        e["requestObject"] = request_object
    e["responseStatus"] = {"metadata": {}, "code": code}
    e["requestReceivedTimestamp"] = "2026-11-01T09:00:00.000000Z"
    e["stageTimestamp"] = f"2026-11-01T09:00:{n % 60:02d}.002000Z"
    e["annotations"] = {"authorization.k8s.io/decision": decision,
                        "authorization.k8s.io/reason": ""}
    return e


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
            "spec": {"containers": list(containers) or [{"name": "app", "image": "nginx"}], **spec}}


def alerted(ruleset: RuleSet, events: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """(rule, auditID) of every alert: the events go through the real decoder, normaliser and
    engine once (a normalising pass costs far more than a rule)."""
    rows = rows_from_events(events)
    assert rows.num_rows == len(events)
    with Engine(ruleset, rule_ids=[r.id for r in ruleset.rules]) as engine:
        alerts = engine.process(rows.sort_by("time")) + engine.flush()
    return {(a.rule, a.audit_id) for a in alerts}


@pytest.fixture(scope="module")
def conversions() -> list[Conversion]:
    return convert_sigma([DATA])


@pytest.fixture(scope="module")
def ruleset(conversions: list[Conversion], tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path = tmp_path_factory.mktemp("sigma") / "converted.yaml"
    path.write_text(to_yaml(conversions), encoding="utf-8")
    return load_rules([path], builtin=False)


def rule_of(conversions: list[Conversion], file: str, title: str | None = None) -> Conversion:
    found = [c for c in conversions if Path(c.source.split(" (")[0]).name == file
             and (title is None or c.source.endswith(f"({title})"))]
    assert len(found) == 1, [c.source for c in conversions]
    return found[0]


# Sigma file → (events that must raise the rule, events that must not).
CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "exec_into_pod.yml": (
        [event("create", subresource="exec", uri="/api/v1/namespaces/shop/pods/web-1/exec?command=sh"),
         event("create", subresource="attach")],
        [event("get", subresource="log"), event("create", "pods")],
    ),
    "secrets_list.yml": (
        [event("list", "secrets", name=None), event("watch", "secrets", name=None, user="ci-bot")],
        [event("list", "secrets", name=None, user="system:serviceaccount:kube-system:ctrl"),
         event("list", "secrets", name=None, decision="forbid", code=403),
         event("list", "configmaps", name=None), event("get", "secrets")],
    ),
    "cluster_admin_binding.yml": (
        [event("create", "clusterrolebindings", api_group="rbac.authorization.k8s.io",
               namespace=None, request_object={"roleRef": {"kind": "ClusterRole",
                                                           "name": "cluster-admin"}})],
        [event("create", "clusterrolebindings", api_group="rbac.authorization.k8s.io",
               namespace=None, request_object={"roleRef": {"kind": "ClusterRole", "name": "view"}}),
         event("delete", "rolebindings", api_group="rbac.authorization.k8s.io",
               request_object={"roleRef": {"name": "cluster-admin"}})],
    ),
    "anonymous_access.yml": (
        [event("get", "namespaces", user="system:anonymous", groups=["system:unauthenticated"],
               namespace=None, name=None, uri="/api/v1/namespaces"),
         event("list", "pods", user="someone", groups=["system:unauthenticated"])],
        [event("get", None, user="system:anonymous", groups=["system:unauthenticated"],
               uri="/healthz"),
         event("get", "namespaces", user="system:anonymous", decision="forbid", code=403),
         event("get", "pods", user="alice@example.com")],
    ),
    "privileged_pod.yml": (
        [event("create", request_object=pod({"name": "a", "image": "x"},
                                            {"name": "b", "securityContext": {"privileged": True}})),
         event("create", request_object=pod(hostPID=True))],
        [event("create", request_object=pod({"name": "a", "securityContext": {"privileged": False}})),
         event("update", request_object=pod({"name": "a", "securityContext": {"privileged": True}})),
         event("create", request_object=pod(hostPID=False))],
    ),
    "http_client_user_agent.yml": (
        [event(user_agent="curl/8.5.0"), event(user_agent="Python-Requests/2.31")],
        [event(user_agent="kubectl/v1.30.0"), event(user_agent="my-curl/1.0"), event(user_agent=None)],
    ),
    "external_write.yml": (
        [event("delete", source_ips=["203.0.113.9"]), event("patch", source_ips=["2001:db8::1"])],
        [event("delete", source_ips=["10.1.2.3"]), event("delete", source_ips=["fd12::5"]),
         event("get", source_ips=["203.0.113.9"]),
         event("delete", user="system:serviceaccount:ci:deployer", source_ips=["203.0.113.9"])],
    ),
    "exec_keywords.yml": (
        [event("create", subresource="exec",
               uri="/api/v1/namespaces/shop/pods/web-1/exec?command=sh&stdin=true&tty=true")],
        [event("create", subresource="exec",
               uri="/api/v1/namespaces/shop/pods/web-1/exec?command=sh&stdin=true"),
         event("create", subresource="exec",
               uri="/api/v1/namespaces/shop/pods/web-1/exec?command=ls&stdin=true&tty=true")],
    ),
    "host_path_capabilities.yml": (
        [event("create", request_object=pod(
            {"name": "a", "securityContext": {"capabilities": {"add": ["NET_RAW", "SYS_ADMIN"]}}},
            volumes=[{"name": "root", "hostPath": {"path": "/"}}]))],
        [event("create", request_object=pod(
            {"name": "a", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}},
            volumes=[{"name": "root", "hostPath": {"path": "/"}}])),
         event("create", request_object=pod(
             {"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
             volumes=[{"name": "data", "emptyDir": {}}]))],
    ),
    "impersonation.yml": (
        [event(impersonate="bob", code=503)],
        [event(impersonate="bob", code=200), event(code=503), event(impersonate="bob", code=503,
                                                                     user_agent=None)],
    ),
    "failed_logins.yml": (
        [event("get", None, user="system:anonymous", code=401, decision="forbid", uri="/api")],
        [event("get", code=403, decision="forbid")],
    ),
}


@pytest.fixture(scope="module")
def case_alerts(ruleset: RuleSet) -> set[tuple[str, str]]:
    return alerted(ruleset, [e for match, no_match in CASES.values() for e in match + no_match])


@pytest.mark.parametrize("file", sorted(CASES))
def test_converted_rule_fires_on_matching_events_only(
        conversions: list[Conversion], ruleset: RuleSet, case_alerts: set[tuple[str, str]],
        file: str) -> None:
    conv = rule_of(conversions, file, None if file != "failed_logins.yml"
                   else "Unauthenticated Request Rejected")
    assert conv.rule is not None and conv.problems == ()
    rule_id = conv.rule["rule"]
    assert ruleset.get(rule_id).sql
    match, no_match = CASES[file]
    for i, e in enumerate(match):
        assert (rule_id, e["auditID"]) in case_alerts, f"{file}: match[{i}] did not fire"
    for i, e in enumerate(no_match):
        assert (rule_id, e["auditID"]) not in case_alerts, f"{file}: no_match[{i}] fired"


def test_metadata_maps_to_the_rule_entry(conversions: list[Conversion]) -> None:
    rule = rule_of(conversions, "exec_into_pod.yml").rule
    assert rule is not None
    assert rule["rule"] == "sigma-shell-opened-in-a-pod-container"
    assert rule["title"] == "Shell Opened In A Pod Container"
    assert rule["severity"] == "medium" and rule["enabled"] is True
    assert rule["tags"] == ["T1609"]  # attack.execution (a tactic) is not a technique id
    for part in ("kubectl exec", "False positives: Debugging by cluster operators",
                 "https://kubernetes.io/docs/tasks/debug/", "5e0a4a53-3d1c-4d4e-9f57-1d2f0b0c6a01"):
        assert part in rule["description"]
    assert rule["condition"] == {"verb": "create", "resource": "pods",
                                 "subresource": ["exec", "attach"]}
    binding = rule_of(conversions, "cluster_admin_binding.yml").rule
    assert binding is not None and binding["severity"] == "critical"
    assert binding["tags"] == ["T1098", "T1078.001"]


def test_deprecated_rule_is_converted_disabled_and_says_so(
        conversions: list[Conversion], ruleset: RuleSet) -> None:
    conv = rule_of(conversions, "impersonation.yml")
    assert conv.rule is not None and conv.rule["enabled"] is False
    assert conv.rule["severity"] == "info"
    assert "disabled: the Sigma rule's status is deprecated" in conv.notes
    assert not ruleset.get(conv.rule["rule"]).enabled
    assert "note: disabled: the Sigma rule's status is deprecated" in to_yaml(conversions)


def test_keyword_search_is_noted(conversions: list[Conversion]) -> None:
    conv = rule_of(conversions, "exec_keywords.yml")
    assert any("request URI" in n for n in conv.notes)


@pytest.mark.parametrize(("file", "title", "problems"), [
    ("base64offset.yml", None, ["modifier |base64offset is not supported"]),
    ("windows_process.yml", None, ["logsource product windows is not Kubernetes audit",
                                   "field 'Image' has no kubetrail equivalent",
                                   "field 'CommandLine' has no kubetrail equivalent"]),
    ("compiler_file_path.yml", None, ["field 'file_path' has no kubetrail equivalent",
                                      "modifier |fieldref is not supported"]),
    ("failed_logins.yml", "Burst Of Rejected Logins", ["correlation rules are not supported"]),
    ("aggregation.yml", None, ["aggregations in the condition (`| count() ...`) are not supported"]),
    ("unknown_modifier.yml", None, ["Unknown modifier 'sometimes'"]),
    ("lookahead.yml", None, ["(?!"]),
    ("not_yaml.yml", None, ["not valid YAML (line 3)"]),
    ("list_document.yml", None, ["not a Sigma rule file"]),
    ("undefined_detection.yml", None, ["Detection 'filter' not defined",
                                       "field 'objectRef.name': modifier |expand is not supported"]),
])
def test_unsupported_constructs_are_named_precisely(
        conversions: list[Conversion], file: str, title: str | None, problems: list[str]) -> None:
    conv = rule_of(conversions, file, title)
    assert conv.rule is None
    assert len(conv.problems) == len(problems), conv.problems
    for got, want in zip(conv.problems, problems, strict=True):
        assert want in got
    text = to_yaml(conversions)
    assert all(" ".join(p.split()) in text for p in conv.problems)


def test_directory_import_converts_every_file_and_ids_are_unique(
        conversions: list[Conversion], ruleset: RuleSet) -> None:
    files = {p.name for p in DATA.rglob("*.yml")}
    assert {Path(c.source.split(" (")[0]).name for c in conversions} == files
    done = [c.rule["rule"] for c in conversions if c.rule is not None]
    assert len(done) == len(set(done)) == len(ruleset.rules) == 11
    header = to_yaml(conversions).split("\n\n", 1)[0]
    assert "# 11 of 21 Sigma rules converted." in header
    assert all(line.startswith("#") for line in header.splitlines())


def test_single_file_and_clashing_titles(tmp_path: Path) -> None:
    text = (DATA / "exec_into_pod.yml").read_text()
    (tmp_path / "a.yml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("6a01", "6a99"))
    (tmp_path / "c.yml").write_text(text.replace("id: 5e0a4a53-3d1c-4d4e-9f57-1d2f0b0c6a01\n", ""))
    convs = convert_sigma([tmp_path / "a.yml", tmp_path / "b.yaml", tmp_path / "c.yml",
                           tmp_path / "missing.yml"])
    ids = [c.rule["rule"] for c in convs if c.rule is not None]
    assert ids == ["sigma-shell-opened-in-a-pod-container",
                   "sigma-shell-opened-in-a-pod-container-5e0a4a53",
                   "sigma-shell-opened-in-a-pod-container-2"]
    assert convs[-1].problems == ("no such file or directory",)
    out = tmp_path / "out.yaml"
    out.write_text(to_yaml(convs))
    assert len(load_rules([out], builtin=False).rules) == 3
    assert yaml.safe_load(to_yaml([])) == []


def test_sigma_condition_forms(tmp_path: Path) -> None:
    """`all of them`, `1 of x*`, nested `not` and parentheses, `|all`, numbers, null."""
    (tmp_path / "forms.yml").write_text("""
title: Condition Forms
logsource: {product: kubernetes, service: audit}
detection:
    sel_a: {verb: delete}
    sel_b: {verb: deletecollection}
    ns: {objectRef.namespace|endswith: '-prod'}
    code: {responseStatus.code|lt: 300}
    groups: {user.groups|all: [devs, oncall]}
    condition: 1 of sel_* and ns and not (not code or groups)
level: low
""")
    [conv] = convert_sigma([tmp_path])
    assert conv.rule is not None, conv.problems
    assert conv.rule["condition"] == {
        "verb": ["delete", "deletecollection"], "namespace": {"endswith": "-prod"},
        "not": {"any": [{"not": {"code": {"lt": 300}}},
                        {"all": [{"groups": "devs"}, {"groups": "oncall"}]}]}}
    path = tmp_path / "rules.yaml"
    path.write_text(to_yaml([conv]))
    ruleset = load_rules([path], builtin=False)
    match = [event("delete", namespace="shop-prod", code=200),
             event("deletecollection", namespace="a-prod", groups=["devs"])]
    no_match = [event("delete", namespace="shop-prod", code=404),
                event("delete", namespace="shop-prod", groups=["devs", "oncall"]),
                event("delete", namespace="shop-dev"), event("get", namespace="shop-prod")]
    fired = {audit_id for _, audit_id in alerted(ruleset, match + no_match)}
    assert fired == {e["auditID"] for e in match}


def test_field_map_targets_are_kubetrail_fields() -> None:
    from kubetrail.detect.condition import parse_condition

    for sigma_field, target in FIELD_MAP.items():
        head, _, rest = target.partition(".")
        cond = {head: {rest: "x"}} if head in ("containers", "volumes") else {target: "x"}
        parse_condition(cond, where=sigma_field)


def test_paths_through_arrays_annotations_and_the_event(tmp_path: Path) -> None:
    (tmp_path / "paths.yml").write_text("""
title: Secret In A Deployment Env And Extra Scopes
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        stage: RequestReceived
        requestObject.spec.template.spec.containers.env.name|endswith: _TOKEN
        requestObject.metadata.annotations.example.com/owner: team-a
        annotations.pod-security.kubernetes.io/enforce-policy|startswith: privileged
        user.extra.scopes: admin
    condition: selection
level: low
""")
    [conv] = convert_sigma([tmp_path / "paths.yml"])
    assert conv.rule is not None, conv.problems
    assert conv.rule["stages"] == ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
    assert conv.rule["condition"] == {
        "stage": "RequestReceived",
        "some": {"path": "requestObject.spec.template.spec.containers",
                 "match": {"some": {"path": "env", "match": {"name": {"endswith": "_TOKEN"}}}}},
        "requestObject.metadata.annotations['example.com/owner']": "team-a",
        "annotations['pod-security.kubernetes.io/enforce-policy']": {"startswith": "privileged"},
        "event.user.extra.scopes": "admin"}
    path = tmp_path / "rules.yaml"
    path.write_text(to_yaml([conv]))
    ruleset = load_rules([path], builtin=False)

    def deployment(env_name: str) -> dict[str, Any]:
        e = event("create", "deployments", api_group="apps", stage="RequestReceived",
                  request_object={"metadata": {"annotations": {"example.com/owner": "team-a"}},
                                  "spec": {"template": {"spec": {"containers": [
                                      {"name": "a", "env": [{"name": "HOME"}, {"name": env_name}]}]}}}})
        e["user"]["extra"] = {"scopes": ["read", "admin"]}
        e["annotations"]["pod-security.kubernetes.io/enforce-policy"] = "privileged:latest"
        return e

    hit, miss = deployment("API_TOKEN"), deployment("API_URL")
    assert {a for _, a in alerted(ruleset, [hit, miss])} == {hit["auditID"]}
