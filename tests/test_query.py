"""The answers, through the library: filters, who, history, timeline, top, stats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import (
    UA_ALICE,
    UA_BOB,
    Event,
    Trail,
    audit_trail,
    bulk_events,
    ingest_into,
    render,
)
from kubetrail.errors import QueryError
from kubetrail.events.row import SCHEMA
from kubetrail.query.answers import (
    DEFAULT_FIELDS,
    TOP_DIMENSIONS,
    archive_stats,
    object_history,
    query_events,
    run_sql,
    timeline,
    top,
    who,
)
from kubetrail.query.filters import EventFilter, parse_code, parse_resource, parse_when
from kubetrail.store.archive import Archive

RANK = {"ResponseComplete": 4, "Panic": 4, "ResponseStarted": 2, "RequestReceived": 1}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def best_rows(events: list[Event]) -> list[Event]:
    """One event per request, its most complete stage: what the answers count."""
    best: dict[str, Event] = {}
    for e in events:
        cur = best.get(e["auditID"])
        if cur is None or (RANK[e["stage"]], e["stageTimestamp"]) > \
                (RANK[cur["stage"]], cur["stageTimestamp"]):
            best[e["auditID"]] = e
    return list(best.values())


@pytest.fixture(scope="module")
def con(trail_archive: tuple[Archive, Trail]) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = trail_archive[0].connect()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def t(trail_archive: tuple[Archive, Trail]) -> Trail:
    return trail_archive[1]


def names(con: Any, t: Trail, **filters: Any) -> set[str]:
    table = query_events(con, EventFilter(**filters), fields=("audit_id",), limit=None)
    ids = table.column("audit_id").to_pylist()
    assert len(ids) == len(set(ids)), "one row per request"
    return t.names(ids)


ALL = {"LEASE", "GET_PODS", "CREATE", "UPDATE", "PATCH", "DELETE", "EXEC", "FORBID",
       "AUTHN_401", "WATCH", "IMPERSONATE", "SA_LIST", "TRUNCATED", "CM_UPDATE"}
BOB = {"UPDATE", "DELETE", "EXEC", "CM_UPDATE"}
ALICE = {"GET_PODS", "CREATE", "PATCH"}
DEPLOY = {"CREATE", "UPDATE", "PATCH", "DELETE"}

FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({}, ALL),
    ({"users": ("alice@example.com",)}, ALICE),
    ({"users": ("alice*",)}, ALICE),
    ({"users": ("*@example.com",)}, ALICE | BOB | {"FORBID", "IMPERSONATE"}),
    ({"users": ("bob@example.com", "mallory@example.com")}, BOB | {"FORBID"}),
    ({"users": ("system:serviceaccount:shop:deployer",)}, {"IMPERSONATE"}),
    ({"users": ("system:serviceaccount:*",)}, {"IMPERSONATE", "SA_LIST"}),
    ({"users": ("system:node:?ode-1",)}, {"LEASE", "TRUNCATED"}),
    ({"groups": ("ops",)}, BOB),
    ({"groups": ("system:serviceaccounts:kube-system",)}, {"SA_LIST"}),
    ({"groups": ("ops", "contractors")}, BOB | {"FORBID"}),
    ({"verbs": ("delete",)}, {"DELETE"}),
    ({"verbs": ("update", "patch")}, {"LEASE", "UPDATE", "PATCH", "TRUNCATED", "CM_UPDATE"}),
    ({"resources": ("pods/exec",)}, {"EXEC"}),
    ({"resources": ("pods/status",)}, {"TRUNCATED"}),
    ({"resources": ("deployments.apps",)}, DEPLOY),
    ({"resources": ("deployments",)}, DEPLOY),
    ({"resources": ("deployments.extensions",)}, set()),
    ({"resources": ("leases.coordination.k8s.io",)}, {"LEASE"}),
    ({"resources": ("secrets", "configmaps")}, {"FORBID", "AUTHN_401", "IMPERSONATE",
                                                "CM_UPDATE"}),
    ({"namespaces": ("kube-system",)}, {"FORBID", "AUTHN_401"}),
    ({"namespaces": ("kube-*",)}, {"FORBID", "AUTHN_401", "LEASE"}),
    ({"names": ("web",)}, DEPLOY),
    ({"names": ("web-*",)}, {"EXEC", "TRUNCATED"}),
    ({"resources": ("configmaps",), "names": ("app-config",), "namespaces": ("shop",)},
     {"IMPERSONATE", "CM_UPDATE"}),
    ({"codes": ("403",)}, {"FORBID"}),
    ({"codes": ("4xx",)}, {"FORBID", "AUTHN_401"}),
    ({"codes": ("400-499",)}, {"FORBID", "AUTHN_401"}),
    ({"codes": ("401",)}, {"AUTHN_401"}),
    ({"codes": ("101",)}, {"EXEC"}),
    ({"codes": ("201", "403")}, {"CREATE", "FORBID"}),
    ({"codes": ("2xx",)}, ALL - {"FORBID", "AUTHN_401", "EXEC"}),
    ({"decision": "forbid"}, {"FORBID"}),
    ({"decision": "allow"}, ALL - {"FORBID", "AUTHN_401"}),
    ({"decision": "deny"}, {"FORBID"}),
    ({"source_ips": ("203.0.113.0/24",)}, {"GET_PODS", "CREATE", "PATCH", "IMPERSONATE",
                                           "TRUNCATED"}),
    ({"source_ips": ("203.0.113.9",)}, ALICE),
    ({"source_ips": ("10.0.1.11",)}, {"LEASE", "TRUNCATED"}),  # any address of the chain
    ({"source_ips": ("10.0.0.0/8",)}, {"LEASE", "TRUNCATED", "WATCH", "SA_LIST"}),
    ({"source_ips": ("2001:db8::/32",)}, {"UPDATE"}),
    ({"source_ips": ("2001:db8::7",)}, {"UPDATE"}),
    ({"source_ips": ("2001:db9::/32",)}, set()),
    ({"source_ips": ("198.51.100.0/24", "2001:db8::/32")}, {"FORBID", "AUTHN_401", "UPDATE"}),
    ({"user_agents": ("kubectl",)}, ALICE | BOB | {"IMPERSONATE"}),
    ({"user_agents": ("KUBECTL/V1.30",)}, BOB),
    ({"user_agents": ("curl*",)}, {"FORBID"}),
    ({"user_agents": ("scheduler",)}, {"WATCH"}),
    ({"since": when("2026-11-01T09:30:00Z"), "until": when("2026-11-01T10:00:00Z")},
     {"PATCH", "EXEC", "FORBID", "AUTHN_401", "WATCH"}),
    ({"since": parse_when("2026-11-01T11:30:00+02:00"),
      "until": parse_when("2026-11-01T10:00:00Z")},
     {"PATCH", "EXEC", "FORBID", "AUTHN_401", "WATCH"}),
    ({"since": parse_when("2026-11-02T00:00:00Z")}, {"DELETE"}),
    ({"until": parse_when("2026-11-01T09:05:00Z")}, {"LEASE"}),
    ({"clusters": ("prod",)}, ALL),
    ({"clusters": ("pr*",)}, ALL),
    ({"clusters": ("staging",)}, set()),
    ({"users": ("bob@example.com",), "verbs": ("update",), "resources": ("deployments.apps",)},
     {"UPDATE"}),
]


@pytest.mark.parametrize(("filters", "expected"), FILTER_CASES,
                         ids=[",".join(f"{k}={v}" for k, v in f.items()) or "none"
                              for f, _ in FILTER_CASES])
def test_filters(con: Any, t: Trail, filters: dict[str, Any], expected: set[str]) -> None:
    assert names(con, t, **filters) == expected


def test_resource_without_subresource_is_the_resource(con: Any, t: Trail) -> None:
    got = names(con, t, resources=("pods",))
    assert {"GET_PODS", "WATCH"} <= got <= {"GET_PODS", "WATCH", "EXEC", "TRUNCATED"}


def test_one_row_per_request_or_every_stage(con: Any, t: Trail) -> None:
    flt = EventFilter(users=("alice@example.com", "system:kube-scheduler"))
    one = query_events(con, flt, fields=("audit_id", "stage"), limit=None).to_pylist()
    every = query_events(con, flt, fields=("audit_id", "stage"), limit=None,
                         all_stages=True).to_pylist()
    assert len(one) == 4 and all(r["stage"] == "ResponseComplete" for r in one)
    expected = [(e["auditID"], e["stage"]) for e in t.events
                if e["user"].get("username") in ("alice@example.com", "system:kube-scheduler")]
    assert sorted((r["audit_id"], r["stage"]) for r in every) == sorted(expected)
    assert len(every) == 2 + 2 + 1 + 3  # get pods, create, patch; the watch
    (authn,) = query_events(con, EventFilter(codes=("401",)), fields=("stage",)).to_pylist()
    assert authn["stage"] == "ResponseStarted"


def test_default_fields_order_and_limit(con: Any, t: Trail) -> None:
    table = query_events(con, EventFilter(), limit=3)
    assert tuple(table.column_names) == DEFAULT_FIELDS
    got = table.to_pylist()
    times = [r["time"] for r in got]
    assert times == sorted(times) and len(got) == 3
    assert got[0]["user"] == "system:node:node-1"
    newest = query_events(con, EventFilter(), fields=("audit_id",), limit=1,
                          newest_first=True).to_pylist()
    assert t.names([newest[0]["audit_id"]]) == {"DELETE"}
    assert query_events(con, EventFilter(), limit=None).num_rows == 14


def test_chosen_fields(con: Any, t: Trail) -> None:
    table = query_events(con, EventFilter(resources=("pods/exec",)),
                         fields=("user", "command", "container", "source_ip", "latency_ms"))
    assert table.column_names == ["user", "command", "container", "source_ip", "latency_ms"]
    assert table.to_pylist() == [{"user": "bob@example.com", "command": ["/bin/sh", "-c", "id"],
                                  "container": "app", "source_ip": "192.0.2.44",
                                  "latency_ms": pytest.approx(42_000.0)}]
    every = query_events(con, EventFilter(), fields=tuple(SCHEMA.names), limit=1)
    assert every.column_names == SCHEMA.names


def test_unknown_field_is_a_query_error(con: Any) -> None:
    with pytest.raises(QueryError, match="nosuch"):
        query_events(con, EventFilter(), fields=("user", "nosuch"))


def test_sql_over_the_events_view(con: Any) -> None:
    table = run_sql(con, "SELECT verb, count(*) AS n FROM events GROUP BY verb ORDER BY verb")
    counts = dict(zip(table.column("verb").to_pylist(), table.column("n").to_pylist(),
                      strict=True))
    assert counts["list"] == 6 and counts["watch"] == 3 and sum(counts.values()) == 21
    one = run_sql(con, "SELECT \"user\" FROM events WHERE verb = 'delete'").to_pylist()
    assert one == [{"user": "bob@example.com"}]


@pytest.mark.parametrize("sql", ["SELEKT 1", "SELECT nosuch FROM events",
                                 "SELECT * FROM no_such_table", ""])
def test_invalid_sql_is_a_query_error(con: Any, sql: str) -> None:
    with pytest.raises(QueryError) as info:
        run_sql(con, sql)
    assert info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(("value", "expected"), [
    ("403", (403, 403)), ("4xx", (400, 499)), ("5XX", (500, 599)), ("400-499", (400, 499)),
])
def test_parse_code(value: str, expected: tuple[int, int]) -> None:
    assert parse_code(value) == expected


@pytest.mark.parametrize("value", ["forbidden", "4x", "", "x-y", "6xx"])
def test_bad_code_is_a_query_error(value: str) -> None:
    with pytest.raises(QueryError):
        parse_code(value)


def test_parse_resource() -> None:
    assert parse_resource("pods") == ("pods", None, None)
    assert parse_resource("pods/exec") == ("pods", None, "exec")
    assert parse_resource("deployments.apps") == ("deployments", "apps", None)
    assert parse_resource("clusterrolebindings.rbac.authorization.k8s.io") == \
        ("clusterrolebindings", "rbac.authorization.k8s.io", None)
    assert parse_resource("deployments.apps/scale") == ("deployments", "apps", "scale")


@pytest.mark.parametrize("value", ["yesterday", "24", "h", "2026-13-01", "7 days"])
def test_bad_time_is_a_query_error(value: str) -> None:
    with pytest.raises(QueryError):
        parse_when(value)


def test_bad_decision_and_cidr_are_query_errors(con: Any) -> None:
    with pytest.raises(QueryError):
        query_events(con, EventFilter(decision="maybe"))
    with pytest.raises(QueryError):
        query_events(con, EventFilter(source_ips=("10.0.0.300/8",)))


# -- durations relative to now ---------------------------------------------------------


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, dict[str, str]]:
    base = tmp_path_factory.mktemp("recent")
    now = datetime.now(UTC)
    ages = {"2h": timedelta(hours=2), "3d": timedelta(days=3), "10d": timedelta(days=10)}
    events, ids = [], {}
    for n, (label, age) in enumerate(ages.items()):
        (e,) = bulk_events(1, start=9_000_000 + n, base=now - age)
        events.append(e)
        ids[e["auditID"]] = label
    log = base / "recent.log"
    log.write_text(render(events))
    archive, report = ingest_into(base / "data", [log])
    assert report.exit_code == 0
    return archive, ids


@pytest.mark.parametrize(("since", "until", "expected"), [
    ("24h", None, {"2h"}),
    ("7d", None, {"2h", "3d"}),
    ("1w", None, {"2h", "3d"}),
    ("180m", None, {"2h"}),
    ("30d", None, {"2h", "3d", "10d"}),
    (None, "7d", {"10d"}),
    ("5d", "1d", {"3d"}),
    ("90m", None, set()),
    ("1.5d", None, {"2h"}),
])
def test_since_until_durations(recent: tuple[Archive, dict[str, str]], since: str | None,
                               until: str | None, expected: set[str]) -> None:
    archive, ids = recent
    flt = EventFilter(since=parse_when(since) if since else None,
                      until=parse_when(until) if until else None)
    con = archive.connect()
    try:
        got = query_events(con, flt, fields=("audit_id",), limit=None)
    finally:
        con.close()
    assert {ids[i] for i in got.column("audit_id").to_pylist()} == expected


# -- several clusters ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    base = tmp_path_factory.mktemp("two")
    log = base / "audit.log"
    log.write_text(render(audit_trail().events))
    archive, _ = ingest_into(base / "data", [log], cluster="prod-eu")
    ingest_into(base / "data", [log], cluster="staging")
    return archive


def test_cluster_filter(two_clusters: Archive) -> None:
    con = two_clusters.connect()
    try:
        def count(**kw: Any) -> int:
            return query_events(con, EventFilter(**kw), fields=("audit_id",), limit=None).num_rows

        assert count() == 28  # the same request in two clusters is two requests
        assert count(clusters=("prod-eu",)) == 14
        assert count(clusters=("staging",)) == 14
        assert count(clusters=("prod-*",)) == 14
        assert count(clusters=("prod-eu", "staging")) == 28
        assert count(clusters=("prod",)) == 0
        assert count(clusters=("staging",), users=("bob*",)) == 4
        profile = who(con, "bob@example.com")
        assert profile.requests == 8 and profile.clusters == ["prod-eu", "staging"]
        rows_by_cluster = top(con, "clusters", EventFilter())
        assert {r["value"]: r["requests"] for r in rows_by_cluster} == \
            {"prod-eu": 14, "staging": 14}
        history = object_history(con, "deployments/web", "shop", cluster="staging")
        assert [h.verb for h in history] == ["create", "update", "patch", "delete"]
        assert {h.cluster for h in history} == {"staging"}
    finally:
        con.close()


# -- who -------------------------------------------------------------------------------


def test_who(con: Any, t: Trail) -> None:
    p = who(con, "bob@example.com")
    (update,) = t.of("UPDATE")
    (delete,) = t.of("DELETE")
    assert p.requests == 4
    assert p.first_seen == when(update["stageTimestamp"])
    assert p.last_seen == when(delete["stageTimestamp"])
    assert p.clusters == ["prod"]
    assert p.groups == ["ops", "system:authenticated"]
    assert sorted(p.source_ips) == [("192.0.2.44", 3), ("2001:db8::7", 1)]
    assert p.user_agents == [(UA_BOB, 4)]
    assert dict(p.verbs) == {"update": 2, "delete": 1, "create": 1}
    assert (p.denied, p.failed) == (0, 0)
    touched = {(r["verb"], r["resource"], r["namespace"]): r["requests"] for r in p.touched}
    assert touched == {("update", "deployments", "shop"): 1, ("delete", "deployments", "shop"): 1,
                       ("create", "pods/exec", "shop"): 1, ("update", "configmaps", "shop"): 1}
    assert p.to_dict()["first_seen"].startswith("2026-11-01T09:20:00")


def test_who_counts_denials(con: Any) -> None:
    p = who(con, "mallory@example.com")
    assert (p.requests, p.denied, p.failed) == (1, 1, 1)
    assert p.source_ips == [("198.51.100.77", 1)]
    assert p.user_agents == [("curl/8.5.0", 1)]
    assert p.touched[0]["denied"] == 1


def test_who_for_an_impersonated_service_account(con: Any) -> None:
    p = who(con, "system:serviceaccount:shop:deployer")
    assert p.requests == 1
    assert p.impersonated_by == [("carol@example.com", 1)]


def test_who_with_a_glob_and_a_filter(con: Any) -> None:
    assert who(con, "system:node:*").requests == 2
    assert who(con, "*@example.com", EventFilter(verbs=("update",))).requests == 2
    nobody = who(con, "nobody@example.com")
    assert nobody.requests == 0 and nobody.first_seen is None


def test_who_with_alice_agents(con: Any) -> None:
    p = who(con, "alice*")
    assert p.user_agents == [(UA_ALICE, 3)]
    assert p.source_ips == [("203.0.113.9", 3)]


# -- history ---------------------------------------------------------------------------

IMAGE = "spec.template.spec.containers[app].image"


def test_object_history_create_update_patch_delete(con: Any, t: Trail) -> None:
    entries = object_history(con, "deployments/web", "shop")
    assert [(e.verb, e.user) for e in entries] == [
        ("create", "alice@example.com"), ("update", "bob@example.com"),
        ("patch", "alice@example.com"), ("delete", "bob@example.com")]
    assert [e.audit_id for e in entries] == [t.ids[n] for n in
                                             ("CREATE", "UPDATE", "PATCH", "DELETE")]
    times = [e.time for e in entries]
    assert times == sorted(times)
    create, update, patch, delete = entries
    added = {c.path: c.new for c in create.changes if c.op == "added"}
    assert added[IMAGE] == "nginx:1.25"
    assert added["spec.replicas"] == 2
    assert [(c.path, c.op, c.old, c.new) for c in update.changes] == \
        [(IMAGE, "changed", "nginx:1.25", "nginx:1.26")]
    assert [(c.path, c.old, c.new) for c in patch.changes] == [("spec.replicas", 2, 3)]
    assert delete.note and "delete" in delete.note.lower()
    assert delete.changes == []
    assert all(e.cluster == "prod" and e.code is not None and e.code < 300 for e in entries)
    assert update.to_dict()["changes"] == [{"path": IMAGE, "op": "changed",
                                            "old": "nginx:1.25", "new": "nginx:1.26"}]


def test_history_accepts_the_group_form(con: Any) -> None:
    assert [e.verb for e in object_history(con, "deployments.apps/web", "shop")] == \
        ["create", "update", "patch", "delete"]
    assert object_history(con, "deployments.extensions/web", "shop") == []
    assert object_history(con, "deployments/web", "other") == []


def test_history_of_a_metadata_level_object(con: Any) -> None:
    entries = object_history(con, "configmaps/app-config", "shop")
    assert [(e.verb, e.user) for e in entries] == [("get", "carol@example.com"),
                                                   ("update", "bob@example.com")]
    assert entries[0].note is None
    assert entries[1].changes == []
    assert entries[1].note and "Metadata" in entries[1].note
    writes = object_history(con, "configmaps/app-config", "shop", include_reads=False)
    assert [e.verb for e in writes] == ["update"]


def test_history_needs_resource_and_name(con: Any) -> None:
    with pytest.raises(QueryError):
        object_history(con, "deployments")


# -- timeline --------------------------------------------------------------------------


def _expected_timeline(events: list[Event], seconds: int) -> list[tuple[datetime, int, int, int]]:
    buckets: dict[datetime, list[Event]] = {}
    for e in best_rows(events):
        at = when(e["stageTimestamp"])
        start = datetime.fromtimestamp(at.timestamp() // seconds * seconds, UTC)
        buckets.setdefault(start, []).append(e)
    out = []
    for start, evs in sorted(buckets.items()):
        denied = sum(1 for e in evs if e.get("responseStatus", {}).get("code") == 403
                     or e.get("annotations", {}).get("authorization.k8s.io/decision")
                     == "forbid")
        failed = sum(1 for e in evs if e.get("responseStatus", {}).get("code", 0) >= 400)
        out.append((start, len(evs), denied, failed))
    return out


@pytest.mark.parametrize(("bucket", "seconds"), [("1h", 3600), ("15m", 900), ("1d", 86400)])
def test_timeline(con: Any, t: Trail, bucket: str, seconds: int) -> None:
    got = timeline(con, EventFilter(), bucket)
    assert [(r["bucket"], r["requests"], r["denied"], r["failed"]) for r in got] == \
        _expected_timeline(t.events, seconds)
    assert sum(r["requests"] for r in got) == 14


def test_timeline_with_a_filter_counts_users(con: Any, t: Trail) -> None:
    got = timeline(con, EventFilter(namespaces=("shop",)), "1h")
    assert got[0]["bucket"] == when("2026-11-01T09:00:00Z")
    assert got[0]["users"] == 2  # alice and bob before 10:00
    assert sum(r["requests"] for r in got) == 9


@pytest.mark.parametrize("bucket", ["1x", "hour", "0s", ""])
def test_bad_bucket(con: Any, bucket: str) -> None:
    with pytest.raises(QueryError):
        timeline(con, EventFilter(), bucket)


# -- top -------------------------------------------------------------------------------


def _top_expected(t: Trail, dimension: str) -> Counter[Any]:
    def key(e: Event) -> Any:
        ref = e.get("objectRef")
        if dimension == "users":
            return e["user"].get("username")
        if dimension == "verbs":
            return e["verb"]
        if dimension == "namespaces":
            return ref.get("namespace") if ref else None
        if dimension == "source-ips":
            return (e.get("sourceIPs") or [None])[0]
        if dimension == "user-agents":
            return e.get("userAgent")
        if dimension == "clusters":
            return "prod"
        if dimension == "resources":
            if not ref:
                return None
            res = ref["resource"] + ("." + ref["apiGroup"] if ref.get("apiGroup") else "")
            return res + ("/" + ref["subresource"] if ref.get("subresource") else "")
        raise AssertionError(dimension)

    counts = Counter(key(e) for e in best_rows(t.events))
    if dimension != "users":
        counts.pop(None, None)
    return counts


@pytest.mark.parametrize("dimension", ["users", "resources", "verbs", "namespaces",
                                       "source-ips", "user-agents", "clusters"])
def test_top(con: Any, t: Trail, dimension: str) -> None:
    got = top(con, dimension, EventFilter(), limit=50)
    expected = _top_expected(t, dimension)
    assert {r["value"]: r["requests"] for r in got} == dict(expected)
    counts = [r["requests"] for r in got]
    assert counts == sorted(counts, reverse=True)
    limited = top(con, dimension, EventFilter(), limit=2)
    assert limited == got[:2]


def test_top_first_values(con: Any) -> None:
    assert top(con, "users", EventFilter(), limit=1)[0]["value"] == "bob@example.com"
    assert top(con, "resources", EventFilter(), limit=1)[0]["value"] == "deployments.apps"
    assert top(con, "namespaces", EventFilter(), limit=1)[0]["requests"] == 9


def test_top_denied(con: Any) -> None:
    got = top(con, "denied", EventFilter())
    assert len(got) == 1
    assert got[0]["requests"] == got[0]["denied"] == 1
    for word in ("mallory@example.com", "list", "secrets", "kube-system"):
        assert word in got[0]["value"]


def test_every_dimension_is_known_and_others_are_errors(con: Any) -> None:
    assert set(TOP_DIMENSIONS) >= {"users", "resources", "verbs", "namespaces", "source-ips",
                                   "user-agents", "denied"}
    with pytest.raises(QueryError, match="nosuch"):
        top(con, "nosuch", EventFilter())


# -- stats -----------------------------------------------------------------------------


def test_archive_stats(trail_archive: tuple[Archive, Trail], con: Any) -> None:
    archive, t = trail_archive
    size = archive.bytes_on_disk()
    segments = archive.segment_files()
    s = archive_stats(con, size, len(segments))
    assert (s["events"], s["requests"], s["segments"]) == (21, 14, len(segments))
    assert s["bytes_on_disk"] == size == sum(p.stat().st_size for p in segments)
    assert s["bytes_per_event"] == pytest.approx(size / 21, abs=0.1)
    assert s["first"] == when(t.of("LEASE")[0]["stageTimestamp"])
    assert s["last"] == when(t.of("DELETE")[0]["stageTimestamp"])
    (cluster,) = s["clusters"]
    assert (cluster["cluster"], cluster["events"], cluster["requests"]) == ("prod", 21, 14)


def test_stats_of_an_empty_archive(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "empty")
    con = archive.connect()
    try:
        s = archive_stats(con, archive.bytes_on_disk(), 0)
        assert (s["events"], s["bytes_per_event"], s["first"]) == (0, None, None)
        assert query_events(con, EventFilter()).num_rows == 0
        assert who(con, "x").requests == 0
        assert timeline(con, EventFilter()) == []
        assert top(con, "users", EventFilter()) == []
    finally:
        con.close()


def test_many_segments_are_one_view(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n in range(3):
        log = tmp_path / f"{n}.log"
        log.write_text(render(bulk_events(10, start=8_000_000 + 100 * n)))
        ingest_into(data, [log])
    archive = Archive(data)
    con = archive.connect()
    try:
        assert len(archive.segment_files()) >= 3
        assert query_events(con, EventFilter(), limit=None).num_rows == 30
    finally:
        con.close()


# -- source IP matching against Python's ipaddress -------------------------------------

ODD_IPS: dict[str, list[str]] = {
    "loopback6": ["::1"],
    "link-local-zone": ["fe80::1%eth0"],
    "long-form": ["2001:db8:0:0:1:0:0:1"],
    "upper-case": ["2001:DB8::ABCD"],
    "chain-v4-v6": ["10.0.0.1", "2001:db8::5"],
    "v4-mapped": ["::ffff:10.0.0.1"],
    "v4": ["192.168.1.20"],
    "other-v6": ["2001:db9:ffff::1"],
    "full": ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
    "no-ips": [],
}


def _matches(ips: list[str], network: str) -> bool:
    import ipaddress

    net = ipaddress.ip_network(network, strict=False)
    for ip in ips:
        try:
            if ipaddress.ip_address(ip.split("%")[0]) in net:
                return True
        except ValueError:
            continue
    return False


@pytest.fixture(scope="module")
def odd_ips(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    base = tmp_path_factory.mktemp("ips")
    events = []
    for n, (label, ips) in enumerate(ODD_IPS.items()):
        (e,) = bulk_events(1, start=9_500_000 + n)
        e["auditID"] = label
        if ips:
            e["sourceIPs"] = ips
        else:
            e.pop("sourceIPs")
        events.append(e)
    log = base / "ips.log"
    log.write_text(render(events))
    archive, report = ingest_into(base / "data", [log])
    assert report.exit_code == 0
    return archive


@pytest.mark.parametrize("network", [
    "::1", "::1/128", "::/0", "2001:db8::/32", "2001:db8::/29", "2001:db0::/29",
    "2001:db8::/33", "2001:db8:85a3::/48", "2001:db8::abcd", "2001:db8::5/127", "fe80::/10",
    "2001:db8:0:0:1::/80", "10.0.0.0/8", "0.0.0.0/0", "192.168.1.20", "192.168.0.0/23",
    "10.0.0.1/32",
])
def test_source_ip_matches_like_ipaddress(odd_ips: Archive, network: str) -> None:
    con = odd_ips.connect()
    try:
        got = query_events(con, EventFilter(source_ips=(network,)), fields=("audit_id",),
                           limit=None).column("audit_id").to_pylist()
    finally:
        con.close()
    expected = {label for label, ips in ODD_IPS.items() if _matches(ips, network)}
    assert set(got) == expected


# -- more histories and stages ---------------------------------------------------------


def test_history_of_a_pod_includes_its_subresources(con: Any) -> None:
    entries = object_history(con, "pods/web-7d4b9c-x2x", "shop")
    assert [(e.verb, e.subresource, e.user) for e in entries] == [
        ("create", "exec", "bob@example.com"), ("patch", "status", "system:node:node-1")]


def test_history_at_request_level_and_a_bare_patch(tmp_path: Path) -> None:
    """Request level records only the body sent: changes come from successive requests."""
    from conftest import request_events, user_info

    ref = {"resource": "configmaps", "namespace": "ns", "name": "cfg", "apiVersion": "v1"}
    alice = user_info("alice")

    def cm(data: dict[str, str]) -> dict[str, Any]:
        return {"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "cfg", "namespace": "ns"}, "data": data}

    start = when("2026-11-01T12:00:00Z")
    events = [
        *request_events("h-1", at=start, verb="create", user=alice, level="Request",
                        uri="/api/v1/namespaces/ns/configmaps", object_ref=ref, code=201,
                        request_object=cm({"a": "1", "b": "x"})),
        *request_events("h-2", at=start + timedelta(minutes=1), verb="update", user=alice,
                        level="Request", uri="/api/v1/namespaces/ns/configmaps/cfg",
                        object_ref=ref, request_object=cm({"a": "2", "b": "x"})),
        *request_events("h-3", at=start + timedelta(minutes=2), verb="patch", user=alice,
                        level="Request", uri="/api/v1/namespaces/ns/configmaps/cfg",
                        object_ref=ref, request_object={"data": {"c": "3"}}),
        *request_events("h-4", at=start + timedelta(minutes=3), verb="update", user=alice,
                        level="Request", uri="/api/v1/namespaces/ns/configmaps/cfg",
                        object_ref=ref, code=409, request_object=cm({"a": "9"})),
    ]
    log = tmp_path / "h.log"
    log.write_text(render(events))
    archive, _ = ingest_into(tmp_path / "data", [log])
    con = archive.connect()
    try:
        create, update, patch, conflict = object_history(con, "configmaps/cfg", "ns")
    finally:
        con.close()
    assert {c.path for c in create.changes} >= {"data.a", "data.b"}
    assert [(c.path, c.old, c.new) for c in update.changes] == [("data.a", "1", "2")]
    assert patch.note and '"c"' in patch.note and patch.changes == []
    assert conflict.code == 409 and conflict.changes == []


def test_panic_is_the_complete_stage(tmp_path: Path) -> None:
    from conftest import request_events, user_info

    events = request_events("p-1", stages=("RequestReceived", "Panic"),
                            at=when("2026-11-01T12:00:00Z"), verb="get", user=user_info("u"),
                            uri="/api/v1/namespaces/ns/pods/p", code=500,
                            object_ref={"resource": "pods", "namespace": "ns", "name": "p",
                                        "apiVersion": "v1"})
    log = tmp_path / "p.log"
    log.write_text(render(events))
    archive, report = ingest_into(tmp_path / "data", [log])
    assert report.clusters["default"].stored == 2
    con = archive.connect()
    try:
        (row,) = query_events(con, EventFilter(), fields=("stage", "code")).to_pylist()
    finally:
        con.close()
    assert row == {"stage": "Panic", "code": 500}
