"""Loading an audit Policy file the way kube-apiserver's loader and validation do.

YAML or JSON. Unknown and duplicate fields are warnings (the API server decodes strictly,
logs the strict error, and decodes again leniently); everything else the loader or
`validation.ValidatePolicy` rejects is a :class:`~kubetrail.errors.PolicyError` naming each
field path, all problems at once (reference §6).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import PolicyError
from .model import LEVELS, STAGES, GroupResources, Policy, PolicyRule

__all__ = ["API_VERSION", "load_policy"]

API_VERSION = "audit.k8s.io/v1"
_REMOVED_VERSIONS = ("audit.k8s.io/v1alpha1", "audit.k8s.io/v1beta1")
_POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
_RULE_FIELDS = {"level", "users", "userGroups", "verbs", "resources", "namespaces",
                "nonResourceURLs", "omitStages", "omitManagedFields"}
_GROUP_FIELDS = {"group", "resources", "resourceNames"}
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_STAGE_LIST = ",".join(STAGES)


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate keys (a strict-decoding warning, last value wins)."""

    duplicates: list[str]


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, str):
            continue
        if key in seen:
            line = key_node.start_mark.line + 1
            loader.duplicates.append(f'duplicate field "{key}" on line {line} (the last '
                                     "value is used)")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _bad_syntax(problem: str, source: str | None) -> PolicyError:
    return PolicyError([("", f"not valid YAML or JSON{problem}")], source=source,
                       hint="check the indentation and quoting around that line")


def _parse_json(text: str, source: str | None) -> tuple[Any, list[str]]:
    """JSON is decoded as JSON, as the API server's serializer does (tabs, surrogate pairs)."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(f'duplicate field "{key}" (the last value is used)')
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs), duplicates
    except json.JSONDecodeError as exc:
        raise _bad_syntax(f" (line {exc.lineno}, column {exc.colno}): {exc.msg}", source) from None
    except RecursionError:
        raise _bad_syntax(": nested too deeply", source) from None


def _parse(text: str, source: str | None) -> tuple[Any, list[str]]:
    if text.lstrip().startswith("{"):
        return _parse_json(text, source)
    documents: list[Any] = []
    try:
        loader = _Loader(text)
        loader.duplicates = []
        try:
            while loader.check_data():
                documents.append(loader.get_data())
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _bad_syntax(f"{where}: {problem}", source) from None
    except RecursionError:
        raise _bad_syntax(": nested too deeply", source) from None
    except (ValueError, TypeError, AttributeError) as exc:  # a tag PyYAML cannot construct
        raise _bad_syntax(f": {exc}", source) from None
    warnings = loader.duplicates
    documents = [d for d in documents if d is not None]
    if not documents:
        raise PolicyError([("", "the policy file is empty")], source=source,
                          hint="start from `kubetrail policy recommend > policy.yaml`")
    if len(documents) > 1:  # the API server decodes the first document only
        warnings.append(f"the file holds {len(documents)} YAML documents; only the first is "
                        "read, as the API server does")
    return documents[0], warnings


def load_policy(text: str, *, source: str | None = None) -> Policy:
    """Parse and validate a Policy; `source` (a file name) only labels messages."""
    data, warnings = _parse(text, source)
    if not isinstance(data, Mapping):
        raise PolicyError([("", f"expected a Policy object, found {_type(data)}")], source=source,
                          hint=f"the file must start with apiVersion: {API_VERSION} and kind: Policy")
    version, kind = data.get("apiVersion"), data.get("kind")
    if version in _REMOVED_VERSIONS:
        raise PolicyError([("apiVersion", f'"{version}" was removed in Kubernetes 1.24 and '
                                          "no supported API server loads it")], source=source,
                          hint=f"change apiVersion to {API_VERSION}; the fields are the same")
    if version != API_VERSION or kind != "Policy":
        got = f"apiVersion {version!r}, kind {kind!r}"
        raise PolicyError([("", f"not an audit Policy ({got}): unknown group version "
                                "field for the audit policy loader")], source=source,
                          hint=f"a policy starts with apiVersion: {API_VERSION} and kind: Policy")
    checker = _Checker(warnings)
    policy = checker.policy(data)
    if checker.errors:
        raise PolicyError(checker.errors, source=source,
                          hint="fix each field named above; `kubetrail policy validate` "
                               "re-checks the file")
    if not policy.rules:
        raise PolicyError([("rules", "loaded illegal policy with 0 rules")], source=source,
                          hint="add at least one rule; a last rule `- level: Metadata` "
                               "records everything else")
    return policy


def _type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(
        type(value), type(value).__name__)


class _Checker:
    """Decodes leniently and collects validation errors with their field paths."""

    def __init__(self, warnings: list[str]) -> None:
        self.errors: list[tuple[str, str]] = []
        self.warnings = warnings

    def _unknown(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}." if path else ""
                self.warnings.append(f'unknown field "{where}{key}" (ignored, as the API '
                                     "server does)")

    def _strings(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        where = f"{path}.{key}" if path else key
        if not isinstance(value, list):
            self.errors.append((where, f"must be a list of strings, not {_type(value)}"))
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if item is None:  # as in Go, a null in a list of strings decodes to ""
                out.append("")
            elif not isinstance(item, str):
                self.errors.append((f"{where}[{i}]", f"must be a string, not {_type(item)}"))
            else:
                out.append(item)
        return tuple(out)

    def _bool(self, data: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = data.get(key)
        if value is None or isinstance(value, bool):
            return value
        where = f"{path}.{key}" if path else key
        self.errors.append((where, f"must be true or false, not {_type(value)}"))
        return None

    def _stages(self, data: Mapping[str, Any], path: str) -> tuple[str, ...]:
        stages = self._strings(data, "omitStages", path)
        where = f"{path}.omitStages" if path else "omitStages"
        for i, stage in enumerate(stages):
            if stage not in STAGES:
                self.errors.append((f"{where}[{i}]", f'Invalid value: "{stage}": allowed '
                                                     f"stages are {_STAGE_LIST}"))
        return stages

    def policy(self, data: Mapping[str, Any]) -> Policy:
        self._unknown(data, _POLICY_FIELDS, "")
        omit = self._stages(data, "")
        managed = self._bool(data, "omitManagedFields", "")
        rules_data = data.get("rules")
        rules: list[PolicyRule] = []
        if rules_data is not None and not isinstance(rules_data, list):
            self.errors.append(("rules", f"must be a list of rules, not {_type(rules_data)}"))
            rules_data = None
        for i, rule in enumerate(rules_data or []):
            parsed = self.rule(rule, f"rules[{i}]")
            if parsed is not None:
                rules.append(parsed)
        return Policy(tuple(rules), omit, bool(managed), tuple(self.warnings))

    def rule(self, data: Any, path: str) -> PolicyRule | None:
        if not isinstance(data, Mapping):
            self.errors.append((path, f"a rule must be an object, not {_type(data)}"))
            return None
        self._unknown(data, _RULE_FIELDS, path)
        level = data.get("level")
        if level is None or level == "":
            self.errors.append((f"{path}.level", "Required value"))
        elif not isinstance(level, str):
            self.errors.append((f"{path}.level", f"must be a string, not {_type(level)}"))
        elif level not in LEVELS:
            supported = ", ".join(f'"{name}"' for name in LEVELS)
            self.errors.append((f"{path}.level", f'Unsupported value: "{level}": supported '
                                                 f"values: {supported}"))
        urls = self._strings(data, "nonResourceURLs", path)
        namespaces = self._strings(data, "namespaces", path)
        resources = self.resources(data.get("resources"), f"{path}.resources")
        if urls and (resources or namespaces):
            self.errors.append((f"{path}.nonResourceURLs", "Invalid value: rules cannot apply "
                                "to both regular resources and non-resource URLs"))
        for i, url in enumerate(urls):
            if url == "*":
                continue
            if not url.startswith("/"):
                self.errors.append((f"{path}.nonResourceURLs[{i}]", f'Invalid value: "{url}": '
                                    "non-resource URL rules must begin with a '/' character"))
            if url and "*" in url[:-1]:
                self.errors.append((f"{path}.nonResourceURLs[{i}]", f'Invalid value: "{url}": '
                                    "non-resource URL wildcards '*' must be the final "
                                    "character of the rule"))
        return PolicyRule(
            level=level if isinstance(level, str) else "",
            users=self._strings(data, "users", path),
            user_groups=self._strings(data, "userGroups", path),
            verbs=self._strings(data, "verbs", path),
            resources=resources, namespaces=namespaces, non_resource_urls=urls,
            omit_stages=self._stages(data, path),
            omit_managed_fields=self._bool(data, "omitManagedFields", path),
        )

    def resources(self, data: Any, path: str) -> tuple[GroupResources, ...]:
        if data is None:
            return ()
        if not isinstance(data, list):
            self.errors.append((path, f"must be a list of group resources, not {_type(data)}"))
            return ()
        out: list[GroupResources] = []
        for i, entry in enumerate(data):
            where = f"{path}[{i}]"
            if not isinstance(entry, Mapping):
                self.errors.append((where, f"must be an object, not {_type(entry)}"))
                continue
            self._unknown(entry, _GROUP_FIELDS, where)
            group = entry.get("group")
            if group is None:
                group = ""
            if not isinstance(group, str):
                self.errors.append((f"{where}.group", f"must be a string, not {_type(group)}"))
                group = ""
            elif group not in ("", "*"):
                problem = _group_problem(group)
                if problem:
                    self.errors.append((f"{where}.group", f'Invalid value: "{group}": {problem}'))
            names = self._strings(entry, "resourceNames", where)
            patterns = self._strings(entry, "resources", where)
            if names and not patterns:
                self.errors.append((f"{where}.resourceNames", "Invalid value: using "
                                    "resourceNames requires at least one resource"))
            out.append(GroupResources(group, patterns, names))
        return tuple(out)


def _group_problem(group: str) -> str | None:
    """Why `group` is not a lower-case RFC 1123 subdomain (as the API server validates)."""
    if len(group) > 253:
        return "must be no more than 253 characters"
    if _DNS_SUBDOMAIN.fullmatch(group):
        return None
    hint = " (an API group has no version: write the group alone)" if "/" in group else ""
    return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            f"(e.g. 'example.com'){hint}")
