"""Sigma rules for Kubernetes audit logs, converted into kubetrail rules.

pySigma reads the Sigma YAML (modifiers, ``1 of selection*``, ``all of them``, ``not``,
parentheses) into a condition tree; this module walks that tree into a kubetrail condition
(see :mod:`kubetrail.detect.condition`) and the rule's metadata into a rule entry:

    >>> conversions = convert_sigma(["sigma/"])              # doctest: +SKIP
    >>> print(to_yaml(conversions))                          # doctest: +SKIP

Every Sigma rule gives one :class:`Conversion`: the rule entry, or ``None`` and the precise
reasons (an unknown field, an unsupported modifier, a correlation rule, another log
source). Nothing raises for one bad rule; every converted rule has been compiled and its SQL
bound by DuckDB before it is returned.

How Sigma's matching maps onto kubetrail's:

- plain values compare equal; wildcards become ``glob``; ``|contains``, ``|startswith`` and
  ``|endswith`` (wildcards only at the ends) become the operators of the same name;
  ``|re`` (flags ``i m s`` as ``(?ims)``) becomes ``regex``; ``|cidr`` ``cidr``;
  ``|gt|gte|lt|lte`` the same; ``|exists`` and ``null`` become ``exists``; ``|all`` and
  ``|neq`` are logic; ``|windash`` and ``|base64`` are values like any other.
- Sigma compares strings case-insensitively unless ``|cased``; kubetrail compares exactly.
  Kubernetes itself is case-sensitive (verbs, resources, names, users), so rules are
  converted with exact comparisons; ``|re|i`` keeps a case-insensitive regex.
- Fields are mapped by :data:`FIELD_MAP` and :data:`FIELD_PREFIXES`. A path through an array
  of objects in ``requestObject``/``responseObject`` (containers, volumes, rules, subjects, ...)
  becomes ``some`` over the array, as Sigma rules written for flattened JSON mean.
- Keywords (values without a field) are searched in the request URI only.
- A rule with status ``deprecated`` or ``unsupported`` is converted but disabled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import yaml

from ..errors import KubetrailError
from ..events.row import STAGES
from ..store.archive import connection
from .condition import CompileError, compile_condition, parse_condition
from .engine import MACROS_SQL, create_batch_table
from .rules import RULE_SCHEMA

try:  # pySigma is optional: only importing Sigma rules needs it
    from sigma.collection import SigmaCollection
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError, SigmaRuleLocation
    from sigma.filters import SigmaFilter
    from sigma.modifiers import reverse_modifier_mapping
    from sigma.rule import SigmaDetection, SigmaDetectionItem
    from sigma.rule.detection import EmptySigmaDetections
    from sigma.rule.logsource import EmptyLogSource
    from sigma.types import (
        Placeholder,
        SigmaBool,
        SigmaCIDRExpression,
        SigmaCompareExpression,
        SigmaExists,
        SigmaExpansion,
        SigmaNull,
        SigmaNumber,
        SigmaRegularExpression,
        SigmaRegularExpressionFlag,
        SigmaString,
        SigmaTimestampPart,
        SpecialChars,
    )
except ModuleNotFoundError:  # pragma: no cover - exercised only without pySigma
    SigmaCollection = None

__all__ = ["FIELD_MAP", "FIELD_PREFIXES", "Conversion", "convert_sigma", "to_yaml"]

#: Sigma field (Kubernetes audit Event names, as SigmaHQ's rules use them) → kubetrail field.
#: A target starting with ``containers.`` or ``volumes.`` is a field of some container (every
#: kind, pods and pod templates) or some volume of the request object.
FIELD_MAP: dict[str, str] = {
    "verb": "verb",
    "stage": "stage",
    "level": "level",
    "auditID": "audit_id",
    "requestURI": "request_uri",
    "userAgent": "user_agent",
    "sourceIPs": "source_ips",
    "user.username": "user",
    "user.uid": "user_uid",
    "user.groups": "groups",
    "impersonatedUser.username": "impersonated_user",
    "impersonatedUser.groups": "impersonated_groups",
    "objectRef.resource": "resource",
    "objectRef.subresource": "subresource",
    "objectRef.namespace": "namespace",
    "objectRef.name": "name",
    "objectRef.apiGroup": "api_group",
    "objectRef.apiVersion": "api_version",
    "objectRef.uid": "object_uid",
    "apiGroup": "api_group",  # SigmaHQ's sidecar-injection rule writes it without objectRef.
    "responseStatus.code": "code",
    "responseStatus.reason": "status_reason",
    "responseStatus.message": "status_message",
    "annotations.authorization.k8s.io/decision": "decision",
    "annotations.authorization.k8s.io/reason": "reason",
    # Abstract fields of SigmaHQ's pod rules ("a container has capabilities", "a hostPath").
    "capabilities": "containers.securityContext.capabilities.add",
    "hostPath": "volumes.hostPath.path",
}

#: Sigma field prefixes → kubetrail fields, for fields not in :data:`FIELD_MAP`.
FIELD_PREFIXES: dict[str, str] = {
    "requestObject.": "requestObject.<path> (arrays of objects become `some`)",
    "responseObject.": "responseObject.<path> (arrays of objects become `some`)",
    "annotations.": "annotations['<key>'] (the rest is one annotation key)",
    "user.": "event.user.<path> (e.g. user.extra)",
    "impersonatedUser.": "event.impersonatedUser.<path>",
    "objectRef.": "event.objectRef.<path>",
    "responseStatus.": "event.responseStatus.<path>",
    "requestReceivedTimestamp": "event.requestReceivedTimestamp",
    "stageTimestamp": "event.stageTimestamp",
}

_SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high",
             "critical": "critical"}
_DISABLED_STATUS = ("deprecated", "unsupported")
_ATTACK_TAG = re.compile(r"^t(\d{4})(?:\.(\d{3}))?$")
_UNSUPPORTED_MODIFIERS = {
    "base64offset": "encoded substrings do not occur in audit-event fields",
    "utf16": "UTF-16 text does not occur in audit-event fields",
    "utf16be": "UTF-16 text does not occur in audit-event fields",
    "wide": "UTF-16 text does not occur in audit-event fields",
    "fieldref": "kubetrail compares fields with values, not with other fields",
    "expand": "placeholders need a processing pipeline",
    **{p: "time-part matching is not available in conditions"
       for p in ("minute", "hour", "day", "week", "month", "year")},
}
# Arrays of objects inside Kubernetes objects: a Sigma path through one means "some element".
_OBJECT_ARRAYS = frozenset({
    "containers", "initContainers", "ephemeralContainers", "volumes", "volumeMounts", "env",
    "envFrom", "ports", "tolerations", "imagePullSecrets", "hostAliases", "rules", "subjects",
    "webhooks", "items", "conditions", "ownerReferences", "managedFields",
})
_EVENT_KEYS = ("user.", "impersonatedUser.", "objectRef.", "responseStatus.")
_SIMPLE_SEGMENT = re.compile(r"[A-Za-z0-9_$-]+")
_FLAGS = {"IGNORECASE": "i", "MULTILINE": "m", "DOTALL": "s"}


@dataclass(frozen=True)
class Conversion:
    """One Sigma rule's outcome: a kubetrail rule entry, or None and why.

    >>> [c] = convert_sigma(["exec.yml"])                    # doctest: +SKIP
    >>> c.rule["rule"], c.problems                           # doctest: +SKIP
    ('sigma-exec-into-pod', ())
    """

    source: str  # file (and rule title)
    rule: dict[str, Any] | None  # the kubetrail rule entry, or None if unsupported
    problems: tuple[str, ...] = ()  # what could not be converted, each named precisely
    notes: tuple[str, ...] = ()  # converted, but worth knowing (disabled, keyword search, ...)


# -- fields ------------------------------------------------------------------------------------


def _json_field(root: str, segments: Sequence[str]) -> str:
    return root + "".join(f".{s}" if _SIMPLE_SEGMENT.fullmatch(s) else f"['{s}']"
                          for s in segments)


def _object_path(path: str) -> tuple[str, ...]:
    """`requestObject.spec.containers.image` → (`requestObject.spec.containers`, `image`):
    each part but the last is an array of objects to quantify over. After `annotations` or
    `labels` the rest of the path is one key (keys hold dots)."""
    root, *segments = path.split(".")
    parts: list[str] = []
    base, current = root, []
    for i, seg in enumerate(segments):
        if seg in ("annotations", "labels") and i < len(segments) - 1:
            current += [seg, ".".join(segments[i + 1:])]
            break
        current.append(seg)
        if seg in _OBJECT_ARRAYS and i < len(segments) - 1:
            parts.append(_json_field(base, current).removeprefix("."))
            base, current = "", []
    parts.append(_json_field(base, current).removeprefix("."))
    return tuple(parts)


def _map_field(name: str) -> tuple[str, ...] | None:
    """A Sigma field → kubetrail target: (field,) or (array, ..., field relative to it)."""
    if name in FIELD_MAP:
        target = FIELD_MAP[name]
        head, _, rest = target.partition(".")
        return (head, rest) if head in ("containers", "volumes") else (target,)
    if "'" in name:
        return None
    if name.startswith(("requestObject.", "responseObject.")) and all(name.split(".")):
        return _object_path(name)
    if name.startswith("annotations.") and len(name) > len("annotations."):
        key = name[len("annotations."):]
        return (f"annotations['{key}']",)
    if name.startswith(_EVENT_KEYS) or name in ("requestReceivedTimestamp", "stageTimestamp"):
        segments = name.split(".")
        if all(segments):
            return (_json_field("event", segments),)
    return None


# -- the condition tree -----------------------------------------------------------------------

# Internal nodes: ("and", [nodes]) ("or", [nodes]) ("not", node) and
# ("cmp", target, op, [values]) with target from _map_field.
Node = tuple[Any, ...]


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\\])", r"[\1]", text)


def _string(parts: Sequence[Any]) -> tuple[str, str]:
    """(operator, argument) for the parts of a Sigma string (text and wildcards)."""
    if not any(isinstance(p, SpecialChars) for p in parts):
        return "eq", "".join(str(p) for p in parts)
    stars = SpecialChars.WILDCARD_MULTI
    inner = parts[1 if parts[0] == stars else 0: -1 if parts[-1] == stars else None]
    if inner and all(isinstance(p, str) for p in inner):
        text = "".join(inner)
        lead, trail = parts[0] == stars, parts[-1] == stars
        return ("contains" if lead and trail else "endswith" if lead else "startswith"), text
    glob = "".join("*" if p == stars else "?" if p == SpecialChars.WILDCARD_SINGLE
                   else _glob_escape(str(p)) for p in parts)
    return "glob", glob


class _Walker:
    """Sigma condition tree → internal nodes, collecting problems and notes."""

    def __init__(self, detections: Any, check: _Checker) -> None:
        self.check = check
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.fields: set[str] = set()
        # Leaves carry only a value; the detection item (field, modifiers) is found by the
        # identity of that value, since a multi-value item's leaves do not point back to it.
        self.items: dict[int, Any] = {}
        for detection in detections.detections.values():
            self._index(detection)

    def _index(self, detection: Any) -> None:
        for item in detection.detection_items:
            if isinstance(item, SigmaDetection):
                self._index(item)
            elif isinstance(item, SigmaDetectionItem):
                for value in item.value:
                    self.items[id(value)] = item

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def node(self, tree: Any) -> Node | None:
        if isinstance(tree, ConditionAND | ConditionOR):
            kids = [self.node(arg) for arg in tree.args]
            return ("and" if isinstance(tree, ConditionAND) else "or",
                    [k for k in kids if k is not None])
        if isinstance(tree, ConditionNOT):
            inner = self.node(tree.args[0])
            return ("not", inner) if inner is not None else None
        if isinstance(tree, ConditionFieldEqualsValueExpression):
            return self.leaf(tree.field, tree.value)
        if isinstance(tree, ConditionValueExpression):
            return self.leaf(None, tree.value)
        self.problem(f"condition element {type(tree).__name__} is not supported")
        return None

    def leaf(self, field: str | None, value: Any) -> Node | None:
        item = self.items.get(id(value))
        for modifier in item.modifiers if item is not None else ():
            name = reverse_modifier_mapping.get(modifier.__name__, modifier.__name__)
            if name in _UNSUPPORTED_MODIFIERS:
                where = f"field {field!r}: " if field is not None else ""
                self.problem(f"{where}modifier |{name} is not supported "
                             f"({_UNSUPPORTED_MODIFIERS[name]})")
                return None
        if field is None:
            self.note("keywords (values without a field) are searched in the request URI only")
            target: tuple[str, ...] | None = ("request_uri",)
        else:
            target = _map_field(field)
            if target is None:
                self.problem(f"field {field!r} has no kubetrail equivalent")
                return None
            self.fields.add(target[0])
        return self.value(field, target, value)

    def value(self, field: str | None, target: tuple[str, ...], value: Any) -> Node | None:
        shown = field if field is not None else "(keyword)"
        if isinstance(value, SigmaExpansion):
            kids = [self.value(field, target, v) for v in value.values]
            return ("or", [k for k in kids if k is not None])
        if isinstance(value, SigmaTimestampPart):
            self.problem(f"field {shown!r}: time-part modifiers are not supported")
            return None
        if isinstance(value, SigmaString):
            if any(isinstance(p, Placeholder) for p in value.s):
                self.problem(f"field {shown!r}: placeholders (|expand) are not supported")
                return None
            parts = list(value.s)
            if field is None and parts:  # a keyword is found anywhere in the URI
                star = SpecialChars.WILDCARD_MULTI
                parts = ([] if parts[0] == star else [star]) + parts + \
                    ([] if parts[-1] == star else [star])
            op, arg = _string(parts)
            if target == ("code",) and op == "eq" and not arg.isdigit():
                self.note(f"value {arg!r} can never match {shown} (a number)")
            return ("cmp", target, op, [arg])
        if isinstance(value, SigmaBool):
            return self.plain(field, target, bool(value.boolean))
        if isinstance(value, SigmaNumber):
            return self.plain(field, target, value.number)
        if isinstance(value, SigmaNull):
            return ("cmp", target, "exists", [False])
        if isinstance(value, SigmaExists):
            return ("cmp", target, "exists", [bool(value.exists)])
        if isinstance(value, SigmaRegularExpression):
            flags = "".join(sorted(_FLAGS[f.name] for f in value.flags
                                   if isinstance(f, SigmaRegularExpressionFlag)))
            pattern = (f"(?{flags})" if flags else "") + value.regexp.to_plain()
            problem = self.check.regex(pattern)
            if problem:
                self.problem(f"field {shown!r}: regular expression {pattern!r} {problem}")
                return None
            return ("cmp", target, "regex", [pattern])
        if isinstance(value, SigmaCIDRExpression):
            return ("cmp", target, "cidr", [value.cidr])
        if isinstance(value, SigmaCompareExpression):
            op = value.op.name.lower()
            if op == "neq":
                return ("not", ("cmp", target, "eq", [value.number.number]))
            return ("cmp", target, op, [value.number.number])
        self.problem(f"field {shown!r}: value type {type(value).__name__} is not supported")
        return None

    def plain(self, field: str | None, target: tuple[str, ...], value: Any) -> Node:
        if field is None:
            return ("cmp", target, "contains", [str(value).lower() if isinstance(value, bool)
                                                else str(value)])
        return ("cmp", target, "eq", [value])


# -- rendering nodes as a kubetrail condition ----------------------------------------------------

_MERGEABLE = ("eq", "glob", "contains", "startswith", "endswith", "regex", "cidr")


def _flatten(kind: str, nodes: Iterable[Node]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        out += _flatten(kind, n[1]) if n[0] == kind else [n]
    return out


def _render(node: Node) -> dict[str, Any]:
    kind = node[0]
    if kind == "cmp":
        return _render_cmp(node)
    if kind == "not":
        return {"not": _render(node[1])}
    kids = _flatten(kind, node[1])
    if kind == "or":  # one comparison per field and operator: `verb: [get, list]`
        merged: list[Node] = []
        for kid in kids:
            same = next((m for m in merged if m[0] == "cmp" == kid[0] and m[1:3] == kid[1:3]
                         and kid[2] in _MERGEABLE), None)
            if same is None:
                merged.append((*kid[:3], list(kid[3])) if kid[0] == "cmp" else kid)
            else:
                same[3].extend(v for v in kid[3] if v not in same[3])
        rendered = [_render(m) for m in merged]
        return rendered[0] if len(rendered) == 1 else {"any": rendered}
    groups: list[dict[str, Any]] = []  # and: one mapping while the keys do not collide
    for part in (_render(k) for k in kids):
        target = next((g for g in groups if not g.keys() & part.keys()), None)
        if target is None:
            groups.append(dict(part))
        else:
            target.update(part)
    return groups[0] if len(groups) == 1 else {"all": groups}


def _render_cmp(node: Node) -> dict[str, Any]:
    _, target, op, values = node
    if op == "eq":
        spec: Any = values[0] if len(values) == 1 else list(values)
    elif op == "exists":
        spec = {"exists": values[0]}
    else:
        spec = {op: values[0] if len(values) == 1 else list(values)}
    condition: dict[str, Any] = {target[-1]: spec}
    for array in reversed(target[:-1]):
        condition = ({array: condition} if array in ("containers", "volumes")
                     else {"some": {"path": array, "match": condition}})
    return condition


# -- rules ---------------------------------------------------------------------------------------


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    if len(slug) > 60:
        slug = slug[:60].rsplit("-", 1)[0]
    return slug or "rule"


def _rule_id(title: str, rule: Any, taken: set[str]) -> str:
    """`sigma-<slug of title>`; a clash gets the Sigma id's first 8 digits, then a counter."""
    base = f"sigma-{_slug(title)}"
    candidates = [base]
    if rule.id is not None:
        candidates.append(f"{base}-{str(rule.id)[:8]}")
    candidates += [f"{base}-{n}" for n in range(2, 1000)]
    rid = next(c for c in candidates if c not in taken)
    taken.add(rid)
    return rid


def _description(rule: Any, file: Path) -> str:
    parts = [(rule.description or "").strip()]
    if rule.falsepositives:
        parts.append("False positives: " + "; ".join(str(f) for f in rule.falsepositives))
    if rule.references:
        parts.append("References:\n" + "\n".join(f"- {r}" for r in rule.references))
    origin = f"Converted from Sigma rule {rule.id}" if rule.id else "Converted from a Sigma rule"
    origin += f" ({file.name}"
    origin += f", status {rule.status}" if rule.status else ""
    origin += f", by {rule.author})" if rule.author else ")"
    parts.append(origin + ".")
    return "\n\n".join(p for p in parts if p)


def _tags(rule: Any) -> list[str]:
    out: list[str] = []
    for tag in rule.tags:
        m = _ATTACK_TAG.match(tag.name.lower()) if tag.namespace == "attack" else None
        if m:
            mitre = f"T{m.group(1)}" + (f".{m.group(2)}" if m.group(2) else "")
            if mitre not in out:
                out.append(mitre)
    return out


def _logsource_problems(logsource: Any) -> list[str]:
    product = (logsource.product or "").lower()
    service = (logsource.service or "").lower()
    if not product:
        return ["logsource has no product (Kubernetes audit is product kubernetes, service audit)"]
    if product != "kubernetes":
        return [f"logsource product {logsource.product} is not Kubernetes audit"]
    if service != "audit":
        return [f"logsource service {logsource.service or '(none)'} of product kubernetes is not "
                "the audit log (service audit)"]
    return []


def _error_text(error: Exception) -> str:
    text = str(error.args[0]) if error.args else str(error)
    if "pipe syntax" in text:
        return ("aggregations in the condition (`| count() ...`) are not supported; "
                "Sigma correlation rules replace them, and those are not supported either")
    return " ".join(text.split())


class _Checker:
    """Binds each converted rule's SQL against an empty batch, as the engine would run it."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None

    def connect(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            self.con = connection(ordered=True)
            for macro in MACROS_SQL:
                self.con.execute(macro)
            create_batch_table(self.con)
        return self.con

    def regex(self, pattern: str) -> str | None:
        """Why DuckDB (RE2) cannot run `pattern`, or None."""
        try:
            self.connect().execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
        except duckdb.Error as exc:
            return f"is not supported by DuckDB's RE2 engine ({str(exc).partition(': ')[2] or exc})"
        return None

    def __call__(self, entry: Mapping[str, Any]) -> str | None:
        errors = list(jsonschema.Draft202012Validator(RULE_SCHEMA).iter_errors([entry]))
        if errors:
            return f"the converted rule is not valid: {errors[0].message}"
        try:
            sql = compile_condition(parse_condition(entry["condition"]))
        except CompileError as exc:
            return f"the converted condition does not compile: {exc.message}"
        try:
            self.connect().execute(f"SELECT 1 FROM batch WHERE {sql} LIMIT 0").fetchall()
        except duckdb.Error as exc:
            return f"the converted condition does not run in DuckDB: {exc}"
        return None

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def _convert_rule(rule: Any, file: Path, taken: set[str], check: _Checker) -> Conversion:
    title = rule.title or file.stem
    source = f"{file} ({title})"
    if isinstance(rule, SigmaCorrelationRule):
        return Conversion(source, None, ("correlation rules are not supported",))
    if isinstance(rule, SigmaFilter):
        return Conversion(source, None, ("Sigma filters are not supported (write them as kubetrail "
                                         "`exceptions` or an `override`)",))
    fatal = isinstance(rule.detection, EmptySigmaDetections) or \
        isinstance(rule.logsource, EmptyLogSource)
    errors = [_error_text(e) for e in rule.errors]
    if fatal:
        return Conversion(source, None, tuple(dict.fromkeys(errors)) or ("no detection",))
    notes = [f"ignored: {e}" for e in errors]  # metadata only (date, id, tags, ...)
    problems = _logsource_problems(rule.logsource)
    walker = _Walker(rule.detection, check)
    nodes: list[Node] = []
    for condition in rule.detection.parsed_condition:
        try:
            tree = condition.parsed
        except SigmaError as exc:
            problems.append(_error_text(exc))
            for detection in rule.detection.detections.values():  # still name every problem
                walker.node(detection.postprocess(rule.detection))
            continue
        node = walker.node(tree) if tree is not None else None
        if node is not None:
            nodes.append(node)
    problems += walker.problems
    if not problems and not nodes:
        problems.append("the condition selects nothing")
    if problems:
        return Conversion(source, None, tuple(dict.fromkeys(problems)))
    notes += walker.notes
    level = str(rule.level).lower() if rule.level else ""
    severity = _SEVERITY.get(level, "medium")
    if level not in _SEVERITY:
        notes.append(f"no valid Sigma level ({level or 'none'}): severity medium")
    status = str(rule.status).lower() if rule.status else ""
    entry: dict[str, Any] = {"rule": _rule_id(title, rule, taken), "title": title,
                             "description": _description(rule, file), "severity": severity}
    tags = _tags(rule)
    if tags:
        entry["tags"] = tags
    entry["enabled"] = status not in _DISABLED_STATUS
    if not entry["enabled"]:
        notes.append(f"disabled: the Sigma rule's status is {status}")
    if "stage" in walker.fields:  # the rule chooses its stages itself
        entry["stages"] = list(STAGES)
    entry["condition"] = _render(nodes[0] if len(nodes) == 1 else ("or", nodes))
    failure = check(entry)
    if failure:
        taken.discard(entry["rule"])
        return Conversion(source, None, (failure,))
    return Conversion(source, entry, (), tuple(dict.fromkeys(notes)))


def _files(paths: Sequence[str | Path]) -> Iterable[tuple[Path, str | None]]:
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix in (".yml", ".yaml") and f.is_file())
            yield from ((f, None) for f in found)
            if not found:
                yield path, "no .yml or .yaml files in this directory"
        elif path.exists():
            yield path, None
        else:
            yield path, "no such file or directory"


def _read(path: Path) -> tuple[list[Any], str | None]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except OSError as exc:
        return [], f"cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return [], "cannot read: not UTF-8 text"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        return [], f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}"
    if not docs:
        return [], "no Sigma rule in this file"
    if not all(isinstance(d, dict) for d in docs):
        return [], "not a Sigma rule file: each YAML document must be a mapping"
    return docs, None


def convert_sigma(paths: Sequence[str | Path]) -> list[Conversion]:
    """Convert the Sigma rules in files or directories (``.yml``/``.yaml``, recursively).

    One :class:`Conversion` per rule (and per file that cannot be read), in file order;
    rule ids are unique across the whole call.
    """
    if SigmaCollection is None:  # pragma: no cover - exercised only without pySigma
        raise KubetrailError("converting Sigma rules needs pySigma",
                             hint="install it with `pip install pysigma`")
    out: list[Conversion] = []
    taken: set[str] = set()
    check = _Checker()
    try:
        for path, missing in _files(paths):
            if missing:
                out.append(Conversion(str(path), None, (missing,)))
                continue
            docs, failure = _read(path)
            if failure:
                out.append(Conversion(str(path), None, (failure,)))
                continue
            try:
                collection = SigmaCollection.from_dicts(
                    docs, collect_errors=True, source=SigmaRuleLocation(path),
                    collect_filters=True, resolve_references=False)
            except Exception as exc:  # pySigma on odd input: name it, go on with other files
                out.append(Conversion(str(path), None, (f"pySigma cannot read it: "
                                                        f"{_error_text(exc)}",)))
                continue
            rule_errors = {id(e) for r in collection.rules for e in r.errors}
            rule_errors |= {id(e) for f in collection.filters for e in f.errors}
            for error in collection.errors:
                if id(error) not in rule_errors:
                    out.append(Conversion(str(path), None, (_error_text(error),)))
            for rule in (*collection.rules, *collection.filters):
                try:
                    out.append(_convert_rule(rule, path, taken, check))
                except Exception as exc:  # one odd rule never stops the others
                    title = getattr(rule, "title", "") or path.stem
                    out.append(Conversion(f"{path} ({title})", None,
                                          (f"cannot convert: {_error_text(exc)}",)))
    finally:
        check.close()
    return out


# -- output ----------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line text as literal blocks, so descriptions stay readable."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None  # PyYAML falls back to quotes when it must
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _comment(text: str) -> str:
    return " ".join(text.split())


def to_yaml(conversions: Sequence[Conversion]) -> str:
    """A kubetrail rule file (a YAML list) of the converted rules, headed by a comment that
    names every source, the rule it became or why it was skipped."""
    done = [c for c in conversions if c.rule is not None]
    lines = ["# kubetrail rules converted from Sigma (kubetrail.detect.sigma).",
             f"# {len(done)} of {len(conversions)} Sigma rules converted."]
    if done:
        lines.append("# Converted:")
        for c in done:
            assert c.rule is not None
            lines.append(f"#   {_comment(c.source)} -> {c.rule['rule']}")
            lines += [f"#     note: {_comment(n)}" for n in c.notes]
    skipped = [c for c in conversions if c.rule is None]
    if skipped:
        lines.append("# Skipped:")
        for c in skipped:
            lines.append(f"#   {_comment(c.source)}")
            lines += [f"#     - {_comment(p)}" for p in c.problems]
    body = yaml.dump([c.rule for c in done], Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100, default_flow_style=False) if done else "[]\n"
    return "\n".join(lines) + "\n\n" + body
