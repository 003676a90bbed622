"""Tests for kubetrail.simulate: shape, determinism, limits, scenarios and output formats."""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import re
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

import kubetrail.simulate as sim
from kubetrail.simulate import (
    DEFAULT_START,
    SCENARIOS,
    Scenario,
    SimulationSummary,
    register_scenario,
    simulate,
    write_simulation,
)

BUILTIN = ["exec-shell", "secrets-dump", "bind-cluster-admin", "privileged-pod", "brute-force",
           "token-mint"]
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
STAGES = {"RequestReceived": 0, "ResponseStarted": 1, "ResponseComplete": 2}
HAS_CLOUD = importlib.util.find_spec("kubetrail.events.cloud.encode") is not None
Event = dict[str, Any]


@pytest.fixture(scope="module")
def attacked() -> list[tuple[str, Event]]:
    """A short run with every built-in scenario (placed early enough to fit 4000 events)."""
    return list(simulate(events=4000, scenarios=BUILTIN, seed=7))


@pytest.fixture(scope="module")
def day() -> list[Event]:
    """Six hours of one quiet cluster, for the calibration checks."""
    return [ev for _, ev in simulate(duration=dt.timedelta(hours=6), seed=3)]


def _events(pairs: list[tuple[str, Event]]) -> list[Event]:
    return [ev for _, ev in pairs]


def _lines(path: Path) -> list[Event]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in f]


# --- public surface --------------------------------------------------------------------------


def test_public_api_is_complete_and_sorted() -> None:
    def kind(name: str) -> tuple[int, str]:  # ruff's RUF022 order: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert sim.__all__ == sorted(sim.__all__, key=kind)
    for name in sim.__all__:
        assert hasattr(sim, name), name


def test_builtin_scenarios_registered_with_descriptions() -> None:
    for name in BUILTIN:
        assert name in SCENARIOS
        assert SCENARIOS[name].description
        assert SCENARIOS[name].name == name


# --- event shape -----------------------------------------------------------------------------


def test_every_event_is_an_audit_event(attacked: list[tuple[str, Event]]) -> None:
    for cluster, ev in attacked:
        assert cluster == "prod-eu"
        assert isinstance(ev, dict)
        assert ev["kind"] == "Event" and ev["apiVersion"] == "audit.k8s.io/v1"
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            ev["auditID"])
        assert ev["stage"] in STAGES
        assert ev["level"] in ("Metadata", "Request", "RequestResponse")
        assert MICRO.match(ev["stageTimestamp"]) and MICRO.match(ev["requestReceivedTimestamp"])
        assert ev["requestURI"].startswith("/")
        assert isinstance(ev["user"], dict) and ev["verb"]
        if ev["stage"] == "RequestReceived":
            assert "responseStatus" not in ev and "annotations" not in ev
            assert ev["stageTimestamp"] == ev["requestReceivedTimestamp"]
        if ev["level"] == "Metadata":
            assert "requestObject" not in ev and "responseObject" not in ev


def test_first_event_starts_at_the_fixed_default() -> None:
    _, ev = next(simulate(events=1))
    assert ev["requestReceivedTimestamp"].startswith(DEFAULT_START.strftime("%Y-%m-%dT%H:%M"))


def test_stage_order_per_audit_id_and_file_order(attacked: list[tuple[str, Event]]) -> None:
    by_id: dict[str, list[Event]] = defaultdict(list)
    previous = ""
    for _, ev in attacked:
        assert ev["stageTimestamp"] >= previous
        previous = ev["stageTimestamp"]
        by_id[ev["auditID"]].append(ev)
    for evs in by_id.values():
        ranks = [STAGES[e["stage"]] for e in evs]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
        assert len({e["requestReceivedTimestamp"] for e in evs}) == 1
        assert all(e["requestReceivedTimestamp"] <= e["stageTimestamp"] for e in evs)


def test_long_running_requests_have_response_started(attacked: list[tuple[str, Event]]) -> None:
    stages: dict[str, set[str]] = defaultdict(set)
    for ev in _events(attacked):
        if ev["verb"] == "watch":
            stages[ev["auditID"]].add(ev["stage"])
            q = parse_qs(urlsplit(ev["requestURI"]).query)
            assert 300 <= int(q["timeoutSeconds"][0]) <= 599
    complete = [s for s in stages.values() if "ResponseComplete" in s]
    assert complete and all("ResponseStarted" in s for s in complete)


def test_failed_authentication_is_one_response_started_event(day: list[Event]) -> None:
    failed = [ev for ev in day if ev["user"] == {}]
    assert failed
    ids = Counter(ev["auditID"] for ev in day)
    for ev in failed:
        assert ev["stage"] == "ResponseStarted"
        assert ev["responseStatus"]["code"] == 401
        assert ev["responseStatus"]["message"].startswith("Authentication failed")
        assert "annotations" not in ev
        assert ids[ev["auditID"]] == 1


def test_annotations_and_codes_are_realistic(day: list[Event]) -> None:
    codes = Counter(ev["responseStatus"]["code"] for ev in day if "responseStatus" in ev)
    assert codes[200] / sum(codes.values()) > 0.85
    assert codes[201] and codes[401]
    for ev in day:
        ann = ev.get("annotations")
        if ann is None or ev["user"] == {}:
            continue
        assert ann["authorization.k8s.io/decision"] in ("allow", "forbid")
        assert list(ann) == sorted(ann)
        user = ev["user"]["username"]
        if user.startswith("system:node:") or user == "system:apiserver":
            assert ann["authorization.k8s.io/reason"] == ""
        if user.startswith("system:serviceaccount:kube-system:") and ann[
                "authorization.k8s.io/decision"] == "allow":
            assert ann["authorization.k8s.io/reason"].startswith("RBAC: allowed by ")


def test_calibration_lease_share_and_people(day: list[Event]) -> None:
    n = len(day)
    per_day = n * 4
    assert 150_000 <= per_day <= 300_000
    leases = sum(1 for ev in day if ev.get("objectRef", {}).get("resource") == "leases")
    assert 0.2 <= leases / n <= 0.6
    people = sum(1 for ev in day if "@" in ev["user"].get("username", ""))
    assert 0 < people / n < 0.01
    sources = {ev["sourceIPs"][0] for ev in day if ev["userAgent"].startswith("kube-probe/")}
    assert sources and all(ip.startswith("10.") for ip in sources)


# --- limits and determinism ------------------------------------------------------------------


def test_exact_event_count() -> None:
    assert sum(1 for _ in simulate(events=1234, seed=1)) == 1234
    assert list(simulate(events=0)) == []


def test_duration_bound() -> None:
    start = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
    evs = _events(list(simulate(duration=dt.timedelta(minutes=10), start=start)))
    stamps = [ev["stageTimestamp"] for ev in evs]
    assert min(stamps) >= "2027-03-01T12:00:00"
    assert max(stamps) < "2027-03-01T12:10:00"
    assert max(stamps) >= "2027-03-01T12:09:00"


def test_both_limits_stop_at_the_first() -> None:
    assert sum(1 for _ in simulate(events=50, duration=dt.timedelta(hours=1))) == 50


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kw = {"events": 3000, "scenarios": ["exec-shell", "brute-force"], "clusters": 2}
    a = write_simulation(tmp_path / "a" / "audit.jsonl.gz", seed=5, **kw)
    b = write_simulation(tmp_path / "b" / "audit.jsonl.gz", seed=5, **kw)
    c = write_simulation(tmp_path / "c" / "audit.jsonl.gz", seed=6, **kw)
    for fa, fb in zip(a.files, b.files, strict=True):
        assert fa.read_bytes() == fb.read_bytes()
    assert [f.read_bytes() for f in a.files] != [f.read_bytes() for f in c.files]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="events= or duration="):
        simulate()
    with pytest.raises(ValueError, match="clusters"):
        simulate(events=1, clusters=0)
    with pytest.raises(ValueError, match="format"):
        write_simulation(Path("unused.log"), events=1, fmt="csv")


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        simulate(events=10, scenarios=["exec-shell", "nope"])
    msg = str(err.value)
    assert "'nope'" in msg
    assert all(name in msg for name in BUILTIN)


# --- scenarios -------------------------------------------------------------------------------


def test_exec_shell(attacked: list[tuple[str, Event]]) -> None:
    execs = [ev for ev in _events(attacked) if ev.get("objectRef", {}).get("subresource") == "exec"
             and ev["verb"] == "create"]
    by_id: dict[str, list[Event]] = defaultdict(list)
    for ev in execs:
        by_id[ev["auditID"]].append(ev)
    shells = [evs for evs in by_id.values() if len(evs) == 3]
    assert shells
    rr, rs, rc = shells[0]
    assert [rr["stage"], rs["stage"], rc["stage"]] == list(STAGES)
    assert rs["responseStatus"]["code"] == rc["responseStatus"]["code"] == 101
    q = parse_qs(urlsplit(rc["requestURI"]).query)
    assert q["command"][:2] == ["/bin/sh", "-c"]
    assert "serviceaccount/token" in q["command"][2]
    assert q["container"] == ["app"] and q["tty"] == ["true"] and q["stdin"] == ["true"]
    assert "apiserver.latency.k8s.io/total" in rc["annotations"]


def test_secrets_dump(attacked: list[tuple[str, Event]]) -> None:
    secrets = [ev for ev in _events(attacked) if ev["stage"] == "ResponseComplete"
               and ev.get("objectRef", {}).get("resource") == "secrets"]
    by_user: dict[str, list[Event]] = defaultdict(list)
    for ev in secrets:
        by_user[ev["user"].get("username", "")].append(ev)
    evs = max(by_user.values(), key=lambda v: len({e["objectRef"].get("namespace") for e in v}))
    assert len({e["objectRef"].get("namespace") for e in evs}) >= 5
    denied = [e for e in evs if e["responseStatus"]["code"] == 403]
    assert denied and all(e["annotations"] == {"authorization.k8s.io/decision": "forbid",
                                                "authorization.k8s.io/reason": ""} for e in denied)
    assert any(e["verb"] == "get" and e["responseStatus"]["code"] == 200 for e in evs)
    assert all("requestObject" not in e and "responseObject" not in e for e in evs)


def test_bind_cluster_admin(attacked: list[tuple[str, Event]]) -> None:
    [ev] = [ev for ev in _events(attacked) if ev["stage"] == "ResponseComplete"
            and ev["verb"] == "create"
            and ev.get("objectRef", {}).get("resource") == "clusterrolebindings"]
    assert ev["level"] == "RequestResponse" and ev["responseStatus"]["code"] == 201
    assert ev["requestObject"]["roleRef"]["name"] == "cluster-admin"
    assert ev["responseObject"]["metadata"]["uid"]
    assert ev["objectRef"]["name"] == ev["requestObject"]["metadata"]["name"]


def test_privileged_pod(attacked: list[tuple[str, Event]]) -> None:
    creates = [ev for ev in _events(attacked) if ev["stage"] == "ResponseComplete"
               and ev["verb"] == "create" and "requestObject" in ev
               and ev["requestObject"].get("kind") == "Pod"]
    priv = [ev for ev in creates
            if any(c.get("securityContext", {}).get("privileged")
                   for c in ev["requestObject"]["spec"]["containers"])]
    assert len(priv) == 1
    spec = priv[0]["requestObject"]["spec"]
    assert {"name": "host-root", "hostPath": {"path": "/", "type": ""}} in spec["volumes"]
    assert priv[0]["responseStatus"]["code"] == 201
    name = priv[0]["objectRef"]["name"]
    assert any(ev.get("objectRef", {}).get("subresource") == "binding"
               and ev["objectRef"]["name"] == name for ev in _events(attacked))


def test_brute_force(attacked: list[tuple[str, Event]]) -> None:
    failed = [ev for ev in _events(attacked) if ev["user"] == {}]
    ip, count = Counter(ev["sourceIPs"][0] for ev in failed).most_common(1)[0]
    assert count >= 30
    times = sorted(dt.datetime.fromisoformat(ev["stageTimestamp"]) for ev in failed
                   if ev["sourceIPs"][0] == ip)
    assert times[29] - times[0] <= dt.timedelta(minutes=2)
    assert not ip.startswith("10.")


def test_token_mint(attacked: list[tuple[str, Event]]) -> None:
    minted = [ev for ev in _events(attacked) if ev["stage"] == "ResponseComplete"
              and ev.get("objectRef", {}).get("subresource") == "token"
              and not ev["user"]["username"].startswith("system:")]
    assert len(minted) == 1
    ev = minted[0]
    assert ev["objectRef"]["namespace"] == "kube-system"
    assert ev["responseStatus"]["code"] == 201
    assert ev["requestObject"]["spec"]["expirationSeconds"] >= 86400 * 365
    assert "responseObject" not in ev


def test_no_secret_material_in_bodies(day: list[Event]) -> None:
    for ev in day:
        if ev.get("objectRef", {}).get("resource") in ("secrets", "configmaps"):
            assert "requestObject" not in ev and "responseObject" not in ev
        body = ev.get("requestObject")
        if isinstance(body, dict) and body.get("kind") == "TokenRequest":
            assert body["status"]["token"] == ""


def test_custom_scenario_can_be_registered() -> None:
    def poke(ctx: Any) -> None:
        ctx.eng.unauthenticated(ctx.t, "get", "/custom-probe", None, ["192.0.2.1"], "x/1")

    register_scenario(Scenario("test-poke", "one custom 401", poke, dt.timedelta(seconds=1)))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_scenario(Scenario("test-poke", "again", poke))
        uris = [ev["requestURI"] for _, ev in simulate(events=500, scenarios=["test-poke"])]
        assert "/custom-probe" in uris
    finally:
        del SCENARIOS["test-poke"]


# --- several clusters and writers ------------------------------------------------------------


def test_clusters_merge_by_time() -> None:
    pairs = list(simulate(events=3000, clusters=3, seed=2))
    assert {c for c, _ in pairs} == {"prod-eu", "prod-us", "staging"}
    stamps = [ev["stageTimestamp"] for _, ev in pairs]
    assert stamps == sorted(stamps)


def test_multi_cluster_native_files(tmp_path: Path) -> None:
    out = tmp_path / "audit.log"
    s = write_simulation(out, events=3000, clusters=3, scenarios=["brute-force"])
    assert isinstance(s, SimulationSummary)
    assert [f.name for f in s.files] == ["audit.prod-eu.log", "audit.prod-us.log",
                                         "audit.staging.log"]
    assert s.events == 3000 == sum(s.per_cluster.values())
    assert s.scenarios == ["brute-force"]
    assert s.bytes == sum(f.stat().st_size for f in s.files)
    assert s.start == DEFAULT_START < s.end
    for f in s.files:
        cluster = f.name.split(".")[1]
        evs = _lines(f)
        assert len(evs) == s.per_cluster[cluster]
        nodes = {ev["user"]["username"] for ev in evs
                 if ev["user"].get("username", "").startswith("system:node:")}
        assert nodes and all(cluster in n for n in nodes)
        stamps = [ev["stageTimestamp"] for ev in evs]
        assert stamps == sorted(stamps)


def test_jsonl_gzip_and_go_escaping(tmp_path: Path) -> None:
    plain = write_simulation(tmp_path / "a.jsonl", events=2000)
    zipped = write_simulation(tmp_path / "a.jsonl.gz", events=2000, go_json=True)
    raw = zipped.files[0].read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert _lines(plain.files[0]) == _lines(zipped.files[0])
    text = gzip.decompress(raw)
    assert b"\\u0026" in text and b"&" not in text


def test_eventlist_batches(tmp_path: Path) -> None:
    s = write_simulation(tmp_path / "batches.json", events=5000, fmt="eventlist", seed=4)
    docs = [orjson.loads(line) for line in s.files[0].read_bytes().splitlines()]
    assert len(docs) > 1
    assert all(d["kind"] == "EventList" and d["apiVersion"] == "audit.k8s.io/v1" for d in docs)
    assert all(0 < len(d["items"]) <= 400 for d in docs)
    items = [item for d in docs for item in d["items"]]
    assert len(items) == 5000
    assert "kind" not in items[0] and items[0]["auditID"]
    expected = [ev for _, ev in simulate(events=5000, seed=4)]
    assert [i["auditID"] for i in items] == [e["auditID"] for e in expected]


def test_memory_stays_flat(tmp_path: Path) -> None:
    def peak(n: int) -> int:
        tracemalloc.start()
        write_simulation(tmp_path / f"m{n}.jsonl", events=n)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5_000), peak(40_000)
    assert large < small * 1.5 + 2_000_000


@pytest.mark.skipif(not HAS_CLOUD, reason="cloud encoders not available")
@pytest.mark.parametrize("fmt", ["eks", "gke", "aks"])
def test_cloud_formats(tmp_path: Path, fmt: str) -> None:
    s = write_simulation(tmp_path / f"export.{fmt}", events=2500, clusters=2, fmt=fmt,
                         scenarios=["exec-shell"])
    if fmt == "eks":  # filter-log-events output does not name the cluster: a file each
        assert s.files == [tmp_path / "export.prod-eu.eks", tmp_path / "export.prod-us.eks"]
    else:
        assert s.files == [tmp_path / f"export.{fmt}"]
    assert s.events == 2500 == sum(s.per_cluster.values())
    assert all(s.per_cluster.values())
    docs = [orjson.loads(line) for f in s.files for line in f.read_bytes().splitlines()]
    if fmt == "eks":
        records = [e for d in docs for e in d["events"]]
        assert all(len(d["events"]) <= 1000 for d in docs)
        events = [orjson.loads(r["message"]) for r in records]
        assert all(e["stage"] != "RequestReceived" for e in events)
        assert len({r["logStreamName"] for r in records}) == 2
    elif fmt == "gke":
        records = docs
        clusters = {r["resource"]["labels"]["cluster_name"] for r in records}
        assert clusters == {"prod-eu", "prod-us"}
    else:
        records = docs
        assert {r["resourceId"].rsplit("/", 1)[1] for r in records} == {"PROD-EU", "PROD-US"}
    assert len(records) == 2500
