"""Policy lint and recommended policies: every check fires on a policy written to trigger it
and stays quiet on a corrected one and on the recommended profiles; shadowing is sound; the
traffic tuner never drops people's requests, writes, credentials or exec."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrail.errors import ConfigError
from kubetrail.policy import lint as lint_module
from kubetrail.policy.lint import LINT_CHECKS, Finding, lint_policy
from kubetrail.policy.load import load_policy
from kubetrail.policy.model import Attributes, GroupResources, Policy, PolicyRule
from kubetrail.policy.recommend import PROFILES, projected_events, recommend_policy
from kubetrail.policy.traffic import Traffic

POLICIES = Path(__file__).parent / "data" / "policies"
CATCH_ALL = {"level": "Metadata"}


def pol(*rules: dict[str, Any], omit: tuple[str, ...] = ("RequestReceived",), **extra: Any) -> Policy:
    """A Policy from rule dicts, through the real loader."""
    doc: dict[str, Any] = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", **extra}
    if omit:
        doc["omitStages"] = list(omit)
    doc["rules"] = list(rules)
    return load_policy(yaml.safe_dump(doc, sort_keys=False))


def res(group: str, *resources: str, names: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"group": group}
    if resources:
        out["resources"] = list(resources)
    if names:
        out["resourceNames"] = list(names)
    return out


def found(policy: Policy, check_id: str, severity: str | None = None) -> list[Finding]:
    """The findings of one check (run alone, which keeps these tests fast)."""
    return [f for f in lint_policy(policy, checks=[check_id])
            if severity is None or f.severity == severity]


def header(text: str) -> str:
    """The leading comment block of a policy, unwrapped into one line."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def req(user: str | None = "alice@example.com", groups: tuple[str, ...] = ("system:authenticated",),
        verb: str = "get", resource: str = "", group: str = "", namespace: str = "team-a",
        subresource: str = "", name: str = "", path: str = "") -> Attributes:
    return Attributes(user=user, groups=groups, verb=verb, resource_request=bool(resource),
                      path=path, namespace=namespace if resource else "", api_group=group,
                      resource=resource, subresource=subresource, name=name)


NODE = dict(user="system:node:n1", groups=("system:nodes", "system:authenticated"))
KCM = dict(user="system:kube-controller-manager", groups=("system:authenticated",))


# -- every check: fires on a bad policy, quiet on the corrected one -----------------------

HEALTH_DROP = {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/metrics"]}

TRIGGERS: dict[str, tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = {
    # id: (severity, bad rules, corrected rules)
    "credentials-in-bodies": (
        "error",
        [{"level": "RequestResponse", "resources": [res("", "secrets")]}, CATCH_ALL],
        [{"level": "Metadata", "resources": [res("", "secrets")]}, CATCH_ALL]),
    "credential-access-dropped": (
        "warning",
        [{"level": "None", "resources": [res("", "secrets")]}, CATCH_ALL],
        [{"level": "None", "userGroups": ["system:nodes"], "verbs": ["watch"],
          "resources": [res("", "secrets")]}, CATCH_ALL]),
    "exec-not-recorded": (
        "error",
        [{"level": "None", "resources": [res("", "pods/exec", "pods/attach")]}, CATCH_ALL],
        [{"level": "None", "userGroups": ["system:nodes"],
          "resources": [res("", "pods/exec", "pods/attach")]}, CATCH_ALL]),
    "writes-without-bodies": (
        "warning",
        [CATCH_ALL],
        [{"level": "Request", "verbs": ["create", "update", "patch", "delete"],
          "resources": [res("rbac.authorization.k8s.io"), res(""), res("apps"), res("batch")]},
         CATCH_ALL]),
    "no-catch-all": (
        "warning",
        [{"level": "Metadata", "resources": [res("")]}],
        [{"level": "Metadata", "resources": [res("")]}, CATCH_ALL]),
    "final-rule-drops-all": (
        "warning",
        [{"level": "Metadata", "resources": [res("")]}, {"level": "None"}],
        [{"level": "Metadata", "resources": [res("")]}, CATCH_ALL]),
    "response-complete-omitted": (
        "warning",
        [{"level": "Metadata", "omitStages": ["ResponseComplete"]}],
        [{"level": "Metadata", "omitStages": ["ResponseStarted"]}]),
    "high-volume-system-reads": (
        "warning",
        [{"level": "Request", "verbs": ["get", "list", "watch"]}, CATCH_ALL],
        [{"level": "Metadata", "verbs": ["get", "list", "watch"]}, CATCH_ALL]),
    "health-checks-recorded": (
        "warning",
        [CATCH_ALL],
        [HEALTH_DROP, CATCH_ALL]),
    "events-recorded": (
        "warning",
        [CATCH_ALL],
        [{"level": "None", "verbs": ["create", "update", "patch"],
          "resources": [res("", "events"), res("events.k8s.io", "events")]}, CATCH_ALL]),
    "unauthenticated-dropped": (
        "warning",
        [{"level": "None", "userGroups": ["system:unauthenticated"]}, CATCH_ALL],
        [{"level": "None", "userGroups": ["system:unauthenticated"],
          "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*"]}, CATCH_ALL]),
    "unmatchable-rule": (
        "warning",
        [{"level": "Request", "resources": [res("*", "*/*")]}, CATCH_ALL],
        [{"level": "Request", "resources": [res("*", "*")]}, CATCH_ALL]),
    "shadowed-rule": (
        "warning",
        [{"level": "Metadata", "resources": [res("apps")]},
         {"level": "Request", "resources": [res("apps", "deployments")]}, CATCH_ALL],
        [{"level": "Request", "resources": [res("apps", "deployments")]},
         {"level": "Metadata", "resources": [res("apps")]}, CATCH_ALL]),
    "literal-star-selector": (
        "warning",
        [{"level": "None", "users": ["*"], "verbs": ["watch"]}, CATCH_ALL],
        [{"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"]}, CATCH_ALL]),
    "unknown-verb": (
        "warning",
        [{"level": "None", "verbs": ["gte"], "resources": [res("", "nodes")]}, CATCH_ALL],
        [{"level": "None", "verbs": ["get"], "resources": [res("", "nodes")]}, CATCH_ALL]),
    "resource-not-in-group": (
        "warning",
        [{"level": "Request", "resources": [res("", "deployments")]}, CATCH_ALL],
        [{"level": "Request", "resources": [res("apps", "deployments")]}, CATCH_ALL]),
    "managed-fields-not-omitted": (
        "info",
        [{"level": "RequestResponse", "resources": [res("", "pods")]}, CATCH_ALL],
        [{"level": "RequestResponse", "omitManagedFields": True, "resources": [res("", "pods")]},
         CATCH_ALL]),
}


def test_every_check_has_a_trigger_and_a_description() -> None:
    assert set(TRIGGERS) | {"request-received-not-omitted"} == set(LINT_CHECKS)
    for check_id, description in LINT_CHECKS.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", check_id)
        assert description and "\n" not in description


@pytest.mark.parametrize("check_id", sorted(TRIGGERS))
def test_check_fires_on_bad_policy_and_not_on_corrected(check_id: str) -> None:
    severity, bad, good = TRIGGERS[check_id]
    hits = found(pol(*bad), check_id)
    assert hits, f"{check_id} did not fire"
    assert {f.severity for f in hits} == {severity}
    for f in hits:
        assert f.message and f.fix and f.message != f.fix
    assert not found(pol(*good), check_id, None if severity != "warning" else "warning")


def test_request_received_not_omitted() -> None:
    bad = found(pol(CATCH_ALL, omit=()), "request-received-not-omitted")
    assert [f.rule_index for f in bad] == [None]
    assert "omitStages:\n- RequestReceived" in bad[0].fix
    assert not found(pol(CATCH_ALL), "request-received-not-omitted")
    # omitted on the rules that record the traffic is as good as policy-wide
    assert not found(pol({"level": "Metadata", "omitStages": ["RequestReceived"]}, omit=()),
                     "request-received-not-omitted")


def test_credentials_probe_each_resource_and_only_real_leaks() -> None:
    rules = pol({"level": "Request", "resources": [res("", "serviceaccounts/token"),
                                                   res("authentication.k8s.io", "tokenreviews")]},
                {"level": "Request", "verbs": ["get", "list", "watch"], "resources": [res("", "secrets")]},
                CATCH_ALL)
    hits = found(rules, "credentials-in-bodies")
    # a TokenReview's request body holds the token; a TokenRequest's only its response does,
    # and reads have no request body at all
    assert len(hits) == 1 and hits[0].rule_index == 0
    assert hits[0].message.startswith("tokenreviews (authentication.k8s.io): rules[0]")
    hits = found(pol({"level": "RequestResponse", "users": ["bob"], "verbs": ["get"],
                      "resources": [res("", "secrets")]}, CATCH_ALL), "credentials-in-bodies")
    assert [f.rule_index for f in hits] == [0] and "by bob" in hits[0].message


def test_fix_snippets_are_yaml_rules_that_load() -> None:
    for check_id in ("credentials-in-bodies", "exec-not-recorded", "writes-without-bodies",
                     "health-checks-recorded", "events-recorded"):
        _, bad, _ = TRIGGERS[check_id]
        suggested = []
        for finding in found(pol(*bad), check_id):
            snippet = finding.fix.split(":\n", 1)[1]
            suggested += yaml.safe_load("\n".join(ln for ln in snippet.splitlines()
                                                  if ln.startswith(("-", " "))))
        assert suggested
        assert not found(pol(*suggested, *bad), check_id), check_id  # the fixes, inserted first


def test_findings_are_ordered_and_serialisable() -> None:
    findings = lint_policy(load_policy((POLICIES / "leaky.yaml").read_text()))
    ranks = [("error", "warning", "info").index(f.severity) for f in findings]
    assert ranks == sorted(ranks)
    for severity in ("error", "warning", "info"):
        idx = [-1 if f.rule_index is None else f.rule_index for f in findings if f.severity == severity]
        assert idx == sorted(idx)
    d = findings[0].to_dict()
    assert list(d) == ["id", "severity", "rule", "message", "fix"]


# -- the fixtures ----------------------------------------------------------------------


def lint_file(name: str) -> list[Finding]:
    return lint_policy(load_policy((POLICIES / name).read_text(), source=name))


def ids(findings: list[Finding], severity: str | None = None) -> set[tuple[str, int | None]]:
    return {(f.id, f.rule_index) for f in findings if severity is None or f.severity == severity}


def test_docs_example_findings() -> None:
    findings = lint_file("docs-example.yaml")
    errors = [f for f in findings if f.severity == "error"]
    # configmaps in kube-system at Request: their bodies reach the log
    assert ids(errors) == {("credentials-in-bodies", 5)}
    assert "configmaps" in errors[0].message and 'namespace "kube-system"' in errors[0].message
    warnings = ids(findings, "warning")
    assert ("high-volume-system-reads", 0) in warnings  # pods at RequestResponse
    assert ("events-recorded", 7) in warnings  # core events at Request
    assert ("health-checks-recorded", 8) in warnings
    assert ("writes-without-bodies", 8) in warnings  # RBAC falls to the Metadata catch-all
    assert ("managed-fields-not-omitted", 0) in ids(findings, "info")
    assert ("resource-not-in-group", 7) in ids(findings, "info")  # extensions
    for quiet in ("no-catch-all", "shadowed-rule", "exec-not-recorded", "final-rule-drops-all",
                  "request-received-not-omitted", "unmatchable-rule"):
        assert quiet not in {f.id for f in findings}


def test_gke_style_findings() -> None:
    findings = lint_file("gke-style.yaml")
    assert not [f for f in findings if f.severity == "error"]
    warnings = ids(findings, "warning")
    assert ("high-volume-system-reads", 14) in warnings  # Request for get/list/watch
    assert ("health-checks-recorded", 16) in warnings  # drops /healthz* only, not /livez, /readyz
    assert ("events-recorded", 16) in warnings  # drops core events, not events.k8s.io
    assert ("managed-fields-not-omitted", 15) in ids(findings, "info")
    # every recording rule omits RequestReceived, so the policy-wide omission is not needed
    for quiet in ("request-received-not-omitted", "no-catch-all", "shadowed-rule",
                  "writes-without-bodies", "credential-access-dropped", "unauthenticated-dropped"):
        assert quiet not in {f.id for f in findings}


def test_leaky_findings() -> None:
    findings = lint_file("leaky.yaml")
    assert {("credentials-in-bodies", 0), ("exec-not-recorded", 1)} <= ids(findings, "error")
    secrets = [f for f in findings if f.id == "credentials-in-bodies" and "secrets" in f.message]
    assert "RequestResponse" in secrets[0].message and "level: Metadata" in secrets[0].fix
    assert {("shadowed-rule", 3), ("no-catch-all", None),
            ("request-received-not-omitted", None)} <= ids(findings, "warning")
    shadow = next(f for f in findings if f.id == "shadowed-rule")
    assert "rules[2]" in shadow.message


def test_leaky_fixed_is_clean() -> None:
    findings = lint_file("leaky-fixed.yaml")
    assert [f for f in findings if f.severity != "info"] == []
    leaky = {f.id for f in lint_file("leaky.yaml") if f.severity != "info"}
    assert {"credentials-in-bodies", "exec-not-recorded", "shadowed-rule", "no-catch-all"} <= leaky


def test_sloppy_findings() -> None:
    findings = lint_file("sloppy.yaml")
    assert {("literal-star-selector", 0), ("resource-not-in-group", 1), ("unknown-verb", 2),
            ("unmatchable-rule", 2), ("unmatchable-rule", 3), ("health-checks-recorded", 5),
            ("response-complete-omitted", 6),
            ("final-rule-drops-all", 7)} <= ids(findings, "warning")
    assert ("unknown-verb", 4) in ids(findings, "info")  # impersonate
    messages = " ".join(f.message + f.fix for f in findings)
    assert '"apps"' in messages and '"secrets"' in messages  # deployments' group; secret → secrets
    assert 'Replace "lsit" with "list"' in messages and 'Replace "post" with "create"' in messages


# -- shadowing -----------------------------------------------------------------------------

SHADOW_CASES = [
    # (earlier rule, later rule, shadowed?)
    ({"resources": [res("", "configmaps", names=("a",))]}, {"resources": [res("", "configmaps")]}, False),
    ({"resources": [res("", "configmaps", names=("a",))]},
     {"resources": [res("", "configmaps", names=("b",))]}, False),
    ({"resources": [res("", "configmaps", names=("a", "b"))]},
     {"resources": [res("", "configmaps", names=("a",))]}, True),
    ({"resources": [res("", "configmaps", names=("a",))]}, {"resources": [res("")]}, False),
    ({"resources": [res("", "pods/exec")]}, {"resources": [res("", "pods/*")]}, False),
    ({"resources": [res("", "pods/*")]}, {"resources": [res("", "pods/exec")]}, True),
    ({"resources": [res("", "pods/*")]}, {"resources": [res("", "pods")]}, True),  # R/* covers R
    ({"resources": [res("", "pods")]}, {"resources": [res("", "pods/*")]}, False),
    ({"resources": [res("", "pods")]}, {"resources": [res("", "pods/log")]}, False),
    ({"resources": [res("", "*/exec")]}, {"resources": [res("", "pods/exec")]}, True),
    ({"resources": [res("apps", "*/scale")]}, {"resources": [res("apps", "deployments")]}, False),
    ({"resources": [res("*", "*")]}, {"resources": [res("apps", "deployments/scale")]}, True),
    ({"resources": [res("apps", "*")]}, {"resources": [res("*", "deployments")]}, False),
    ({"resources": [res("apps")]}, {"resources": [res("apps", "deployments", names=("x",))]}, True),
    ({"users": ["alice"]}, {}, False),
    ({}, {"users": ["alice"]}, True),
    ({"users": ["alice", "bob"]}, {"users": ["alice"]}, True),
    ({"userGroups": ["devs"]}, {"users": ["alice"]}, False),
    ({"verbs": ["get"]}, {"verbs": ["get", "list"]}, False),
    ({"verbs": ["get", "list"]}, {"verbs": ["list"], "resources": [res("")]}, True),
    ({"namespaces": ["a"]}, {"namespaces": ["a", "b"]}, False),
    ({"namespaces": ["a", "b"]}, {"namespaces": ["a"], "resources": [res("", "pods")]}, True),
    ({"namespaces": ["a"]}, {"nonResourceURLs": ["/logs"]}, False),  # resource rule vs non-resource
    ({"nonResourceURLs": ["/logs*"]}, {"nonResourceURLs": ["/logs/x", "/logsfoo*"]}, True),
    ({"nonResourceURLs": ["/logs/*"]}, {"nonResourceURLs": ["/logs"]}, False),
    ({"nonResourceURLs": ["/logs*"]}, {}, False),  # the later rule also matches resource requests
    ({"resources": [res("")]}, {"verbs": ["get"]}, False),
]


@pytest.mark.parametrize(("earlier", "later", "shadowed"), SHADOW_CASES)
def test_shadowing(earlier: dict[str, Any], later: dict[str, Any], shadowed: bool) -> None:
    policy = pol({"level": "None", **earlier}, {"level": "Metadata", **later}, CATCH_ALL)
    assert bool([f for f in found(policy, "shadowed-rule") if f.rule_index == 1]) is shadowed


def _random_rule(rnd: random.Random) -> PolicyRule:
    kind = rnd.choice(["resource", "url", "none"])
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    if kind == "resource":
        namespaces = rnd.choice([(), ("a",), ("a", ""), ("",)])
        resources = tuple(
            GroupResources(rnd.choice(["", "apps", "*"]),
                           tuple(rnd.sample(["pods", "pods/exec", "pods/*", "*/exec", "*", "deployments",
                                             "deployments/scale", "*/scale", "*/*"], rnd.randint(0, 2))),
                           rnd.choice([(), ("x",), ("x", "y")]))
            for _ in range(rnd.randint(0, 2)))
        resources = tuple(GroupResources(g.group, g.resources, g.resource_names if g.resources else ())
                          for g in resources)
    elif kind == "url":
        urls = tuple(rnd.sample(["/logs*", "/logs/*", "/logs", "/logs/x", "*", "/l*"], rnd.randint(1, 2)))
    return PolicyRule(
        level="None", users=rnd.choice([(), ("alice",), ("alice", "bob"), ("bob",)]),
        user_groups=rnd.choice([(), ("g1",), ("g1", "g2")]),
        verbs=rnd.choice([(), ("get",), ("get", "list"), ("create",), ("post",)]),
        resources=resources, namespaces=namespaces, non_resource_urls=urls)


def _random_attrs(rnd: random.Random, like: PolicyRule) -> Attributes:
    """A request, usually built from `like`'s own selector values so that it often matches."""
    def pick(values: tuple[str, ...], others: list[str]) -> str:
        return rnd.choice(list(values) + others) if values and rnd.random() < 0.8 else rnd.choice(others)
    user = rnd.choice([None, pick(like.users, ["alice", "bob", "carol"])])
    groups = tuple({pick(like.user_groups, ["g1", "g2", "g3"]) for _ in range(rnd.randint(0, 2))})
    if rnd.random() < 0.5:  # non-resource requests carry HTTP methods, resource requests verbs
        verb = pick(tuple(v for v in like.verbs if v in ("get", "post")), ["get", "post", "head"])
        return Attributes(user=user, groups=groups, verb=verb,
                          path=pick(tuple(u.rstrip("*") for u in like.non_resource_urls),
                                    ["/logs", "/logs/x", "/logsfoo", "/l", "/other"]))
    verb = pick(tuple(v for v in like.verbs if v != "post"), ["get", "list", "watch", "create"])
    patterns = [p for gr in like.resources for p in gr.resources]
    resource, _, sub = pick(tuple(patterns), ["pods", "deployments", "widgets", "pods/exec",
                                               "deployments/scale"]).replace("*", "pods").partition("/")
    names = tuple(n for gr in like.resources for n in gr.resource_names)
    return Attributes(user=user, groups=groups, verb=verb, resource_request=True,
                      namespace=pick(like.namespaces, ["a", "b", ""]),
                      api_group=pick(tuple(gr.group for gr in like.resources if gr.group != "*"),
                                     ["", "apps", "x.io"]),
                      resource=resource, subresource=sub, name=pick(names, ["", "x", "y", "z"]))


def test_subsumption_is_sound_on_random_rules() -> None:
    """Whenever the linter says rule b is shadowed by a (or matches nothing), no request
    matches b without matching a (or at all)."""
    rnd = random.Random(20261122)
    subsumed = dead = 0
    for _ in range(2000):
        a, b = _random_rule(rnd), _random_rule(rnd)
        is_dead = lint_module._dead_reason(b) is not None
        if not is_dead and not lint_module._subsumes(a, b):
            continue
        subsumed += not is_dead
        dead += is_dead
        for _ in range(40):
            attrs = _random_attrs(rnd, b)
            if b.matches(attrs):
                assert not is_dead, (b, attrs)
                assert a.matches(attrs), (a, b, attrs)
    assert subsumed > 80 and dead > 20  # the property was exercised


# -- recommended policies ------------------------------------------------------------------


@pytest.fixture(scope="module")
def recommended() -> dict[str, tuple[str, Policy, list[Finding]]]:
    out = {}
    for profile in PROFILES:
        text = recommend_policy(profile)
        policy = load_policy(text)
        out[profile] = (text, policy, lint_policy(policy))
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_recommended_policy_lints_clean(profile: str, recommended: dict[str, Any]) -> None:
    text, policy, findings = recommended[profile]
    assert [f for f in findings if f.severity != "info"] == []
    lines = text.splitlines()
    rule_starts = [i for i, line in enumerate(lines) if line.startswith("- level:")]
    assert len(rule_starts) == len(policy.rules)
    assert all(lines[i - 1].startswith("# ") for i in rule_starts)  # every rule says why
    assert policy.omit_stages == ("RequestReceived",) and policy.omit_managed_fields
    assert policy.rules[-1] == PolicyRule(level="Metadata")


def level(policy: Policy, attrs: Attributes) -> str:
    return policy.evaluate(attrs).level


@pytest.mark.parametrize(("attrs", "baseline", "strict"), [
    (req(resource="secrets"), "Metadata", "Metadata"),
    (req(verb="create", resource="configmaps"), "Metadata", "Metadata"),
    (req(verb="create", resource="serviceaccounts", subresource="token", name="x"), "Metadata", "Metadata"),
    (req(verb="create", resource="tokenreviews", group="authentication.k8s.io"), "Metadata", "Metadata"),
    (req(verb="create", resource="pods", subresource="exec", name="p"), "Metadata", "Metadata"),
    (req(verb="create", resource="clusterrolebindings", group="rbac.authorization.k8s.io",
         namespace=""), "Request", "RequestResponse"),
    (req(verb="patch", resource="deployments", group="apps"), "Request", "RequestResponse"),
    (req(verb="patch", resource="widgets", group="example.com"), "Metadata", "RequestResponse"),
    (req(resource="widgets", group="example.com"), "Metadata", "Metadata"),
    (req(user=None, groups=(), verb="list", resource="secrets", namespace="kube-system"),
     "Metadata", "Metadata"),
    (req(user="system:anonymous", groups=("system:unauthenticated",), path="/readyz"), "None", "None"),
    (req(path="/apis"), "None", "Metadata"),
    (req(user="system:anonymous", groups=("system:unauthenticated",), path="/apis"),
     "Metadata", "Metadata"),
    (req(**NODE, verb="update", resource="leases", group="coordination.k8s.io",
         namespace="kube-node-lease", name="n1"), "None", "None"),
    (req(**NODE, verb="patch", resource="pods", subresource="status", name="p"), "Metadata", "Request"),
    (req(**KCM, verb="update", resource="leases", group="coordination.k8s.io",
         namespace="kube-system", name="kube-controller-manager"), "None", "None"),
    (req(**KCM, verb="update", resource="leases", group="coordination.k8s.io",
         namespace="kube-system", name="something-else"), "Metadata", "RequestResponse"),
    (req(**NODE, verb="create", resource="events", namespace="default"), "None", "None"),
    (req(verb="delete", resource="events", namespace="default"), "Metadata", "RequestResponse"),
])
def test_recommended_levels(attrs: Attributes, baseline: str, strict: str,
                            recommended: dict[str, Any]) -> None:
    assert level(recommended["baseline"][1], attrs) == baseline
    assert level(recommended["strict"][1], attrs) == strict


def test_unknown_check_is_refused() -> None:
    with pytest.raises(ConfigError, match="no-such-check"):
        lint_policy(pol(CATCH_ALL), checks=["no-such-check"])


def test_unknown_profile_and_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="baseline, strict"):
        recommend_policy("paranoid")
    with pytest.raises(ConfigError, match="needs traffic"):
        recommend_policy(max_events_per_day=10)
    with pytest.raises(ConfigError):
        recommend_policy(traffic=Traffic.of([]), max_events_per_day=-1)


# -- traffic tuning ------------------------------------------------------------------------

SA_KS = ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated")
SA_OP = ("system:serviceaccounts", "system:serviceaccounts:cert-manager", "system:authenticated")
PEOPLE = ("devs", "system:authenticated")

TRAFFIC = Traffic.of([
    (req(**NODE, verb="watch", resource="pods", namespace=""), 200_000),
    (req(user="system:node:n2", groups=NODE["groups"], verb="watch", resource="pods",
                     namespace=""), 200_000),
    (req(**KCM, verb="list", resource="deployments", group="apps", namespace=""), 150_000),
    (req(user="system:serviceaccount:kube-system:coredns", groups=SA_KS, verb="watch",
                     resource="endpointslices", group="discovery.k8s.io", namespace=""), 90_000),
    (req(user="system:serviceaccount:kube-system:coredns", groups=SA_KS,
                     path="/openapi/v3"), 1_000),
    # never to be dropped: credentials, writes, people, exec
    (req(**NODE, verb="watch", resource="configmaps", name="kube-root-ca.crt"), 100_000),
    (req(**NODE, verb="get", resource="secrets", name="db"), 50_000),
    (req(user="system:serviceaccount:cert-manager:cert-manager", groups=SA_OP, verb="update",
                     resource="leases", group="coordination.k8s.io", namespace="cert-manager",
                     name="cert-manager-controller"), 43_200),
    (req(user="alice@example.com", groups=PEOPLE, verb="list", resource="pods"), 60_000),
    (req(user="alice@example.com", groups=PEOPLE, verb="create", resource="pods",
                     subresource="exec", name="p"), 500),
    (req(**KCM, verb="list", resource="clusterroles", group="rbac.authorization.k8s.io",
                     namespace=""), 20_000),
])


@pytest.fixture(scope="module")
def tuned() -> dict[tuple[str, int | None], tuple[str, Policy]]:
    out = {}
    for profile in PROFILES:
        for target in (None, 700_000, 50_000):
            text = recommend_policy(profile, traffic=TRAFFIC, max_events_per_day=target)
            out[profile, target] = (text, load_policy(text))
    return out


def test_traffic_without_target_only_adds_a_header(tuned: dict[Any, Any],
                                                   recommended: dict[str, Any]) -> None:
    for profile in PROFILES:
        text, policy = tuned[profile, None]
        assert policy == recommended[profile][1]
        volume = projected_events(policy, TRAFFIC)
        assert f"Projected volume under this profile: {volume:,} events/day." in header(text)
        assert "Largest contributors:" in header(text)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("target", [700_000, 50_000])
def test_tuned_policy_lints_clean_and_drops_only_system_reads(
        profile: str, target: int, tuned: dict[Any, Any], recommended: dict[str, Any]) -> None:
    text, policy = tuned[profile, target]
    base = recommended[profile][1]
    assert [f for f in lint_policy(policy) if f.severity != "info"] == []
    added = policy.rules[len(base.rules) - 1:-1]
    assert added, "nothing was dropped"
    assert policy.rules[:len(base.rules) - 1] == base.rules[:-1] and policy.rules[-1] == base.rules[-1]
    for rule in added:  # specific: who, read verbs, what and where
        assert rule.level == "None" and (rule.users or rule.user_groups)
        assert rule.verbs and set(rule.verbs) <= {"get", "list", "watch", "head"}
        assert (rule.resources and rule.namespaces) or rule.non_resource_urls
    for c in TRAFFIC.classes:
        a = c.attributes
        protected = (not (a.user or "").startswith("system:") or a.verb in ("create", "update")
                     or a.resource in ("secrets", "configmaps") or a.subresource == "exec"
                     or a.api_group == "rbac.authorization.k8s.io")
        if protected:
            assert level(policy, a) == level(base, a) != "None", a
    # requests not in the traffic, of the same kinds as the dropped ones, stay recorded
    for a in (req(verb="watch", resource="pods", namespace=""),  # a person, not a node
              req(**NODE, verb="patch", resource="pods", subresource="status", name="p"),
              req(**KCM, verb="create", resource="deployments", group="apps"),
              req(verb="get", resource="secrets"),
              req(verb="create", resource="pods", subresource="exec", name="p")):
        assert level(policy, a) != "None", a
    projected = projected_events(policy, TRAFFIC)
    assert f"Projected volume after tuning: {projected:,} events/day." in header(text)
    assert projected < projected_events(base, TRAFFIC)


def test_tuning_meets_a_reachable_target_and_says_what_it_dropped(tuned: dict[Any, Any]) -> None:
    text, policy = tuned["baseline", 700_000]
    assert projected_events(policy, TRAFFIC) <= 700_000
    assert "NOT met" not in text
    assert "watch pods by group system:nodes cluster-wide / all namespaces: 800,000 events/day" \
        in header(text)
    # the biggest was enough: smaller droppable traffic is kept
    assert level(policy, TRAFFIC.classes[2].attributes) == "Metadata"
    node_rule = next(r for r in policy.rules if r.user_groups == ("system:nodes",) and r.verbs == ("watch",))
    assert node_rule.namespaces == ("",) and node_rule.resources == (GroupResources("", ("pods",)),)


def test_tuning_says_when_the_target_cannot_be_met(tuned: dict[Any, Any]) -> None:
    text, policy = tuned["baseline", 50_000]
    assert projected_events(policy, TRAFFIC) > 50_000
    said = header(text)
    assert "The target is NOT met" in said
    assert 'watch configmaps by system:node:n1 in namespace "team-a": 200,000 events/day ' \
           "(credentials, exec or access control)" in said
    assert "list pods by alice@example.com" in said and "a person's or an anonymous request" in said
    assert "update leases (coordination.k8s.io) by system:serviceaccount:cert-manager" in said
    for c in TRAFFIC.classes[:4]:  # every droppable class went
        assert level(policy, c.attributes) == "None"
