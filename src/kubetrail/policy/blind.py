"""Which detection rules an audit policy would blind: what they read is not recorded.

A rule needs its requests recorded at all (level above None), at the stages it looks at,
and with the bodies it reads (`requestObject` needs Request, `responseObject`
RequestResponse). For each rule the request classes of recorded traffic that it *could*
match are found by testing only what a class knows (user, groups, verb, resource, namespace,
name, group); every other test counts as "maybe", so no rule is called blind for traffic it
might see. The policy is then evaluated on those classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..store.archive import connection
from .model import STAGES, Policy, level_rank
from .traffic import Traffic

__all__ = ["BlindRule", "blind_rules"]

_KNOWN = frozenset({"user", "groups", "verb", "resource", "subresource", "namespace", "name",
                    "api_group", "api_version", "code"})


@dataclass(frozen=True)
class BlindRule:
    """A detection rule that would miss some or all of the requests it watches."""

    rule: str
    title: str
    severity: str
    needs: str  # the level its condition needs: Metadata, Request or RequestResponse
    requests: int  # requests in the traffic it could match
    blind: int  # of those, the ones the policy would not let it see
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "title": self.title, "severity": self.severity,
                "needs": self.needs, "requests": self.requests, "blind": self.blind,
                "reasons": list(self.reasons)}


def _reads(node: tuple[Any, ...], out: set[str]) -> None:
    kind = node[0]
    if kind in ("and", "or"):
        for n in node[1]:
            _reads(n, out)
    elif kind == "not":
        _reads(node[1], out)
    elif kind == "const":
        return
    elif kind == "quant":
        source = node[2]
        out.add("requestObject" if source in ("containers", "volumes") else source)
        _reads(node[3], set())  # inner fields are relative to the element
    else:
        out.add(node[1])


def _needs(rule: Any) -> str:
    fields: set[str] = set()
    for cond in ([rule.condition] if rule.condition else []) + (
            list(rule.sequence.steps) if rule.sequence else []):
        _reads(cond.node, fields)
    roots = {f.removeprefix("event.").split(".")[0].split("[")[0] for f in fields}
    if "responseObject" in roots:
        return "RequestResponse"
    if "requestObject" in roots:
        return "Request"
    return "Metadata"


def _possible_sql(rule: Any) -> str:
    from ..detect.condition import compile_possible

    conds = ([rule.condition] if rule.condition else []) + (
        list(rule.sequence.steps) if rule.sequence else [])
    if not conds:
        return "TRUE"
    return " OR ".join(f"(({compile_possible(c, _KNOWN)}) IS NOT FALSE)" for c in conds)


def blind_rules(policy: Policy, traffic: Traffic, rules: Iterable[Any]) -> list[BlindRule]:
    """The enabled rules that `policy` would blind for some of `traffic`, worst first."""
    classes = traffic.classes
    if not classes:
        return []
    # One row per class and response code seen (a code the traffic did not record: NULL).
    slots = [(i, code, n) for i, c in enumerate(classes)
             for code, n in (c.codes or ((None, c.requests),))]
    attrs = [classes[i].attributes for i, _, _ in slots]
    table = pa.table({
        "slot": list(range(len(slots))),
        "user": [a.user for a in attrs],
        "groups": [list(a.groups) for a in attrs],
        "verb": [a.verb for a in attrs],
        "resource": [a.resource or None for a in attrs],
        "subresource": [a.subresource or None for a in attrs],
        "namespace": [a.namespace or None for a in attrs],
        "name": [a.name or None for a in attrs],
        "api_group": [a.api_group if a.resource_request else None for a in attrs],
        "api_version": [a.api_version or None for a in attrs],
        "code": pa.array([code for _, code, _ in slots], pa.int32()),
    })
    decisions = [policy.evaluate(c.attributes) for c in classes]
    con = connection()
    out = []
    try:
        con.register("classes", table)
        for rule in rules:
            if not rule.enabled:
                continue
            hit = [slots[k] for (k,) in con.sql(
                f"SELECT slot FROM classes WHERE {_possible_sql(rule)}").fetchall()]
            if not hit:
                continue
            needs = _needs(rule)
            total = blind = 0
            reasons: dict[str, int] = {}
            for i, _, requests in hit:
                c, d = classes[i], decisions[i]
                total += requests
                emitted = {"ResponseStarted"} if c.failed_authn == c.requests else (
                    {"RequestReceived", "ResponseComplete", "Panic"}
                    | ({"ResponseStarted"} if c.long_running else set()))
                seen = emitted - set(d.omit_stages)
                where = f"rules[{d.rule_index}]" if d.rule_index is not None else "the default"
                if level_rank(d.level) == 0:
                    why = f"not recorded (level None by {where})"
                elif level_rank(d.level) < level_rank(needs) and c.attributes.verb not in (
                        "get", "list", "watch"):
                    why = f"recorded at {d.level} by {where}, without the body it reads"
                elif not seen & set(rule.stages or STAGES):
                    why = f"its stages {', '.join(rule.stages)} are omitted ({where})"
                else:
                    continue
                blind += requests
                reasons[why] = reasons.get(why, 0) + requests
            if blind:
                ordered = tuple(f"{why}: {n:,} requests" for why, n in
                                sorted(reasons.items(), key=lambda kv: -kv[1]))
                out.append(BlindRule(rule.id, rule.title, rule.severity, needs, total, blind,
                                     ordered))
    finally:
        con.close()
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
    out.sort(key=lambda b: (rank.get(b.severity, 5), -b.blind / b.requests, b.rule))
    return out
