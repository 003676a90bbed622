"""Filters people put on audit events, compiled to one parameterised SQL condition.

The filter is data (a frozen dataclass) and `where()` is a pure function of it, so the CLI,
the HTTP API and tests all build the same SQL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import QueryError
from ..events.timeparse import parse_time

__all__ = ["DENIED_SQL", "EventFilter", "parse_code", "parse_duration", "parse_resource", "parse_when"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GLOB_CHARS = re.compile(r"[*?\[]")
_USER = '"user"'  # a reserved word in SQL, so always quoted

#: A request the authorizer denied (RBAC's forbid, or a 403 from anything else).
DENIED_SQL = "(decision = 'forbid' OR code = 403)"


def parse_duration(value: str) -> timedelta | None:
    """`30s`, `5m`, `24h`, `7d`, `2w` as a timedelta; None when it is not a duration."""
    m = _DURATION.match(value)
    if not m:
        return None
    try:
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    except OverflowError:
        raise QueryError(f"duration {value!r} is too long",
                         hint="use at most a few thousand years, e.g. 3650d") from None


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """`24h`, `7d`, `30m`, `2w` (that long before now) or an RFC 3339 time."""
    ago = parse_duration(value)
    if ago is not None:
        try:
            return (now or datetime.now(UTC)) - ago
        except OverflowError:
            raise QueryError(f"{value!r} ago is before the year 1",
                             hint="use a shorter duration or an RFC 3339 time") from None
    parsed = parse_time(value)
    if parsed is None:
        raise QueryError(f"cannot read time {value!r}",
                         hint="use a duration such as 24h, 7d, 30m, or an RFC 3339 time "
                         "such as 2026-11-01T10:00:00Z")
    return parsed


def parse_resource(value: str) -> tuple[str, str | None, str | None]:
    """`pods` → (pods, None, None); `pods/exec` → subresource; `deployments.apps` → group."""
    resource, _, sub = value.partition("/")
    resource, _, group = resource.partition(".")
    if not resource:
        raise QueryError(f"cannot read resource {value!r}",
                         hint="use e.g. pods, pods/exec, deployments.apps, "
                         "clusterrolebindings.rbac.authorization.k8s.io")
    return resource, (group or None), (sub or None)


def parse_code(value: str) -> tuple[int, int]:
    """`403` → (403, 403); `4xx` → (400, 499); `400-499` → (400, 499)."""
    text = value.strip().lower()
    try:
        if re.fullmatch(r"[1-5]xx", text):
            base = int(text[0]) * 100
            return base, base + 99
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(lo), int(hi)
        code = int(text)
        return code, code
    except ValueError:
        raise QueryError(f"cannot read response code {value!r}",
                         hint="use e.g. 403, 4xx or 400-499") from None


def _glob_or_equal(column: str, value: str, params: list[Any]) -> str:
    params.append(value)
    return f"{column} GLOB ?" if _GLOB_CHARS.search(value) else f"{column} = ?"


def _cidr_condition(value: str, params: list[Any]) -> str:
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise QueryError(f"cannot read source IP or CIDR {value!r}",
                         hint="use an address (203.0.113.9) or a network (10.0.0.0/8)") from None
    if net.version == 4:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        params.extend([lo, hi])
        as_int = ("(TRY_CAST(split_part(ip, '.', 1) AS BIGINT) * 16777216 + "
                  "TRY_CAST(split_part(ip, '.', 2) AS BIGINT) * 65536 + "
                  "TRY_CAST(split_part(ip, '.', 3) AS BIGINT) * 256 + "
                  "TRY_CAST(split_part(ip, '.', 4) AS BIGINT))")
        return (f"len(list_filter(source_ips, lambda ip: {as_int} BETWEEN ? AND ?)) > 0")
    # IPv6: compare the leading hex digits of the expanded address (IP6_HEX_MACRO).
    hexdigits = net.network_address.exploded.replace(":", "")
    whole, rem = divmod(net.prefixlen, 4)
    params.append(hexdigits[:whole])
    cond = "starts_with(kt_ip6_hex(ip), ?)"
    if rem:
        params.append(int(hexdigits[whole], 16) >> (4 - rem))
        cond += (f" AND (('0x' || substr(kt_ip6_hex(ip), {whole + 1}, 1))::INTEGER "
                 f">> {4 - rem}) = ?")
    return f"len(list_filter(source_ips, lambda ip: {cond})) > 0"


def _groups(part: str) -> str:
    return f"(CASE WHEN {part} = '' THEN [] ELSE string_split({part}, ':') END)"


_ADDR = "split_part(ip, '%', 1)"  # without a zone index such as %eth0
_HEAD, _TAIL = f"split_part({_ADDR}, '::', 1)", f"split_part({_ADDR}, '::', 2)"
#: An IPv6 address as its 32 hex digits (`::` expanded, zone dropped); NULL for IPv4.
#: No subquery, so it can be used inside the lambdas that walk `source_ips`.
IP6_HEX_MACRO = (
    f"CREATE OR REPLACE TEMP MACRO kt_ip6_hex(ip) AS CASE WHEN contains(ip, ':') THEN "
    f"array_to_string(list_transform(CASE WHEN contains(ip, '::') THEN "
    f"{_groups(_HEAD)} || list_transform(range(8 - len({_groups(_HEAD)}) - len({_groups(_TAIL)})), "
    f"lambda x: '0') || {_groups(_TAIL)} ELSE string_split({_ADDR}, ':') END, "
    "lambda g: lpad(lower(g), 4, '0')), '') END"
)


@dataclass(frozen=True)
class EventFilter:
    """What to select from the archive. Every field is optional; lists mean "any of".

    >>> EventFilter(users=("alice*",), verbs=("delete",)).where()[0]
    '(("user" GLOB ? OR impersonated_user GLOB ?)) AND (verb = ?)'
    """

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    decision: str | None = None
    source_ips: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    clusters: tuple[str, ...] = ()
    extra: tuple[str, ...] = field(default=(), repr=False)  # trusted SQL from our own code

    def where(self) -> tuple[str, list[Any]]:
        """(SQL condition, parameters); 'TRUE' when nothing is filtered."""
        params: list[Any] = []
        clauses: list[str] = []

        def any_of(parts: list[str]) -> None:
            if parts:
                clauses.append("(" + " OR ".join(parts) + ")")

        any_of([f"({_glob_or_equal(_USER, u, params)} OR "
                f"{_glob_or_equal('impersonated_user', u, params)})" for u in self.users])
        for g in self.groups:
            params.append(g)
        any_of(["list_contains(groups, ?)" for _ in self.groups])
        any_of([_glob_or_equal("verb", v, params) for v in self.verbs])
        res_parts = []
        for r in self.resources:
            resource, group, sub = parse_resource(r)
            cond = [_glob_or_equal("resource", resource, params)]
            if group is not None:
                params.append(group)
                cond.append("api_group = ?")
            if sub is not None:
                cond.append(_glob_or_equal("subresource", sub, params))
            res_parts.append("(" + " AND ".join(cond) + ")")
        any_of(res_parts)
        any_of([_glob_or_equal("namespace", n, params) for n in self.namespaces])
        any_of([_glob_or_equal("name", n, params) for n in self.names])
        code_parts = []
        for c in self.codes:
            lo, hi = parse_code(c)
            params.extend([lo, hi])
            code_parts.append("code BETWEEN ? AND ?")
        any_of(code_parts)
        if self.decision:
            decision = self.decision.lower()
            if decision in ("deny", "denied", "forbidden"):
                decision = "forbid"
            if decision not in ("allow", "forbid"):
                raise QueryError(f"unknown decision {self.decision!r}", hint="use allow or forbid")
            params.append(decision)
            clauses.append("decision = ?")
        any_of([_cidr_condition(ip, params) for ip in self.source_ips])
        ua_parts = []
        for ua in self.user_agents:
            if _GLOB_CHARS.search(ua):
                ua_parts.append(_glob_or_equal("user_agent", ua, params))
            else:
                params.append(ua.lower())
                ua_parts.append("contains(lower(user_agent), ?)")
        any_of(ua_parts)
        if self.since:
            params.append(self.since)
            clauses.append('"time" >= ?')
        if self.until:
            params.append(self.until)
            clauses.append('"time" < ?')
        any_of([_glob_or_equal("cluster", c, params) for c in self.clusters])
        clauses.extend(f"({e})" for e in self.extra)
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    def needs_ip6(self) -> bool:
        return any(":" in ip for ip in self.source_ips)
