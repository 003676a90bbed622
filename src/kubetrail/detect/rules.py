"""Detection rules as data: YAML files of rules, lists, macros and overrides.

A rule file is a YAML list of entries, each one of:

    - rule: exec-into-pod            # a rule (see docs/rules.md for every key)
      title: ...
      severity: medium
      condition: {...}
    - list: shells                   # a named list; `append: true` extends an earlier one
      items: [sh, bash]
    - macro: person                  # a named sub-condition
      condition: {...}
    - override: exec-into-pod        # change a rule from an earlier file
      enabled: false
      exceptions: {namespaces: [ci]}  # exceptions are appended, other keys replace

Files are read in order (the built-in pack first); everything is validated against a JSON
schema and compiled before anything is used, and every problem is reported at once with
its file, line and field (:class:`RuleError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import KubetrailError
from .condition import CompileError, Condition, compile_condition, parse_condition

__all__ = [
    "RULE_SCHEMA",
    "SEVERITIES",
    "Rule",
    "RuleError",
    "RuleSet",
    "Sequence_",
    "State",
    "builtin_rule_files",
    "load_rules",
    "parse_window",
]

SEVERITIES = ("info", "low", "medium", "high", "critical")
_STAGES = ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
_WINDOW = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d|w)$"
_CONDITION: dict[str, Any] = {"type": ["object", "array"]}
_FIELDS = {"type": "array", "items": {"type": "string"}, "minItems": 1}

_RULE_PROPS: dict[str, Any] = {
    "rule": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]*$"},
    "title": {"type": "string", "minLength": 1},
    "description": {"type": "string"},
    "severity": {"enum": list(SEVERITIES)},
    "tags": {"type": "array", "items": {"type": "string", "pattern": r"^T[0-9]{4}(\.[0-9]{3})?$"}},
    "behaviours": {"type": "array", "items": {"type": "string", "pattern": r"^B[0-9]+$"}},
    "enabled": {"type": "boolean"},
    "output": {"type": "string"},
    "condition": _CONDITION,
    "stages": {"type": "array", "items": {"enum": _STAGES}, "minItems": 1},
    "exceptions": {
        "type": "object", "additionalProperties": False,
        "properties": {k: {"type": "array", "items": {"type": "string"}}
                       for k in ("users", "service_accounts", "groups", "namespaces", "images",
                                 "user_agents", "source_ips", "names")},
    },
    "threshold": {
        "type": "object", "additionalProperties": False, "required": ["count", "window"],
        "properties": {"count": {"type": "integer", "minimum": 1},
                       "window": {"type": "string", "pattern": _WINDOW},
                       "by": {"type": "array", "items": {"type": "string"}},
                       "distinct": {"type": "string"}},
    },
    "new_term": {
        "type": "object", "additionalProperties": False, "required": ["fields", "baseline"],
        "properties": {"fields": _FIELDS, "baseline": {"type": "string", "pattern": _WINDOW}},
    },
    "sequence": {
        "type": "object", "additionalProperties": False, "required": ["by", "within", "steps"],
        "properties": {"by": _FIELDS, "within": {"type": "string", "pattern": _WINDOW},
                       "steps": {"type": "array", "items": _CONDITION, "minItems": 2}},
    },
    "suppress": {
        "type": "object", "additionalProperties": False, "required": ["window"],
        "properties": {"window": {"type": "string", "pattern": _WINDOW},
                       "by": {"type": "array", "items": {"type": "string"}}},
    },
    "examples": {
        "type": "object", "additionalProperties": False,
        "properties": {"match": {"type": "array", "items": {"type": "object"}},
                       "no_match": {"type": "array", "items": {"type": "object"}}},
    },
}

#: The JSON schema every entry of a rule file must satisfy (also published in docs/rules.md).
RULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {"oneOf": [
        {"type": "object", "additionalProperties": False,
         "required": ["rule", "title", "severity"],
         "anyOf": [{"required": ["condition"]}, {"required": ["sequence"]}],
         "properties": _RULE_PROPS},
        {"type": "object", "additionalProperties": False, "required": ["list", "items"],
         "properties": {"list": {"type": "string"}, "items": {"type": "array"},
                        "append": {"type": "boolean"}}},
        {"type": "object", "additionalProperties": False, "required": ["macro", "condition"],
         "properties": {"macro": {"type": "string"}, "condition": _CONDITION,
                        "append": {"type": "boolean"}}},
        {"type": "object", "additionalProperties": False, "required": ["override"],
         "properties": {"override": {"type": "string"},
                        **{k: v for k, v in _RULE_PROPS.items() if k != "rule"}}},
    ]},
}

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str) -> timedelta:
    """`5m` → 5 minutes (units ms s m h d w)."""
    m = re.fullmatch(_WINDOW, text)
    if not m:
        raise RuleError([("", f"cannot read the duration {text!r} (use e.g. 30s, 5m, 7d)")])
    return timedelta(seconds=float(text[: -len(m.group(2))]) * _UNITS[m.group(2)])


class RuleError(KubetrailError):
    """Rule files with problems: every problem, each as (where, what)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{where}: {what}" if where else what for where, what in problems]
        head = "invalid rules" if len(lines) > 1 else "invalid rule"
        body = lines[0] if len(lines) == 1 else "".join(f"\n  - {line}" for line in lines)
        super().__init__(f"{head}: {body}" if len(lines) == 1 else f"{head} ({len(lines)} "
                         f"problems):{body}", hint="fix them and run `kubetrail rules validate`; "
                         "nothing was loaded")


@dataclass(frozen=True)
class State:
    """Stateful part of a rule: a threshold or a first-seen term."""

    kind: str  # threshold | new_term
    window: timedelta
    by: tuple[str, ...] = ()
    count: int = 1
    distinct: str | None = None


@dataclass(frozen=True)
class Sequence_:
    """Steps that must happen in order, by the same key, within `within`."""

    by: tuple[str, ...]
    within: timedelta
    steps: tuple[Condition, ...]
    step_sql: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """One compiled detection rule."""

    id: str
    title: str
    severity: str
    description: str = ""
    tags: tuple[str, ...] = ()
    behaviours: tuple[str, ...] = ()
    enabled: bool = True
    output: str = ""
    condition: Condition | None = None
    exceptions: Condition | None = None  # allow-lists: when true, the rule does not fire
    sql: str = "TRUE"  # the compiled condition, exceptions and stages included
    stages: tuple[str, ...] = ("ResponseStarted", "ResponseComplete", "Panic")
    state: State | None = None
    sequence: Sequence_ | None = None
    suppress: tuple[timedelta, tuple[str, ...]] | None = None
    examples: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    source: str = ""  # file:line
    spec: Mapping[str, Any] = field(default_factory=dict, repr=False)  # as written (merged)


@dataclass(frozen=True)
class RuleSet:
    """The rules of a pack (and user files), compiled and ready to run."""

    rules: tuple[Rule, ...]
    lists: Mapping[str, tuple[Any, ...]]
    macros: Mapping[str, Any]

    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise RuleError([("", f"no rule {rule_id!r}; `kubetrail rules list` shows them")])


# -- reading files with line numbers ------------------------------------------------------


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that records where each mapping and list starts."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    data = _Located(loader.construct_mapping(node, deep=True))
    data.line = node.start_mark.line + 1
    data.key_lines = {loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
    return data


class _Located(dict):  # type: ignore[type-arg]
    line = 0
    key_lines: dict[Any, int]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(entry: Any, path: Sequence[Any]) -> int:
    """The line of the deepest mapping key on `path` we know."""
    node, line = entry, getattr(entry, "line", 0)
    for key in path:
        if isinstance(node, _Located) and key in node.key_lines:
            line = node.key_lines[key]
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        line = getattr(node, "line", line)
    return line


def builtin_rule_files() -> list[Path]:
    """The built-in pack's files, in order."""
    pack = resources.files("kubetrail.detect") / "pack"
    return sorted(Path(str(p)) for p in pack.iterdir() if p.name.endswith((".yaml", ".yml")))


_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path, problems: list[tuple[str, str]], lines: bool) -> list[Any]:
    loader = _LineLoader if lines else _FAST_LOADER
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except OSError as exc:
        problems.append((str(path), f"cannot read: {exc.strerror or exc}"))
        return []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problems.append((where, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return []
    if data is None:
        return []
    validator = jsonschema.Draft202012Validator(RULE_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return list(data)
    for err in errors:
        path_items = list(err.absolute_path)
        entry = data[path_items[0]] if path_items and isinstance(data, list) else data
        name = (entry.get("rule") or entry.get("list") or entry.get("macro")
                or entry.get("override")) if isinstance(entry, Mapping) else None
        specific = _specific(err)
        inner = path_items[1:] + list(specific.relative_path if specific is not err else [])
        extra = _unexpected(specific)
        if extra:
            inner = [*inner, extra]
        line = _line_of(entry, inner) if path_items else 1
        field_path = ".".join(str(p) for p in inner) or "(entry)"
        problems.append((f"{path}:{line}", f"{name + ': ' if name else ''}{field_path}: "
                                           f"{_message(specific)}"))
    return []


_KINDS = ("rule", "list", "macro", "override")


def _specific(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Inside oneOf, the error of the entry kind that was meant (by its key)."""
    if err.validator == "oneOf" and isinstance(err.instance, Mapping):
        kind = next((k for k in _KINDS if k in err.instance), None)
        if kind:
            index = _KINDS.index(kind)
            subs = [e for e in err.context or () if e.relative_schema_path
                    and e.relative_schema_path[0] == index]
            if subs:
                return max(subs, key=lambda e: len(e.relative_path))
    return err


def _unexpected(err: jsonschema.ValidationError) -> str | None:
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = set(err.schema.get("properties", {}))
        extras = [k for k in err.instance if k not in allowed]
        return str(extras[0]) if extras else None
    return None


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key")
    if err.validator == "oneOf":
        return ("an entry must be a rule (rule, title, severity, condition), a list (list, "
                "items), a macro (macro, condition) or an override (override)")
    return err.message


# -- loading -------------------------------------------------------------------------------


def load_rules(paths: Iterable[str | Path] = (), *, builtin: bool = True) -> RuleSet:
    """The built-in pack (unless `builtin` is False) then every file or directory in
    `paths`, merged, validated and compiled; a RuleError lists every problem."""
    files: list[Path] = builtin_rule_files() if builtin else []
    problems: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix in (".yaml", ".yml"))
        elif path.exists():
            files.append(path)
        else:
            problems.append((str(path), "no such file or directory"))
    if problems:
        raise RuleError(problems)
    try:
        return _load(files, lines=False)  # fast: the C parser, no positions
    except RuleError:
        return _load(files, lines=True)  # again, to say where each problem is (raises)


def _load(files: list[Path], *, lines: bool) -> RuleSet:
    problems: list[tuple[str, str]] = []
    entries: list[tuple[Path, Any]] = []
    for f in files:
        entries += [(f, e) for e in _read(f, problems, lines)]
    if problems:
        raise RuleError(problems)
    return _merge(entries)


def _where(path: Path, entry: Any, key: str | None = None) -> str:
    line = entry.key_lines.get(key, entry.line) if key and isinstance(entry, _Located) else \
        getattr(entry, "line", 0)
    return f"{path}:{line}"


def _merge(entries: list[tuple[Path, Any]]) -> RuleSet:
    problems: list[tuple[str, str]] = []
    lists: dict[str, list[Any]] = {}
    macros: dict[str, Any] = {}
    specs: dict[str, tuple[dict[str, Any], str]] = {}
    order: list[str] = []
    for path, e in entries:
        if "list" in e:
            items = list(e["items"])
            if e.get("append"):
                if e["list"] not in lists:
                    problems.append((_where(path, e), f"list {e['list']!r}: append to a list "
                                                      "that is not defined earlier"))
                    continue
                lists[e["list"]] += items
            else:
                lists[e["list"]] = items
        elif "macro" in e:
            if e.get("append") and e["macro"] in macros:
                macros[e["macro"]] = {"any": [macros[e["macro"]], e["condition"]]}
            else:
                macros[e["macro"]] = e["condition"]
        elif "rule" in e:
            if e["rule"] in specs:
                problems.append((_where(path, e), f"rule {e['rule']!r} is defined twice (first "
                                 f"at {specs[e['rule']][1]}); use `override:` to change it"))
                continue
            specs[e["rule"]] = (dict(e), _where(path, e))
            order.append(e["rule"])
        else:
            target = e["override"]
            if target not in specs:
                problems.append((_where(path, e), f"override of unknown rule {target!r}"))
                continue
            spec, where = specs[target]
            for key, value in e.items():
                if key == "override":
                    continue
                if key == "exceptions":
                    merged = {k: list(v) for k, v in spec.get("exceptions", {}).items()}
                    for k, v in value.items():
                        merged[k] = merged.get(k, []) + list(v)
                    spec["exceptions"] = merged
                else:
                    spec[key] = value
    frozen_lists = {k: tuple(v) for k, v in lists.items()}
    rules = []
    for rule_id in order:
        spec, where = specs[rule_id]
        try:
            rules.append(_compile_rule(spec, where, frozen_lists, macros))
        except CompileError as exc:
            problems.append((where, f"rule {rule_id!r}: {exc.message}"))
    if problems:
        raise RuleError(problems)
    return RuleSet(tuple(rules), frozen_lists, dict(macros))


def _exceptions(exc: Mapping[str, Sequence[str]]) -> Condition | None:
    """Allow-lists as a condition that, when true, suppresses the rule."""
    parts: list[Any] = []
    glob = lambda v: {"glob": list(v)}  # noqa: E731
    if exc.get("users"):
        parts.append({"user": glob(exc["users"])})
    if exc.get("service_accounts"):  # namespace:name, globs allowed
        parts.append({"user": glob(f"system:serviceaccount:{s}" for s in exc["service_accounts"])})
    if exc.get("groups"):
        parts.append({"groups": glob(exc["groups"])})
    if exc.get("namespaces"):
        parts.append({"namespace": glob(exc["namespaces"])})
    if exc.get("names"):
        parts.append({"name": glob(exc["names"])})
    if exc.get("user_agents"):
        parts.append({"user_agent": glob(exc["user_agents"])})
    if exc.get("source_ips"):
        parts.append({"source_ip": {"cidr": list(exc["source_ips"])}})
    if exc.get("images"):  # every container's image is allowed
        parts.append({"every": {"path": "containers", "match": {"image": glob(exc["images"])}}})
    if not parts:
        return None
    return parse_condition({"any": parts}, where="exceptions")


def _compile_rule(spec: Mapping[str, Any], where: str, lists: Mapping[str, tuple[Any, ...]],
                  macros: Mapping[str, Any]) -> Rule:
    rid = spec["rule"]
    stages = tuple(spec.get("stages") or ("ResponseStarted", "ResponseComplete", "Panic"))
    stage_sql = "stage IN (" + ", ".join(f"'{s}'" for s in stages) + ")"
    condition = None
    parts = [stage_sql]
    if "condition" in spec:
        condition = parse_condition(spec["condition"], lists=lists, macros=macros,
                                    where="condition")
        parts.append(compile_condition(condition))
    exceptions = _exceptions(spec.get("exceptions") or {})
    if exceptions is not None:
        parts.append(f"NOT {compile_condition(exceptions)}")
    state = None
    if "threshold" in spec:
        t = spec["threshold"]
        state = State("threshold", parse_window(t["window"]), tuple(t.get("by", ())),
                      t["count"], t.get("distinct"))
    elif "new_term" in spec:
        n = spec["new_term"]
        state = State("new_term", parse_window(n["baseline"]), tuple(n["fields"]))
    sequence = None
    if "sequence" in spec:
        s = spec["sequence"]
        steps = tuple(parse_condition(step, lists=lists, macros=macros,
                                      where=f"sequence.steps[{i}]")
                      for i, step in enumerate(s["steps"]))
        sequence = Sequence_(tuple(s["by"]), parse_window(s["within"]), steps,
                             tuple(compile_condition(c) for c in steps))
    suppress = None
    if "suppress" in spec:
        suppress = (parse_window(spec["suppress"]["window"]), tuple(spec["suppress"].get("by", ())))
    return Rule(
        id=rid, title=spec["title"], severity=spec["severity"],
        description=spec.get("description", ""), tags=tuple(spec.get("tags", ())),
        behaviours=tuple(spec.get("behaviours", ())), enabled=spec.get("enabled", True),
        output=spec.get("output", ""), condition=condition, exceptions=exceptions,
        sql="(" + " AND ".join(parts) + ")", stages=stages, state=state, sequence=sequence,
        suppress=suppress, examples=spec.get("examples") or {}, source=where, spec=dict(spec))
