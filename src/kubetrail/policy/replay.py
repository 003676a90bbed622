"""Replaying policies over recorded traffic: volume per rule, and what changes between two.

Each request class is evaluated once. Its volume under a decision follows the API server's
emission rules (reference §3): RequestReceived, ResponseStarted for long-running requests,
then ResponseComplete (or Panic); a failed authentication is one ResponseStarted event;
omitted stages are not written and level None writes nothing. Sizes are estimated from what
was recorded: the mean metadata-only event of the class, plus the request and response
bodies at Request and RequestResponse (on the final stage, less managedFields when they
are omitted). A body never recorded for a class is estimated from requests with the same
verb on the same resource, or else counted as unknown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .blind import BlindRule, blind_rules
from .model import Policy, PolicyDecision, level_rank
from .traffic import RequestClass, Traffic, describe

__all__ = ["ClassVolume", "LevelChange", "PolicyDiff", "RuleVolume", "Simulation", "Volume",
           "class_volume", "diff_policies", "simulate_policy"]

_NO_REQUEST_BODY = frozenset({"get", "list", "watch", "proxy", "connect"})
_NO_RESPONSE_BODY = frozenset({"watch", "proxy", "connect"})
_UPGRADES = frozenset({"exec", "attach", "portforward", "proxy"})


@dataclass(frozen=True)
class Volume:
    """Requests, events and bytes (events and bytes may be estimates)."""

    requests: int = 0
    events: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Volume) -> Volume:
        return Volume(self.requests + other.requests, self.events + other.events,
                      self.bytes + other.bytes)

    def per_day(self, days: float) -> Volume:
        return Volume(round(self.requests / days), self.events / days, self.bytes / days)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "events": round(self.events),
                "bytes": round(self.bytes)}


@dataclass(frozen=True)
class ClassVolume:
    """One request class under one decision."""

    volume: Volume
    estimated_body: bool = False  # a body size was borrowed from similar requests
    unknown_body: bool = False  # a body is written but its size is not known (counted as 0)


class _BodySizes:
    """Mean body sizes for classes that never recorded their own: from requests with the same
    verb on the same resource, else from any body recorded for that resource (a lease's
    update body is about the size of the lease a get returned)."""

    def __init__(self, traffic: Traffic) -> None:
        exact: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
        loose: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for c in traffic.classes:
            a = c.attributes
            acc = exact[(a.api_group, a.resource, a.subresource, a.verb)]
            near = loose[(a.api_group, a.resource, a.subresource)]
            for body, at in ((c.request_body, 0), (c.response_body, 2)):
                if body is not None:
                    acc[at] += body * c.requests
                    acc[at + 1] += c.requests
                    near[0] += body * c.requests
                    near[1] += c.requests
        self._request = {k: v[0] / v[1] for k, v in exact.items() if v[1]}
        self._response = {k: v[2] / v[3] for k, v in exact.items() if v[3]}
        self._any = {k: v[0] / v[1] for k, v in loose.items() if v[1]}

    def _lookup(self, table: dict[tuple[str, ...], float], c: RequestClass) -> float | None:
        a = c.attributes
        found = table.get((a.api_group, a.resource, a.subresource, a.verb))
        return found if found is not None else self._any.get((a.api_group, a.resource,
                                                               a.subresource))

    def request(self, c: RequestClass) -> float | None:
        return self._lookup(self._request, c)

    def response(self, c: RequestClass) -> float | None:
        return self._lookup(self._response, c)


def _stage_events(c: RequestClass, omit: tuple[str, ...]) -> tuple[float, float]:
    """(events per class, how many of them are final stages that carry bodies)."""
    keep = {s: s not in omit for s in ("RequestReceived", "ResponseStarted",
                                       "ResponseComplete", "Panic")}
    authn = c.failed_authn
    normal = c.requests - authn
    events = authn * keep["ResponseStarted"]
    events += normal * keep["RequestReceived"]
    if c.long_running:
        events += normal * keep["ResponseStarted"]
    finals = c.panics * keep["Panic"] + (normal - c.panics) * keep["ResponseComplete"]
    return events + finals, finals


def class_volume(c: RequestClass, decision: PolicyDecision,
                 sizes: _BodySizes | None = None) -> ClassVolume:
    """The estimated volume of `c` when the policy decides `decision` for it."""
    rank = level_rank(decision.level)
    if rank == 0:
        return ClassVolume(Volume(c.requests))
    events, finals = _stage_events(c, decision.omit_stages)
    size = events * c.meta_bytes
    estimated = unknown = False
    a = c.attributes
    if a.resource_request and finals and a.subresource not in _UPGRADES:
        if rank >= 2 and a.verb not in _NO_REQUEST_BODY:
            body = c.request_body
            if body is None:
                body = sizes.request(c) if sizes else None
                estimated, unknown = body is not None, body is None
            if body is not None:
                managed = c.request_managed if decision.omit_managed_fields else 0.0
                size += finals * max(body - managed, 0.0)
        if rank >= 3 and a.verb not in _NO_RESPONSE_BODY:
            body = c.response_body
            if body is None:
                body = sizes.response(c) if sizes else None
                estimated = estimated or body is not None
                unknown = unknown or body is None
            if body is not None:
                managed = c.response_managed if decision.omit_managed_fields else 0.0
                size += finals * max(body - managed, 0.0)
    return ClassVolume(Volume(c.requests, events, size), estimated, unknown)


@dataclass(frozen=True)
class RuleVolume:
    """What one rule (or, with index None, the default for unmatched requests) records."""

    index: int | None
    level: str
    volume: Volume
    top: tuple[tuple[dict[str, Any], Volume], ...] = ()  # its loudest request classes

    def to_dict(self, days: float) -> dict[str, Any]:
        return {"rule": self.index, "level": self.level,
                **self.volume.to_dict(), "per_day": self.volume.per_day(days).to_dict(),
                "top": [{**what, **vol.to_dict()} for what, vol in self.top]}


@dataclass(frozen=True)
class Simulation:
    """A policy replayed over traffic."""

    rules: tuple[RuleVolume, ...]  # every rule in order, then the unmatched default
    before: Volume  # as recorded
    after: Volume  # estimated under the policy
    days: float
    estimated_bodies: int = 0  # requests whose body size was borrowed from similar requests
    unknown_bodies: int = 0  # requests that would write a body of unknown size
    unreadable: int = 0
    warnings: tuple[str, ...] = field(default=())
    blind: tuple[BlindRule, ...] = ()  # detection rules the policy would blind

    def noisiest(self, n: int = 5) -> list[RuleVolume]:
        return sorted((r for r in self.rules if r.volume.events),
                      key=lambda r: -r.volume.bytes)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": round(self.days, 3),
            "before": {**self.before.to_dict(), "per_day": self.before.per_day(self.days).to_dict()},
            "after": {**self.after.to_dict(), "per_day": self.after.per_day(self.days).to_dict()},
            "rules": [r.to_dict(self.days) for r in self.rules],
            "noisiest": [r.index for r in self.noisiest()],
            "estimated_bodies": self.estimated_bodies, "unknown_bodies": self.unknown_bodies,
            "unreadable": self.unreadable, "warnings": list(self.warnings),
            "blind_rules": [b.to_dict() for b in self.blind],
        }


def simulate_policy(policy: Policy, traffic: Traffic, *, top: int = 3,
                    detection_rules: Iterable[Any] | None = None) -> Simulation:
    """Volume per rule and in total if `policy` had been in force for `traffic`; with
    `detection_rules`, also which of them it would blind."""
    sizes = _BodySizes(traffic)
    per_rule: dict[int | None, list[tuple[RequestClass, ClassVolume]]] = defaultdict(list)
    before = after = Volume()
    estimated = unknown = 0
    for c in traffic.classes:
        decision = policy.evaluate(c.attributes)
        cv = class_volume(c, decision, sizes)
        per_rule[decision.rule_index].append((c, cv))
        before += Volume(c.requests, c.events, c.bytes)
        after += Volume(c.requests, cv.volume.events, cv.volume.bytes)
        estimated += c.requests if cv.estimated_body else 0
        unknown += c.requests if cv.unknown_body else 0
    rules = []
    for index in [*range(len(policy.rules)), None]:
        entries = per_rule.get(index, [])
        total = sum((cv.volume for _, cv in entries), Volume())
        loud = sorted((e for e in entries if e[1].volume.events), key=lambda e: -e[1].volume.bytes)
        level = policy.rules[index].level if index is not None else "None"
        rules.append(RuleVolume(index, level, total,
                                tuple((describe(c.attributes), cv.volume) for c, cv in loud[:top])))
    warnings = []
    if unknown:
        warnings.append(f"{unknown} requests would record a body that was never recorded for "
                        "any similar request: their bodies are counted as 0 bytes")
    if not traffic.classes:
        warnings.append("no events to replay")
    blind = tuple(blind_rules(policy, traffic, detection_rules)) if detection_rules else ()
    return Simulation(tuple(rules), before, after, traffic.days, estimated, unknown,
                      traffic.unreadable, tuple(warnings), blind)


@dataclass(frozen=True)
class LevelChange:
    """Requests of one kind whose audit record changes between two policies."""

    before: str  # level under the first policy
    after: str
    verb: str
    what: str  # resource[/subresource][.group] or the non-resource path
    rule_before: int | None
    rule_after: int | None
    requests: int
    events_before: float
    events_after: float
    examples: tuple[str, ...]  # a few users

    @property
    def kind(self) -> str:
        diff = level_rank(self.after) - level_rank(self.before)
        return "more" if diff > 0 else "less" if diff < 0 else "stages"

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.before, "to": self.after, "verb": self.verb, "what": self.what,
                "rule_from": self.rule_before, "rule_to": self.rule_after,
                "requests": self.requests, "events_from": round(self.events_before),
                "events_to": round(self.events_after), "users": list(self.examples),
                "kind": self.kind}


@dataclass(frozen=True)
class PolicyDiff:
    """How two policies differ on the same traffic."""

    changes: tuple[LevelChange, ...]
    first: Simulation
    second: Simulation
    unchanged_requests: int

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes],
                "unchanged_requests": self.unchanged_requests,
                "first": {**self.first.after.to_dict(),
                          "per_day": self.first.after.per_day(self.first.days).to_dict()},
                "second": {**self.second.after.to_dict(),
                           "per_day": self.second.after.per_day(self.second.days).to_dict()}}


def _what(c: RequestClass) -> str:
    d = describe(c.attributes)
    return str(d["what"])


def diff_policies(first: Policy, second: Policy, traffic: Traffic) -> PolicyDiff:
    """The requests whose level, stages or managed-fields handling differ, grouped by
    (level before → after, verb, resource or path, deciding rules)."""
    sizes = _BodySizes(traffic)
    groups: dict[tuple[Any, ...], list[Any]] = {}
    unchanged = 0
    for c in traffic.classes:
        a, b = first.evaluate(c.attributes), second.evaluate(c.attributes)
        if (a.level, a.omit_stages, a.omit_managed_fields) == \
                (b.level, b.omit_stages, b.omit_managed_fields):
            unchanged += c.requests
            continue
        key = (a.level, b.level, c.attributes.verb, _what(c), a.rule_index, b.rule_index)
        entry = groups.setdefault(key, [0, 0.0, 0.0, {}])
        entry[0] += c.requests
        entry[1] += class_volume(c, a, sizes).volume.events
        entry[2] += class_volume(c, b, sizes).volume.events
        user = c.attributes.user if c.attributes.user is not None else "(unauthenticated)"
        entry[3][user] = entry[3].get(user, 0) + c.requests
    changes = [
        LevelChange(k[0], k[1], k[2], k[3], k[4], k[5], v[0], v[1], v[2],
                    tuple(u for u, _ in sorted(v[3].items(), key=lambda kv: -kv[1])[:3]))
        for k, v in groups.items()]
    changes.sort(key=lambda ch: (-ch.requests, ch.verb, ch.what))
    return PolicyDiff(tuple(changes), simulate_policy(first, traffic),
                      simulate_policy(second, traffic), unchanged)
