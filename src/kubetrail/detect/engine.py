"""Running rules over batches of rows: one SQL query finds every match, Python keeps state.

The same engine serves `kubetrail detect` (files streamed in batches), `ingest --detect`
and `hunt` (the archive in time order): every enabled rule's compiled condition becomes one
branch of a UNION ALL over the batch, so DuckDB scans it once per rule with vectorised
filters; the few matching rows then go through the stateful parts (thresholds, first-seen
terms, sequences, suppression), whose state is saved in the data directory and survives
restarts. A request is alerted once per rule even when several of its stages match.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StoreError
from ..events.row import SCHEMA
from ..query.filters import IP6_HEX_MACRO
from ..store.archive import connection
from .alert import Alert, Suppressor, render_message
from .classes import CLASS_COLUMNS, ClassTests, class_fields_read, classify, decided_by_class, gate_sql
from .condition import POD_PARTS_SQL, Condition, pod_parts_sql
from .rules import Rule, RuleSet

__all__ = ["MACROS_SQL", "Engine", "create_batch_table", "evidence_of", "hunt_batches",
           "with_ip_columns"]

_PRIVATE_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
               "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
_PRIVATE_V6 = ("::", "::1", "fc", "fd", "fe8", "fe9", "fea", "feb", "ff")


def _v4_ranges() -> str:
    parts = []
    for net in _PRIVATE_V4:
        n = ipaddress.ip_network(net)
        parts.append(f"(v BETWEEN {int(n.network_address)} AND {int(n.broadcast_address)})")
    return " OR ".join(parts)


#: Helper macros the compiled conditions call (IPv4 as an integer, IPv6 as hex digits, and
#: whether an address is public: not private, loopback, link-local, CGNAT or multicast).
MACROS_SQL = (
    "CREATE OR REPLACE TEMP MACRO kt_ip4_int(ip) AS CASE WHEN regexp_full_match(ip, "
    r"'\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}') THEN "
    "TRY_CAST(split_part(ip, '.', 1) AS BIGINT) * 16777216 + "
    "TRY_CAST(split_part(ip, '.', 2) AS BIGINT) * 65536 + "
    "TRY_CAST(split_part(ip, '.', 3) AS BIGINT) * 256 + "
    "TRY_CAST(split_part(ip, '.', 4) AS BIGINT) END",
    IP6_HEX_MACRO,
    f"CREATE OR REPLACE TEMP MACRO kt_ip4_private(v) AS ({_v4_ranges()})",
    "CREATE OR REPLACE TEMP MACRO kt_ip_public(ip) AS CASE "
    "WHEN ip IS NULL OR ip = '' THEN NULL "
    "WHEN kt_ip4_int(ip) IS NOT NULL THEN NOT kt_ip4_private(kt_ip4_int(ip)) "
    "WHEN contains(ip, ':') THEN NOT (kt_ip6_hex(ip) IN "
    "('00000000000000000000000000000000', '00000000000000000000000000000001') "
    + "".join(f"OR starts_with(kt_ip6_hex(ip), '{p}') " for p in _PRIVATE_V6[2:])
    + ") ELSE NULL END",
)

_ROW_FIELDS = ("time", "cluster", "audit_id", "stage", "verb", "user", "groups", "resource",
               "subresource", "api_group", "namespace", "name", "source_ips", "source_ip",
               "user_agent", "code", "decision", "reason", "command", "container",
               "impersonated_user", "request_uri", "level", "sa_namespace", "sa_name")


_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    *_PRIVATE_V4, "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))


def _ip_forms(ip: str | None) -> tuple[bool | None, int | None, str | None]:
    """(public, IPv4 as an integer, IPv6 as 32 hex digits) of one address."""
    if not ip:
        return None, None, None
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None, None, None
    public = not any(addr in net for net in _PRIVATE_NETS if net.version == addr.version)
    if addr.version == 4:
        return public, int(addr), None
    return public, None, addr.exploded.replace(":", "")


def with_ip_columns(rows: pa.Table) -> pa.Table:
    """`rows` plus each client address classified once per distinct value (public, IPv4 as
    an integer, IPv6 as hex digits), for `source_ip` and every address of `source_ips`:
    rules test them on every row, Python's ipaddress does it once per address."""
    single = rows.column("source_ip").combine_chunks()
    chain = rows.column("source_ips").combine_chunks()
    flat = pc.list_flatten(chain)
    distinct = pc.unique(pa.concat_arrays([single.cast(pa.string()), flat.cast(pa.string())]))
    forms = [_ip_forms(ip) for ip in distinct.to_pylist()]
    public = pa.array([f[0] for f in forms], pa.bool_())
    v4 = pa.array([f[1] for f in forms], pa.int64())
    v6 = pa.array([f[2] for f in forms], pa.string())
    at = pc.index_in(single, value_set=distinct)
    flat_at = pc.index_in(flat, value_set=distinct)
    offsets = chain.offsets if len(chain) else pa.array([0], pa.int32())
    mask = chain.is_null()

    def listed(values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, values.take(flat_at), mask=mask)

    return (rows.append_column("kt_source_ip_public", public.take(at))
            .append_column("kt_source_ip_v4", v4.take(at))
            .append_column("kt_source_ip_v6", v6.take(at))
            .append_column("kt_source_ips_public", listed(public))
            .append_column("kt_source_ips_v4", listed(v4))
            .append_column("kt_source_ips_v6", listed(v6)))


def _batch_table(rows: pa.Table) -> pa.Table:
    """What the rules run over: the archive columns, the client address's forms, a row id."""
    return with_ip_columns(rows).append_column("rid", pa.array(range(rows.num_rows), pa.int64()))


def create_batch_table(con: duckdb.DuckDBPyConnection, gates: int = 0) -> None:
    """The (empty) table `batch` that compiled rules read: the archive columns, the client
    address's forms, the pods' containers and volumes, a row id, and `gates` flags saying
    which rows each rule could match (plus `kt_pods`: could a rule reading pods match?)."""
    con.register("kt_empty", _batch_table(SCHEMA.empty_table()))
    flags = "".join(f", FALSE AS kt_g{j}" for j in range(gates)) + (", FALSE AS kt_pods"
                                                                    if gates else "")
    con.execute(f"CREATE TEMP TABLE batch AS SELECT *, {POD_PARTS_SQL}{flags} FROM kt_empty")
    con.unregister("kt_empty")


def _json_get(doc: Any, path: str) -> Any:
    """Value at a dotted/bracketed path of a decoded event (None when missing)."""
    from .condition import _json_path

    node = doc
    for seg in _json_path(path)[2:].split(".") if path else []:
        seg = seg.strip('"')
        if isinstance(node, Mapping):
            node = node.get(seg)
        else:
            return None
    return node


def evidence_of(rule: Rule, row: Mapping[str, Any], doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of the fields a rule's condition reads, from one matching row."""
    out: dict[str, Any] = {}
    fields = list(rule.condition.fields) if rule.condition else []
    if rule.sequence:
        fields += [f for step in rule.sequence.steps for f in step.fields]
    for f in dict.fromkeys(fields):
        if f == "request_path":
            out[f] = (row.get("request_uri") or "").partition("?")[0]
        elif f.startswith("uri.param."):
            name = f[len("uri.param."):]
            query = (row.get("request_uri") or "").partition("?")[2]
            out[f] = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == name]
        elif f in row:
            value = row[f]
            out[f] = value.isoformat() if isinstance(value, datetime) else value
        elif doc is not None:
            root = f[len("event."):] if f.startswith("event.") else f
            out[f] = _json_get(doc, root)
    return out


class _StateStore:
    """Thresholds, first-seen terms, sequences: in memory, saved as JSON in the data dir."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"threshold": {}, "new_term": {}, "sequence": {}}
        if path is not None and path.exists():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot read the detection state {path}: {exc}",
                                 hint="delete the file to start the baselines afresh") from None

    def rule(self, kind: str, rule_id: str) -> dict[str, Any]:
        return self.data.setdefault(kind, {}).setdefault(rule_id, {})

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.data, separators=(",", ":")), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def _pairs(by_class: np.ndarray, of_row: np.ndarray) -> np.ndarray:
    """(row, branch) for every row whose class has the branch set in `by_class`."""
    rows = np.flatnonzero(by_class.any(axis=1)[of_row])
    if not len(rows):
        return np.zeros((0, 2), np.int64)
    at, branch = np.nonzero(by_class[of_row[rows]])
    return np.column_stack([rows[at], branch]).astype(np.int64)


class _Picked:
    """The matched rows of a batch; a column becomes Python values only when first read
    (most matches only feed a counter keyed by two or three fields)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.names = table.column_names
        self._values: dict[str, list[Any]] = {}

    def column(self, name: str) -> list[Any]:
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = self.table.column(name).to_pylist()
        return values


class _Row(Mapping[str, Any]):
    """One matched row, read through its batch's columns."""

    __slots__ = ("_at", "_picked")

    def __init__(self, picked: _Picked, at: int) -> None:
        self._picked = picked
        self._at = at

    def __getitem__(self, name: str) -> Any:
        if name not in self._picked.names:
            raise KeyError(name)
        return self._picked.column(name)[self._at]

    def get(self, name: str, default: Any = None) -> Any:
        return self._picked.column(name)[self._at] if name in self._picked.names else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._picked.names)

    def __len__(self) -> int:
        return len(self._picked.names)


def _key(row: Mapping[str, Any], fields: Sequence[str]) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v := row.get(f), list) else v for f in fields)


@functools.lru_cache(maxsize=65_536)  # the same few keys recur on every batch
def _key_text(key: tuple[Any, ...]) -> str:
    return json.dumps(key, default=str)


@dataclass(frozen=True)
class _Branch:
    """One rule, or one step of a sequence rule, as the engine runs it."""

    rule: int  # index into Engine.rules
    step: int | None
    sql: str  # the whole test of one row
    gate: str  # the test of a class: exact when `decided`, else true for what could match
    decided: bool  # does the class test decide every row of the class?
    reads: tuple[str, ...]  # the class fields the class test reads


def _branch(rule: int, step: int | None, sql: str, stages: tuple[str, ...],
            conditions: list[Condition | None], exceptions: Condition | None) -> _Branch:
    """A branch is decided by class when everything it reads is a class field; otherwise its
    class test is the relaxed form of its conditions (exceptions are left to the row test)."""
    if decided_by_class([*conditions, exceptions]):
        return _Branch(rule, step, sql, sql, True, class_fields_read([*conditions, exceptions]))
    return _Branch(rule, step, sql, gate_sql(stages, conditions), False,
                   class_fields_read(conditions))


class Engine:
    """A rule set, ready to run over batches of archive rows (SCHEMA, incl. `event`)."""

    def __init__(self, ruleset: RuleSet, *, state_path: Path | None = None,
                 rule_ids: Iterable[str] | None = None) -> None:
        wanted = set(rule_ids) if rule_ids is not None else None
        self.rules = tuple(r for r in ruleset.rules
                           if (r.enabled if wanted is None else r.id in wanted))
        branches: list[_Branch] = []
        for i, rule in enumerate(self.rules):
            if rule.sequence is not None:
                for step, (cond, sql) in enumerate(zip(rule.sequence.steps, rule.sequence.step_sql,
                                                       strict=True)):
                    # rule.sql holds the stages, exceptions and a condition shared by the steps
                    whole = f"{rule.sql} AND {sql}"
                    branches.append(_branch(i, step, whole, rule.stages,
                                            [rule.condition, cond], rule.exceptions))
            else:
                branches.append(_branch(i, None, rule.sql, rule.stages, [rule.condition],
                                        rule.exceptions))
        self._branches = tuple(branches)
        self._sql = " UNION ALL ".join(f"SELECT {b} AS b, rid FROM batch WHERE {br.sql}"
                                       for b, br in enumerate(branches)) or None
        self._row_level = [b for b, br in enumerate(branches) if not br.decided]
        self._decided = np.array([br.decided for br in branches], bool)
        self._reads_pods = np.array([any(f"kt_{p}" in branches[b].sql for p in ("containers", "volumes"))
                                     for b in self._row_level], bool)
        self._prepared: set[int] = set()
        self._con = connection(ordered=True)
        self._con.execute("SET threads = 1")  # small tables: the threads would only wait
        for macro in MACROS_SQL:
            self._con.execute(macro)
        if branches:
            create_batch_table(self._con, gates=len(self._row_level))
            self._class_tests = ClassTests(self._con, [(br.gate, br.reads) for br in branches],
                                           with_ip_columns(SCHEMA.empty_table()))
        self._state = _StateStore(state_path)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._suppressor = Suppressor()
        self._started = False
        self._events: pa.ChunkedArray | None = None  # the event texts of the current batch
        self.matched = 0

    @property
    def sql(self) -> str | None:
        """The whole query a batch goes through (for `rules show --sql` and debugging)."""
        return self._sql

    def close(self) -> None:
        self._state.save()
        self._con.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, rows: pa.Table) -> None:
        if not self._started and rows.num_rows:  # first-seen baselines start with the first
            self.note_time(pc.min(rows.column("time")).as_py())  # event seen, not matched
            self._started = True

    def sieve(self, rows: pa.Table) -> pa.Table:
        """`rows` less those that cannot match any rule, as far as already known: rows of a
        class seen before whose every test failed. Lets a caller gather many events into one
        run of the rules (each run has a fixed cost) while holding only the few that matter;
        what it returns goes to :meth:`process` later, in time order."""
        if not self._branches or not rows.num_rows:
            return rows.slice(0, 0)
        self._start(rows)
        batch = with_ip_columns(rows.select(SCHEMA.names).cast(SCHEMA))
        of_row, first = classify(batch)
        keep = self._class_tests.may_match(batch.select(list(CLASS_COLUMNS)).take(first))
        return rows.filter(pa.array(keep[of_row]))

    def process(self, rows: pa.Table) -> list[Alert]:
        """Alerts for a batch of rows (in time order within the batch)."""
        if not self._branches or not rows.num_rows:
            return []
        self._start(rows)
        batch = with_ip_columns(rows.select(SCHEMA.names).cast(SCHEMA))
        try:
            hits = self._matches(batch)
        except duckdb.Error as exc:
            raise StoreError(f"a detection rule could not run: {exc}",
                             hint="`kubetrail rules validate` names the rule") from None
        if not len(hits):
            return []
        self.matched += len(hits)
        wanted = np.unique(hits[:, 0])
        names = [f for f in _ROW_FIELDS if f in rows.column_names]
        picked = _Picked(rows.select(names).take(pa.array(wanted, pa.int64())))
        at = {rid: i for i, rid in enumerate(wanted.tolist())}
        self._events = rows.column("event")  # read only for the few rows that alert
        alerts: list[Alert] = []
        try:
            for rid, b in hits.tolist():
                branch = self._branches[b]
                alerts.extend(self._handle(self.rules[branch.rule], branch.step,
                                           _Row(picked, at[rid]), rid))
        finally:
            self._events = None  # not kept alive past the batch
        return alerts

    def _matches(self, batch: pa.Table) -> np.ndarray:
        """(row, branch) of every match in the batch, ordered by row then branch."""
        of_row, first = classify(batch)
        verdicts = self._class_tests.verdicts(batch.select(list(CLASS_COLUMNS)).take(first))
        # Classes x branches: matched (rules decided by class) or could match (the rest).
        found = [_pairs(verdicts & self._decided, of_row)]
        if self._row_level:
            could = verdicts[:, self._row_level]
            candidates = np.flatnonzero(could.any(axis=1)[of_row])
            if len(candidates):
                found.append(self._row_matches(batch, candidates, could[of_row[candidates]]))
        hits = np.concatenate(found)
        return hits[np.lexsort((hits[:, 1], hits[:, 0]))] if len(hits) else hits

    def _row_matches(self, batch: pa.Table, candidates: np.ndarray, could: np.ndarray
                     ) -> np.ndarray:
        """Each rule that is not decided by class, over only the rows it could match."""
        picked = batch.take(pa.array(candidates, pa.int64()))
        columns = {name: picked.column(name) for name in picked.column_names}
        columns["rid"] = pa.array(candidates, pa.int64())
        columns.update({f"kt_g{j}": pa.array(could[:, j]) for j in range(could.shape[1])})
        columns["kt_pods"] = pa.array(could[:, self._reads_pods].any(axis=1))
        self._refill("batch", pa.table(columns), f"*, {pod_parts_sql('kt_pods')}")
        found = []
        for j in np.flatnonzero(could.any(axis=0)).tolist():
            b = self._row_level[j]
            if b not in self._prepared:
                self._con.execute(f"PREPARE kt_branch_{b} AS SELECT rid FROM batch "
                                  f"WHERE kt_g{j} AND {self._branches[b].sql}")
                self._prepared.add(b)
            rids = self._con.execute(f"EXECUTE kt_branch_{b}").fetchnumpy()["rid"]
            if len(rids):
                found.append(np.column_stack([np.asarray(rids, np.int64),
                                              np.full(len(rids), b, np.int64)]))
        return np.concatenate(found) if found else np.zeros((0, 2), np.int64)

    def _refill(self, table: str, rows: pa.Table, select: str) -> None:
        self._con.register("kt_incoming", rows)
        try:
            self._con.execute(f"DELETE FROM {table}")
            self._con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM kt_incoming")
        finally:
            self._con.unregister("kt_incoming")

    def flush(self) -> list[Alert]:
        """Alerts held back by suppression (call at the end of a run)."""
        return self._suppressor.flush()

    # -- per match ---------------------------------------------------------------------

    def _first_time(self, rule: Rule, step: int | None, row: Mapping[str, Any]) -> bool:
        """Is this the first match of this rule (and step) for this request?"""
        key = (f"{rule.id}#{step}" if step is not None else rule.id,
               str(row.get("cluster")), str(row.get("audit_id")))
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)
        return True

    def _handle(self, rule: Rule, step: int | None, row: Mapping[str, Any], rid: int
                ) -> list[Alert]:
        if not self._first_time(rule, step, row):
            return []
        t: datetime = row["time"]
        if rule.sequence is not None:
            done = self._sequence(rule, step or 0, row, t)
            if done is None:
                return []
            return self._emit(rule, row, rid, group=dict(zip(rule.sequence.by, done[0], strict=True)),
                              count=len(rule.sequence.steps), window=(done[1], t))
        if rule.state is None:
            return self._emit(rule, row, rid)
        if rule.state.kind == "threshold":
            fired = self._threshold(rule, row, t)
            if fired is None:
                return []
            key, count, start = fired
            return self._emit(rule, row, rid, group=dict(zip(rule.state.by, key, strict=True)),
                              count=count, window=(start, t))
        key = _key(row, rule.state.by)
        if self._new_term(rule, key, t):
            return self._emit(rule, row, rid, group=dict(zip(rule.state.by, key, strict=True)))
        return []

    def _threshold(self, rule: Rule, row: Mapping[str, Any], t: datetime
                   ) -> tuple[tuple[Any, ...], int, datetime] | None:
        state = rule.state
        assert state is not None
        key = _key(row, state.by)
        store = self._state.rule("threshold", rule.id)
        slot = store.setdefault(_key_text(key), [])
        now = t.timestamp()
        horizon = now - state.window.total_seconds()
        kept = deque(e for e in slot if e[0] >= horizon)
        value = None
        if state.distinct:
            raw = row.get(state.distinct)
            value = json.dumps(raw, default=str) if raw is not None else None
            if value is None:
                return None
        kept.append([now, value])
        count = len({e[1] for e in kept}) if state.distinct else len(kept)
        if count >= state.count:
            store.pop(_key_text(key), None)
            return key, count, datetime.fromtimestamp(kept[0][0], UTC)
        store[_key_text(key)] = list(kept)
        return None

    def _new_term(self, rule: Rule, key: tuple[Any, ...], t: datetime) -> bool:
        state = rule.state
        assert state is not None
        store = self._state.rule("new_term", rule.id)
        now = t.timestamp()
        start = store.setdefault("start", now)
        terms = store.setdefault("terms", {})
        text = _key_text(key)
        last = terms.get(text)
        terms[text] = now
        baseline = state.window.total_seconds()
        is_new = last is None or now - last > baseline
        return is_new and now - start >= baseline

    def note_time(self, t: datetime) -> None:
        """Start the baselines of first-seen rules at `t` (process() does it with the first
        batch it sees, not the first match, so that learning covers all traffic)."""
        now = t.timestamp()
        for rule in self.rules:
            if rule.state is not None and rule.state.kind == "new_term":
                self._state.rule("new_term", rule.id).setdefault("start", now)

    def _sequence(self, rule: Rule, step: int, row: Mapping[str, Any], t: datetime
                  ) -> tuple[tuple[Any, ...], datetime] | None:
        seq = rule.sequence
        assert seq is not None
        key = _key(row, seq.by)
        store = self._state.rule("sequence", rule.id)
        text = _key_text(key)
        now = t.timestamp()
        progress = store.get(text)
        if progress is not None and now - progress[1] > seq.within.total_seconds():
            progress = None
        if progress is not None and progress[0] == step:
            if step + 1 == len(seq.steps):
                store.pop(text, None)
                return key, datetime.fromtimestamp(progress[1], UTC)
            store[text] = [step + 1, progress[1]]
        elif step == 0:
            store[text] = [1, now]
        return None

    def _emit(self, rule: Rule, row: Mapping[str, Any], rid: int, *,
              group: dict[str, Any] | None = None, count: int | None = None,
              window: tuple[datetime, datetime] | None = None) -> list[Alert]:
        values = dict(row)
        text = self._events[rid].as_py() if self._events is not None else None

        def build() -> Alert:
            return _alert(rule, values, text, group, count, window)

        if rule.suppress is None:
            return [build()]
        window_len, by = rule.suppress
        # Most matches of a suppressed rule are only counted: built only if they are shown.
        return self._suppressor.offer_lazy(rule.id, values["time"], window_len,
                                           _key(values, by), build)


def _alert(rule: Rule, row: dict[str, Any], text: str | None, group: dict[str, Any] | None,
           count: int | None, window: tuple[datetime, datetime] | None) -> Alert:
    doc = None
    if text:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
    evidence = evidence_of(rule, row, doc)
    values = dict(row)  # the message's fields
    values.update({k.replace(".", "_"): v for k, v in evidence.items()})
    values["command_line"] = " ".join(row.get("command") or [])
    if count is not None:
        values["count"] = count
    if group:
        values.update({f"group_{k}": v for k, v in group.items()})
    return Alert(
        rule=rule.id, title=rule.title, severity=rule.severity, behaviours=rule.behaviours,
        tags=rule.tags, time=row["time"], cluster=row.get("cluster") or "",
        audit_id=row.get("audit_id") or "", user=row.get("user"), verb=row.get("verb"),
        resource=row.get("resource"), subresource=row.get("subresource"),
        namespace=row.get("namespace"), name=row.get("name"),
        source_ips=tuple(row.get("source_ips") or ()), user_agent=row.get("user_agent"),
        message=render_message(rule.output, values, rule.title), evidence=evidence,
        group=group, count=count, window=window, stage=row.get("stage"),
        code=row.get("code"), decision=row.get("decision"))


def hunt_batches(con: duckdb.DuckDBPyConnection, where: str, params: list[Any],
                 batch: int = 100_000) -> Iterable[pa.Table]:
    """Archive rows in time order, in batches (for retro-hunting)."""
    relation = con.sql(f"SELECT * FROM events WHERE {where} ORDER BY time, audit_id, stage",
                       params=params)
    for record_batch in relation.to_arrow_reader(batch):
        yield pa.Table.from_batches([record_batch])
