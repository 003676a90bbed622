"""Rule conditions: a small YAML language, parsed into a tree and compiled to DuckDB SQL.

A condition is data, so it can be validated, shown and compiled without running anything:

    verb: [create, update]            # a field and a value: equal; a list: any of them
    resource: pods
    containers:                       # some container (every kind, pods and pod templates)
      securityContext.privileged: true
    not:
      namespace: {list: system_namespaces}
    any:                              # at least one of these
      - user: {glob: "system:serviceaccount:*"}
      - source_ip: {public: true}

A mapping means "all of its entries", a list "all of its items". Field values may be a
scalar (equality), a list (any of), or operators: ``eq ne in not_in glob regex contains
startswith endswith exists cidr public gt gte lt lte``; ``{list: NAME}`` stands for a named
list anywhere a value or values are expected. Keywords: ``all any not macro containers
volumes some every``.

Fields are the archive's columns (``verb``, ``user``, ``groups``, ``source_ip``, ``code``,
``decision``, ``stage``, ``command``, ...), ``request_path``, ``uri.param.NAME`` (every value
of a query parameter, URL-decoded), and paths into the event JSON: ``requestObject.spec.x``,
``responseObject.rules``, ``annotations['pod-security.kubernetes.io/enforce-policy']``,
``event.user.extra``. Inside ``containers``, ``volumes``, ``some`` and ``every`` fields are
relative to the element. A field that is missing never matches, and never raises.

The compiler is pure: the same condition always gives the same SQL text (snapshot-tested).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import KubetrailError
from ..events.row import COLUMNS

__all__ = ["COLUMN_FIELDS", "OPERATORS", "POD_PARTS_SQL", "CompileError", "Condition",
           "compile_condition", "compile_possible", "parse_condition", "pod_parts_sql"]

OPERATORS = ("eq", "ne", "in", "not_in", "glob", "regex", "contains", "startswith", "endswith",
             "exists", "cidr", "public", "gt", "gte", "lt", "lte")
_KEYWORDS = ("all", "any", "not", "macro", "containers", "volumes", "some", "every")
_LIST_COLUMNS = {name for name, typ, _ in COLUMNS if str(typ).startswith("list")}
_NUMERIC_COLUMNS = {"code", "latency_ms"}
COLUMN_FIELDS = (*(name for name, _, _ in COLUMNS if name != "event"), "request_path")
_JSON_ROOTS = ("requestObject", "responseObject", "annotations", "event")

# Where the containers of an object are, for pods and every pod template kind.
_POD_SPECS = ("spec", "spec.template.spec", "spec.jobTemplate.spec.template.spec")
_CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")


class CompileError(KubetrailError):
    """A condition that cannot be compiled; the message names the construct and where."""


@dataclass(frozen=True)
class Condition:
    """A parsed condition: a tree of tuples, ready to compile.

    Nodes: ("and", [nodes]) ("or", [nodes]) ("not", node) ("cmp", field, op, value)
    ("quant", kind, source, node) where kind is some|every and source a field path or the
    pseudo sources containers/volumes."""

    node: tuple[Any, ...]
    fields: tuple[str, ...]  # the top-level fields it reads (for evidence)


Resolver = Callable[[str], Any]  # name → list values or macro body


def parse_condition(data: Any, *, lists: Mapping[str, Sequence[Any]] | None = None,
                    macros: Mapping[str, Any] | None = None, where: str = "condition"
                    ) -> Condition:
    """Parse (and check) a condition; lists and macros are expanded here."""
    parser = _Parser(lists or {}, macros or {})
    node = parser.parse(data, where, ())
    return Condition(node, tuple(dict.fromkeys(parser.fields)))


class _Parser:
    def __init__(self, lists: Mapping[str, Sequence[Any]], macros: Mapping[str, Any]) -> None:
        self.lists = lists
        self.macros = macros
        self.fields: list[str] = []

    def fail(self, where: str, message: str) -> CompileError:
        return CompileError(f"{where}: {message}")

    def parse(self, data: Any, where: str, expanding: tuple[str, ...], scoped: bool = False
              ) -> tuple[Any, ...]:
        if isinstance(data, list):
            if not data:
                raise self.fail(where, "an empty list of conditions")
            return ("and", [self.parse(item, f"{where}[{i}]", expanding, scoped)
                            for i, item in enumerate(data)])
        if not isinstance(data, Mapping) or not data:
            raise self.fail(where, f"expected a mapping of fields or keywords, got {data!r}")
        parts = []
        for key, value in data.items():
            at = f"{where}.{key}"
            if not isinstance(key, str):
                raise self.fail(where, f"keys must be text, got {key!r}")
            if key == "all":
                parts.append(self.parse(value, at, expanding, scoped))
            elif key == "any":
                if not isinstance(value, list) or not value:
                    raise self.fail(at, "`any` takes a non-empty list of conditions")
                parts.append(("or", [self.parse(item, f"{at}[{i}]", expanding, scoped)
                                     for i, item in enumerate(value)]))
            elif key == "not":
                parts.append(("not", self.parse(value, at, expanding, scoped)))
            elif key == "macro":
                parts.append(self.macro(value, at, expanding, scoped))
            elif key in ("containers", "volumes"):
                parts.append(("quant", "some", key, self.parse(value, at, expanding, True)))
            elif key in ("some", "every"):
                if not isinstance(value, Mapping) or "path" not in value or "match" not in value:
                    raise self.fail(at, f"`{key}` takes {{path: <array field>, match: "
                                        "<condition on each element>}")
                path = value["path"]
                if not isinstance(path, str):
                    raise self.fail(at, "`path` must be a field path")
                if path not in ("containers", "volumes") or scoped:
                    self.check_field(path, at, scoped)
                parts.append(("quant", key, path,
                              self.parse(value["match"], f"{at}.match", expanding, True)))
            else:
                self.check_field(key, where, scoped)
                parts.append(self.compare(key, value, at))
        return parts[0] if len(parts) == 1 else ("and", parts)

    def macro(self, name: Any, where: str, expanding: tuple[str, ...], scoped: bool
              ) -> tuple[Any, ...]:
        if not isinstance(name, str) or name not in self.macros:
            known = ", ".join(sorted(self.macros)) or "none"
            raise self.fail(where, f"unknown macro {name!r} (known: {known})")
        if name in expanding:
            raise self.fail(where, f"macro {name!r} refers to itself "
                                   f"({' → '.join((*expanding, name))})")
        return self.parse(self.macros[name], f"macro {name}", (*expanding, name), scoped)

    def check_field(self, name: str, where: str, scoped: bool) -> None:
        if scoped:
            _json_path(name, where)  # relative to the element
            return
        if name in COLUMN_FIELDS or name.startswith("uri.param."):
            self.fields.append(name)
            return
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root in _JSON_ROOTS:
            _json_path(name, where)
            self.fields.append(name)
            return
        raise self.fail(where, f"unknown field {name!r}; fields are the archive columns "
                               f"({', '.join(COLUMN_FIELDS[:8])}, ...), uri.param.NAME, or paths "
                               "under requestObject, responseObject, annotations or event")

    def values(self, value: Any, where: str) -> list[Any]:
        if isinstance(value, Mapping) and set(value) == {"list"}:
            name = value["list"]
            if name not in self.lists:
                known = ", ".join(sorted(self.lists)) or "none"
                raise self.fail(where, f"unknown list {name!r} (known: {known})")
            return self.values(list(self.lists[name]), where)
        items = value if isinstance(value, list) else [value]
        out: list[Any] = []
        for item in items:
            if isinstance(item, Mapping) and set(item) == {"list"}:
                out.extend(self.values(item, where))
            elif isinstance(item, str | int | float | bool):
                out.append(item)
            else:
                raise self.fail(where, f"values must be text, numbers or booleans, got {item!r}")
        return out

    def compare(self, field: str, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, Mapping) or set(value) == {"list"}:
            vals = self.values(value, where)
            return ("cmp", field, "in", vals) if vals else ("const", False)
        parts = []
        for op, arg in value.items():
            at = f"{where}.{op}"
            if op not in OPERATORS:
                raise self.fail(where, f"unknown operator {op!r}; operators: {', '.join(OPERATORS)}")
            if op in ("exists", "public"):
                if not isinstance(arg, bool):
                    raise self.fail(at, f"`{op}` takes true or false")
                parts.append(("cmp", field, op, arg))
                continue
            vals = self.values(arg, at)
            if not vals:  # e.g. an allow-list left empty: nothing is in it
                parts.append(("const", op in ("ne", "not_in")))
                continue
            if op == "regex":
                for v in vals:
                    try:
                        re.compile(str(v))
                    except re.error as exc:
                        raise self.fail(at, f"bad regular expression {v!r}: {exc}") from None
            if op == "cidr":
                for v in vals:
                    try:
                        ipaddress.ip_network(str(v), strict=False)
                    except ValueError:
                        raise self.fail(at, f"not an address or network: {v!r}") from None
            if op in ("gt", "gte", "lt", "lte") and (
                    len(vals) != 1 or isinstance(vals[0], bool)
                    or not isinstance(vals[0], int | float)):
                raise self.fail(at, f"`{op}` takes one number")
            parts.append(("cmp", field, op, vals))
        return parts[0] if len(parts) == 1 else ("and", parts)


# -- compiling ---------------------------------------------------------------------------


def _quote(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + text.replace("'", "''") + "'"


_SEGMENT = re.compile(r"\.?([A-Za-z0-9_\-$]+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]")


def _json_path(name: str, where: str = "condition") -> str:
    """`a.b['c.d']` → the JSON path `$.a.b."c.d"`."""
    segments: list[str] = []
    pos = 0
    while pos < len(name):
        m = _SEGMENT.match(name, pos)
        if not m or m.end() == pos:
            raise CompileError(f"{where}: cannot read the field path {name!r} at {name[pos:]!r}")
        seg = next(g for g in m.groups() if g is not None)
        if '"' in seg:
            raise CompileError(f"{where}: a field path may not contain '\"': {name!r}")
        segments.append(seg)
        pos = m.end()
    return "$." + ".".join(f'"{s}"' if not re.fullmatch(r"[A-Za-z0-9_]+", s) else s
                           for s in segments)


def _root_path(name: str) -> str:
    """A top-level JSON field name → (path in the whole event)."""
    if name.startswith("event.") or name.startswith("event["):
        return _json_path(name[len("event"):].lstrip("."))
    return _json_path(name)


class _Compiler:
    def __init__(self, known: frozenset[str] | None = None) -> None:
        self.depth = 0
        self.known = known  # relaxed mode: only these fields are tested, the rest is NULL
        # Under a NOT a missing value (NULL) must count as false before it is negated; outside
        # one, NULL already acts as false in a filter, and a bare comparison lets DuckDB
        # push it into the scan.
        self.negated = 0

    def compile(self, node: tuple[Any, ...], scope: str | None) -> str:
        kind = node[0]
        if self.known is not None and (kind == "quant" or (
                kind == "cmp" and (scope is not None or node[1] not in self.known))):
            return "NULL"  # unknown here: could be either
        if kind == "and":
            return "(" + " AND ".join(self.compile(n, scope) for n in node[1]) + ")"
        if kind == "or":
            return "(" + " OR ".join(self.compile(n, scope) for n in node[1]) + ")"
        if kind == "not":
            self.negated += 1
            inner = self.compile(node[1], scope)
            self.negated -= 1
            return f"(NOT {inner})"
        if kind == "quant":
            return self.quantifier(node, scope)
        if kind == "const":
            return "TRUE" if node[1] else "FALSE"
        if self.negated or self.known is not None:
            return f"COALESCE({self.comparison(node, scope)}, FALSE)"
        return self.comparison(node, scope)

    def quantifier(self, node: tuple[Any, ...], scope: str | None) -> str:
        _, how, source, inner = node
        self.depth += 1
        var = f"x{self.depth}"
        self.negated += how == "every"  # every = no element fails
        body = self.compile(inner, var)
        self.negated -= how == "every"
        self.depth -= 1
        items = self.array(source, scope)
        if how == "every":
            return (f"(len({items}) > 0 AND len(list_filter({items}, lambda {var}: "
                    f"NOT {body})) = 0)")
        return f"(len(list_filter({items}, lambda {var}: {body})) > 0)"

    def array(self, source: str, scope: str | None) -> str:
        """A JSON[] expression for a quantifier's source."""
        if source in ("containers", "volumes") and scope is None:
            return f"COALESCE(kt_{source}, [])"  # gathered once per batch (see POD_PARTS_SQL)
        base = scope if scope else "event"
        path = _json_path(source) if scope else _root_path(source)
        return f"COALESCE(json_extract({base}, '{path}[*]'), [])"

    def values_expr(self, field: str, scope: str | None) -> tuple[str, bool]:
        """(SQL expression, is it a list) for the values of `field`."""
        if scope is not None:
            path = _json_path(field)
            return (f"(CASE WHEN json_type({scope}, '{path}') = 'ARRAY' THEN "
                    f"CAST(json_extract({scope}, '{path}') AS VARCHAR[]) ELSE "
                    f"[json_extract_string({scope}, '{path}')] END)", True)
        if field in COLUMN_FIELDS:
            if field == "request_path":
                return "split_part(request_uri, '?', 1)", False
            return f'"{field}"', field in _LIST_COLUMNS
        if field.startswith("uri.param."):
            param = re.escape(field[len("uri.param."):])
            return (f"list_transform(regexp_extract_all(request_uri, '[?&]{param}=([^&]*)', 1), "
                    f"lambda v: url_decode(replace(v, '+', ' ')))", True)
        path = _root_path(field)
        return (f"(CASE WHEN json_type(event, '{path}') = 'ARRAY' THEN "
                f"CAST(json_extract(event, '{path}') AS VARCHAR[]) ELSE "
                f"[json_extract_string(event, '{path}')] END)", True)

    def comparison(self, node: tuple[Any, ...], scope: str | None) -> str:
        _, field, op, arg = node
        expr, is_list = self.values_expr(field, scope)
        if op == "exists":
            if scope is not None:
                test = f"json_extract({scope}, '{_json_path(field)}') IS NOT NULL"
            elif field in COLUMN_FIELDS or field.startswith("uri.param."):
                test = (f"len(COALESCE({expr}, [])) > 0" if is_list else f"{expr} IS NOT NULL")
            else:
                test = f"json_extract(event, '{_root_path(field)}') IS NOT NULL"
            return test if arg else f"NOT ({test})"
        numeric = field in _NUMERIC_COLUMNS and scope is None
        if field == "source_ips" and scope is None and op in ("cidr", "public"):
            return _source_ips_sql(op, arg)
        if is_list and scope is None and field in _LIST_COLUMNS and op in ("in", "eq"):
            return f"list_has_any({expr}, [{', '.join(_quote(x) for x in arg)}])"
        test = self.test(op, arg, "v" if is_list else expr, numeric)
        if is_list:
            if op in ("ne", "not_in"):  # no element equal to any of the values
                positive = self.test("in", arg, "v", numeric)
                return f"(len(list_filter(COALESCE({expr}, []), lambda v: {positive})) = 0)"
            return f"(len(list_filter(COALESCE({expr}, []), lambda v: {test})) > 0)"
        return test

    def test(self, op: str, arg: Any, v: str, numeric: bool) -> str:
        def lit(x: Any) -> str:
            if numeric and isinstance(x, int | float) and not isinstance(x, bool):
                return str(x)
            return _quote(x)

        if op in ("in", "eq"):
            if numeric:
                nums = [str(int(x)) for x in arg if _is_int(x)]
                return f"({v} IN ({', '.join(nums)}))" if nums else "FALSE"
            return (f"({v} = {lit(arg[0])})" if len(arg) == 1
                    else f"({v} IN ({', '.join(lit(x) for x in arg)}))")
        if op in ("ne", "not_in"):
            return f"(NOT {self.test('in', arg, v, numeric)})"
        text = v if not numeric else f"CAST({v} AS VARCHAR)"
        if op == "glob":
            return "(" + " OR ".join(f"({text} GLOB {_quote(x)})" for x in arg) + ")"
        if op == "regex":
            return "(" + " OR ".join(f"regexp_matches({text}, {_quote(x)})" for x in arg) + ")"
        if op == "contains":
            return "(" + " OR ".join(f"contains({text}, {_quote(x)})" for x in arg) + ")"
        if op == "startswith":
            return "(" + " OR ".join(f"starts_with({text}, {_quote(x)})" for x in arg) + ")"
        if op == "endswith":
            return "(" + " OR ".join(f"ends_with({text}, {_quote(x)})" for x in arg) + ")"
        if op in ("gt", "gte", "lt", "lte"):
            sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            return f"(TRY_CAST({v} AS DOUBLE) {sign} {float(arg[0])!r})"
        if op == "cidr":
            return "(" + " OR ".join(_cidr_sql(str(x), v) for x in arg) + ")"
        if op == "public":
            test = "kt_source_ip_public" if v == '"source_ip"' else f"kt_ip_public({v})"
            return test if arg else f"(NOT {test})"
        raise CompileError(f"operator {op!r} cannot be compiled")


def _is_int(x: Any) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, str) and x.isdigit())


def _source_ips_sql(op: str, arg: Any) -> str:
    """CIDR and public tests on the address chain, over the forms computed per batch."""
    if op == "public":
        return f"list_has_any(kt_source_ips_public, [{'true' if arg else 'false'}])"
    tests = []
    for value in arg:
        net = ipaddress.ip_network(str(value), strict=False)
        if net.version == 4:
            lo, hi = int(net.network_address), int(net.broadcast_address)
            tests.append(f"len(list_filter(kt_source_ips_v4, lambda n: n BETWEEN {lo} AND {hi})) > 0")
        else:
            cond = _cidr_sql(str(value), "h").replace("kt_ip6_hex(h)", "h")
            tests.append(f"len(list_filter(kt_source_ips_v6, lambda h: {cond})) > 0")
    return "(" + " OR ".join(tests) + ")"


def _cidr_sql(value: str, ip: str) -> str:
    # The client address has its forms computed once per batch (Engine adds the columns).
    v4, v6 = (("kt_source_ip_v4", "kt_source_ip_v6") if ip == '"source_ip"'
              else (f"kt_ip4_int({ip})", f"kt_ip6_hex({ip})"))
    net = ipaddress.ip_network(value, strict=False)
    if net.version == 4:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        return f"({v4} BETWEEN {lo} AND {hi})"
    hexdigits = net.network_address.exploded.replace(":", "")
    whole, rem = divmod(net.prefixlen, 4)
    cond = f"starts_with({v6}, '{hexdigits[:whole]}')"
    if rem:
        cond += (f" AND (('0x' || substr({v6}, {whole + 1}, 1))::INTEGER "
                 f">> {4 - rem}) = {int(hexdigits[whole], 16) >> (4 - rem)}")
    return f"({cond})"


def _gather(kinds: Sequence[str]) -> str:
    return "list_concat(" + ", ".join(
        f"COALESCE(json_extract(event, '$.requestObject.{spec}.{kind}[*]'), [])"
        for spec in _POD_SPECS for kind in kinds) + ")"


def pod_parts_sql(only: str | None = None) -> str:
    """The columns `containers` and `volumes` read, gathered once per batch from the request
    bodies of pods and pod templates: only for events that carry a body, and, with `only`,
    for rows where that column is true (the engine: rows some rule reading them could match;
    the rest get NULL, as for an event without a body)."""
    when = "level IN ('Request', 'RequestResponse')" + (f" AND {only}" if only else "")
    return (f"CASE WHEN {when} THEN {_gather(_CONTAINER_KINDS)} END AS kt_containers, "
            f"CASE WHEN {when} THEN {_gather(('volumes',))} END AS kt_volumes")


POD_PARTS_SQL = pod_parts_sql()


def compile_condition(condition: Condition) -> str:
    """The SQL boolean expression for `condition` over a relation with the archive's
    columns (see :data:`MACROS_SQL` for the helper macros it may call)."""
    return _Compiler().compile(condition.node, None)


def compile_possible(condition: Condition, known: frozenset[str]) -> str:
    """A SQL expression that is not FALSE for every row that *could* match: only the
    fields in `known` are tested, every other test is NULL (unknown), so three-valued logic
    keeps what cannot be ruled out. Filter with ``(expr) IS NOT FALSE``."""
    return _Compiler(known).compile(condition.node, None)
