"""kube-apiserver audit Policy semantics, tested against the reference rather than the code.

Every case here comes from shared/reference/k8s-audit-semantics.md (§4 the Policy object,
§5 the matching algorithm, §6 loading and validation, §11 the pitfalls) or is a case ported
from kubernetes' own tests (`audit/policy/checker_test.go`, `reader_test.go` and
`apis/audit/validation/validation_test.go`): which request must match which rule. Each §11
pitfall that concerns policies has a `test_pitfall_NN_*` test. The property tests at the end
compare `Policy.evaluate` with an oracle transcribed from §5 in this file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetrail.errors import InputError, PolicyError
from kubetrail.policy import (
    Attributes,
    GroupResources,
    Policy,
    PolicyRule,
    attributes_from_event,
    load_policy,
    parse_request_path,
)

Doc = dict[str, Any]
Request = dict[str, Any]

LEVEL_NAMES = ("None", "Metadata", "Request", "RequestResponse")
STAGE_NAMES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
ALLOWED_STAGES_MSG = "allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic"

ALICE = {"username": "alice", "groups": ["devs", "system:authenticated"]}
BOB = {"username": "bob", "groups": ["ops", "system:authenticated"]}


# -- building policies and requests ----------------------------------------------------


def policy_doc(*rules: Doc, **top: Any) -> Doc:
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", **top, "rules": list(rules)}


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_DUMPER, sort_keys=False)


def load(*rules: Doc, **top: Any) -> Policy:
    """A policy with `rules` (and policy-level fields `top`), loaded from YAML text."""
    return load_policy(to_yaml(policy_doc(*rules, **top)))


def resource(resource_name: str, subresource: str = "", *, group: str = "", namespace: str = "default",
             name: str = "", verb: str = "get", user: Mapping[str, Any] | None = ALICE) -> Request:
    """Attributes of a resource request, with the path the API server would have seen."""
    prefix = f"/apis/{group}/v1" if group else "/api/v1"
    scope = f"/namespaces/{namespace}" if namespace else ""
    tail = "".join(f"/{part}" for part in (name, subresource) if part)
    return {
        "user": dict(user) if user is not None else None, "verb": verb, "resourceRequest": True,
        "path": f"{prefix}{scope}/{resource_name}{tail}", "namespace": namespace,
        "apiGroup": group, "apiVersion": "v1", "resource": resource_name,
        "subresource": subresource, "name": name,
    }


def nonresource(path: str, *, verb: str = "get", user: Mapping[str, Any] | None = ALICE) -> Request:
    return {"user": dict(user) if user is not None else None, "verb": verb,
            "resourceRequest": False, "path": path}


def matched(rule: Doc, request: Request) -> bool:
    """Whether a policy made of `rule` alone selects `request` (via evaluate and explain)."""
    policy = load(rule)
    decision = policy.evaluate(request)
    assert policy.explain(request).decision == decision
    if decision.rule_index is None:
        assert decision.level == "None"
        return False
    assert decision.rule_index == 0
    assert decision.level == rule["level"]
    return True


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    assert info.value.problems, "a PolicyError must list its problems"
    return info.value.problems


def problems_of_doc(doc: Doc) -> list[tuple[str, str]]:
    return problems_of(to_yaml(doc))


@contextmanager
def briefly() -> Iterator[None]:
    """Report a failure in one line, without a traceback: pytest renders each traceback
    through this long module slowly (a RecursionError's thousand frames especially)."""
    try:
        yield
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__}: {exc}"[:500], pytrace=False)


def has_problem(problems: list[tuple[str, str]], path: str, fragment: str) -> bool:
    """`path` is a regular expression for the whole field path."""
    return any(re.fullmatch(path, p) and fragment in reason for p, reason in problems)


# -- §11 pitfalls, one test (or more) each -----------------------------------------------


@pytest.mark.parametrize(("pattern", "request_", "expected"), [
    pytest.param("pods/*", resource("pods", name="web"), True, id="R/*-matches-R-itself"),
    pytest.param("pods/*", resource("pods"), True, id="R/*-matches-R-list"),
    pytest.param("pods/*", resource("pods", "log", name="web"), True, id="R/*-matches-R/sub"),
    pytest.param("pods/*", resource("podsx", name="web"), False, id="R/*-not-a-prefix-match"),
    pytest.param("pods/*", resource("services", "proxy", name="s"), False, id="R/*-other-R"),
    pytest.param("*/*", resource("pods", name="web"), False, id="*/*-not-R"),
    pytest.param("*/*", resource("pods", "log", name="web"), False, id="*/*-not-R/sub"),
    pytest.param("*/*", resource("namespaces", "finalize", namespace="foo", name="foo"), False,
                 id="*/*-not-ns-finalize"),
    pytest.param("pods", resource("pods", "log", name="web"), False, id="R-not-R/sub"),
    pytest.param("pods", resource("pods", "status", name="web"), False, id="R-not-R/status"),
    pytest.param("pods", resource("pods", name="web"), True, id="R-matches-R"),
    pytest.param("*", resource("pods", "log", name="web"), True, id="*-matches-subresource"),
    pytest.param("*", resource("pods", "exec", name="web"), True, id="*-matches-exec"),
    pytest.param("*", resource("pods"), True, id="*-matches-plain"),
    pytest.param("pods/log", resource("pods", "log", name="web"), True, id="R/sub-exact"),
    pytest.param("pods/log", resource("pods", name="web"), False, id="R/sub-not-R"),
    pytest.param("pods/log", resource("pods", "exec", name="web"), False, id="R/sub-not-other-sub"),
    pytest.param("*/log", resource("pods", "log", name="web"), True, id="*/X-with-sub-X"),
    pytest.param("*/log", resource("nodes", "log", namespace="", name="n1"), True,
                 id="*/X-any-resource"),
    pytest.param("*/log", resource("pods", name="web"), False, id="*/X-needs-a-subresource"),
    pytest.param("*/log", resource("pods", "status", name="web"), False, id="*/X-other-sub"),
    pytest.param("*/log", resource("log", name="web"), False, id="*/X-not-resource-named-X"),
])
def test_pitfall_01_resource_patterns(pattern: str, request_: Request, expected: bool) -> None:
    rule = {"level": "Request", "resources": [{"group": "", "resources": [pattern]}]}
    assert matched(rule, request_) is expected


@pytest.mark.parametrize(("rule", "request_", "expected"), [
    pytest.param({"users": ["*"]}, resource("pods"), False, id="users-star-is-literal"),
    pytest.param({"users": ["*"]}, resource("pods", user={"username": "*"}), True,
                 id="users-star-matches-user-named-star"),
    pytest.param({"userGroups": ["*"]}, resource("pods"), False, id="userGroups-star-literal"),
    pytest.param({"userGroups": ["*"]}, resource("pods", user={"username": "x", "groups": ["*"]}),
                 True, id="userGroups-star-matches-group-named-star"),
    pytest.param({"verbs": ["*"]}, resource("pods"), False, id="verbs-star-literal"),
    pytest.param({"verbs": ["*"]}, nonresource("/healthz"), False, id="verbs-star-literal-nonres"),
    pytest.param({"namespaces": ["*"]}, resource("pods"), False, id="namespaces-star-literal"),
    pytest.param({"namespaces": ["*"]}, resource("nodes", namespace=""), False,
                 id="namespaces-star-not-cluster-scoped"),
    pytest.param({"resources": [{"resources": ["pods"], "resourceNames": ["*"]}]},
                 resource("pods", name="web"), False, id="resourceNames-star-literal"),
    pytest.param({"resources": [{"resources": ["pods"], "resourceNames": ["*"]}]},
                 resource("pods"), False, id="resourceNames-star-not-nameless"),
    pytest.param({"resources": [{"group": "*", "resources": ["deployments"]}]},
                 resource("deployments", group="apps"), True, id="group-star-is-a-wildcard"),
    pytest.param({"resources": [{"group": "*", "resources": ["pods"]}]},
                 resource("pods"), True, id="group-star-includes-core"),
    pytest.param({"nonResourceURLs": ["*"]}, nonresource("/anything/at/all"), True,
                 id="url-star-is-a-wildcard"),
    pytest.param({"resources": [{"resources": ["*"]}]}, resource("secrets"), True,
                 id="resource-star-is-a-wildcard"),
])
def test_pitfall_02_star_is_literal_outside_resources_groups_and_urls(
        rule: Doc, request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", **rule}, request_) is expected


@pytest.mark.parametrize(("rule", "request_", "expected"), [
    pytest.param({"namespaces": ["default"]}, nonresource("/api/v1/namespaces/default/pods"), False,
                 id="namespaces-rule-never-nonresource"),
    pytest.param({"namespaces": [""]}, nonresource("/healthz"), False,
                 id="namespaces-empty-string-never-nonresource"),
    pytest.param({"resources": [{"group": "*"}]}, nonresource("/apis/apps/v1"), False,
                 id="resources-rule-never-nonresource"),
    pytest.param({"resources": [{"resources": ["*"]}]}, nonresource("/metrics"), False,
                 id="resources-star-never-nonresource"),
    pytest.param({"nonResourceURLs": ["*"]}, resource("pods"), False,
                 id="url-star-never-resource"),
    pytest.param({"nonResourceURLs": ["/api/v1/namespaces/default/pods"]},
                 resource("pods", name=""), False, id="url-equal-to-path-never-resource"),
    pytest.param({}, resource("pods", name="web"), True, id="no-selectors-match-resource"),
    pytest.param({}, nonresource("/healthz"), True, id="no-selectors-match-nonresource"),
    pytest.param({"verbs": ["get"]}, nonresource("/healthz"), True, id="verbs-only-nonresource"),
    pytest.param({"verbs": ["get"]}, resource("pods"), True, id="verbs-only-resource"),
    pytest.param({"users": ["alice"]}, nonresource("/version"), True, id="users-only-nonresource"),
    pytest.param({"userGroups": ["devs"]}, resource("pods"), True, id="groups-only-resource"),
])
def test_pitfall_03_resource_and_nonresource_rules_are_exclusive(
        rule: Doc, request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", **rule}, request_) is expected


def test_pitfall_03_resource_rule_ignores_its_nonresource_urls() -> None:
    # Validation forbids this mix; the matcher (§5 step 4) still decides by step 5 alone.
    rule = PolicyRule(level="Request", resources=(GroupResources("", ("pods",)),),
                      non_resource_urls=("*",))
    policy = Policy(rules=(rule,))
    assert policy.evaluate(resource("pods")).rule_index == 0
    assert policy.evaluate(nonresource("/healthz")).rule_index is None
    only_ns = Policy(rules=(PolicyRule(level="Request", namespaces=("default",),
                                       non_resource_urls=("/healthz",)),))
    assert only_ns.evaluate(nonresource("/healthz")).rule_index is None


@pytest.mark.parametrize(("request_", "expected"), [
    pytest.param(resource("nodes", namespace="", name="node-1"), True, id="cluster-scoped-get"),
    pytest.param(resource("clusterroles", group="rbac.authorization.k8s.io", namespace="",
                          name="edit"), True, id="cluster-scoped-other-group"),
    pytest.param(resource("pods", namespace="", verb="list"), True, id="all-namespaces-list"),
    pytest.param(resource("pods", namespace="", verb="watch"), True, id="all-namespaces-watch"),
    pytest.param(resource("namespaces", namespace="", verb="list"), True, id="namespace-list"),
    pytest.param(resource("pods", namespace="default", verb="list"), False, id="namespaced-list"),
    pytest.param(resource("namespaces", namespace="foo", name="foo"), False,
                 id="the-namespace-object-is-in-its-namespace"),
])
def test_pitfall_04_empty_namespace_means_no_namespace(request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", "namespaces": [""]}, request_) is expected


@pytest.mark.parametrize(("rule", "request_", "expected"), [
    pytest.param({"namespaces": ["foo"]}, resource("namespaces", namespace="foo", name="foo"), True,
                 id="namespaces-foo-covers-the-namespace-object"),
    pytest.param({"namespaces": ["default", "kube-system"]}, resource("pods", namespace="kube-system"),
                 True, id="second-namespace"),
    pytest.param({"namespaces": ["default"]}, resource("pods", namespace="kube-system"), False,
                 id="other-namespace"),
    pytest.param({"namespaces": ["default"]}, resource("nodes", namespace=""), False,
                 id="named-namespace-not-cluster-scoped"),
    pytest.param({"namespaces": ["default"], "resources": [{"resources": ["pods"]}]},
                 resource("pods", namespace="default"), True, id="namespace-and-resource"),
    pytest.param({"namespaces": ["default"], "resources": [{"resources": ["pods"]}]},
                 resource("pods", namespace="other"), False, id="namespace-fails-resource-ok"),
    pytest.param({"namespaces": ["default"], "resources": [{"resources": ["pods"]}]},
                 resource("secrets", namespace="default"), False, id="namespace-ok-resource-fails"),
])
def test_namespaces_selector(rule: Doc, request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", **rule}, request_) is expected


@pytest.mark.parametrize(("request_", "expected"), [
    pytest.param(resource("deployments", group="apps", name="web"), True, id="resource"),
    pytest.param(resource("deployments", "scale", group="apps", name="web"), True, id="subresource"),
    pytest.param(resource("statefulsets", "status", group="apps", name="db"), True,
                 id="other-subresource"),
    pytest.param(resource("replicasets", group="apps"), True, id="nameless"),
    pytest.param(resource("pods", name="web"), False, id="other-group-core"),
    pytest.param(resource("jobs", group="batch", name="web"), False, id="other-group-batch"),
])
def test_pitfall_05_empty_resources_under_a_group_match_all_of_it(
        request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", "resources": [{"group": "apps"}]}, request_) is expected


def test_pitfall_05_empty_resources_ignore_resource_names() -> None:
    # Validation rejects resourceNames without resources; built directly, the matcher must
    # still ignore them (§5 step d).
    rule = PolicyRule(level="Metadata",
                      resources=(GroupResources(group="apps", resource_names=("only-this",)),))
    policy = Policy(rules=(rule,))
    for request_ in (resource("deployments", group="apps", name="other"),
                     resource("deployments", "scale", group="apps", name="other"),
                     resource("deployments", group="apps", verb="list")):
        assert policy.evaluate(request_).rule_index == 0
    assert policy.evaluate(resource("pods", name="only-this")).rule_index is None


@pytest.mark.parametrize(("request_", "expected"), [
    pytest.param(resource("configmaps", name="cfg"), True, id="named"),
    pytest.param(resource("configmaps", name="other"), False, id="other-name"),
    pytest.param(resource("configmaps", verb="list"), False, id="list-has-no-name"),
    pytest.param(resource("configmaps", verb="watch"), False, id="watch-has-no-name"),
    pytest.param(resource("configmaps", verb="create"), False, id="create-has-no-name"),
    pytest.param(resource("configmaps", verb="deletecollection"), False, id="deletecollection"),
    pytest.param(resource("configmaps", "status", name="cfg"), False,
                 id="name-ok-but-pattern-is-plain-R"),
    pytest.param(resource("configmaps", name="CFG"), False, id="names-are-case-sensitive"),
])
def test_pitfall_05_resource_names_need_a_request_name(request_: Request, expected: bool) -> None:
    rule = {"level": "Request", "resources": [{"resources": ["configmaps"], "resourceNames": ["cfg"]}]}
    assert matched(rule, request_) is expected


def test_resource_names_apply_to_every_pattern_of_their_entry() -> None:
    rule = {"level": "Request", "resources": [
        {"resources": ["pods/*", "*/exec"], "resourceNames": ["web"]}]}
    assert matched(rule, resource("pods", name="web"))
    assert matched(rule, resource("pods", "exec", name="web"))
    assert not matched(rule, resource("pods", "exec", name="db"))
    assert not matched(rule, resource("pods", verb="list"))


def test_resource_names_are_per_group_resources_entry() -> None:
    rule = {"level": "Request", "resources": [
        {"resources": ["secrets"], "resourceNames": ["tls"]},
        {"resources": ["configmaps"]}]}
    assert matched(rule, resource("secrets", name="tls"))
    assert not matched(rule, resource("secrets", name="db-password"))
    assert matched(rule, resource("configmaps", name="anything"))
    assert matched(rule, resource("configmaps", verb="list"))


@pytest.mark.parametrize(("url", "path", "expected"), [
    pytest.param("/logs*", "/logs", True, id="prefix-star-matches-itself"),
    pytest.param("/logs*", "/logs/", True, id="prefix-star-slash"),
    pytest.param("/logs*", "/logs/kubelet.log", True, id="prefix-star-child"),
    pytest.param("/logs*", "/logsfoo", True, id="prefix-star-no-segment-boundary"),
    pytest.param("/logs*", "/log", False, id="prefix-star-shorter"),
    pytest.param("/logs*", "/var/logs", False, id="prefix-star-anchored"),
    pytest.param("/logs/*", "/logs", False, id="slash-star-not-the-bare-dir"),
    pytest.param("/logs/*", "/logs/", True, id="slash-star-dir-with-slash"),
    pytest.param("/logs/*", "/logs/a/b", True, id="slash-star-deep"),
    pytest.param("/logs/*", "/logsfoo", False, id="slash-star-not-sibling"),
    pytest.param("/healthz*", "/healthz/etcd", True, id="healthz-check"),
    pytest.param("/healthz*", "/healthzx", True, id="healthz-raw-prefix"),
    pytest.param("/healthz", "/healthz/etcd", False, id="no-star-is-exact"),
    pytest.param("/healthz", "/healthz/", False, id="no-star-exact-trailing-slash"),
    pytest.param("/healthz", "/healthz", True, id="exact"),
    pytest.param("/metrics", "/Metrics", False, id="case-sensitive"),
    pytest.param("*", "/", True, id="star-root"),
    pytest.param("*", "/openapi/v2", True, id="star-anything"),
    pytest.param("*", "", True, id="star-empty-path"),
    pytest.param("/*", "/apis", True, id="slash-star"),
    pytest.param("/", "/", True, id="root-exact"),
    pytest.param("/", "/healthz", False, id="root-is-exact"),
])
def test_pitfall_06_trailing_star_url_is_a_raw_prefix(url: str, path: str, expected: bool) -> None:
    assert matched({"level": "Metadata", "nonResourceURLs": [url]}, nonresource(path)) is expected


def test_nonresource_urls_any_of_the_list() -> None:
    rule = {"level": "None", "nonResourceURLs": ["/healthz*", "/version", "/livez"]}
    assert matched(rule, nonresource("/version"))
    assert matched(rule, nonresource("/healthz/ping"))
    assert not matched(rule, nonresource("/readyz"))


@pytest.mark.parametrize(("rule", "expected"), [
    pytest.param({"users": ["alice"]}, False, id="users"),
    pytest.param({"users": [""]}, False, id="users-empty-name"),
    pytest.param({"userGroups": ["system:unauthenticated"]}, False, id="userGroups"),
    pytest.param({"userGroups": [""]}, False, id="userGroups-empty-name"),
    pytest.param({}, True, id="no-selectors"),
    pytest.param({"verbs": ["list"]}, True, id="verbs"),
    pytest.param({"resources": [{"resources": ["pods"]}]}, True, id="resources"),
    pytest.param({"namespaces": ["default"], "verbs": ["list"]}, True, id="namespaces-verbs"),
])
def test_pitfall_07_absent_user(rule: Doc, expected: bool) -> None:
    request_ = resource("pods", verb="list", user=None)
    assert matched({"level": "Metadata", **rule}, request_) is expected
    request_.pop("user")  # a missing "user" key is no user too
    assert matched({"level": "Metadata", **rule}, request_) is expected


def test_pitfall_07_absent_user_on_nonresource_request() -> None:
    policy = load({"level": "None", "userGroups": ["system:unauthenticated"]},
                  {"level": "Request", "users": ["system:anonymous"]},
                  {"level": "Metadata", "nonResourceURLs": ["/healthz*"]})
    assert policy.evaluate(nonresource("/healthz", user=None)).rule_index == 2
    anonymous = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
    assert policy.evaluate(nonresource("/healthz", user=anonymous)).rule_index == 0


@pytest.mark.parametrize("request_", [
    pytest.param(resource("pods", name="web"), id="resource"),
    pytest.param(nonresource("/healthz"), id="nonresource"),
    pytest.param(resource("pods", user=None), id="no-user"),
])
def test_pitfall_08_default_level_is_none(request_: Request) -> None:
    policy = load({"level": "RequestResponse", "verbs": ["delete"]},
                  {"level": "Metadata", "users": ["nobody"]},
                  omitStages=["RequestReceived"], omitManagedFields=True)
    decision = policy.evaluate(request_)
    assert decision.level == "None"
    assert decision.rule_index is None
    assert decision.omit_stages == ("RequestReceived",)
    assert decision.omit_managed_fields is True


def test_pitfall_08_no_match_without_policy_defaults() -> None:
    decision = load({"level": "Metadata", "verbs": ["delete"]}).evaluate(resource("pods"))
    assert (decision.level, decision.omit_stages, decision.omit_managed_fields,
            decision.rule_index) == ("None", (), False, None)


def test_pitfall_08_a_matching_none_rule_is_not_no_match() -> None:
    decision = load({"level": "None", "nonResourceURLs": ["/healthz*"]},
                    {"level": "Metadata"}).evaluate(nonresource("/healthz"))
    assert decision.level == "None"
    assert decision.rule_index == 0


@pytest.mark.parametrize(("policy_stages", "rule_stages", "expected"), [
    pytest.param(None, None, (), id="neither"),
    pytest.param([], [], (), id="both-empty"),
    pytest.param(["RequestReceived"], None, ("RequestReceived",), id="policy-only"),
    pytest.param(None, ["Panic"], ("Panic",), id="rule-only"),
    pytest.param(["RequestReceived"], ["RequestReceived"], ("RequestReceived",), id="same"),
    pytest.param(["RequestReceived"], ["ResponseStarted"], ("RequestReceived", "ResponseStarted"),
                 id="disjoint-union"),
    pytest.param(["RequestReceived", "RequestReceived"], ["RequestReceived", "RequestReceived"],
                 ("RequestReceived",), id="duplicates-collapse"),
    pytest.param(["Panic", "ResponseStarted"], ["RequestReceived", "Panic"],
                 ("RequestReceived", "ResponseStarted", "Panic"), id="stage-order"),
    pytest.param(["ResponseComplete"], ["RequestReceived", "ResponseStarted", "ResponseComplete"],
                 ("RequestReceived", "ResponseStarted", "ResponseComplete"), id="only-audit-panic"),
])
def test_pitfall_09_omit_stages_are_unioned(policy_stages: list[str] | None,
                                            rule_stages: list[str] | None,
                                            expected: tuple[str, ...]) -> None:
    rule: Doc = {"level": "Request"}
    if rule_stages is not None:
        rule["omitStages"] = rule_stages
    top = {} if policy_stages is None else {"omitStages": policy_stages}
    policy = load(rule, **top)
    assert policy.evaluate(resource("pods")).omit_stages == expected
    assert policy.evaluate(nonresource("/healthz")).omit_stages == expected


def test_pitfall_09_each_rule_unions_its_own_stages() -> None:
    policy = load({"level": "Request", "verbs": ["create"], "omitStages": ["RequestReceived"]},
                  {"level": "Metadata", "verbs": ["get"], "omitStages": ["ResponseStarted"]},
                  {"level": "Metadata", "verbs": ["list"]},
                  omitStages=["Panic"])
    assert policy.evaluate(resource("pods", verb="create")).omit_stages == ("RequestReceived", "Panic")
    assert policy.evaluate(resource("pods", verb="get")).omit_stages == ("ResponseStarted", "Panic")
    assert policy.evaluate(resource("pods", verb="list")).omit_stages == ("Panic",)
    assert policy.evaluate(resource("pods", verb="watch")).omit_stages == ("Panic",)


@pytest.mark.parametrize(("policy_value", "rule_value", "expected"), [
    pytest.param(None, None, False, id="default-false"),
    pytest.param(False, None, False, id="policy-false-rule-absent"),
    pytest.param(True, None, True, id="policy-true-rule-absent"),
    pytest.param(True, False, False, id="rule-explicit-false-overrides-true"),
    pytest.param(False, True, True, id="rule-true-overrides-false"),
    pytest.param(None, True, True, id="rule-true-policy-absent"),
    pytest.param(True, True, True, id="both-true"),
    pytest.param(False, False, False, id="both-false"),
])
def test_pitfall_09_rule_omit_managed_fields_overrides(policy_value: bool | None,
                                                      rule_value: bool | None,
                                                      expected: bool) -> None:
    rule: Doc = {"level": "RequestResponse", "verbs": ["get"]}
    if rule_value is not None:
        rule["omitManagedFields"] = rule_value
    top = {} if policy_value is None else {"omitManagedFields": policy_value}
    policy = load(rule, **top)
    assert policy.evaluate(resource("pods")).omit_managed_fields is expected
    # nothing matched: always the policy value
    assert policy.evaluate(resource("pods", verb="list")).omit_managed_fields is bool(policy_value)


@pytest.mark.parametrize(("text", "ok"), [
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nsurprise: 1\nrules:\n- level: Metadata\n"
                 "  typo: [x]\n", True, id="unknown-fields-load"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", False, id="zero-rules"),
    pytest.param("kind: Policy\nrules:\n- level: Metadata\n", False, id="no-apiVersion"),
    pytest.param("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: Metadata\n", False,
                 id="v1beta1"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n", False,
                 id="validation"),
])
def test_pitfall_10_loader_tolerates_unknown_fields_only(text: str, ok: bool) -> None:
    if ok:
        policy = load_policy(text)
        assert policy.warnings
        assert policy.evaluate(resource("pods")).level == "Metadata"
    else:
        with pytest.raises(PolicyError):
            load_policy(text)


# -- more matching: users, groups, verbs, groups of resources, order, case -----------------


@pytest.mark.parametrize(("rule", "request_", "expected"), [
    pytest.param({"users": ["alice"]}, resource("pods"), True, id="user-listed"),
    pytest.param({"users": ["bob", "alice"]}, resource("pods"), True, id="user-second"),
    pytest.param({"users": ["bob"]}, resource("pods"), False, id="user-not-listed"),
    pytest.param({"users": ["devs"]}, resource("pods"), False, id="users-are-not-groups"),
    pytest.param({"users": ["alic"]}, resource("pods"), False, id="users-exact-not-prefix"),
    pytest.param({"userGroups": ["devs"]}, resource("pods"), True, id="group-listed"),
    pytest.param({"userGroups": ["ops", "system:authenticated"]}, resource("pods"), True,
                 id="any-group-listed"),
    pytest.param({"userGroups": ["ops"]}, resource("pods"), False, id="group-not-listed"),
    pytest.param({"userGroups": ["alice"]}, resource("pods"), False, id="groups-are-not-users"),
    pytest.param({"userGroups": ["devs"]}, resource("pods", user={"username": "carol"}), False,
                 id="user-without-groups"),
    pytest.param({"users": ["alice"], "userGroups": ["ops"]}, resource("pods"), False,
                 id="users-and-groups-both-needed"),
    pytest.param({"users": ["alice"], "userGroups": ["devs"]}, resource("pods"), True,
                 id="users-and-groups-both-ok"),
    pytest.param({"verbs": ["get", "list"]}, resource("pods", verb="list"), True, id="verb-listed"),
    pytest.param({"verbs": ["get"]}, resource("pods", verb="list"), False, id="verb-not-listed"),
    pytest.param({"verbs": ["post"]}, nonresource("/logs", verb="post"), True, id="nonres-verb"),
    pytest.param({"verbs": ["create"]}, nonresource("/logs", verb="post"), False,
                 id="nonres-verb-is-http-method"),
    pytest.param({"users": ["alice"]}, resource("pods", user={"username": ""}), False,
                 id="empty-username"),
    pytest.param({"users": [""]}, resource("pods", user={"username": ""}), True,
                 id="empty-username-listed"),
])
def test_users_groups_verbs(rule: Doc, request_: Request, expected: bool) -> None:
    assert matched({"level": "Metadata", **rule}, request_) is expected


@pytest.mark.parametrize(("group", "request_", "expected"), [
    pytest.param("", resource("pods"), True, id="core-matches-core"),
    pytest.param("", resource("deployments", group="apps"), False, id="core-not-apps"),
    pytest.param(None, resource("deployments", group="apps"), False, id="absent-is-core"),
    pytest.param(None, resource("pods"), True, id="absent-matches-core"),
    pytest.param("apps", resource("deployments", group="apps"), True, id="apps"),
    pytest.param("apps", resource("deployments"), False, id="apps-not-core"),
    pytest.param("apps", resource("deployments", group="apps.example.com"), False,
                 id="group-exact-not-suffix"),
    pytest.param("*", resource("deployments", group="apps"), True, id="star-apps"),
    pytest.param("*", resource("pods"), True, id="star-core"),
    pytest.param("*", resource("widgets", group="example.com"), True, id="star-crd"),
])
def test_group_matching(group: str | None, request_: Request, expected: bool) -> None:
    entry: Doc = {"resources": ["*"]}
    if group is not None:
        entry["group"] = group
    assert matched({"level": "Metadata", "resources": [entry]}, request_) is expected


def test_group_resources_entries_are_alternatives() -> None:
    rule = {"level": "Metadata", "resources": [
        {"group": "", "resources": ["secrets"]},
        {"group": "rbac.authorization.k8s.io", "resources": ["clusterroles", "clusterrolebindings"]},
        {"group": "apps"}]}
    assert matched(rule, resource("secrets"))
    assert matched(rule, resource("clusterrolebindings", group="rbac.authorization.k8s.io",
                                  namespace=""))
    assert matched(rule, resource("daemonsets", group="apps"))
    assert not matched(rule, resource("configmaps"))
    assert not matched(rule, resource("secrets", group="apps.example.com"))
    assert not matched(rule, resource("roles", group="rbac.authorization.k8s.io"))


@pytest.mark.parametrize(("rule", "request_"), [
    pytest.param({"users": ["Alice"]}, resource("pods"), id="users"),
    pytest.param({"userGroups": ["Devs"]}, resource("pods"), id="userGroups"),
    pytest.param({"verbs": ["GET"]}, resource("pods"), id="verbs"),
    pytest.param({"verbs": ["Get"]}, nonresource("/healthz"), id="verbs-nonresource"),
    pytest.param({"namespaces": ["Default"]}, resource("pods"), id="namespaces"),
    pytest.param({"resources": [{"resources": ["Pods"]}]}, resource("pods"), id="resources"),
    pytest.param({"resources": [{"resources": ["pods/Log"]}]}, resource("pods", "log"),
                 id="subresources"),
    pytest.param({"resources": [{"group": "apps", "resources": ["*"]}]},
                 resource("deployments", group="Apps"), id="group"),
    pytest.param({"resources": [{"resources": ["pods"], "resourceNames": ["Web"]}]},
                 resource("pods", name="web"), id="resourceNames"),
    pytest.param({"nonResourceURLs": ["/Healthz*"]}, nonresource("/healthz"), id="urls"),
])
def test_comparisons_are_case_sensitive(rule: Doc, request_: Request) -> None:
    assert not matched({"level": "Metadata", **rule}, request_)


def test_first_match_wins() -> None:
    policy = load({"level": "None", "users": ["system:kube-proxy"]},
                  {"level": "RequestResponse", "resources": [{"resources": ["pods"]}]},
                  {"level": "Request", "resources": [{"resources": ["pods/*"]}]},
                  {"level": "Metadata"})
    kube_proxy = {"username": "system:kube-proxy", "groups": ["system:authenticated"]}
    assert policy.evaluate(resource("pods", user=kube_proxy)).rule_index == 0
    assert policy.evaluate(resource("pods")).level == "RequestResponse"
    decision = policy.evaluate(resource("pods", "log", name="web"))
    assert (decision.level, decision.rule_index) == ("Request", 2)
    assert policy.evaluate(resource("secrets")).rule_index == 3
    assert policy.evaluate(nonresource("/healthz")).rule_index == 3


def test_first_match_wins_even_when_later_rules_are_more_specific() -> None:
    policy = load({"level": "Metadata"},
                  {"level": "RequestResponse", "users": ["alice"], "verbs": ["get"],
                   "resources": [{"resources": ["pods"], "resourceNames": ["web"]}]})
    decision = policy.evaluate(resource("pods", name="web"))
    assert (decision.level, decision.rule_index) == ("Metadata", 0)


# -- ported from checker_test.go ----------------------------------------------------------

TIM = {"username": "tim@k8s.io", "groups": ["humans", "developers"]}
K8S_REQUESTS: dict[str, Request] = {
    "namespaced": resource("pods", namespace="default", name="busybox", user=TIM),
    "cluster": resource("clusterroles", group="rbac.authorization.k8s.io", namespace="",
                        name="edit", user=TIM),
    "nonResource": nonresource("/logs/kubelet.log", user=TIM),
    "subresource": resource("pods", "log", namespace="default", name="busybox", user=TIM),
    "Unauthorized": resource("pods", namespace="default", name="busybox", user=None),
}
K8S_RULES: dict[str, Doc] = {
    "default": {"level": "Metadata"},
    "create": {"level": "Request", "verbs": ["create"]},
    "tims": {"level": "Metadata", "users": ["tim@k8s.io"]},
    "humans": {"level": "Metadata", "userGroups": ["humans"]},
    "serviceAccounts": {"level": "Request", "userGroups": ["system:serviceaccounts"]},
    "getPods": {"level": "RequestResponse", "verbs": ["get"], "resources": [{"resources": ["pods"]}]},
    "getPodLogs": {"level": "Request", "verbs": ["get"], "resources": [{"resources": ["pods/log"]}]},
    "getPodWildcardMatching": {"level": "Request", "verbs": ["get"],
                               "resources": [{"resources": ["*"]}]},
    "getPodResourceWildcardMatching": {"level": "Request", "verbs": ["get"],
                                       "resources": [{"resources": ["*/log"]}]},
    "getPodSubResourceWildcardMatching": {"level": "Request", "verbs": ["get"],
                                          "resources": [{"resources": ["pods/*"]}]},
    "getClusterRoles": {"level": "RequestResponse", "verbs": ["get"], "namespaces": [""],
                        "resources": [{"group": "rbac.authorization.k8s.io",
                                       "resources": ["clusterroles"]}]},
    "getLogs": {"level": "RequestResponse", "verbs": ["get"], "nonResourceURLs": ["/logs*"]},
    "getMetrics": {"level": "Request", "verbs": ["get"], "nonResourceURLs": ["/metrics"]},
    "clusterRoleEdit": {"level": "Request", "resources": [{
        "group": "rbac.authorization.k8s.io", "resources": ["clusterroles"],
        "resourceNames": ["edit"]}]},
    "omit RequestReceived": {"level": "Request", "omitStages": ["RequestReceived"]},
    "only audit panic": {"level": "Request",
                         "omitStages": ["RequestReceived", "ResponseStarted", "ResponseComplete"]},
}
K8S_LEVEL_CASES = [
    ("namespaced", "Metadata", ["default"]),
    ("namespaced", "None", ["create"]),
    ("namespaced", "Metadata", ["tims"]),
    ("namespaced", "Metadata", ["humans"]),
    ("namespaced", "None", ["serviceAccounts"]),
    ("namespaced", "RequestResponse", ["getPods"]),
    ("namespaced", "None", ["getClusterRoles"]),
    ("namespaced", "None", ["getLogs"]),
    ("namespaced", "None", ["getMetrics"]),
    ("namespaced", "Metadata", ["getMetrics", "serviceAccounts", "default"]),
    ("namespaced", "RequestResponse", ["getMetrics", "getPods", "default"]),
    ("namespaced", "RequestResponse", ["getPodLogs", "getPods"]),
    ("cluster", "Metadata", ["default"]),
    ("cluster", "None", ["create"]),
    ("cluster", "Metadata", ["tims"]),
    ("cluster", "Metadata", ["humans"]),
    ("cluster", "None", ["serviceAccounts"]),
    ("cluster", "None", ["getPods"]),
    ("cluster", "RequestResponse", ["getClusterRoles"]),
    ("cluster", "Request", ["clusterRoleEdit", "getClusterRoles"]),
    ("cluster", "None", ["getLogs"]),
    ("cluster", "None", ["getMetrics"]),
    ("cluster", "Metadata", ["getMetrics", "serviceAccounts", "default"]),
    ("cluster", "RequestResponse", ["getMetrics", "getClusterRoles", "default"]),
    ("cluster", "None", ["getPodLogs", "getPods"]),
    ("nonResource", "Metadata", ["default"]),
    ("nonResource", "None", ["create"]),
    ("nonResource", "Metadata", ["tims"]),
    ("nonResource", "Metadata", ["humans"]),
    ("nonResource", "None", ["serviceAccounts"]),
    ("nonResource", "None", ["getPods"]),
    ("nonResource", "None", ["getClusterRoles"]),
    ("nonResource", "RequestResponse", ["getLogs"]),
    ("nonResource", "None", ["getMetrics"]),
    ("nonResource", "Metadata", ["getMetrics", "serviceAccounts", "default"]),
    ("nonResource", "RequestResponse", ["getLogs", "getClusterRoles", "default"]),
    ("nonResource", "None", ["getPodLogs", "getPods"]),
    ("subresource", "Request", ["getPodLogs", "getPods"]),
    ("subresource", "Request", ["getPodWildcardMatching"]),
    ("subresource", "Request", ["getPodResourceWildcardMatching"]),
    ("subresource", "Request", ["getPodSubResourceWildcardMatching"]),
    ("Unauthorized", "None", ["tims"]),
    ("Unauthorized", "Metadata", ["tims", "default"]),
    ("Unauthorized", "None", ["humans"]),
    ("Unauthorized", "Metadata", ["humans", "default"]),
]
K8S_POLICY_STAGES = [None, ["RequestReceived", "ResponseStarted"]]


@pytest.mark.parametrize("policy_stages", K8S_POLICY_STAGES, ids=["no-policy-stages", "policy-stages"])
@pytest.mark.parametrize(("request_name", "level", "rule_names"), K8S_LEVEL_CASES,
                         ids=[f"{r}-{'+'.join(n)}" for r, _, n in K8S_LEVEL_CASES])
def test_kubernetes_checker_levels(request_name: str, level: str, rule_names: list[str],
                                   policy_stages: list[str] | None) -> None:
    top = {} if policy_stages is None else {"omitStages": policy_stages}
    policy = load(*(K8S_RULES[name] for name in rule_names), **top)
    decision = policy.evaluate(K8S_REQUESTS[request_name])
    assert decision.level == level
    assert set(decision.omit_stages) == set(policy_stages or ())


@pytest.mark.parametrize("policy_stages", K8S_POLICY_STAGES, ids=["no-policy-stages", "policy-stages"])
@pytest.mark.parametrize(("request_name", "level", "rule_names", "rule_stages"), [
    ("namespaced", "Request", ["omit RequestReceived", "getPods", "default"], {"RequestReceived"}),
    ("namespaced", "Request", ["only audit panic", "getPods", "default"],
     {"RequestReceived", "ResponseStarted", "ResponseComplete"}),
    ("cluster", "Request", ["omit RequestReceived", "getPods", "default"], {"RequestReceived"}),
    ("cluster", "Request", ["only audit panic", "getPods", "default"],
     {"RequestReceived", "ResponseStarted", "ResponseComplete"}),
    ("nonResource", "Request", ["omit RequestReceived", "getPods", "default"], {"RequestReceived"}),
    ("nonResource", "Metadata", ["default", "omit RequestReceived", "getPods"], set()),
    ("nonResource", "Request", ["only audit panic", "getPods", "default"],
     {"RequestReceived", "ResponseStarted", "ResponseComplete"}),
])
def test_kubernetes_checker_omit_stages(request_name: str, level: str, rule_names: list[str],
                                        rule_stages: set[str],
                                        policy_stages: list[str] | None) -> None:
    top = {} if policy_stages is None else {"omitStages": policy_stages}
    policy = load(*(K8S_RULES[name] for name in rule_names), **top)
    decision = policy.evaluate(K8S_REQUESTS[request_name])
    assert decision.level == level
    assert set(decision.omit_stages) == rule_stages | set(policy_stages or ())
    assert len(decision.omit_stages) == len(set(decision.omit_stages))


KUBERNETES_READER_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs:
      - /healthz*
      - /version
  - level: RequestResponse
    users: ["tim"]
    userGroups: ["testers", "developers"]
    verbs: ["patch", "delete", "create"]
    resources:
      - group: ""
      - group: "rbac.authorization.k8s.io"
        resources: ["clusterroles", "clusterrolebindings"]
    namespaces: ["default", "kube-system"]
  - level: Metadata
"""


def test_kubernetes_reader_policy_loads_and_decides() -> None:
    policy = load_policy(KUBERNETES_READER_POLICY)
    assert len(policy.rules) == 3
    assert policy.warnings == ()
    tim = {"username": "tim", "groups": ["developers"]}
    cases = [
        (nonresource("/healthz/etcd", user=tim), 0),
        (nonresource("/version", user=tim), 0),
        (nonresource("/versions", user=tim), 2),
        (resource("pods", "exec", name="p", verb="create", user=tim), 1),  # core, any resource
        (resource("clusterroles", group="rbac.authorization.k8s.io", namespace="kube-system",
                  name="x", verb="delete", user=tim), 1),
        (resource("roles", group="rbac.authorization.k8s.io", name="x", verb="delete", user=tim), 2),
        (resource("pods", verb="create", namespace="", user=tim), 2),  # namespace not listed
        (resource("pods", verb="get", user=tim), 2),
        (resource("pods", verb="create", user={"username": "tim", "groups": ["ops"]}), 2),
        (resource("pods", verb="create", user=None), 2),
    ]
    for request_, index in cases:
        assert policy.evaluate(request_).rule_index == index, request_


# -- explain --------------------------------------------------------------------------------


def test_explain_names_each_passed_over_rule() -> None:
    policy = load({"level": "None", "users": ["bob"]},
                  {"level": "None", "userGroups": ["ops"]},
                  {"level": "None", "verbs": ["delete"]},
                  {"level": "None", "namespaces": ["kube-system"]},
                  {"level": "None", "resources": [{"resources": ["secrets"]}]},
                  {"level": "Request", "resources": [{"resources": ["pods"]}]},
                  {"level": "Metadata"})
    explanation = policy.explain(resource("pods", name="web"))
    assert explanation.decision == policy.evaluate(resource("pods", name="web"))
    assert explanation.decision.rule_index == 5
    assert [m.index for m in explanation.misses] == [0, 1, 2, 3, 4]
    assert [m.selector for m in explanation.misses] == [
        "users", "userGroups", "verbs", "namespaces", "resources"]
    assert all(m.reason for m in explanation.misses)


def test_explain_without_a_match_lists_every_rule() -> None:
    policy = load({"level": "Metadata", "nonResourceURLs": ["/metrics"]},
                  {"level": "Metadata", "users": ["bob"]})
    explanation = policy.explain(nonresource("/healthz"))
    assert explanation.decision.rule_index is None
    assert explanation.decision.level == "None"
    assert [(m.index, m.selector) for m in explanation.misses] == [(0, "nonResourceURLs"), (1, "users")]
    missing_user = policy.explain(nonresource("/metrics", user=None))
    assert missing_user.decision.rule_index == 0
    assert missing_user.misses == ()


def test_evaluate_takes_attributes_objects_too() -> None:
    policy = load({"level": "Request", "userGroups": ["devs"], "resources": [{"group": "apps"}]})
    attrs = Attributes(user="alice", groups=("devs",), verb="get", resource_request=True,
                       path="/apis/apps/v1/namespaces/default/deployments/web", namespace="default",
                       api_group="apps", api_version="v1", resource="deployments", name="web")
    assert policy.evaluate(attrs).rule_index == 0
    assert policy.explain(attrs).decision.rule_index == 0
    assert policy.evaluate(Attributes(user=None, groups=("devs",), resource_request=True,
                                      api_group="apps", resource="deployments")).rule_index is None


@pytest.mark.parametrize("bad", [
    pytest.param(["get"], id="not-an-object"),
    pytest.param("get", id="a-string"),
    pytest.param({"verb": 5}, id="verb-number"),
    pytest.param({"verb": ["get"]}, id="verb-list"),
    pytest.param({"user": "alice"}, id="user-string"),
    pytest.param({"user": ["alice"]}, id="user-list"),
    pytest.param({"user": {"username": 5}}, id="username-number"),
    pytest.param({"user": {"username": "a", "groups": "devs"}}, id="groups-string"),
    pytest.param({"user": {"username": "a", "groups": [1]}}, id="groups-number"),
    pytest.param({"resourceRequest": "true"}, id="resourceRequest-string"),
    pytest.param({"resourceRequest": 1}, id="resourceRequest-number"),
    pytest.param({"path": 3}, id="path-number"),
    pytest.param({"namespace": {}}, id="namespace-object"),
    pytest.param({"resource": True}, id="resource-bool"),
    pytest.param({"name": 1.5}, id="name-float"),
])
def test_invalid_request_attributes_raise_input_error(bad: Any) -> None:
    policy = load({"level": "Metadata"})
    with pytest.raises(InputError):
        policy.evaluate(bad)
    with pytest.raises(InputError):
        policy.explain(bad)


# -- loading and validation (§6) ---------------------------------------------------------


@pytest.mark.parametrize("rules", [
    pytest.param([{"level": "Metadata"}], id="defaulting-rule"),
    pytest.param([{"level": "None", "userGroups": ["system:serviceaccounts", "system:nodes"]}],
                 id="non-humans"),
    pytest.param([{"level": "RequestResponse", "verbs": ["get"], "namespaces": ["kube-system"],
                   "resources": [{"group": "rbac.authorization.k8s.io",
                                  "resources": ["roles", "rolebindings"]}]}], id="specific"),
    pytest.param([{"level": "Metadata", "userGroups": ["developers"],
                   "nonResourceURLs": ["/logs*", "/healthz*", "/metrics", "*"]}], id="urls"),
    pytest.param([{"level": "Metadata", "nonResourceURLs": ["/", "/*", "/a/b/c*"]}], id="more-urls"),
    pytest.param([{"level": lvl} for lvl in LEVEL_NAMES], id="every-level"),
    pytest.param([{"level": "Metadata", "resources": [{"group": ""}, {"group": "*"},
                                                      {"group": "apps"},
                                                      {"group": "example.com"},
                                                      {"group": "x-1.y-2.example.com"}]}],
                 id="groups"),
    pytest.param([{"level": "Metadata", "omitStages": list(STAGE_NAMES) * 2}],
                 id="duplicate-stages-allowed"),
    pytest.param([{"level": "Metadata", "users": ["any thing", "*"], "userGroups": ["/"],
                   "verbs": ["weird verb", "*"], "namespaces": ["NotADNSName", "*", ""],
                   "resources": [{"resources": ["Pods/*/x", "", "*/*"],
                                  "resourceNames": ["", "a/b"]}]}],
                 id="free-text-fields-not-validated"),
    pytest.param([{"level": "Metadata", "omitManagedFields": False},
                  {"level": "Metadata", "omitManagedFields": True}], id="omit-managed-fields"),
    pytest.param([{"level": "Metadata", "users": [], "verbs": [], "resources": [],
                   "namespaces": [], "nonResourceURLs": [], "omitStages": []}],
                 id="empty-lists"),
    pytest.param([{"level": "Metadata", "users": None, "resources": None, "nonResourceURLs": None}],
                 id="null-lists"),
])
def test_valid_policies_load(rules: list[Doc]) -> None:
    policy = load(*rules, omitStages=["Panic"], omitManagedFields=True, metadata={"name": "x"})
    assert len(policy.rules) == len(rules)
    assert policy.warnings == ()


def test_validation_messages_for_all_cases_in_kubernetes_validation_test() -> None:
    invalid_rules: list[tuple[Doc, str, str]] = [
        ({}, r"rules\[0\]\.level", "Required"),
        ({"verbs": ["get"], "resources": [{"resources": ["secrets"]}], "namespaces": ["kube-system"]},
         r"rules\[0\]\.level", "Required"),
        ({"level": "FooBar"}, r"rules\[0\]\.level", "Unsupported value"),
        ({"level": "Metadata", "namespaces": ["default"], "nonResourceURLs": ["/logs*"]},
         r"rules\[0\]\.nonResourceURLs", "rules cannot apply to both regular resources and "
                                         "non-resource URLs"),
        ({"level": "Metadata", "resources": [{"resources": ["secrets"]}], "nonResourceURLs": ["/logs*"]},
         r"rules\[0\]\.nonResourceURLs", "rules cannot apply to both regular resources and "
                                         "non-resource URLs"),
        ({"level": "Metadata", "resources": [{"group": "rbac.authorization.k8s.io/v1beta1",
                                              "resources": ["roles"]}]},
         r"rules\[0\]\.resources(\[0\])?\.group", "rbac.authorization.k8s.io/v1beta1"),
        ({"level": "Metadata", "nonResourceURLs": ["logs", "/healthz*"]},
         r"rules\[0\]\.nonResourceURLs\[0\]", "must begin with a '/' character"),
        ({"level": "Metadata", "nonResourceURLs": ["", "/healthz*"]},
         r"rules\[0\]\.nonResourceURLs\[0\]", "must begin with a '/' character"),
        ({"level": "Metadata", "nonResourceURLs": ["/logs/*/*", "/metrics"]},
         r"rules\[0\]\.nonResourceURLs\[0\]", "'*' must be the final character"),
        ({"level": "Metadata", "nonResourceURLs": ["/logs/*.log", "/metrics"]},
         r"rules\[0\]\.nonResourceURLs\[0\]", "'*' must be the final character"),
    ]
    for rule, path, fragment in invalid_rules:
        problems = problems_of_doc(policy_doc(rule))
        assert has_problem(problems, path, fragment), (rule, problems)
        assert all(p != "" for p, _ in problems), problems


@pytest.mark.parametrize(("rules", "top", "path", "fragment"), [
    pytest.param([{"level": ""}], {}, r"rules\[0\]\.level", "Required", id="level-empty"),
    pytest.param([{"level": None}], {}, r"rules\[0\]\.level", "Required", id="level-null"),
    pytest.param([{"level": "metadata"}], {}, r"rules\[0\]\.level", "Unsupported value",
                 id="level-lowercase"),
    pytest.param([{"level": "Metadata"}, {"level": "Metadata"}, {"level": "All"}], {},
                 r"rules\[2\]\.level", '"All"', id="level-index"),
    pytest.param([{"level": "Metadata"}], {"omitStages": ["RequestReceived", "Done"]},
                 r"omitStages\[1\]", ALLOWED_STAGES_MSG, id="policy-stage"),
    pytest.param([{"level": "Metadata"}], {"omitStages": ["requestreceived"]},
                 r"omitStages\[0\]", ALLOWED_STAGES_MSG, id="policy-stage-case"),
    pytest.param([{"level": "Metadata"}, {"level": "Request", "omitStages": ["Panic", "Start"]}], {},
                 r"rules\[1\]\.omitStages\[1\]", ALLOWED_STAGES_MSG, id="rule-stage"),
    pytest.param([{"level": "Metadata", "omitStages": [""]}], {},
                 r"rules\[0\]\.omitStages\[0\]", "allowed stages are", id="rule-stage-empty"),
    pytest.param([{"level": "Metadata", "nonResourceURLs": ["/ok", "logs*"]}], {},
                 r"rules\[0\]\.nonResourceURLs\[1\]", "must begin with a '/'", id="url-relative"),
    pytest.param([{"level": "Metadata", "nonResourceURLs": ["*logs"]}], {},
                 r"rules\[0\]\.nonResourceURLs\[0\]", "'*' must be the final", id="url-leading-star"),
    pytest.param([{"level": "Metadata", "nonResourceURLs": ["/logs**"]}], {},
                 r"rules\[0\]\.nonResourceURLs\[0\]", "'*' must be the final", id="url-double-star"),
    pytest.param([{"level": "Metadata", "nonResourceURLs": ["**"]}], {},
                 r"rules\[0\]\.nonResourceURLs\[0\]", "'*' must be the final", id="url-star-star"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "Apps"}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.group", "RFC 1123", id="group-uppercase"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "apps"}, {"group": "-apps"}]}], {},
                 r"rules\[0\]\.resources(\[1\])?\.group", "RFC 1123", id="group-leading-dash"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "apps."}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.group", "RFC 1123", id="group-trailing-dot"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "*.k8s.io"}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.group", "RFC 1123", id="group-partial-star"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "a" * 254}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.group", "253", id="group-too-long"),
    pytest.param([{"level": "Metadata", "resources": [{"group": "apps", "resourceNames": ["x"]}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.resourceNames",
                 "using resourceNames requires at least one resource", id="names-without-resources"),
    pytest.param([{"level": "Metadata", "resources": [{"resources": [], "resourceNames": ["x"]}]}], {},
                 r"rules\[0\]\.resources(\[0\])?\.resourceNames", "requires at least one resource",
                 id="names-with-empty-resources"),
])
def test_validation_error_paths(rules: list[Doc], top: Doc, path: str, fragment: str) -> None:
    problems = problems_of_doc(policy_doc(*rules, **top))
    assert has_problem(problems, path, fragment), problems


def test_url_with_both_problems_reports_both() -> None:
    problems = problems_of_doc(policy_doc({"level": "Metadata", "nonResourceURLs": ["/ok", "a*b"]}))
    reasons = [reason for path, reason in problems if path == "rules[0].nonResourceURLs[1]"]
    assert len(reasons) == 2
    assert any("begin with a '/'" in r for r in reasons)
    assert any("final character" in r for r in reasons)


def test_all_problems_are_reported_together() -> None:
    doc = policy_doc(
        {"level": "Metadata"},
        {"level": "Everything", "omitStages": ["Later"]},
        {"level": "Request", "namespaces": ["x"], "nonResourceURLs": ["logs"]},
        {"resources": [{"group": "Bad_Group", "resourceNames": ["n"]}]},
        omitStages=["Never"])
    problems = problems_of_doc(doc)
    expected = [
        (r"omitStages\[0\]", "allowed stages"),
        (r"rules\[1\]\.level", "Unsupported value"),
        (r"rules\[1\]\.omitStages\[0\]", "allowed stages"),
        (r"rules\[2\]\.nonResourceURLs", "rules cannot apply to both"),
        (r"rules\[2\]\.nonResourceURLs\[0\]", "begin with a '/'"),
        (r"rules\[3\]\.level", "Required"),
        (r"rules\[3\]\.resources(\[0\])?\.group", "RFC 1123"),
        (r"rules\[3\]\.resources(\[0\])?\.resourceNames", "at least one resource"),
    ]
    for path, fragment in expected:
        assert has_problem(problems, path, fragment), (path, problems)
    with pytest.raises(PolicyError) as info:
        load_policy(to_yaml(doc))
    for needle in ("rules[1].level", "rules[2].nonResourceURLs[0]", "omitStages[0]"):
        assert needle in str(info.value)


@pytest.mark.parametrize("text", [
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", id="empty-list"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\n", id="no-rules-key"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n", id="null-rules"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Panic]\nrules: []\n",
                 id="stages-but-no-rules"),
    pytest.param('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": []}', id="json"),
])
def test_zero_rules_is_an_error(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    assert "0 rules" in str(info.value)


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param("   \n\n", id="blank"),
    pytest.param("# just a comment\n", id="comment-only"),
    pytest.param("---\n", id="document-marker-only"),
    pytest.param("rules: [\n  - level: Metadata\n", id="unclosed-flow"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
                 "   users: [a]\n", id="bad-indentation"),
    pytest.param('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [', id="truncated-json"),
    pytest.param("just some words", id="scalar"),
    pytest.param("- level: Metadata\n", id="a-list"),
    pytest.param("42", id="a-number"),
])
def test_unreadable_files_are_file_level_errors(text: str) -> None:
    problems = problems_of(text)
    assert [path for path, _ in problems] == [""]


def test_source_labels_the_error() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("", source="audit-policy.yaml")
    assert info.value.source == "audit-policy.yaml"
    assert "audit-policy.yaml" in str(info.value)


@pytest.mark.parametrize("version", ["audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1"])
def test_removed_api_versions_are_rejected(version: str) -> None:
    text = f"apiVersion: {version}\nkind: Policy\nrules:\n- level: Metadata\n"
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    assert version.rsplit("/", 1)[1] in str(info.value)


@pytest.mark.parametrize("head", [
    pytest.param("", id="no-apiVersion-no-kind"),
    pytest.param("kind: Policy\n", id="no-apiVersion"),
    pytest.param("apiVersion: audit.k8s.io/v1\n", id="no-kind"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Event\n", id="kind-event"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: policy\n", id="kind-lowercase"),
    pytest.param("apiVersion: v1\nkind: Policy\n", id="core-v1"),
    pytest.param("apiVersion: audit.k8s.io/v2\nkind: Policy\n", id="v2"),
    pytest.param("apiVersion: Audit.k8s.io/v1\nkind: Policy\n", id="group-case"),
    pytest.param("apiVersion: audit.k8s.io\nkind: Policy\n", id="no-version"),
])
def test_other_api_versions_and_kinds_are_rejected(head: str) -> None:
    with pytest.raises(PolicyError):
        load_policy(head + "rules:\n- level: Metadata\n")


def test_missing_version_and_kind_message_like_kubernetes() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("rules:\n  - level: None\n    nonResourceURLs: [/healthz*]\n  - level: Metadata\n")
    assert "unknown group version field" in str(info.value)


def test_json_policy_is_accepted() -> None:
    doc = policy_doc({"level": "None", "nonResourceURLs": ["/healthz*"]},
                     {"level": "Request", "resources": [{"group": "apps", "resources": ["*"]}],
                      "omitManagedFields": False},
                     {"level": "Metadata"}, omitStages=["RequestReceived"], omitManagedFields=True)
    for text in (json.dumps(doc), json.dumps(doc, indent=2)):
        policy = load_policy(text)
        assert policy.warnings == ()
        assert policy.evaluate(nonresource("/healthz")).rule_index == 0
        decision = policy.evaluate(resource("deployments", group="apps"))
        assert (decision.level, decision.omit_stages, decision.omit_managed_fields) == (
            "Request", ("RequestReceived",), False)
        assert policy.evaluate(resource("pods")).omit_managed_fields is True


def test_json_policy_indented_with_tabs_is_accepted() -> None:
    doc = policy_doc({"level": "Metadata"})
    with briefly():
        assert load_policy(json.dumps(doc, indent="\t")).rules[0].level == "Metadata"


def test_json_surrogate_pair_escapes_decode_like_json() -> None:
    text = ('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", '
            '"rules": [{"level": "Metadata", "users": ["\\ud83d\\ude00"]}]}')
    with briefly():
        policy = load_policy(text)
        assert policy.evaluate(resource("pods", user={"username": "\U0001f600"})).rule_index == 0


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nextra: 1\nrules:\n- level: Metadata\n",
                 "extra", id="policy-level"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
                 "  comment: why\n", "comment", id="rule-level"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
                 "  resources:\n  - group: apps\n    resourceName: [x]\n", "resourceName",
                 id="group-resources-level"),
])
def test_unknown_fields_are_warnings(text: str, needle: str) -> None:
    policy = load_policy(text)
    assert any(needle in warning for warning in policy.warnings), policy.warnings
    assert policy.evaluate(resource("deployments", group="apps")).rule_index == 0


def test_a_misspelt_selector_is_ignored_so_the_rule_matches_more() -> None:
    policy = load_policy("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                         "- level: RequestResponse\n  verb: [delete]\n  user: [alice]\n")
    assert len(policy.warnings) >= 2
    assert policy.evaluate(resource("pods", verb="get", user=BOB)).level == "RequestResponse"


def test_field_names_are_case_sensitive() -> None:
    text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- Level: Metadata\n"
    problems = problems_of(text)
    assert has_problem(problems, r"rules\[0\]\.level", "Required")


def test_metadata_is_allowed_without_warning() -> None:
    text = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nmetadata:\n  name: audit\n"
            "  labels: {a: b}\nrules:\n- level: Metadata\n")
    assert load_policy(text).warnings == ()


@pytest.mark.parametrize(("text", "level"), [
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  level: Request\n",
                 "Request", id="yaml-rule-key"),
    pytest.param('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", '
                 '"rules": [{"level": "None", "level": "Metadata"}]}', "Metadata", id="json-rule-key"),
    pytest.param('{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "None"}], '
                 '"rules": [{"level": "RequestResponse"}]}', "RequestResponse", id="json-top-key"),
])
def test_duplicate_keys_are_warnings_and_the_last_value_wins(text: str, level: str) -> None:
    policy = load_policy(text)
    assert policy.warnings
    assert policy.evaluate(resource("pods")).level == level


@pytest.mark.parametrize(("rule", "top", "path"), [
    pytest.param({"level": 5}, {}, r"rules\[0\]\.level", id="level-number"),
    pytest.param({"level": ["Metadata"]}, {}, r"rules\[0\]\.level", id="level-list"),
    pytest.param({"level": True}, {}, r"rules\[0\]\.level", id="level-bool"),
    pytest.param({"level": "Metadata", "verbs": "get"}, {}, r"rules\[0\]\.verbs", id="verbs-string"),
    pytest.param({"level": "Metadata", "users": {"alice": 1}}, {}, r"rules\[0\]\.users",
                 id="users-object"),
    pytest.param({"level": "Metadata", "userGroups": [7]}, {}, r"rules\[0\]\.userGroups(\[0\])?",
                 id="groups-number-item"),
    pytest.param({"level": "Metadata", "namespaces": [["default"]]}, {},
                 r"rules\[0\]\.namespaces(\[0\])?", id="namespaces-nested-list"),
    pytest.param({"level": "Metadata", "nonResourceURLs": "/healthz"}, {},
                 r"rules\[0\]\.nonResourceURLs", id="urls-string"),
    pytest.param({"level": "Metadata", "omitStages": "Panic"}, {}, r"rules\[0\]\.omitStages",
                 id="rule-stages-string"),
    pytest.param({"level": "Metadata", "omitManagedFields": "yes"}, {},
                 r"rules\[0\]\.omitManagedFields", id="rule-managed-string"),
    pytest.param({"level": "Metadata", "omitManagedFields": 1}, {},
                 r"rules\[0\]\.omitManagedFields", id="rule-managed-number"),
    pytest.param({"level": "Metadata", "resources": "pods"}, {}, r"rules\[0\]\.resources",
                 id="resources-string"),
    pytest.param({"level": "Metadata", "resources": {"group": ""}}, {}, r"rules\[0\]\.resources",
                 id="resources-object"),
    pytest.param({"level": "Metadata", "resources": ["pods"]}, {}, r"rules\[0\]\.resources(\[0\])?",
                 id="resources-string-items"),
    pytest.param({"level": "Metadata", "resources": [{"group": 5}]}, {},
                 r"rules\[0\]\.resources(\[0\])?\.group", id="group-number"),
    pytest.param({"level": "Metadata", "resources": [{"resources": "pods"}]}, {},
                 r"rules\[0\]\.resources(\[0\])?\.resources", id="group-resources-string"),
    pytest.param({"level": "Metadata", "resources": [{"resources": ["pods"], "resourceNames": "a"}]},
                 {}, r"rules\[0\]\.resources(\[0\])?\.resourceNames", id="names-string"),
    pytest.param({"level": "Metadata"}, {"omitStages": "Panic"}, r"omitStages", id="policy-stages"),
    pytest.param({"level": "Metadata"}, {"omitManagedFields": "true"}, r"omitManagedFields",
                 id="policy-managed"),
])
def test_wrong_types_are_errors_with_paths(rule: Doc, top: Doc, path: str) -> None:
    problems = problems_of_doc(policy_doc(rule, **top))
    assert any(re.fullmatch(path, p) for p, _ in problems), problems


@pytest.mark.parametrize(("doc", "path"), [
    pytest.param({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": "all"}, r"rules",
                 id="rules-string"),
    pytest.param({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": {"level": "Metadata"}},
                 r"rules", id="rules-object"),
    pytest.param({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": ["Metadata"]},
                 r"rules\[0\]", id="rule-string"),
    pytest.param({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                  "rules": [{"level": "Metadata"}, None]}, r"rules\[1\](\.level)?", id="rule-null"),
])
def test_wrong_rule_shapes_are_errors_with_paths(doc: Doc, path: str) -> None:
    problems = problems_of_doc(doc)
    assert any(re.fullmatch(path, p) for p, _ in problems), problems


@pytest.mark.parametrize("value", ["1", "2.5", "true"])
def test_scalar_rules_are_an_error_not_a_crash(value: str) -> None:
    with briefly():
        problems = problems_of(f"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: {value}\n")
    assert has_problem(problems, "rules", "")


MALFORMED_TEXTS = {
    "bad-float-tag": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: !!float abc\n",
    "bad-int-tag": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: !!int abc\n",
    "bad-timestamp-tag": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: !!timestamp x\n",
    "control-character": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
                         "  users: [\"a\x01\"]\n",
    "nul-byte": "apiVersion: audit.k8s.io/v1\nkind: Policy\x00\n",
    "deeply-nested": "[" * 600 + "]" * 600,
}


@pytest.mark.parametrize("name", list(MALFORMED_TEXTS))
def test_malformed_text_is_a_policy_error_not_a_crash(name: str) -> None:
    with briefly(), pytest.raises(PolicyError):
        load_policy(MALFORMED_TEXTS[name])


@pytest.mark.parametrize(("text", "good"), [
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: &r\n- level: Metadata\n"
                 "  users: *r\n", False, id="alias-cycle-into-users"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: &r [*r]\n", False,
                 id="self-containing-rules"),
    pytest.param("apiVersion: audit.k8s.io/v1\nkind: Policy\nlevels: &l [Metadata]\nrules:\n"
                 "- {level: Metadata, verbs: &v [get]}\n- {level: Request, verbs: *v}\n", True,
                 id="plain-aliases"),
])
def test_yaml_aliases(text: str, good: bool) -> None:
    if good:
        policy = load_policy(text)
        assert policy.evaluate(resource("pods", verb="list")).rule_index is None
    else:
        with pytest.raises(PolicyError):
            load_policy(text)


def test_documentation_example_policy() -> None:
    """The example policy of the Kubernetes auditing documentation (abridged)."""
    text = """\
# Log all requests at the Metadata level, except the noisy ones (docs example, abridged).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - "RequestReceived"
rules:
  - level: RequestResponse
    resources:
    - group: ""
      resources: ["pods"]
  - level: Metadata
    resources:
    - group: ""
      resources: ["pods/log", "pods/status"]
  - level: None
    resources:
    - group: ""
      resources: ["configmaps"]
      resourceNames: ["controller-leader"]
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
    - group: ""
      resources: ["endpoints", "services"]
  - level: None
    userGroups: ["system:authenticated"]
    nonResourceURLs:
    - "/api*"
    - "/version"
  - level: Request
    resources:
    - group: ""
      resources: ["configmaps"]
    namespaces: ["kube-system"]
  - level: Metadata
    resources:
    - group: ""
      resources: ["secrets", "configmaps"]
  - level: Request
    resources:
    - group: ""
    - group: "extensions"
  - level: Metadata
    omitStages:
      - "RequestReceived"
"""
    policy = load_policy(text)
    proxy = {"username": "system:kube-proxy", "groups": ["system:authenticated"]}
    cases = [
        (resource("pods", name="web"), 0, "RequestResponse"),
        (resource("pods", "log", name="web"), 1, "Metadata"),
        (resource("pods", "exec", name="web"), 7, "Request"),
        (resource("configmaps", name="controller-leader", verb="update"), 2, "None"),
        (resource("endpoints", namespace="", verb="watch", user=proxy), 3, "None"),
        (resource("endpoints", namespace="", verb="list", user=proxy), 7, "Request"),
        (nonresource("/apis/apps/v1"), 4, "None"),
        (nonresource("/version", user=None), 8, "Metadata"),
        (resource("configmaps", namespace="kube-system", name="x"), 5, "Request"),
        (resource("secrets", namespace="kube-system", name="x"), 6, "Metadata"),
        (resource("deployments", group="extensions"), 7, "Request"),
        (resource("deployments", group="apps"), 8, "Metadata"),
    ]
    for request_, index, level in cases:
        decision = policy.evaluate(request_)
        assert (decision.rule_index, decision.level) == (index, level), request_
        assert decision.omit_stages == ("RequestReceived",)


# -- request attributes from recorded events (§5, last part) -----------------------------


def event(uri: str, verb: str, *, object_ref: Doc | None = None, user: Doc | None = None,
          stage: str = "ResponseComplete", code: int = 200, **extra: Any) -> Doc:
    """An audit event as the API server writes it (key order, MicroTime, omitted empties)."""
    out: Doc = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": "0b5e3f2c-8a5a-4f5e-9d53-2a4d1c7e9f10", "stage": stage,
        "requestURI": uri, "verb": verb,
        "user": ALICE if user is None else user,
        "sourceIPs": ["10.0.0.12"], "userAgent": "kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0",
    }
    if object_ref is not None:
        out["objectRef"] = object_ref
    out.update(extra)
    out["responseStatus"] = {"metadata": {}, "code": code}
    out["requestReceivedTimestamp"] = "2026-11-01T09:00:00.125000Z"
    out["stageTimestamp"] = "2026-11-01T09:00:00.131207Z"
    return out


ALICE_ATTRS = {"user": "alice", "groups": ("devs", "system:authenticated")}

EVENTS: dict[str, tuple[Doc, Attributes]] = {
    # objectRef.name was filled in from the body; the policy saw a nameless create
    "create-pod": (
        event("/api/v1/namespaces/default/pods?fieldManager=kubectl-client-side-apply", "create",
              object_ref={"resource": "pods", "namespace": "default", "name": "nginx",
                          "uid": "5a0b0c1d-1111-2222-3333-444455556666", "apiVersion": "v1",
                          "resourceVersion": "9123"}, stage="ResponseComplete", code=201),
        Attributes(**ALICE_ATTRS, verb="create", resource_request=True,
                   path="/api/v1/namespaces/default/pods", namespace="default", api_version="v1",
                   resource="pods")),
    "exec": (
        event("/api/v1/namespaces/default/pods/nginx/exec?command=sh&container=nginx&stdin=true"
              "&stdout=true&tty=true", "create",
              object_ref={"resource": "pods", "namespace": "default", "name": "nginx",
                          "apiVersion": "v1", "subresource": "exec"},
              stage="ResponseStarted", code=101),
        Attributes(**ALICE_ATTRS, verb="create", resource_request=True,
                   path="/api/v1/namespaces/default/pods/nginx/exec", namespace="default",
                   api_version="v1", resource="pods", subresource="exec", name="nginx")),
    "list-field-selector": (
        event("/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dkubeadm-config"
              "&limit=500", "list",
              object_ref={"resource": "configmaps", "namespace": "kube-system",
                          "name": "kubeadm-config", "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="list", resource_request=True,
                   path="/api/v1/namespaces/kube-system/configmaps", namespace="kube-system",
                   api_version="v1", resource="configmaps", name="kubeadm-config")),
    "watch-field-selector": (
        event("/api/v1/namespaces/default/pods?allowWatchBookmarks=true&fieldSelector=metadata.name%3D"
              "nginx&resourceVersion=1234&timeout=7m47s&timeoutSeconds=467&watch=true", "watch",
              object_ref={"resource": "pods", "namespace": "default", "name": "nginx",
                          "apiVersion": "v1"}, stage="ResponseStarted"),
        Attributes(**ALICE_ATTRS, verb="watch", resource_request=True,
                   path="/api/v1/namespaces/default/pods", namespace="default", api_version="v1",
                   resource="pods", name="nginx")),
    "healthz": (
        event("/healthz?verbose", "get"),
        Attributes(**ALICE_ATTRS, verb="get", resource_request=False, path="/healthz")),
    "failed-authentication": (
        event("/api/v1/namespaces/default/pods?limit=500", "list", user={},
              object_ref={"resource": "pods", "namespace": "default", "apiVersion": "v1"},
              stage="ResponseStarted", code=401),
        Attributes(user=None, verb="list", resource_request=True,
                   path="/api/v1/namespaces/default/pods", namespace="default", api_version="v1",
                   resource="pods")),
    "get-node": (
        event("/api/v1/nodes/node-1", "get",
              object_ref={"resource": "nodes", "name": "node-1", "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="get", resource_request=True, path="/api/v1/nodes/node-1",
                   api_version="v1", resource="nodes", name="node-1")),
    "namespace-finalize": (
        event("/api/v1/namespaces/foo/finalize", "update",
              object_ref={"resource": "namespaces", "namespace": "foo", "name": "foo",
                          "apiVersion": "v1", "subresource": "finalize"}),
        Attributes(**ALICE_ATTRS, verb="update", resource_request=True,
                   path="/api/v1/namespaces/foo/finalize", namespace="foo", api_version="v1",
                   resource="namespaces", subresource="finalize", name="foo")),
    "namespace-status": (
        event("/api/v1/namespaces/foo/status", "get",
              object_ref={"resource": "namespaces", "namespace": "foo", "name": "foo",
                          "apiVersion": "v1", "subresource": "status"}),
        Attributes(**ALICE_ATTRS, verb="get", resource_request=True,
                   path="/api/v1/namespaces/foo/status", namespace="foo", api_version="v1",
                   resource="namespaces", subresource="status", name="foo")),
    "namespace-get": (
        event("/api/v1/namespaces/foo", "get",
              object_ref={"resource": "namespaces", "namespace": "foo", "name": "foo",
                          "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="get", resource_request=True, path="/api/v1/namespaces/foo",
                   namespace="foo", api_version="v1", resource="namespaces", name="foo")),
    "namespace-list": (
        event("/api/v1/namespaces?limit=500", "list",
              object_ref={"resource": "namespaces", "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="list", resource_request=True, path="/api/v1/namespaces",
                   api_version="v1", resource="namespaces")),
    "deployment-scale": (
        event("/apis/apps/v1/namespaces/default/deployments/web/scale", "patch",
              object_ref={"resource": "deployments", "namespace": "default", "name": "web",
                          "apiGroup": "apps", "apiVersion": "v1", "subresource": "scale"}),
        Attributes(**ALICE_ATTRS, verb="patch", resource_request=True,
                   path="/apis/apps/v1/namespaces/default/deployments/web/scale", namespace="default",
                   api_group="apps", api_version="v1", resource="deployments", subresource="scale",
                   name="web")),
    "all-namespaces-list": (
        event("/apis/apps/v1/deployments?limit=500", "list",
              object_ref={"resource": "deployments", "apiGroup": "apps", "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="list", resource_request=True, path="/apis/apps/v1/deployments",
                   api_group="apps", api_version="v1", resource="deployments")),
    "legacy-watch": (
        event("/api/v1/watch/namespaces/default/pods", "watch",
              object_ref={"resource": "pods", "namespace": "default", "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="watch", resource_request=True,
                   path="/api/v1/watch/namespaces/default/pods", namespace="default",
                   api_version="v1", resource="pods")),
    "legacy-watch-named": (
        event("/api/v1/watch/namespaces/default/pods/nginx", "watch",
              object_ref={"resource": "pods", "namespace": "default", "name": "nginx",
                          "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="watch", resource_request=True,
                   path="/api/v1/watch/namespaces/default/pods/nginx", namespace="default",
                   api_version="v1", resource="pods", name="nginx")),
    "legacy-proxy": (
        event("/api/v1/proxy/namespaces/default/pods/nginx/healthz/deep", "proxy",
              object_ref={"resource": "pods", "namespace": "default", "name": "nginx",
                          "apiVersion": "v1"}),
        Attributes(**ALICE_ATTRS, verb="proxy", resource_request=True,
                   path="/api/v1/proxy/namespaces/default/pods/nginx/healthz/deep",
                   namespace="default", api_version="v1", resource="pods", name="nginx")),
    "discovery": (
        event("/apis/apps/v1?timeout=32s", "get"),
        Attributes(**ALICE_ATTRS, verb="get", resource_request=False, path="/apis/apps/v1")),
    "impersonation": (
        event("/api/v1/namespaces/default/secrets/db", "get",
              user={"username": "admin", "groups": ["system:masters", "system:authenticated"]},
              impersonatedUser={"username": "bob", "groups": ["ops"]},
              object_ref={"resource": "secrets", "namespace": "default", "name": "db",
                          "apiVersion": "v1"}),
        Attributes(user="admin", groups=("system:masters", "system:authenticated"), verb="get",
                   resource_request=True, path="/api/v1/namespaces/default/secrets/db",
                   namespace="default", api_version="v1", resource="secrets", name="db")),
    "anonymous": (
        event("/version", "get", user={"username": "system:anonymous",
                                       "groups": ["system:unauthenticated"]}),
        Attributes(user="system:anonymous", groups=("system:unauthenticated",), verb="get",
                   path="/version")),
}


@pytest.mark.parametrize("name", list(EVENTS))
def test_attributes_from_event(name: str) -> None:
    recorded, expected = EVENTS[name]
    assert attributes_from_event(recorded) == expected


@pytest.mark.parametrize(("query", "verb", "name"), [
    pytest.param("fieldSelector=metadata.name%3Dweb", "list", "web", id="encoded-equals"),
    pytest.param("fieldSelector=metadata.name=web", "list", "web", id="raw-equals"),
    pytest.param("fieldSelector=metadata.name%3D%3Dweb", "list", "web", id="double-equals"),
    pytest.param("fieldSelector=spec.nodeName%3Dn1%2Cmetadata.name%3Dweb", "list", "web",
                 id="second-term"),
    pytest.param("fieldSelector=metadata.name%21%3Dweb", "list", "", id="not-equal"),
    pytest.param("fieldSelector=metadata.namespace%3Dweb", "list", "", id="other-field"),
    pytest.param("fieldSelector=spec.nodeName%3Dn1", "list", "", id="no-name-term"),
    pytest.param("labelSelector=metadata.name%3Dweb", "list", "", id="label-selector"),
    pytest.param("fieldSelector=metadata.name%3D..", "list", "", id="dotdot-not-a-path-segment"),
    pytest.param("fieldSelector=metadata.name%3Da%2Fb", "list", "", id="slash-not-a-path-segment"),
    pytest.param("fieldSelector=metadata.name%3Dweb&watch=true", "watch", "web", id="watch"),
    pytest.param("fieldSelector=metadata.name%3Dweb", "deletecollection", "", id="deletecollection"),
])
def test_list_name_from_field_selector(query: str, verb: str, name: str) -> None:
    uri = f"/api/v1/namespaces/default/pods?{query}"
    recorded = event(uri, verb, object_ref={"resource": "pods", "namespace": "default",
                                            "apiVersion": "v1"})
    assert attributes_from_event(recorded).name == name
    parsed = parse_request_path(uri, verb)
    assert parsed is not None
    assert parsed.name == name


def test_legacy_watch_prefix_ignores_field_selector() -> None:
    uri = "/api/v1/watch/namespaces/default/pods?fieldSelector=metadata.name%3Dweb"
    recorded = event(uri, "watch", object_ref={"resource": "pods", "namespace": "default",
                                               "apiVersion": "v1"})
    with briefly():
        assert attributes_from_event(recorded).name == ""


@pytest.mark.parametrize(("uri", "expected"), [
    pytest.param("/api/v1/pods", ("", "v1", "", "pods", "", ""), id="core-all-namespaces"),
    pytest.param("/api/v1/namespaces/ns/pods/p/log?follow=true", ("", "v1", "ns", "pods", "log", "p"),
                 id="core-subresource"),
    pytest.param("/api/v1/namespaces/ns/pods/p/proxy/a/b", ("", "v1", "ns", "pods", "proxy", "p"),
                 id="proxy-subresource-with-path"),
    pytest.param("/apis/batch/v1/namespaces/ns/jobs", ("batch", "v1", "ns", "jobs", "", ""),
                 id="group-list"),
    pytest.param("/apis/rbac.authorization.k8s.io/v1/clusterroles/edit",
                 ("rbac.authorization.k8s.io", "v1", "", "clusterroles", "", "edit"), id="cluster-group"),
    pytest.param("/api/v1/namespaces", ("", "v1", "", "namespaces", "", ""), id="namespaces"),
    pytest.param("/api/v1/namespaces/foo", ("", "v1", "foo", "namespaces", "", "foo"), id="namespace"),
    pytest.param("/api/v1/namespaces/foo/finalize", ("", "v1", "foo", "namespaces", "finalize", "foo"),
                 id="finalize"),
    pytest.param("/api/v1/namespaces/foo/status", ("", "v1", "foo", "namespaces", "status", "foo"),
                 id="status"),
    pytest.param("/api/v1/namespaces/foo/configmaps", ("", "v1", "foo", "configmaps", "", ""),
                 id="namespaced-list"),
    pytest.param("/api/v1/watch/pods", ("", "v1", "", "pods", "", ""), id="legacy-watch-all"),
    pytest.param("/apis/apps/v1/watch/namespaces/ns/deployments/d",
                 ("apps", "v1", "ns", "deployments", "", "d"), id="legacy-watch-group"),
    pytest.param("/api/v1/proxy/nodes/n1/stats/summary", ("", "v1", "", "nodes", "", "n1"),
                 id="legacy-proxy-no-subresource"),
    pytest.param("/api/v1/nodes/n1/proxy/stats/summary", ("", "v1", "", "nodes", "proxy", "n1"),
                 id="node-proxy-subresource"),
    pytest.param("/api/v1/namespaces/ns/pods/p/exec/extra/parts", ("", "v1", "ns", "pods", "exec", "p"),
                 id="extra-parts-ignored"),
    pytest.param("/api/v1/namespaces/ns/pods/", ("", "v1", "ns", "pods", "", ""), id="trailing-slash"),
    pytest.param("/healthz", None, id="healthz"),
    pytest.param("/api", None, id="api"),
    pytest.param("/api/v1", None, id="api-v1"),
    pytest.param("/apis", None, id="apis"),
    pytest.param("/apis/apps", None, id="apis-group"),
    pytest.param("/apis/apps/v1", None, id="apis-group-version"),
    pytest.param("/apis/apps/v1/", None, id="apis-group-version-slash"),
    pytest.param("/openapi/v3/apis/apps/v1", None, id="openapi"),
    pytest.param("/version?timeout=32s", None, id="version"),
    pytest.param("/", None, id="root"),
])
def test_parse_request_path(uri: str, expected: tuple[str, ...] | None) -> None:
    parsed = parse_request_path(uri)
    if expected is None:
        assert parsed is None
        return
    assert parsed is not None
    got = (parsed.api_group, parsed.api_version, parsed.namespace, parsed.resource,
           parsed.subresource, parsed.name)
    assert got == expected


REPLAY_POLICY = policy_doc(
    {"level": "None", "nonResourceURLs": ["/healthz*", "/version"]},
    {"level": "RequestResponse", "resources": [{"resources": ["pods/exec", "pods/attach"]}]},
    {"level": "Metadata", "resources": [{"resources": ["configmaps"],
                                         "resourceNames": ["kubeadm-config"]}]},
    {"level": "Request", "verbs": ["create"], "resources": [{"resources": ["pods"],
                                                             "resourceNames": ["nginx"]}]},
    {"level": "Request", "namespaces": [""], "resources": [{"resources": ["nodes"]}]},
    {"level": "RequestResponse", "resources": [{"resources": ["namespaces/finalize"]}]},
    {"level": "Metadata", "resources": [{"group": "apps", "resources": ["deployments/*"]}]},
    {"level": "None", "namespaces": ["foo"]},
    {"level": "Request", "userGroups": ["system:authenticated", "system:unauthenticated"]},
    {"level": "Metadata", "omitStages": ["RequestReceived"]},
)


@pytest.mark.parametrize(("name", "index"), [
    ("healthz", 0),
    ("anonymous", 0),
    ("exec", 1),
    ("list-field-selector", 2),
    ("create-pod", 8),  # the body's name is not a resourceName the policy could see
    ("get-node", 4),
    ("namespace-finalize", 5),
    ("namespace-status", 7),  # the namespace object is in its own namespace
    ("namespace-get", 7),
    ("namespace-list", 8),
    ("deployment-scale", 6),
    ("all-namespaces-list", 6),
    ("failed-authentication", 9),  # no user: the userGroups rule cannot match
    ("impersonation", 8),  # the authenticated user, not the impersonated one
    ("watch-field-selector", 8),
    ("discovery", 8),
])
def test_replaying_events_through_a_policy(name: str, index: int) -> None:
    policy = load_policy(json.dumps(REPLAY_POLICY))
    attrs = attributes_from_event(EVENTS[name][0])
    decision = policy.evaluate(attrs)
    assert decision.rule_index == index
    assert decision.level == REPLAY_POLICY["rules"][index]["level"]
    assert policy.explain(attrs).decision == decision


def test_pitfall_11_failed_authentication_event_replays_with_no_user() -> None:
    failed = EVENTS["failed-authentication"][0]
    assert failed["stage"] == "ResponseStarted"
    assert failed["responseStatus"]["code"] == 401
    attrs = attributes_from_event(failed)
    assert attrs.user is None
    policy = load({"level": "RequestResponse", "userGroups": ["system:unauthenticated"]},
                  {"level": "Request", "users": [""]},
                  {"level": "Metadata", "verbs": ["list"]})
    assert policy.evaluate(attrs).rule_index == 2
    anonymous = dict(failed, user={"username": "system:anonymous",
                                   "groups": ["system:unauthenticated"]})
    assert policy.evaluate(attributes_from_event(anonymous)).rule_index == 0


@pytest.mark.parametrize(("uri", "index"), [
    ("/healthz?verbose", 0),
    ("/healthz?exclude=etcd&verbose=1", 0),
    ("/metrics?format=text", 1),
    ("/metrics", 1),
    ("/metricsx?a=b", 2),
    ("/api/v1/namespaces/default/pods?fieldSelector=x", 3),
])
def test_pitfall_12_query_string_is_ignored_by_path_matching(uri: str, index: int) -> None:
    policy = load({"level": "None", "nonResourceURLs": ["/healthz"]},
                  {"level": "Request", "nonResourceURLs": ["/metrics"]},
                  {"level": "Metadata", "nonResourceURLs": ["/metrics*"]},
                  {"level": "Metadata", "resources": [{"resources": ["pods"]}]})
    recorded = event(uri, "get" if "pods" not in uri else "list",
                     object_ref=({"resource": "pods", "namespace": "default", "apiVersion": "v1"}
                                 if "pods" in uri else None))
    attrs = attributes_from_event(recorded)
    assert "?" not in attrs.path
    assert policy.evaluate(attrs).rule_index == index


def test_pitfall_16_group_star_is_accepted_and_matches_every_group() -> None:
    policy = load({"level": "RequestResponse", "resources": [{"group": "*", "resources": ["secrets"]}]},
                  {"level": "Request", "resources": [{"group": "*"}]},
                  {"level": "Metadata"})
    assert policy.evaluate(resource("secrets")).rule_index == 0
    assert policy.evaluate(resource("secrets", group="example.com")).rule_index == 0
    assert policy.evaluate(resource("widgets", "status", group="example.com")).rule_index == 1
    assert policy.evaluate(resource("pods", "exec", name="p")).rule_index == 1
    assert policy.evaluate(nonresource("/apis")).rule_index == 2


# -- properties: random policies against an oracle transcribed from §5 -------------------


def oracle_rule_matches(rule: Doc, req: Request) -> bool:
    """§5, steps 1 to 7, for a rule given as it is written in YAML."""
    user = req.get("user")
    username = None if user is None else user.get("username", "")
    groups = [] if user is None else user.get("groups") or []
    if rule.get("users") and (user is None or username not in rule["users"]):
        return False
    if rule.get("userGroups") and (user is None or not any(g in rule["userGroups"] for g in groups)):
        return False
    if rule.get("verbs") and req.get("verb", "") not in rule["verbs"]:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        if not req.get("resourceRequest"):
            return False
        if rule.get("namespaces") and req.get("namespace", "") not in rule["namespaces"]:
            return False
        if not rule.get("resources"):
            return True
        group, res = req.get("apiGroup", ""), req.get("resource", "")
        sub, name = req.get("subresource", ""), req.get("name", "")
        combined = f"{res}/{sub}" if sub else res
        for entry in rule["resources"]:
            if entry.get("group", "") not in (group, "*"):
                continue
            if not entry.get("resources"):
                return True
            if entry.get("resourceNames") and name not in entry["resourceNames"]:
                continue
            for p in entry["resources"]:
                if p == "*" or p == combined:
                    return True
                if p.startswith("*/") and sub and p[2:] == sub:
                    return True
                if p.endswith("/*") and p[:-2] == res:
                    return True
        return False
    if rule.get("nonResourceURLs"):
        if req.get("resourceRequest"):
            return False
        path = req.get("path", "")
        return any(u == "*" or u == path or (u.endswith("*") and path.startswith(u.rstrip("*")))
                   for u in rule["nonResourceURLs"])
    return True


def oracle_decision(doc: Doc, req: Request) -> tuple[str, set[str], bool, int | None]:
    policy_stages = set(doc.get("omitStages") or [])
    policy_managed = bool(doc.get("omitManagedFields", False))
    for index, rule in enumerate(doc["rules"]):
        if oracle_rule_matches(rule, req):
            managed = rule.get("omitManagedFields")
            return (rule["level"], policy_stages | set(rule.get("omitStages") or []),
                    policy_managed if managed is None else managed, index)
    return "None", policy_stages, policy_managed, None


def oracle_valid(doc: Doc) -> bool:
    """§6, for the shapes the strategies below generate."""
    stages_ok = all(s in STAGE_NAMES for s in doc.get("omitStages") or [])
    if not doc["rules"] or not stages_ok:
        return False
    for rule in doc["rules"]:
        if rule.get("level") not in LEVEL_NAMES:
            return False
        if not all(s in STAGE_NAMES for s in rule.get("omitStages") or []):
            return False
        urls = rule.get("nonResourceURLs") or []
        if urls and (rule.get("resources") or rule.get("namespaces")):
            return False
        for url in urls:
            if url != "*" and (not url.startswith("/") or "*" in url[:-1]):
                return False
        for entry in rule.get("resources") or []:
            if entry.get("resourceNames") and not entry.get("resources"):
                return False
    return True


USERS = ["alice", "bob", "*"]
GROUPS = ["devs", "system:masters", "*"]
VERBS = ["get", "list", "create", "*"]
PATTERNS = ["pods", "pods/log", "pods/*", "*/log", "*", "*/*", "deployments", "deployments/scale"]
API_GROUPS = ["", "apps", "*"]
NAMESPACES = ["", "default", "kube-system"]
URLS = ["/healthz", "/healthz*", "/logs*", "*", "/logs/*", "/"]
NAMES = ["web", "*", ""]
# mostly valid values, with the occasional invalid one so that validation is exercised too
LEVEL_CHOICES = list(LEVEL_NAMES) * 20 + ["Loud"]


def _subset(items: list[str], min_size: int = 0) -> st.SearchStrategy[list[str]]:
    """A sub-list of `items` in one draw (a bit mask): nested list strategies made the oracle
    test spend most of its time generating data."""
    masks = st.integers(1 if min_size else 0, 2 ** len(items) - 1)
    return masks.map(lambda mask: [item for i, item in enumerate(items) if mask >> i & 1])


def _rarely_with(strategy: st.SearchStrategy[list[str]], bad: list[str]) -> st.SearchStrategy[list[str]]:
    """`strategy`'s lists, now and then with one invalid value appended."""
    choices = [None] * 15 + bad
    return st.tuples(strategy, st.sampled_from(choices)).map(
        lambda t: t[0] if t[1] is None else [*t[0], t[1]])


_stages = _rarely_with(_subset(list(STAGE_NAMES)), ["Bogus"])


_group_resources = st.fixed_dictionaries({}, optional={
    "group": st.sampled_from(API_GROUPS),
    "resources": _subset(PATTERNS),
    "resourceNames": _subset(NAMES[:2]),
})
_rule_base = st.fixed_dictionaries({"level": st.sampled_from(LEVEL_CHOICES)}, optional={
    "users": _subset(USERS), "userGroups": _subset(GROUPS), "verbs": _subset(VERBS),
    "omitStages": _stages, "omitManagedFields": st.booleans(),
})
_resource_part = st.fixed_dictionaries({}, optional={
    "namespaces": _subset(NAMESPACES, 1),
    "resources": st.lists(_group_resources, min_size=1, max_size=2),
})
_url_part = st.fixed_dictionaries({"nonResourceURLs": _rarely_with(_subset(URLS, 1), ["logs", "/a/*/b"])})
_mixed_part = st.tuples(_resource_part, _url_part).map(lambda t: {**t[0], **t[1]})
# one_of picks a branch uniformly: repeat branches to weight them (the mix is invalid)
_selector_part = st.one_of(st.just({}), _resource_part, _resource_part, _resource_part,
                           _url_part, _url_part, _url_part, _mixed_part)
rule_docs = st.tuples(_rule_base, _selector_part).map(lambda t: {**t[0], **t[1]})
policy_docs = st.fixed_dictionaries(
    {"apiVersion": st.just("audit.k8s.io/v1"), "kind": st.just("Policy"),
     "rules": st.lists(rule_docs, max_size=5)},
    optional={"omitStages": _stages, "omitManagedFields": st.booleans()})

# A request is one draw: an index into the product of these axes (fields of a request).
_REQUEST_AXES: list[tuple[str, list[Any]]] = [
    ("user", [None, {"username": "alice"}, {"username": "alice", "groups": ["devs"]},
              {"username": "bob", "groups": ["system:masters", "devs"]},
              {"username": "*", "groups": ["*"]}, {"username": "", "groups": []}]),
    ("verb", [*VERBS, "GET"]),
    ("resourceRequest", [True, True, False, None]),  # None: key absent
    ("namespace", [*NAMESPACES, "*"]),
    ("apiGroup", [*API_GROUPS, "batch"]),
    ("resource", ["pods", "deployments", "log", "*"]),
    ("subresource", ["", "", "log", "scale", "*"]),
    ("name", NAMES),
    ("path", ["/healthz", "/healthz/ready", "/healthzfoo", "/logs", "/logs/", "/logs/x", "/logsfoo",
              "/", "", "*", "/api/v1/pods"]),
]
_REQUEST_COUNT = 1
for _, _values in _REQUEST_AXES:
    _REQUEST_COUNT *= len(_values)


def _request_at(index: int) -> Request:
    # scramble (a bijection, the multiplier being a prime that does not divide the count) so
    # that every axis varies, not only the low-order ones
    index = index * 1_000_003 % _REQUEST_COUNT
    req: Request = {}
    for key, values in _REQUEST_AXES:
        index, pick = divmod(index, len(values))
        req[key] = values[pick]
    if req["resourceRequest"] is None:
        del req["resourceRequest"]
    if not req.get("resourceRequest"):  # a non-resource request has only a path
        for key in ("namespace", "apiGroup", "resource", "subresource", "name"):
            del req[key]
    return req


request_dicts = st.integers(0, _REQUEST_COUNT - 1).map(_request_at)


def _render(doc: Doc, as_json: bool) -> str:
    return json.dumps(doc) if as_json else yaml.dump(doc, Dumper=_DUMPER, sort_keys=False)


PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(doc=policy_docs, reqs=st.lists(request_dicts, min_size=1, max_size=6), as_json=st.booleans())
def test_property_evaluate_agrees_with_the_reference_oracle(doc: Doc, reqs: list[Request],
                                                           as_json: bool) -> None:
    text = _render(doc, as_json)
    if not oracle_valid(doc):
        with pytest.raises(PolicyError):
            load_policy(text)
        return
    policy = load_policy(text)
    assert policy.warnings == ()
    for req in reqs:
        level, stages, managed, index = oracle_decision(doc, req)
        decision = policy.evaluate(req)
        assert decision.level == level, req
        assert decision.rule_index == index, req
        assert set(decision.omit_stages) == stages, req
        assert list(decision.omit_stages) == sorted(stages, key=STAGE_NAMES.index), req
        assert decision.omit_managed_fields is managed, req
        explanation = policy.explain(req)
        assert explanation.decision == decision
        passed_over = len(doc["rules"]) if index is None else index
        assert [m.index for m in explanation.misses] == list(range(passed_over))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.sampled_from(["", "*", "/", "Metadata", "pods", "Panic", "apps", "x y"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["group", "resources", "resourceNames", "level", "k"]), inner,
                    max_size=3)), max_leaves=6)
_garbage_rule = st.fixed_dictionaries(
    {"level": st.one_of(st.sampled_from(LEVEL_NAMES), json_scalars)},
    optional={key: json_values for key in ("users", "userGroups", "verbs", "resources", "namespaces",
                                           "nonResourceURLs", "omitStages", "omitManagedFields",
                                           "Level", "junk")})


def _not_a_truthy_number(value: Any) -> bool:
    # A number or true as `rules` is a known crash (test_scalar_rules_are_an_error_not_a_crash).
    return not (isinstance(value, int | float) and value)


@settings(PROPERTY, max_examples=100)
@given(rules_=st.one_of(json_values.filter(_not_a_truthy_number),
                        st.lists(st.one_of(_garbage_rule, json_values), max_size=3)),
       top=st.dictionaries(st.sampled_from(["omitStages", "omitManagedFields", "metadata", "extra"]),
                           json_values, max_size=2),
       as_json=st.booleans())
def test_property_garbage_policies_only_raise_policy_error(rules_: Any, top: Doc, as_json: bool) -> None:
    doc = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", **top, "rules": rules_}
    try:
        policy = load_policy(_render(doc, as_json))
    except PolicyError as exc:
        assert exc.problems
        assert all(isinstance(p, str) and isinstance(r, str) for p, r in exc.problems)
        return
    for req in (resource("pods", name="web"), nonresource("/healthz"), {}):
        assert policy.explain(req).decision == policy.evaluate(req)


GARBAGE_TARGET = load_policy(to_yaml(policy_doc(
    {"level": "None", "users": ["alice"], "verbs": ["watch"]},
    {"level": "None", "userGroups": ["ops"], "nonResourceURLs": ["/healthz*"]},
    {"level": "Request", "namespaces": ["", "default"],
     "resources": [{"resources": ["pods/*"], "resourceNames": ["web"]}, {"group": "apps"}]},
    {"level": "Metadata", "verbs": ["get"], "omitManagedFields": True},
    omitStages=["RequestReceived"])))
_request_keys = st.sampled_from(["user", "verb", "resourceRequest", "path", "namespace", "apiGroup",
                                 "apiVersion", "resource", "subresource", "name", "extra"])
_garbage_user = st.fixed_dictionaries({}, optional={"username": json_scalars, "groups": json_values,
                                                    "uid": json_scalars})


@settings(PROPERTY, max_examples=150)
@given(base=request_dicts,
       changes=st.dictionaries(_request_keys, st.one_of(json_values, _garbage_user), max_size=3))
def test_property_garbage_requests_only_raise_input_error(base: Request, changes: Doc) -> None:
    for req in (changes, {**base, **changes}):
        try:
            decision = GARBAGE_TARGET.evaluate(req)
        except InputError:
            with pytest.raises(InputError):
                GARBAGE_TARGET.explain(req)
            continue
        assert GARBAGE_TARGET.explain(req).decision == decision
        assert decision.level in LEVEL_NAMES


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from(list("abcdelmnorstuvyAMPR/:.-[]{},\"' \n#*&|>%@`"
                                                  "\t0123456789")), max_size=80))
def test_property_arbitrary_text_only_raises_policy_error(text: str) -> None:
    for candidate in (text, "apiVersion: audit.k8s.io/v1\nkind: Policy\n" + text):
        try:
            load_policy(candidate)
        except PolicyError as exc:
            assert exc.problems
