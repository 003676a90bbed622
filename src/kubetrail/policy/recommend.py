"""Recommended audit policies, written out as commented YAML, optionally tuned to traffic.

Two profiles: ``baseline`` keeps what an investigation needs (who touched credentials, every
shell into a pod, the bodies of RBAC and workload changes, metadata of everything else) and
drops known high-volume, low-risk system traffic; ``strict`` records every write with its
response and drops less. Both lint clean (:func:`kubetrail.policy.lint.lint_policy` reports
no error and no warning), which the tests check.

Given recorded traffic (:class:`~kubetrail.policy.traffic.Traffic`, the request classes
`policy simulate` replays) the policy's volume per day is projected the same way, and with
``max_events_per_day`` the noisiest *read-only* requests of system identities are dropped by
specific ``None`` rules until the projection fits. People's requests, writes, credentials,
exec and RBAC are never dropped: the rules that record them come first, and the tuner
refuses them besides.

    >>> text = recommend_policy("baseline")
    >>> policy = load_policy(text)
    >>> policy.evaluate({"user": {"username": "alice"}, "verb": "get",
    ...                  "resourceRequest": True, "resource": "secrets"}).level
    'Metadata'
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError
from .load import API_VERSION
from .model import Attributes, GroupResources, Policy, PolicyDecision, PolicyRule
from .replay import class_volume
from .traffic import RequestClass, Traffic

__all__ = ["PROFILES", "projected_events", "recommend_policy"]

PROFILES = ("baseline", "strict")


# -- the profiles, as data --------------------------------------------------------------

_WRITES = ["create", "update", "patch", "delete", "deletecollection"]
_CONTROL_PLANE = ["system:kube-controller-manager", "system:kube-scheduler",
                  "system:cloud-controller-manager"]
# Who may do what (RBAC) and what admission hooks and policies run.
_ACCESS_CONTROL = [{"group": "rbac.authorization.k8s.io"},
                   {"group": "admissionregistration.k8s.io"}]
# What runs: pods (and debug containers) and every controller that makes them.
_WORKLOADS = [
    {"group": "", "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers"]},
    {"group": "apps", "resources": ["deployments", "daemonsets", "statefulsets", "replicasets",
                                    "deployments/scale", "statefulsets/scale",
                                    "replicasets/scale"]},
    {"group": "batch", "resources": ["jobs", "cronjobs"]}]
_EVENTS = [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]


@dataclass(frozen=True)
class _Entry:
    """One rule of a profile and why it is there; entries keep their order in the output."""

    profiles: tuple[str, ...]
    why: str
    rule: dict[str, Any]


_RULES: tuple[_Entry, ...] = (
    _Entry(PROFILES,
           "Credentials. A Secret's data, a ConfigMap that often holds passwords or kubeconfigs, "
           "the token a TokenRequest returns and the token a TokenReview checks all travel in "
           "request or response bodies. Record who touched them and when, never what they hold. "
           "This rule comes first so that nothing below can raise or drop it.",
           {"level": "Metadata", "resources": [
               {"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
               {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]}),
    _Entry(PROFILES,
           "Shells and tunnels into workloads and nodes. They carry no body worth keeping (the "
           "command is in the request URI, which Metadata records), but every one must be seen.",
           {"level": "Metadata", "resources": [
               {"group": "", "resources": ["pods/exec", "pods/attach", "pods/portforward",
                                           "pods/proxy", "services/proxy", "nodes/proxy"]}]}),
    _Entry(("baseline",),
           "Changes to who may do what (RBAC) and to admission webhooks and policies: keep the "
           "request body, so an investigation sees exactly which permission or hook was added.",
           {"level": "Request", "verbs": _WRITES, "resources": _ACCESS_CONTROL}),
    _Entry(("strict",),
           "Changes to who may do what (RBAC) and to admission webhooks and policies: keep the "
           "request and the stored result, so an investigation sees exactly what was granted.",
           {"level": "RequestResponse", "verbs": _WRITES, "resources": _ACCESS_CONTROL}),
    _Entry(("baseline",),
           "Workload changes (what runs, with which image, privileges and mounts), including "
           "debug containers and scaling: keep the request body.",
           {"level": "Request", "verbs": _WRITES, "resources": _WORKLOADS}),
    _Entry(("strict",),
           "Workload changes (what runs, with which image, privileges and mounts), including "
           "debug containers and scaling: keep the request and the object as stored.",
           {"level": "RequestResponse", "verbs": _WRITES, "resources": _WORKLOADS}),
    _Entry(("strict",),
           "Kubelets report node and pod status all day; the request shows what changed, the "
           "response would only repeat the whole object.",
           {"level": "Request", "userGroups": ["system:nodes"], "verbs": ["update", "patch"],
            "resources": [{"group": "", "resources": ["nodes/status", "pods/status"]}]}),
    _Entry(PROFILES,
           "Health probes and metrics scrapes: kubelets probe /readyz every second and /livez "
           "every ten seconds per API server. Noise, not evidence.",
           {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/metrics*"]}),
    _Entry(PROFILES,
           "Node heartbeats: every kubelet renews its Lease in kube-node-lease every ten "
           "seconds, the largest single source of audit events in most clusters.",
           {"level": "None", "userGroups": ["system:nodes"], "verbs": ["get", "update"],
            "namespaces": ["kube-node-lease"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]}),
    _Entry(("baseline",),
           "Kubelets re-reading their own Node object (older kubelets do so every ten seconds).",
           {"level": "None", "userGroups": ["system:nodes"], "verbs": ["get"],
            "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]}),
    _Entry(PROFILES,
           "Leader election of the control plane: the leader renews its lock every two seconds "
           "and each standby polls it as often. Only the named locks are dropped (Leases, and "
           "Endpoints as used by releases before Leases were the default).",
           {"level": "None", "users": _CONTROL_PLANE, "verbs": ["get", "update"],
            "namespaces": ["kube-system"], "resources": [
                {"group": "coordination.k8s.io", "resources": ["leases"],
                 "resourceNames": ["kube-controller-manager", "kube-scheduler",
                                   "cloud-controller-manager"]},
                {"group": "", "resources": ["endpoints"],
                 "resourceNames": ["kube-controller-manager", "kube-scheduler",
                                   "cloud-controller-manager"]}]}),
    _Entry(PROFILES,
           "Each API server renews its identity Lease in kube-system every ten seconds.",
           {"level": "None", "users": ["system:apiserver"], "verbs": ["get", "update"],
            "namespaces": ["kube-system"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]}),
    _Entry(PROFILES,
           "Each API server checks the `kubernetes` Service, Endpoints and EndpointSlice in "
           "default every ten seconds.",
           {"level": "None", "users": ["system:apiserver"], "verbs": ["get"],
            "namespaces": ["default"], "resources": [
                {"group": "", "resources": ["services", "endpoints"], "resourceNames": ["kubernetes"]},
                {"group": "discovery.k8s.io", "resources": ["endpointslices"],
                 "resourceNames": ["kubernetes"]}]}),
    _Entry(("baseline",),
           "kube-proxy on every node re-lists and watches Services, Endpoints and EndpointSlices.",
           {"level": "None", "users": ["system:kube-proxy", "system:serviceaccount:kube-system:kube-proxy"],
            "verbs": ["get", "list", "watch"], "resources": [
                {"group": "", "resources": ["endpoints", "services", "nodes"]},
                {"group": "discovery.k8s.io", "resources": ["endpointslices"]}]}),
    _Entry(("baseline",),
           "Kubernetes Events are the cluster talking to itself (scheduled, pulled, started...) "
           "and repeat what other audit events show. Deletes of events are still recorded by the "
           "last rule: someone may be covering their tracks.",
           {"level": "None", "verbs": ["create", "update", "patch"], "resources": _EVENTS}),
    _Entry(("strict",),
           "Kubernetes Events written by nodes and kube-system controllers: the cluster talking to "
           "itself. Events written by anyone else, and all deletes, are still recorded.",
           {"level": "None", "userGroups": ["system:nodes", "system:serviceaccounts:kube-system"],
            "verbs": ["create", "update", "patch"], "resources": _EVENTS}),
    _Entry(("strict",),
           "The same for the control-plane components' own identities.",
           {"level": "None", "users": [*_CONTROL_PLANE, "system:apiserver"],
            "verbs": ["create", "update", "patch"], "resources": _EVENTS}),
    _Entry(("baseline",),
           "API discovery and version reads by authenticated clients: every kubectl, Helm and "
           "controller start does dozens. Anonymous discovery (reconnaissance) is still recorded.",
           {"level": "None", "userGroups": ["system:authenticated"], "verbs": ["get", "head"],
            "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi/*"]}),
    _Entry(("strict",),
           "Every other change, with request and response.",
           {"level": "RequestResponse", "verbs": _WRITES}),
)

_CATCH_ALL = _Entry(PROFILES,
                    "Everything else: who did what to which object, and how it ended. Last, so "
                    "that new resources and unexpected users are never silently dropped.",
                    {"level": "Metadata"})

_PROFILE_NOTES = {
    "baseline": "Records who touched credentials, every exec/attach/port-forward, the request "
                "bodies of RBAC, admission and workload changes, and the metadata of everything "
                "else; drops known high-volume, low-risk system traffic.",
    "strict": "Records every write with its request and response (credentials excepted: "
              "metadata only), and drops only heartbeats, health probes and system Events.",
}

#: Policy-wide settings of every profile, and why.
_POLICY_FIELDS: dict[str, Any] = {"omitStages": ["RequestReceived"], "omitManagedFields": True}
_POLICY_WHY = {
    "omitStages": "No RequestReceived events: they carry nothing the ResponseComplete event lacks "
                  "(no status, no authorization decision) and would double the volume.",
    "omitManagedFields": "Leave metadata.managedFields (server-side-apply bookkeeping) out of "
                         "every recorded body.",
}


# -- traffic tuning ---------------------------------------------------------------------

_READS = {True: ("get", "list", "watch"), False: ("get", "head")}
_PROTECTED_GROUPS = ("rbac.authorization.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
                     "certificates.k8s.io", "admissionregistration.k8s.io")
_PROTECTED_CORE = ("secrets", "configmaps", "serviceaccounts")
_PROTECTED_SUBRESOURCES = ("exec", "attach", "portforward", "proxy", "log", "ephemeralcontainers")


def _kept_because(attrs: Attributes) -> str | None:
    """Why a request must never be dropped by tuning, or None if it may be."""
    user = attrs.user
    if user is None or not user.startswith("system:") or user == "system:anonymous" \
            or "system:unauthenticated" in attrs.groups:
        return "a person's or an anonymous request"
    if attrs.verb not in _READS[attrs.resource_request]:
        return "a write"
    if attrs.resource_request and (
            attrs.api_group in _PROTECTED_GROUPS
            or (attrs.api_group == "" and attrs.resource in _PROTECTED_CORE)
            or attrs.subresource in _PROTECTED_SUBRESOURCES):
        return "credentials, exec or access control"
    return None


def _is_node(attrs: Attributes) -> bool:
    return (attrs.user or "").startswith("system:node:") and "system:nodes" in attrs.groups


_Key = tuple[str, str, str, str, str, str]  # selector, identity, namespace, group, target, verb
_Commented = tuple[str, dict[str, Any]]  # (why, rule)


def _key(attrs: Attributes, nodes_by_group: bool) -> _Key:
    selector, who = ("userGroups", "system:nodes") if nodes_by_group and _is_node(attrs) \
        else ("users", attrs.user or "")
    if not attrs.resource_request:
        return selector, who, "", "", attrs.path, attrs.verb
    target = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return selector, who, attrs.namespace, attrs.api_group, target, attrs.verb


def _describe(key: _Key, resource: bool) -> str:
    selector, who, namespace, group, target, verb = key
    by = f"group {who}" if selector == "userGroups" else who
    if not resource:
        return f"{verb} {target} by {by}"
    where = f'in namespace "{namespace}"' if namespace else "cluster-wide / all namespaces"
    return f"{verb} {target}{f' ({group})' if group else ''} by {by} {where}"


def _drop_rules(keys: Sequence[tuple[_Key, bool]],
                volumes: dict[tuple[_Key, bool], int]) -> list[_Commented]:
    """One specific None rule per identity + namespace + resource (verbs merged), each with
    the comment saying what it drops."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    events: dict[tuple[Any, ...], int] = {}
    for key in keys:
        (selector, who, namespace, group, target, verb), resource = key
        slot = (selector, who, namespace, group, target, resource)
        rule = merged.get(slot)
        if rule is None:
            rule = merged[slot] = {"level": "None", selector: [who], "verbs": []}
            if resource:
                rule["namespaces"] = [namespace]
                rule["resources"] = [{"group": group, "resources": [target]}]
            else:
                rule["nonResourceURLs"] = [target]
        rule["verbs"].append(verb)
        events[slot] = events.get(slot, 0) + volumes[key]
    out = []
    for slot, rule in merged.items():
        ordered = {k: rule[k] for k in ("level", "users", "userGroups", "verbs", "namespaces",
                                        "resources", "nonResourceURLs") if k in rule}
        out.append((f"Dropped to meet the volume target: {events[slot]:,} events/day of "
                    "read-only requests by a system identity in the recorded traffic.", ordered))
    return out


def _volumes(policy: Policy, traffic: Traffic) -> list[tuple[RequestClass, PolicyDecision, int]]:
    """(class, decision, events per day) for every request class."""
    rows = []
    for c in traffic.classes:
        decision = policy.evaluate(c.attributes)
        rows.append((c, decision, round(class_volume(c, decision).volume.events / traffic.days)))
    return rows


def projected_events(policy: Policy, traffic: Traffic) -> int:
    """Audit events per day `policy` would write for `traffic`."""
    return sum(events for _, _, events in _volumes(policy, traffic))


def _largest(rows: Sequence[tuple[RequestClass, PolicyDecision, int]], catch_all: int,
             why: bool) -> list[str]:
    out = []
    for c, decision, events in sorted((r for r in rows if r[2]), key=lambda r: -r[2])[:5]:
        line = f"  - {_describe(_key(c.attributes, False), c.attributes.resource_request)}: " \
               f"{events:,} events/day"
        if why:
            reason = _kept_because(c.attributes) or (
                f"recorded on purpose by rules[{decision.rule_index}] of the profile"
                if decision.rule_index != catch_all else "")
            line += f" ({reason})" if reason else ""
        out.append(line)
    return out


def _choose_drops(base: Policy, traffic: Traffic, target: int) -> tuple[list[str], list[_Commented]]:
    """Greedy: the noisiest droppable request kinds that reach the catch-all, until under target."""
    catch_all = len(base.rules) - 1
    # A userGroups: [system:nodes] rule is only as specific as that group is: use it when every
    # member seen in the traffic is a node, else name the nodes.
    nodes_by_group = all(_is_node(c.attributes) for c in traffic.classes
                         if "system:nodes" in c.attributes.groups)
    rows = _volumes(base, traffic)
    total = sum(events for _, _, events in rows)
    volumes: dict[tuple[_Key, bool], int] = {}
    for c, decision, events in rows:
        if events and decision.rule_index == catch_all and _kept_because(c.attributes) is None:
            key = (_key(c.attributes, nodes_by_group), c.attributes.resource_request)
            volumes[key] = volumes.get(key, 0) + events
    chosen: list[tuple[_Key, bool]] = []
    for key, events in sorted(volumes.items(), key=lambda kv: (-kv[1], kv[0])):
        if total <= target:
            break
        chosen.append(key)
        total -= events
    lines = [f"  - {_describe(*key)}: {volumes[key]:,} events/day" for key in chosen]
    return lines, _drop_rules(chosen, volumes)


def _policy_of(entries: Sequence[_Commented]) -> Policy:
    """The rules as a Policy without a YAML round trip (the tests check that the rendered text
    loads to the same Policy)."""
    def strings(rule: dict[str, Any], key: str) -> tuple[str, ...]:
        return tuple(rule.get(key, ()))
    rules = tuple(
        PolicyRule(level=rule["level"], users=strings(rule, "users"),
                   user_groups=strings(rule, "userGroups"), verbs=strings(rule, "verbs"),
                   resources=tuple(GroupResources(gr.get("group", ""), strings(gr, "resources"),
                                                  strings(gr, "resourceNames"))
                                   for gr in rule.get("resources", ())),
                   namespaces=strings(rule, "namespaces"),
                   non_resource_urls=strings(rule, "nonResourceURLs"),
                   omit_stages=strings(rule, "omitStages"),
                   omit_managed_fields=rule.get("omitManagedFields"))
        for _, rule in entries)
    return Policy(rules, omit_stages=tuple(_POLICY_FIELDS["omitStages"]),
                  omit_managed_fields=_POLICY_FIELDS["omitManagedFields"])


# -- rendering --------------------------------------------------------------------------


def _comment(text: str, indent: str = "") -> list[str]:
    out = []
    for paragraph in text.split("\n"):
        lead = len(paragraph) - len(paragraph.lstrip(" "))
        out += textwrap.wrap(paragraph, width=96, initial_indent=f"{indent}# ",
                             subsequent_indent=f"{indent}# " + " " * (lead + 2 if lead else 0),
                             break_on_hyphens=False) or [f"{indent}#"]
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, except that lists of plain values are written inline: `verbs: [get, list]`."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    inline = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _represent_list)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def _render(profile: str, entries: Sequence[tuple[str, dict[str, Any]]],
            header: Sequence[str]) -> str:
    lines = _comment(f'Kubernetes audit policy: kubetrail "{profile}" profile.')
    lines += _comment(_PROFILE_NOTES[profile])
    lines += _comment("Rules are tried in order and the first match decides; a request no rule "
                      "matches would not be recorded, hence the catch-all at the end.")
    if header:
        lines += ["#", *_comment("\n".join(header))]
    lines.append(_dump({"apiVersion": API_VERSION, "kind": "Policy"}).rstrip())
    for key, value in _POLICY_FIELDS.items():
        lines += _comment(_POLICY_WHY[key])
        lines.append(_dump({key: value}).rstrip())
    lines.append("rules:")
    for why, rule in entries:
        lines.append("")
        lines += _comment(why)
        lines.append(_dump([rule]).rstrip())
    return "\n".join(lines) + "\n"


def recommend_policy(profile: str = "baseline", *, traffic: Traffic | None = None,
                     max_events_per_day: int | None = None) -> str:
    """A commented `audit.k8s.io/v1` Policy for `profile`, tuned to `traffic` if given.

    With `traffic` the header states the projected events/day; with `max_events_per_day`
    too, the noisiest read-only requests of system identities are dropped until the projection
    fits, and the header lists what was dropped (or why the target cannot be met)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown policy profile {profile!r}; the profiles are "
                          f"{', '.join(PROFILES)}", hint=f"use one of: {', '.join(PROFILES)}")
    if max_events_per_day is not None:
        if traffic is None:
            raise ConfigError("max_events_per_day needs traffic to project the volume from",
                              hint="pass the recorded request classes as traffic")
        if max_events_per_day < 0:
            raise ConfigError(f"max_events_per_day must be zero or more, not {max_events_per_day}")
    entries = [(e.why, e.rule) for e in (*_RULES, _CATCH_ALL) if profile in e.profiles]
    if traffic is None:
        return _render(profile, entries, ())
    base = _policy_of(entries)
    rows = _volumes(base, traffic)
    before = sum(events for _, _, events in rows)
    header = [f"Tuned to recorded traffic: {len(traffic.classes):,} request classes, "
              f"{round(traffic.requests / traffic.days):,} requests/day.",
              f"Projected volume under this profile: {before:,} events/day."]
    if max_events_per_day is None:
        if before:
            header += ["Largest contributors:", *_largest(rows, len(base.rules) - 1, False)]
        return _render(profile, entries, header)
    header.append(f"Target: at most {max_events_per_day:,} events/day.")
    if before <= max_events_per_day:
        header.append("The profile already meets the target; nothing extra is dropped.")
        return _render(profile, entries, header)
    dropped, rules = _choose_drops(base, traffic, max_events_per_day)
    entries[-1:-1] = rules  # after every rule of the profile, before the catch-all
    tuned = _policy_of(entries)
    rows = _volumes(tuned, traffic)
    after = sum(events for _, _, events in rows)
    if dropped:
        header += ["Dropped (specific None rules just above the last rule), noisiest first:",
                   *dropped]
    header.append(f"Projected volume after tuning: {after:,} events/day.")
    if after > max_events_per_day:
        header += [f"The target is NOT met: the remaining {after:,} events/day are people's "
                   "requests, writes, credentials, exec or access control, or traffic the "
                   "profile records on purpose; none of it is dropped. Largest:",
                   *_largest(rows, len(tuned.rules) - 1, True)]
    return _render(profile, entries, header)
