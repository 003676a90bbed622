"""The audit Policy and how kube-apiserver evaluates it, rule by rule.

This follows `k8s.io/apiserver/pkg/audit/policy/checker.go` exactly (see
shared/reference/k8s-audit-semantics.md §5 and §11): the first matching rule wins, an empty
selector constrains nothing, ``*`` is a wildcard only in resource patterns, API groups and
non-resource URLs, and nothing matched means level ``None``. Matching is a pure function of
the request's attributes, so it can be replayed over any recorded traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = [
    "LEVELS", "STAGES", "Attributes", "Explanation", "GroupResources", "Policy",
    "PolicyDecision", "PolicyRule", "RuleMiss", "level_rank",
]

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}


def level_rank(level: str | None) -> int:
    """0..3 for None..RequestResponse; an unknown level orders like None, as in the API server."""
    return _RANK.get(level or "None", 0)


@dataclass(frozen=True)
class Attributes:
    """What the policy checker sees of a request (the authorizer attributes).

    `user` is None for a request that failed authentication: such a request can match only
    rules without `users` and `userGroups`."""

    user: str | None = None
    groups: tuple[str, ...] = ()
    verb: str = ""
    resource_request: bool = False
    path: str = ""
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attributes:
        """From the JSON form: ``{"user": {"username", "groups"} | null, "verb",
        "resourceRequest", "path", "namespace", "apiGroup", "apiVersion", "resource",
        "subresource", "name"}``; missing keys are empty."""
        if not isinstance(data, Mapping):
            raise InputError(f"request attributes must be a JSON object, not {_kind(data)}",
                             hint='e.g. {"user": {"username": "alice"}, "verb": "get", '
                                  '"resourceRequest": true, "resource": "pods"}')
        user = data.get("user")
        username: str | None = None
        groups: tuple[str, ...] = ()
        if user is not None:
            if not isinstance(user, Mapping):
                raise InputError(f'"user" must be an object or null, not {_kind(user)}')
            username = _text(user, "username", "user.username")
            raw_groups = user.get("groups") or []
            if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
                raise InputError('"user.groups" must be a list of strings')
            groups = tuple(raw_groups)
        resource_request = data.get("resourceRequest", False)
        if not isinstance(resource_request, bool):
            raise InputError(f'"resourceRequest" must be true or false, not {_kind(resource_request)}')
        return cls(
            user=username, groups=groups, verb=_text(data, "verb"),
            resource_request=resource_request, path=_text(data, "path"),
            namespace=_text(data, "namespace"), api_group=_text(data, "apiGroup"),
            api_version=_text(data, "apiVersion"), resource=_text(data, "resource"),
            subresource=_text(data, "subresource"), name=_text(data, "name"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": None if self.user is None else {"username": self.user,
                                                     "groups": list(self.groups)},
            "verb": self.verb, "resourceRequest": self.resource_request, "path": self.path,
            "namespace": self.namespace, "apiGroup": self.api_group,
            "apiVersion": self.api_version, "resource": self.resource,
            "subresource": self.subresource, "name": self.name,
        }


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _text(data: Mapping[str, Any], key: str, label: str | None = None) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f'"{label or key}" must be a string, not {_kind(value)}')
    return value


@dataclass(frozen=True)
class GroupResources:
    """One entry of a rule's `resources`: a group and resource patterns in it."""

    group: str = ""  # "" is the core group; "*" any group (1.36+)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    def matches(self, attrs: Attributes) -> bool:
        if self.group not in (attrs.api_group, "*"):
            return False
        if not self.resources:
            return True  # every resource and subresource of the group; resourceNames unused
        if self.resource_names and attrs.name not in self.resource_names:
            return False
        sub = attrs.subresource
        combined = f"{attrs.resource}/{sub}" if sub else attrs.resource
        for pattern in self.resources:
            if pattern in ("*", combined):
                return True
            if sub and pattern.startswith("*/") and pattern[2:] == sub:
                return True
            if pattern.endswith("/*") and pattern[:-2] == attrs.resource:
                return True  # R/* matches R itself too
        return False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group}
        if self.resources:
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


@dataclass(frozen=True)
class RuleMiss:
    """Why one rule did not match: the selector that failed, and how."""

    index: int
    selector: str  # users | userGroups | verbs | namespaces | resources | nonResourceURLs | kind
    reason: str


@dataclass(frozen=True)
class PolicyRule:
    """One rule; empty selectors constrain nothing."""

    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None  # None: the policy's value

    @property
    def is_resource_rule(self) -> bool:
        """Namespaces or resources make a rule match resource requests only (and then its
        nonResourceURLs are ignored)."""
        return bool(self.namespaces or self.resources)

    def mismatch(self, attrs: Attributes) -> tuple[str, str] | None:
        """None when the rule matches `attrs`, else (selector, reason) of the first failure."""
        if self.users:
            if attrs.user is None:
                return "users", "the request has no authenticated user"
            if attrs.user not in self.users:
                return "users", f"user {attrs.user!r} is not listed"
        if self.user_groups:
            if attrs.user is None:
                return "userGroups", "the request has no authenticated user"
            if not any(g in self.user_groups for g in attrs.groups):
                return "userGroups", "none of the user's groups is listed"
        if self.verbs and attrs.verb not in self.verbs:
            return "verbs", f"verb {attrs.verb!r} is not listed"
        if self.is_resource_rule:
            if not attrs.resource_request:
                return "kind", "a rule with namespaces or resources never matches a " \
                               "non-resource request"
            if self.namespaces and attrs.namespace not in self.namespaces:
                where = f"namespace {attrs.namespace!r}" if attrs.namespace else \
                    'no namespace (listed as "")'
                return "namespaces", f"{where} is not listed"
            if self.resources and not any(gr.matches(attrs) for gr in self.resources):
                sub = f"/{attrs.subresource}" if attrs.subresource else ""
                name = f" named {attrs.name!r}" if attrs.name else ""
                return "resources", (f"{attrs.resource}{sub}{name} in group "
                                     f"{attrs.api_group or 'core'!r} is not covered")
            return None
        if self.non_resource_urls:
            if attrs.resource_request:
                return "kind", "a rule with nonResourceURLs never matches a resource request"
            if not any(_path_matches(attrs.path, spec) for spec in self.non_resource_urls):
                return "nonResourceURLs", f"path {attrs.path!r} is not covered"
        return None

    def matches(self, attrs: Attributes) -> bool:
        return self.mismatch(attrs) is None

    def to_dict(self) -> dict[str, Any]:
        """The rule as it would be written in YAML (camelCase, empty selectors left out)."""
        out: dict[str, Any] = {"level": self.level}
        for key, value in (("users", self.users), ("userGroups", self.user_groups),
                           ("verbs", self.verbs), ("namespaces", self.namespaces),
                           ("nonResourceURLs", self.non_resource_urls),
                           ("omitStages", self.omit_stages)):
            if value:
                out[key] = list(value)
        if self.resources:
            out["resources"] = [gr.to_dict() for gr in self.resources]
        if self.omit_managed_fields is not None:
            out["omitManagedFields"] = self.omit_managed_fields
        return out


def _path_matches(path: str, spec: str) -> bool:
    """`*`, the exact path, or a raw prefix for a trailing `*` (no segment boundary)."""
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


@dataclass(frozen=True)
class PolicyDecision:
    """What the API server records for a request under a policy."""

    level: str
    omit_stages: tuple[str, ...]
    omit_managed_fields: bool
    rule_index: int | None  # None: no rule matched (level None)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "omitStages": list(self.omit_stages),
                "omitManagedFields": self.omit_managed_fields, "rule": self.rule_index}


@dataclass(frozen=True)
class Explanation:
    """Which rule decided a request, and why each earlier rule did not."""

    decision: PolicyDecision
    misses: tuple[RuleMiss, ...]


def _union(*stage_lists: tuple[str, ...]) -> tuple[str, ...]:
    """Policy and rule omitStages are unioned; kept in the API server's stage order."""
    wanted = {s for stages in stage_lists for s in stages}
    return tuple(s for s in STAGES if s in wanted) + tuple(sorted(wanted - set(STAGES)))


@dataclass(frozen=True)
class Policy:
    """An `audit.k8s.io/v1` Policy (load it with :func:`kubetrail.policy.load_policy`)."""

    rules: tuple[PolicyRule, ...]
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def evaluate(self, attributes: Attributes | Mapping[str, Any]) -> PolicyDecision:
        """The decision for one request: the first matching rule's, or level None."""
        attrs = attributes if isinstance(attributes, Attributes) else Attributes.from_dict(attributes)
        for index, rule in enumerate(self.rules):
            if rule.matches(attrs):
                return self._decision(index)
        return self._decision(None)

    def explain(self, attributes: Attributes | Mapping[str, Any]) -> Explanation:
        """Like :meth:`evaluate`, with the reason every earlier rule was passed over."""
        attrs = attributes if isinstance(attributes, Attributes) else Attributes.from_dict(attributes)
        misses: list[RuleMiss] = []
        for index, rule in enumerate(self.rules):
            miss = rule.mismatch(attrs)
            if miss is None:
                return Explanation(self._decision(index), tuple(misses))
            misses.append(RuleMiss(index, *miss))
        return Explanation(self._decision(None), tuple(misses))

    def _decision(self, index: int | None) -> PolicyDecision:
        if index is None:
            return PolicyDecision("None", _union(self.omit_stages), self.omit_managed_fields, None)
        rule = self.rules[index]
        managed = self.omit_managed_fields if rule.omit_managed_fields is None \
            else rule.omit_managed_fields
        return PolicyDecision(rule.level, _union(self.omit_stages, rule.omit_stages), managed,
                              index)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy"}
        if self.omit_stages:
            out["omitStages"] = list(self.omit_stages)
        if self.omit_managed_fields:
            out["omitManagedFields"] = True
        out["rules"] = [rule.to_dict() for rule in self.rules]
        return out
