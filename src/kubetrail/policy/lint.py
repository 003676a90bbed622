"""Findings about an audit Policy: what it leaks, what it misses, what it wastes.

Most checks *evaluate* probe requests with :meth:`Policy.evaluate` instead of reading rule
text, so they are exactly as right as the evaluator (reference §5): "get secrets in namespace
default by alice" is asked of the policy, and the level and deciding rule it answers are
judged. Within each family of requests a check asks about, the probes take every value the
policy itself mentions (each listed user, group, namespace and resource name) plus values it
does not, so the policy cannot treat some member of the family in a way no probe sees (a
listed user is probed with the groups its name implies). Structural checks (shadowed or
unmatchable rules, literal ``*``, unknown verbs, resources named in the wrong group) read the
rules and report only what is certain.

    >>> findings = lint_policy(load_policy(text))
    >>> [f.id for f in findings if f.severity == "error"]
    ['credentials-in-bodies']

Checks are registered by id in one table (``_CHECKS``); ``LINT_CHECKS`` is its id →
description view, used by the docs and ``--list``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from ..errors import ConfigError
from .model import Attributes, GroupResources, Policy, PolicyDecision, PolicyRule, level_rank

__all__ = ["LINT_CHECKS", "SEVERITIES", "Finding", "lint_policy"]

SEVERITIES = ("error", "warning", "info")

#: Verbs a resource request can carry (request-info parsing, reference §5).
_REQUEST_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete",
                  "deletecollection", "proxy")
#: RBAC verbs that authorizers check but no request is ever audited with.
_AUTHZ_ONLY_VERBS = ("impersonate", "bind", "escalate", "use", "approve", "sign", "attest")
#: Non-resource requests carry the lower-cased HTTP method.
_HTTP_VERBS = ("get", "head", "options", "post", "put", "patch", "delete", "connect", "trace")
_WRITE_VERBS = ("create", "update", "patch")


@dataclass(frozen=True)
class Finding:
    """One problem found in a policy.

    >>> Finding("no-catch-all", "warning", None, "…falls through…", "Add…").to_dict()
    {'id': 'no-catch-all', 'severity': 'warning', 'rule': None, 'message': '…falls through…', 'fix': 'Add…'}
    """

    id: str
    severity: str  # "error" | "warning" | "info"
    rule_index: int | None  # the rule concerned; None for the policy as a whole
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "rule": self.rule_index,
                "message": self.message, "fix": self.fix}


# -- probe identities and requests ------------------------------------------------------

_SA_GROUPS = ("system:serviceaccounts", "system:authenticated")


@dataclass(frozen=True)
class _Who:
    """A probe identity; `kind` is person | service-account | system | node | anonymous."""

    user: str | None
    groups: tuple[str, ...]
    kind: str

    @property
    def label(self) -> str:
        return self.user if self.user is not None else "an unauthenticated client (no user)"


def _sa(namespace: str, name: str) -> _Who:
    kind = "system" if namespace == "kube-system" else "service-account"
    return _Who(f"system:serviceaccount:{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                 "system:authenticated"), kind)


_PERSON = _Who("alice@example.com", ("developers", "system:authenticated"), "person")
_ADMIN = _Who("kubernetes-admin", ("kubeadm:cluster-admins", "system:authenticated"), "person")
_CI_SA = _sa("ci", "deployer")
_NODE = _Who("system:node:node-1", ("system:nodes", "system:authenticated"), "node")
_KCM = _Who("system:kube-controller-manager", ("system:authenticated",), "system")
_SCHEDULER = _Who("system:kube-scheduler", ("system:authenticated",), "system")
_KUBE_PROXY = _Who("system:kube-proxy", ("system:authenticated",), "system")
_KUBE_PROXY_SA = _sa("kube-system", "kube-proxy")
_CONTROLLER_SA = _sa("kube-system", "replicaset-controller")
_COREDNS_SA = _sa("kube-system", "coredns")
_APISERVER = _Who("system:apiserver", ("system:masters",), "system")
_MONITORING_SA = _sa("monitoring", "prometheus")
_ANONYMOUS = _Who("system:anonymous", ("system:unauthenticated",), "anonymous")
_NO_USER = _Who(None, (), "anonymous")
_BASE_WHOS = (_PERSON, _ADMIN, _CI_SA, _NODE, _KCM, _SCHEDULER, _KUBE_PROXY, _KUBE_PROXY_SA,
              _CONTROLLER_SA, _APISERVER, _ANONYMOUS, _NO_USER)
_SYSTEM_READERS = (_NODE, _KUBE_PROXY, _KUBE_PROXY_SA, _KCM, _SCHEDULER, _COREDNS_SA, _CONTROLLER_SA)


def _classify(user: str) -> _Who:
    if user.startswith("system:serviceaccount:") and user.count(":") >= 3:
        namespace, _, name = user[len("system:serviceaccount:"):].partition(":")
        return _sa(namespace, name)
    if user.startswith("system:node:"):
        return _Who(user, ("system:nodes", "system:authenticated"), "node")
    if user == "system:anonymous":
        return _ANONYMOUS
    if user.startswith("system:"):
        return _Who(user, ("system:authenticated",), "system")
    return _Who(user, ("system:authenticated",), "person")


def _member_of(group: str) -> _Who:
    if group == "system:nodes":
        return _Who("system:node:probe-node", (group, "system:authenticated"), "node")
    if group.startswith("system:serviceaccounts:"):
        return _sa(group.split(":", 2)[2], "probe")
    if group == "system:serviceaccounts":
        return _sa("probe-namespace", "probe")
    if group == "system:unauthenticated":
        return _ANONYMOUS
    if group == "system:authenticated":
        return _PERSON
    kind = "system" if group.startswith("system:") else "person"
    return _Who(f"member-of-{group}", (group, "system:authenticated"), kind)


@dataclass(frozen=True)
class _Target:
    """A resource (or subresource) probes are made for."""

    group: str
    resource: str
    subresource: str = ""
    namespaced: bool = True

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def label(self) -> str:
        return self.combined if not self.group else f"{self.combined} ({self.group})"


@dataclass(frozen=True)
class _Hit:
    who: _Who
    attrs: Attributes
    decision: PolicyDecision


class _Prober:
    """Asks the policy about families of requests, covering every value its rules name."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cache: dict[Attributes, PolicyDecision] = {}
        self._narrowed: dict[tuple[str, str, str], tuple[Policy, list[int]]] = {}
        self._remapped: dict[tuple[tuple[str, str, str], int], PolicyDecision] = {}
        # "*" is a literal user/group/namespace/name (reference §11): nobody real is called that
        users = {u for rule in policy.rules for u in rule.users} - {"*"}
        groups = {g for rule in policy.rules for g in rule.user_groups} - {"*"}
        derived: list[_Who] = []
        for user in sorted(users):
            who = _classify(user)
            extra = {g for rule in policy.rules if user in rule.users for g in rule.user_groups}
            derived.append(_Who(who.user, tuple(dict.fromkeys((*who.groups, *sorted(extra)))),
                                who.kind))
        derived += [_member_of(g) for g in sorted(groups)]
        self.whos = tuple(dict.fromkeys((*_BASE_WHOS, *derived)))
        self.people = tuple(w for w in self.whos if w.kind == "person")
        named = sorted({n for rule in policy.rules for n in rule.namespaces} - {"", "*"})
        self.namespaces = tuple(dict.fromkeys(("team-a", "default", "kube-system", *named)))
        self._names_of: dict[_Target, tuple[str, ...]] = {}

    def decide(self, attrs: Attributes) -> PolicyDecision:
        decision = self._cache.get(attrs)
        if decision is None:
            decision = self._cache[attrs] = self._evaluate(attrs)
        return decision

    def _evaluate(self, attrs: Attributes) -> PolicyDecision:
        """`policy.evaluate`, on the rules that can match this resource at all.

        Probes vary user, verb, namespace and name over a fixed resource, so rules that can
        never match that resource are set aside once (a sound filter: it keeps every rule
        some request on the resource could match) and evaluation stays exact."""
        if not attrs.resource_request:
            return self.policy.evaluate(attrs)
        key = (attrs.api_group, attrs.resource, attrs.subresource)
        narrowed = self._narrowed.get(key)
        if narrowed is None:
            keep = [i for i, rule in enumerate(self.policy.rules) if _may_match_resource(rule, attrs)]
            sub = Policy(tuple(self.policy.rules[i] for i in keep), self.policy.omit_stages,
                         self.policy.omit_managed_fields)
            narrowed = self._narrowed[key] = (sub, keep)
        sub, keep = narrowed
        decision = sub.evaluate(attrs)
        if decision.rule_index is None:
            return decision
        slot = (key, decision.rule_index)
        remapped = self._remapped.get(slot)
        if remapped is None:
            remapped = self._remapped[slot] = replace(decision, rule_index=keep[decision.rule_index])
        return remapped

    def resource(self, target: _Target, verbs: Iterable[str], whos: Iterable[_Who],
                 namespaces: Sequence[str] | None = None) -> Iterator[_Hit]:
        for who in whos:
            for verb in verbs:
                for ns in self._namespaces(target, verb, namespaces):
                    for name in self._names(target, verb):
                        attrs = Attributes(
                            user=who.user, groups=who.groups, verb=verb, resource_request=True,
                            path=_path(target, ns, name), namespace=ns, api_group=target.group,
                            api_version="v1", resource=target.resource,
                            subresource=target.subresource, name=name)
                        yield _Hit(who, attrs, self.decide(attrs))

    def non_resource(self, paths: Iterable[str], verbs: Iterable[str],
                     whos: Iterable[_Who]) -> Iterator[_Hit]:
        for who in whos:
            for verb in verbs:
                for path in paths:
                    attrs = Attributes(user=who.user, groups=who.groups, verb=verb, path=path)
                    yield _Hit(who, attrs, self.decide(attrs))

    def _namespaces(self, target: _Target, verb: str,
                    wanted: Sequence[str] | None) -> Sequence[str]:
        if not target.namespaced:
            return ("",)
        spaces = tuple(wanted) if wanted is not None else self.namespaces
        # `GET /api/v1/secrets` (all namespaces) is evaluated with no namespace
        return (*spaces, "") if verb in ("list", "watch") else spaces

    def _names(self, target: _Target, verb: str) -> Sequence[str]:
        names = self._names_of.get(target)
        if names is None:  # the resourceNames of entries that can match this resource
            probe = Attributes(resource_request=True, api_group=target.group,
                               resource=target.resource, subresource=target.subresource)
            names = self._names_of[target] = tuple(sorted(
                {n for rule in self.policy.rules for gr in rule.resources
                 if GroupResources(gr.group, gr.resources).matches(probe)
                 for n in gr.resource_names} - {"", "*"}))
        if verb in ("list", "watch"):
            return ("", *names)  # a fieldSelector on metadata.name names a list
        if verb in ("create", "deletecollection") and not target.subresource:
            return ("",)
        return ("probe-object", *names)


def _may_match_resource(rule: PolicyRule, attrs: Attributes) -> bool:
    """Whether some request on attrs' group/resource/subresource could match `rule`."""
    if not rule.is_resource_rule:
        return not rule.non_resource_urls
    if not rule.resources:
        return True
    return any(GroupResources(gr.group, gr.resources).matches(attrs) for gr in rule.resources)


def _path(target: _Target, namespace: str, name: str) -> str:
    base = "/api/v1" if not target.group else f"/apis/{target.group}/v1"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(target.resource)
    if name:
        parts.append(name)
        if target.subresource:
            parts.append(target.subresource)
    return "/".join(parts)


# -- describing what probes found -------------------------------------------------------


def _where(attrs: Attributes) -> str:
    if attrs.namespace:
        return f'in namespace "{attrs.namespace}"'
    return "across all namespaces" if attrs.verb in ("list", "watch") else "(cluster-scoped)"


def _request(hit: _Hit) -> str:
    a = hit.attrs
    if not a.resource_request:
        return f"`{a.verb} {a.path}` by {hit.who.label}"
    sub = f"/{a.subresource}" if a.subresource else ""
    group = f" ({a.api_group})" if a.api_group else ""
    return f"`{a.verb} {a.resource}{sub}`{group} by {hit.who.label} {_where(a)}"


def _and(items: Sequence[str], limit: int = 4) -> str:
    items = list(dict.fromkeys(items))
    if len(items) > limit:
        items = [*items[:limit], f"{len(items) - limit} more"]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _summary(hits: Sequence[_Hit]) -> str:
    """One example request, then the spread: `get secrets` by alice … (in all: verbs …)."""
    verbs = list(dict.fromkeys(h.attrs.verb for h in hits))
    who = list(dict.fromkeys(h.who.label for h in hits))
    spread = []
    if len(verbs) > 1:
        spread.append(f"verbs {_and(verbs, 8)}")
    if len(who) > 1:
        spread.append(f"{len(who)} identities: {_and(who, 3)}")
    return _request(hits[0]) + (f" (in all: {'; '.join(spread)})" if spread else "")


def _by_rule(hits: Iterable[_Hit]) -> dict[int | None, list[_Hit]]:
    out: dict[int | None, list[_Hit]] = {}
    for hit in hits:
        out.setdefault(hit.decision.rule_index, []).append(hit)
    return out


def _decided(index: int | None) -> str:
    return f"rules[{index}]" if index is not None else "the default (no rule matches)"


def _yaml(rules: dict[str, Any] | list[dict[str, Any]]) -> str:
    items = rules if isinstance(rules, list) else [rules]
    return yaml.safe_dump(items, sort_keys=False, default_flow_style=None).rstrip()


def _resources_rule(level: str, targets: Iterable[_Target], *, omit_managed_fields: bool = False,
                    **selectors: Any) -> dict[str, Any]:
    """A rule for `targets` (grouped by API group) with `selectors` before `resources`."""
    by_group: dict[str, list[str]] = {}
    for t in targets:
        by_group.setdefault(t.group, []).append(t.combined)
    rule: dict[str, Any] = {"level": level, **selectors}
    rule["resources"] = [{"group": g, "resources": list(dict.fromkeys(r))}
                         for g, r in by_group.items()]
    if omit_managed_fields:
        rule["omitManagedFields"] = True
    return rule


def _insert_before(index: int | None, rules: dict[str, Any] | list[dict[str, Any]],
                   alternative: str = "") -> str:
    where = f"Insert before rules[{index}]" if index is not None else \
        "Add (no rule matches these requests now, so any position works)"
    tail = f"\n{alternative}" if alternative else ""
    return f"{where}:\n{_yaml(rules)}{tail}"


# -- the checks -------------------------------------------------------------------------

_Check = Callable[[Policy, _Prober], Iterable[Finding]]


@dataclass(frozen=True)
class _Registered:
    description: str
    run: _Check


_CHECKS: dict[str, _Registered] = {}


def _check(check_id: str, description: str) -> Callable[[_Check], _Check]:
    def register(func: _Check) -> _Check:
        _CHECKS[check_id] = _Registered(description, func)
        return func
    return register


_CREDENTIALS = (
    # target, verbs whose request body holds the credential, verbs whose response does
    (_Target("", "secrets"), _WRITE_VERBS,
     ("get", "list", "create", "update", "patch", "delete", "deletecollection")),
    (_Target("", "configmaps"), _WRITE_VERBS,
     ("get", "list", "create", "update", "patch", "delete", "deletecollection")),
    (_Target("", "serviceaccounts", "token"), (), ("create",)),
    (_Target("authentication.k8s.io", "tokenreviews", namespaced=False), ("create",), ("create",)),
)


@_check("credentials-in-bodies",
        "Secrets, ConfigMaps, TokenRequests or TokenReviews are logged at Request or "
        "RequestResponse where the body holds the credential")
def _credentials_in_bodies(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for target, request_verbs, response_verbs in _CREDENTIALS:
        verbs = tuple(dict.fromkeys((*request_verbs, *response_verbs)))
        leaks = []
        for hit in probe.resource(target, verbs, probe.whos):
            level = hit.decision.level
            if (level == "RequestResponse" and hit.attrs.verb in response_verbs) or \
                    (level_rank(level) >= level_rank("Request") and hit.attrs.verb in request_verbs):
                leaks.append(hit)
        for index, hits in _by_rule(leaks).items():
            level = hits[0].decision.level
            body = "request and response bodies carry" if level == "RequestResponse" else \
                "request body carries"
            what = {"secrets": "the Secret's data", "configmaps": "ConfigMap data (often "
                    "passwords, tokens and kubeconfigs)", "serviceaccounts": "the issued "
                    "service-account token", "tokenreviews": "the bearer token under review"}
            yield Finding(
                "credentials-in-bodies", "error", index,
                f"{target.label}: {_decided(index)} logs {_summary(hits)} at {level}; the "
                f"{body} {what[target.resource]} into the audit log",
                _insert_before(index, _resources_rule("Metadata", [target]),
                               f"or lower rules[{index}] to Metadata; Metadata still records "
                               "who touched which object"))


@_check("credential-access-dropped",
        "reads of Secrets or TokenRequests by people or service accounts are not recorded")
def _credential_access_dropped(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    whos = (*probe.people, _CI_SA)
    hits = [h for h in probe.resource(_Target("", "secrets"), ("get", "list", "watch"), whos)
            if h.decision.level == "None"]
    hits += [h for h in probe.resource(_Target("", "serviceaccounts", "token"), ("create",), whos)
             if h.decision.level == "None"]
    for index, group in _by_rule(hits).items():
        targets = list(dict.fromkeys(_Target("", h.attrs.resource, h.attrs.subresource)
                                     for h in group))
        yield Finding(
            "credential-access-dropped", "warning", index,
            f"{_summary(group)} is not recorded at all (level None, decided by "
            f"{_decided(index)}): credential theft would leave no trace",
            _insert_before(index, _resources_rule("Metadata", targets)))


_INTERACTIVE = (
    (_Target("", "pods", "exec"), ("create", "get")),
    (_Target("", "pods", "attach"), ("create", "get")),
    (_Target("", "pods", "portforward"), ("create", "get")),
    (_Target("", "pods", "proxy"), ("get", "create", "update", "patch", "delete")),
    (_Target("", "services", "proxy"), ("get", "create", "update", "patch", "delete")),
    (_Target("", "nodes", "proxy", namespaced=False), ("get", "create")),
    (_Target("", "pods", "ephemeralcontainers"), ("patch", "update")),
)


@_check("exec-not-recorded",
        "exec, attach, port-forward, proxy or debug containers by people are not recorded")
def _exec_not_recorded(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    hits = [h for target, verbs in _INTERACTIVE
            for h in probe.resource(target, verbs, (*probe.people, _CI_SA))
            if h.decision.level == "None"]
    for index, group in _by_rule(hits).items():
        targets = [t for t, _ in _INTERACTIVE if t.subresource != "ephemeralcontainers"]
        yield Finding(
            "exec-not-recorded", "error", index,
            f"{_summary(group)} is not recorded (level None, decided by {_decided(index)}): "
            "a shell or tunnel into a workload would leave no trace",
            _insert_before(index, _resources_rule("Metadata", targets),
                           "(exec, attach and port-forward carry no body: Metadata records the "
                           "command, which is in the request URI; record pods/ephemeralcontainers "
                           "with the workload writes at Request)"))


_RBAC = tuple(_Target("rbac.authorization.k8s.io", r, namespaced=r in ("roles", "rolebindings"))
              for r in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"))
_WORKLOADS = (_Target("", "pods"), _Target("apps", "deployments"), _Target("apps", "daemonsets"),
              _Target("apps", "statefulsets"), _Target("apps", "replicasets"),
              _Target("batch", "jobs"), _Target("batch", "cronjobs"))


@_check("writes-without-bodies",
        "RBAC or workload writes by people or service accounts are recorded below Request "
        "(no body) or not at all")
def _writes_without_bodies(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    whos = (*probe.people, _CI_SA)
    for kind, targets in (("RBAC", _RBAC), ("workload", _WORKLOADS)):
        hits = []
        for target in targets:
            for hit in probe.resource(target, ("create", "update", "patch", "delete"), whos):
                rank = level_rank(hit.decision.level)
                if rank == 0 or (hit.attrs.verb in _WRITE_VERBS and rank < level_rank("Request")):
                    hits.append(hit)
        for index, group in _by_rule(hits).items():
            dropped = any(h.decision.level == "None" for h in group)
            how = "not recorded at all" if dropped else f"recorded at {group[0].decision.level}, " \
                "without the body"
            rule = _resources_rule("Request", targets, omit_managed_fields=True,
                                   verbs=["create", "update", "patch", "delete"])
            yield Finding(
                "writes-without-bodies", "warning", index,
                f"{kind} write {_summary(group)} is {how} (decided by {_decided(index)}): "
                "an investigation could not tell what was granted or deployed",
                _insert_before(index, rule))


@_check("no-catch-all",
        "some requests match no rule and fall through to the default level None")
def _no_catch_all(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    widgets = _Target("example.com", "widgets")
    gizmos = _Target("example.com", "gizmos", namespaced=False)
    hits = [*probe.resource(widgets, ("get", "list", "create", "delete"), (_PERSON, _CI_SA, _NO_USER),
                            ("team-a",)),
            *probe.resource(gizmos, ("get", "update"), (_PERSON,)),
            *probe.non_resource(("/logs/kube-apiserver.log", "/debug/pprof/profile"), ("get",),
                                (_PERSON, _NO_USER))]
    missed = [h for h in hits if h.decision.rule_index is None]
    if missed:
        yield Finding(
            "no-catch-all", "warning", None,
            f"{len(missed)} probe requests match no rule and fall through to the default None, "
            f"e.g. {_and([_request(h) for h in missed], 3)}",
            "Add a last rule that records everything else:\n" + _yaml({"level": "Metadata"}))


@_check("final-rule-drops-all",
        "the last rule has level None and no selectors, silently dropping everything else")
def _final_rule_drops_all(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    last = policy.rules[-1]
    if last.level == "None" and _selectors(last) == {}:
        index = len(policy.rules) - 1
        yield Finding(
            "final-rule-drops-all", "warning", index,
            f"rules[{index}] is `level: None` with no selectors: every request no earlier rule "
            "names is dropped, including new resources and unusual users an investigation needs",
            f"Change rules[{index}] to `- level: Metadata` (and drop known noise with specific "
            "None rules above it)")


def _selectors(rule: PolicyRule) -> dict[str, Any]:
    return {k: v for k, v in rule.to_dict().items()
            if k not in ("level", "omitStages", "omitManagedFields")}


_BACKGROUND = (
    # the traffic that dominates a cluster's audit volume (cluster-traffic.md §3)
    (_Target("coordination.k8s.io", "leases"), ("update",), (_NODE,), ("kube-node-lease",)),
    (_Target("coordination.k8s.io", "leases"), ("get", "update"), (_KCM, _SCHEDULER), ("kube-system",)),
    (_Target("", "nodes", namespaced=False), ("get",), (_NODE,), None),
    (_Target("", "pods"), ("watch",), (_NODE, _KCM, _SCHEDULER), ()),  # all namespaces
    (_Target("discovery.k8s.io", "endpointslices"), ("watch",), (_KUBE_PROXY, _KUBE_PROXY_SA), None),
    (_Target("", "pods"), ("list", "get"), (_PERSON,), ("team-a",)),
)


@_check("request-received-not-omitted",
        "RequestReceived is recorded for the bulk of traffic, doubling event volume")
def _request_received(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    if "RequestReceived" in policy.omit_stages:
        return
    hits = [h for target, verbs, whos, spaces in _BACKGROUND
            for h in probe.resource(target, verbs, whos, spaces)]
    hits += list(probe.non_resource(("/readyz", "/api/v1"), ("get",), (_ANONYMOUS, _PERSON)))
    noisy = [h for h in hits if h.decision.level != "None"
             and "RequestReceived" not in h.decision.omit_stages]
    if noisy:
        rules = sorted({_decided(h.decision.rule_index) for h in noisy})
        yield Finding(
            "request-received-not-omitted", "warning", None,
            f"RequestReceived is not omitted: {_and(rules, 6)} record high-volume traffic such "
            f"as {_request(noisy[0])} at two stages, and the RequestReceived event carries "
            "nothing the ResponseComplete event lacks (no status, no authorization decision)",
            "Omit it policy-wide, next to `rules:`:\nomitStages:\n- RequestReceived")


@_check("response-complete-omitted",
        "ResponseComplete is omitted, losing response codes and authorization decisions")
def _response_complete(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    if "ResponseComplete" in policy.omit_stages:
        yield Finding(
            "response-complete-omitted", "warning", None,
            "omitStages drops ResponseComplete policy-wide: short requests keep only "
            "RequestReceived, which has no response code and no authorization decision",
            "Remove ResponseComplete from the policy's omitStages (omit RequestReceived instead)")
        return
    for index, rule in enumerate(policy.rules):
        if rule.level != "None" and "ResponseComplete" in rule.omit_stages:
            yield Finding(
                "response-complete-omitted", "warning", index,
                f"rules[{index}] omits ResponseComplete: its requests lose the response code "
                "and the authorization decision (denied attempts look like successes)",
                f"Remove ResponseComplete from rules[{index}].omitStages")


_HIGH_VOLUME = (
    _Target("", "endpoints"), _Target("discovery.k8s.io", "endpointslices"),
    _Target("coordination.k8s.io", "leases"), _Target("", "nodes", namespaced=False),
    _Target("", "pods"), _Target("", "configmaps"), _Target("", "events"),
    _Target("events.k8s.io", "events"),
)
#: Reads that are noisy but touch credentials: worth a warning when bodies are kept, but
#: never a suggestion to drop them.
_NEVER_SUGGEST_DROPPING = ("configmaps",)


@_check("high-volume-system-reads",
        "get/list/watch by nodes, kube-proxy, controllers and the scheduler on endpoints, "
        "leases, nodes, pods, configmaps or events are recorded at Request or above "
        "(warning) or at Metadata (info)")
def _high_volume_reads(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    spaces = ("kube-system", "default", "kube-node-lease")
    hits = [h for target in _HIGH_VOLUME
            for h in probe.resource(target, ("get", "list", "watch"), _SYSTEM_READERS, spaces)
            if h.decision.level != "None"]
    for index, group in _by_rule(hits).items():
        heavy = [h for h in group if level_rank(h.decision.level) >= level_rank("Request")]
        droppable = [h for h in (heavy or group) if h.attrs.resource not in _NEVER_SUGGEST_DROPPING]
        if heavy:
            level = heavy[0].decision.level
            why = ("reads carry no request body, so Request keeps every one of these events "
                   "and adds nothing" if level == "Request" else
                   "each get/list also stores the full response, and lists of pods or "
                   "endpoints run to megabytes")
            lower = f"Lower rules[{index}] to Metadata for get/list/watch (e.g. a Metadata rule " \
                    f"with verbs [get, list, watch] just above it)"
            yield Finding(
                "high-volume-system-reads", "warning", index,
                f"{_decided(index)} records {_summary(heavy)} at {level}: these heartbeat and "
                f"informer reads are most of a cluster's API traffic, and {why}",
                _insert_before(index, _drop_reads(droppable), f"or: {lower}") if droppable
                else lower)
        elif droppable:
            yield Finding(
                "high-volume-system-reads", "info", index,
                f"{_decided(index)} records {_summary(droppable)} at Metadata: routine informer "
                "and heartbeat reads by system components, a large share of event volume for "
                "little investigative value",
                _insert_before(index, _drop_reads(droppable),
                               "if the volume matters more than these reads"))


def _drop_reads(hits: Sequence[_Hit]) -> list[dict[str, Any]]:
    """None rules for these reads: nodes and kube-system service accounts by group, other
    identities by name."""
    rules = []
    kube_system = "system:serviceaccounts:kube-system"
    nodes = [h for h in hits if h.who.kind == "node"]
    controllers = [h for h in hits if h.who.kind != "node" and kube_system in h.who.groups]
    others = [h for h in hits if h.who.kind != "node" and kube_system not in h.who.groups]
    for part, selector in ((nodes, {"userGroups": ["system:nodes"]}),
                           (controllers, {"userGroups": [kube_system]}),
                           (others, {"users": list(dict.fromkeys(h.who.label for h in others))})):
        if part:
            targets = [_Target(h.attrs.api_group, h.attrs.resource) for h in part]
            verbs = list(dict.fromkeys(h.attrs.verb for h in part))
            rules.append(_resources_rule("None", targets, **selector, verbs=verbs))
    return rules


_HEALTH_PATHS = ("/healthz", "/livez", "/readyz", "/readyz/etcd", "/livez/ping", "/metrics")


@_check("health-checks-recorded",
        "health probes (/healthz, /livez, /readyz) or /metrics scrapes are recorded")
def _health_checks(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    monitoring = _Who("system:monitoring", ("system:authenticated",), "system")
    hits = [h for h in probe.non_resource(_HEALTH_PATHS, ("get",),
                                          (_ANONYMOUS, _NO_USER, _MONITORING_SA, monitoring))
            if h.decision.level != "None"]
    for index, group in _by_rule(hits).items():
        yield Finding(
            "health-checks-recorded", "warning", index,
            f"{_decided(index)} records {_summary(group)} at {group[0].decision.level}: "
            "kubelet probes hit /readyz every second and /livez every 10 s per API server, "
            "so these events can outnumber everything else",
            _insert_before(index, {"level": "None",
                                   "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*",
                                                       "/metrics"]}))


@_check("events-recorded",
        "Event writes by nodes, controllers and the scheduler are recorded")
def _events_recorded(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    whos = (_NODE, _KCM, _SCHEDULER, _CONTROLLER_SA)
    hits = [h for target in (_Target("", "events"), _Target("events.k8s.io", "events"))
            for h in probe.resource(target, ("create", "update", "patch"), whos,
                                    ("default", "kube-system"))
            if h.decision.level != "None"]
    for index, group in _by_rule(hits).items():
        rule = _resources_rule("None", [_Target("", "events"), _Target("events.k8s.io", "events")],
                               verbs=["create", "update", "patch"])
        yield Finding(
            "events-recorded", "warning", index,
            f"{_decided(index)} records {_summary(group)} at {group[0].decision.level}: "
            "Kubernetes Events are the cluster's own chatter (one per pod scheduled, pulled, "
            "started…) and repeat what the other audit events already show",
            _insert_before(index, rule, "(deletes of events still fall through to your "
                                        "catch-all, which catches someone covering tracks)"))


@_check("unauthenticated-dropped",
        "resource requests that failed authentication or are anonymous are dropped by a rule")
def _unauthenticated_dropped(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    hits = [h for target in (_Target("", "secrets"), _Target("", "pods"),
                             _Target("", "namespaces", namespaced=False))
            for h in probe.resource(target, ("get", "list"), (_NO_USER, _ANONYMOUS))
            if h.decision.level == "None" and h.decision.rule_index is not None]
    for index, group in _by_rule(hits).items():
        yield Finding(
            "unauthenticated-dropped", "warning", index,
            f"rules[{index}] drops {_summary(group)}: failed or anonymous attempts on the API "
            "are the first sign of a scan or a leaked, expired credential",
            f"Narrow rules[{index}] (e.g. to nonResourceURLs for health probes) so that "
            "unauthenticated resource requests reach a Metadata rule")


# -- structural checks ------------------------------------------------------------------


def _pattern_dead(pattern: str) -> bool:
    """True for a resources pattern that matches no request (reference §11)."""
    if pattern == "*":
        return False
    if pattern == "" or pattern == "*/*" or pattern.count("/") > 1:
        return True
    resource, slash, sub = pattern.partition("/")
    return resource == "" or (bool(slash) and sub == "")


def _entry_dead(entry: GroupResources) -> bool:
    return bool(entry.resources) and all(_pattern_dead(p) for p in entry.resources)


def _possible_verbs(rule: PolicyRule) -> set[str] | None:
    """The rule's verbs that a request it can match may carry; None for "any verb"."""
    if not rule.verbs:
        return None
    if rule.is_resource_rule:
        allowed = set(_REQUEST_VERBS)
    elif rule.non_resource_urls:
        allowed = set(_HTTP_VERBS)
    else:
        allowed = set(_REQUEST_VERBS) | set(_HTTP_VERBS)
    return set(rule.verbs) & allowed


def _dead_reason(rule: PolicyRule) -> str | None:
    verbs = _possible_verbs(rule)
    if verbs is not None and not verbs:
        kind = ("resource" if rule.is_resource_rule else
                "non-resource" if rule.non_resource_urls else "")
        return f"none of its verbs ({_and(list(rule.verbs), 8)}) is ever carried by a " \
               f"{kind + ' ' if kind else ''}request"
    if rule.resources and all(_entry_dead(e) for e in rule.resources):
        patterns = [p for e in rule.resources for p in e.resources]
        return f"its resources patterns ({_and(patterns, 6)}) match nothing: `*/*` and " \
               "patterns with two slashes never match, use `*` for everything"
    return None


def _covers_pattern(a: str, b: str) -> bool:
    if a == "*" or a == b or _pattern_dead(b):
        return True
    if a.endswith("/*") and not a.startswith("*/"):  # R/*: R itself and all its subresources
        return b.split("/", 1)[0] == a[:-2] and b != "*" and not b.startswith("*/")
    if a.startswith("*/"):  # */S: subresource S of anything
        return "/" in b and b.split("/", 1)[1] == a[2:] and not b.endswith("/*")
    return False


def _covers_entry(a: GroupResources, b: GroupResources) -> bool:
    if a.group != "*" and a.group != b.group:
        return False
    if not a.resources:
        return True
    if not b.resources:
        return "*" in a.resources and not a.resource_names
    if a.resource_names and not (b.resource_names and set(b.resource_names) <= set(a.resource_names)):
        return False
    return all(any(_covers_pattern(pa, pb) for pa in a.resources) for pb in b.resources)


def _covers_url(a: str, b: str) -> bool:
    if a == "*" or a == b:
        return True
    if b == "*" or not a.endswith("*"):
        return False
    return b.rstrip("*").startswith(a.rstrip("*"))


def _subsumes(a: PolicyRule, b: PolicyRule) -> bool:
    """Every request `b` can match is matched by `a` (sound, not complete)."""
    if a.users and not (b.users and set(b.users) <= set(a.users)):
        return False
    if a.user_groups and not (b.user_groups and set(b.user_groups) <= set(a.user_groups)):
        return False
    b_verbs = _possible_verbs(b)
    if a.verbs and (b_verbs is None or not b_verbs <= set(a.verbs)):
        return False
    if a.is_resource_rule:
        if not b.is_resource_rule:
            return False
        if a.namespaces and not (b.namespaces and set(b.namespaces) <= set(a.namespaces)):
            return False
        if not a.resources:
            return True
        if not b.resources:
            return False
        return all(any(_covers_entry(ea, eb) for ea in a.resources)
                   for eb in b.resources if not _entry_dead(eb))
    if a.non_resource_urls:
        if b.is_resource_rule or not b.non_resource_urls:
            return False
        return all(any(_covers_url(ua, ub) for ua in a.non_resource_urls)
                   for ub in b.non_resource_urls)
    return True


@_check("unmatchable-rule", "a rule can never match any request")
def _unmatchable(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for index, rule in enumerate(policy.rules):
        reason = _dead_reason(rule)
        if reason:
            yield Finding("unmatchable-rule", "warning", index,
                          f"rules[{index}] can never match: {reason}",
                          f"Fix the selector of rules[{index}] or delete the rule")


@_check("shadowed-rule",
        "a rule can never match because an earlier rule matches every request it would")
def _shadowed(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for j, later in enumerate(policy.rules):
        if _dead_reason(later):
            continue
        for i, earlier in enumerate(policy.rules[:j]):
            if _subsumes(earlier, later):
                same = earlier.level == later.level
                yield Finding(
                    "shadowed-rule", "warning", j,
                    f"rules[{j}] (level {later.level}) can never match: rules[{i}] (level "
                    f"{earlier.level}) comes first and matches every request rules[{j}] "
                    f"would{', so it is redundant' if same else ''}",
                    f"Delete rules[{j}]" + ("" if same else
                                            f", or move it above rules[{i}] if its level "
                                            f"{later.level} was meant to apply"))
                break


@_check("literal-star-selector",
        'users, userGroups, verbs, namespaces or resourceNames contain "*", which is a '
        "literal there, not a wildcard")
def _literal_star(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for index, rule in enumerate(policy.rules):
        fields = [name for name, values in (("users", rule.users), ("userGroups", rule.user_groups),
                                            ("verbs", rule.verbs), ("namespaces", rule.namespaces))
                  if "*" in values]
        fields += [f"resources[{k}].resourceNames" for k, gr in enumerate(rule.resources)
                   if "*" in gr.resource_names]
        if fields:
            yield Finding(
                "literal-star-selector", "warning", index,
                f'rules[{index}] lists "*" in {_and(fields)}: there it is a literal that matches '
                'only a user, group, verb, namespace or object actually named "*"',
                f"Remove {_and(fields)} from rules[{index}]: an absent or empty list already "
                "matches everything")


@_check("unknown-verb",
        "verbs that no request of the rule's kind carries (typos, HTTP methods on resource "
        "rules, Kubernetes verbs on non-resource rules)")
def _unknown_verb(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for index, rule in enumerate(policy.rules):
        if rule.is_resource_rule:
            valid, kind = _REQUEST_VERBS, "resource requests"
        elif rule.non_resource_urls:
            valid, kind = _HTTP_VERBS, "non-resource requests (lower-case HTTP methods)"
        else:
            valid, kind = tuple(dict.fromkeys(_REQUEST_VERBS + _HTTP_VERBS)), "requests"
        for verb in rule.verbs:
            if verb in valid or verb == "*":
                continue
            if verb in _AUTHZ_ONLY_VERBS:
                yield Finding(
                    "unknown-verb", "info", index,
                    f'rules[{index}] lists "{verb}", an RBAC verb that authorizers check but no '
                    "request is audited with: it never matches",
                    f'Remove "{verb}" from rules[{index}].verbs (an impersonated request is '
                    "audited with its own verb, and impersonatedUser set)")
                continue
            hint = {"post": "create", "put": "update", "head": "get", "list": "get",
                    "watch": "get", "create": "post", "update": "put"}.get(verb.lower())
            close = difflib.get_close_matches(verb.lower(), valid, n=1, cutoff=0.6)
            better = verb.lower() if verb.lower() in valid else (
                hint if hint in valid else (close[0] if close else None))
            yield Finding(
                "unknown-verb", "warning", index,
                f'rules[{index}] lists verb "{verb}", which {kind} never carry',
                (f'Replace "{verb}" with "{better}"' if better else f'Remove "{verb}"')
                + f" in rules[{index}].verbs (valid: {', '.join(valid)})")


#: Built-in resources per API group (Kubernetes 1.30–1.37), for spotting typos and wrong groups.
_BUILTIN_RESOURCES: dict[str, tuple[str, ...]] = {
    "": ("bindings", "componentstatuses", "configmaps", "endpoints", "events", "limitranges",
         "namespaces", "nodes", "persistentvolumeclaims", "persistentvolumes", "pods",
         "podtemplates", "replicationcontrollers", "resourcequotas", "secrets",
         "serviceaccounts", "services"),
    "admissionregistration.k8s.io": ("mutatingadmissionpolicies", "mutatingadmissionpolicybindings",
                                     "mutatingwebhookconfigurations", "validatingadmissionpolicies",
                                     "validatingadmissionpolicybindings",
                                     "validatingwebhookconfigurations"),
    "apiextensions.k8s.io": ("customresourcedefinitions",),
    "apiregistration.k8s.io": ("apiservices",),
    "apps": ("controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets"),
    "authentication.k8s.io": ("selfsubjectreviews", "tokenreviews"),
    "authorization.k8s.io": ("localsubjectaccessreviews", "selfsubjectaccessreviews",
                             "selfsubjectrulesreviews", "subjectaccessreviews"),
    "autoscaling": ("horizontalpodautoscalers",),
    "batch": ("cronjobs", "jobs"),
    "certificates.k8s.io": ("certificatesigningrequests", "clustertrustbundles",
                            "podcertificaterequests"),
    "coordination.k8s.io": ("leasecandidates", "leases"),
    "discovery.k8s.io": ("endpointslices",),
    "events.k8s.io": ("events",),
    "flowcontrol.apiserver.k8s.io": ("flowschemas", "prioritylevelconfigurations"),
    "networking.k8s.io": ("ingressclasses", "ingresses", "ipaddresses", "networkpolicies",
                          "servicecidrs"),
    "node.k8s.io": ("runtimeclasses",),
    "policy": ("poddisruptionbudgets",),
    "rbac.authorization.k8s.io": ("clusterrolebindings", "clusterroles", "rolebindings", "roles"),
    "resource.k8s.io": ("deviceclasses", "resourceclaims", "resourceclaimtemplates",
                        "resourceslices"),
    "scheduling.k8s.io": ("priorityclasses",),
    "storage.k8s.io": ("csidrivers", "csinodes", "csistoragecapacities", "storageclasses",
                       "volumeattachments", "volumeattributesclasses"),
}


def _resource_problem(group: str, pattern: str) -> str | None:
    resource = pattern.split("/", 1)[0]
    if resource in ("*", "") or _pattern_dead(pattern):
        return None
    if resource != resource.lower():
        return f'"{pattern}" has upper-case letters; resources are lower-case plurals ' \
               f'(e.g. "{resource.lower()}{"" if resource.lower().endswith("s") else "s"}")'
    known = _BUILTIN_RESOURCES.get(group)
    if known is None or resource in known:
        return None
    where = [g or "core" for g, names in _BUILTIN_RESOURCES.items() if resource in names]
    if where:
        groups = _and([f'"{w}"' for w in where])
        return f'"{resource}" is not served by group "{group or "core"}"; it is in {groups}'
    close = difflib.get_close_matches(resource, known, n=1, cutoff=0.8)
    if close:
        return f'group "{group or "core"}" has no resource "{resource}"; did you mean ' \
               f'"{close[0]}"?'
    return None


@_check("resource-not-in-group",
        "a resources pattern names a built-in resource in a group that does not serve it, or a "
        "near-miss spelling")
def _resource_not_in_group(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for index, rule in enumerate(policy.rules):
        for k, entry in enumerate(rule.resources):
            if entry.group == "extensions":
                yield Finding(
                    "resource-not-in-group", "info", index,
                    f'rules[{index}].resources[{k}] names group "extensions", which serves '
                    "nothing since Kubernetes 1.22 (its resources moved to apps, "
                    "networking.k8s.io and policy)",
                    f"Remove the extensions entry from rules[{index}], or name apps / "
                    "networking.k8s.io instead")
                continue
            for pattern in entry.resources:
                problem = _resource_problem(entry.group, pattern)
                if problem:
                    yield Finding(
                        "resource-not-in-group", "warning", index,
                        f"rules[{index}].resources[{k}]: {problem}, so this pattern never "
                        "matches",
                        f"Correct the group or the resource name in rules[{index}].resources[{k}]")


@_check("managed-fields-not-omitted",
        "RequestResponse bodies keep metadata.managedFields")
def _managed_fields(policy: Policy, probe: _Prober) -> Iterator[Finding]:
    for index, rule in enumerate(policy.rules):
        managed = policy.omit_managed_fields if rule.omit_managed_fields is None \
            else rule.omit_managed_fields
        if rule.level == "RequestResponse" and not managed:
            yield Finding(
                "managed-fields-not-omitted", "info", index,
                f"rules[{index}] records RequestResponse bodies with metadata.managedFields, "
                "server-side-apply bookkeeping that often doubles an object's size",
                f"Set `omitManagedFields: true` on rules[{index}] (or policy-wide)")


#: id → one-line description of every check, in the order they run.
LINT_CHECKS: dict[str, str] = {check_id: reg.description for check_id, reg in _CHECKS.items()}

_SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def lint_policy(policy: Policy, *, checks: Iterable[str] | None = None) -> list[Finding]:
    """Every finding, errors first, then by rule (policy-wide findings first in each severity).

    `checks` limits the run to those ids of :data:`LINT_CHECKS` (default: all of them)."""
    wanted = list(_CHECKS) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in _CHECKS]
    if unknown:
        raise ConfigError(f"unknown lint check {_and([repr(c) for c in unknown])}",
                          hint=f"the checks are: {', '.join(_CHECKS)}")
    probe = _Prober(policy)
    findings = [f for check_id in wanted for f in _CHECKS[check_id].run(policy, probe)]
    return sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity],
                                           -1 if f.rule_index is None else f.rule_index,
                                           f.id, f.message))
