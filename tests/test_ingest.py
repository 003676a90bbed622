"""Ingestion: every input shape, the archive's layout and promises, settings precedence."""

from __future__ import annotations

import hashlib
import json
import random
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import (
    SAMPLE_PREFIX,
    SAMPLES,
    CliResult,
    Event,
    Trail,
    WriteLog,
    assert_clean,
    audit_trail,
    bulk_events,
    encode,
    ingest_into,
    render,
    request_events,
    rows,
    user_info,
)
from kubetrail.cli import main
from kubetrail.store.archive import Archive

Keys = set[tuple[str, str]]


def keys(events: list[Event]) -> Keys:
    return {(e["auditID"], e["stage"]) for e in events}


def archived_keys(archive: Archive, cluster: str | None = None) -> Keys:
    sql = "SELECT audit_id, stage FROM events"
    got = rows(archive, sql + (" WHERE cluster = ?" if cluster else ""), [cluster] if cluster else [])
    assert len(got) == len(set(got)), "an event is stored twice"
    return {(a, s) for a, s in got}


def assert_stored_exactly(archive: Archive, events: list[Event], cluster: str = "default") -> None:
    assert archived_keys(archive, cluster) == keys(events)


# -- every input shape -----------------------------------------------------------------

SHAPES = [
    # (shape, compress, encoding, newline)
    ("jsonl", None, "utf-8", "\n"),
    ("eventlist", None, "utf-8", "\n"),
    ("eventlist-pretty", None, "utf-8", "\n"),
    ("pretty", None, "utf-8", "\n"),
    ("concat", None, "utf-8", "\n"),
    ("aws-tail", None, "utf-8", "\n"),
    ("aws-tail-short", None, "utf-8", "\n"),
    ("array", None, "utf-8", "\n"),
    ("array", "gzip", "utf-8", "\n"),
    *[(shape, comp, "utf-8", "\n")
      for shape in ("jsonl", "eventlist", "eventlist-pretty", "pretty", "concat")
      for comp in ("gzip", "gzip-multi", "bzip2")],
    ("jsonl", None, "utf-8-sig", "\n"),
    ("pretty", None, "utf-8-sig", "\n"),
    ("eventlist", None, "utf-8-sig", "\n"),
    ("jsonl", None, "utf-16", "\n"),
    ("jsonl", None, "utf-16-be", "\n"),
    ("pretty", None, "utf-16", "\n"),
    ("jsonl", "gzip", "utf-8-sig", "\n"),
    ("jsonl", None, "utf-8", "\r\n"),
    ("pretty", None, "utf-8", "\r\n"),
    ("eventlist-pretty", None, "utf-8", "\r\n"),
    ("jsonl", "gzip", "utf-8", "\r\n"),
    ("aws-tail", None, "utf-8", "\r\n"),
]


@pytest.mark.parametrize(("shape", "compress", "encoding", "newline"), SHAPES,
                         ids=["-".join(filter(None, (s, c, e, "crlf" if n == "\r\n" else "")))
                              for s, c, e, n in SHAPES])
def test_every_shape_is_detected_and_stored(write_log: WriteLog, data_dir: Path, trail: Trail,
                                            shape: str, compress: str | None, encoding: str,
                                            newline: str) -> None:
    path = write_log("audit.log", trail.events, shape=shape, compress=compress,
                     encoding=encoding, newline=newline)
    archive, report = ingest_into(data_dir, [path])
    assert report.exit_code == 0, report.to_dict()
    c = report.clusters["default"]
    assert (c.read, c.stored, c.duplicate, c.quarantined) == (21, 21, 0, 0)
    assert_stored_exactly(archive, trail.events)
    # the text survives every layer: the stored event is the event that was written
    ((text,),) = rows(archive, "SELECT event FROM events WHERE audit_id = ? AND stage = ?",
                      [trail.ids["EXEC"], "ResponseStarted"])
    stored = json.loads(text)
    stored.setdefault("kind", "Event")  # EventList items carry no TypeMeta
    assert stored == trail.of("EXEC")[1]


def test_pretty_printed_single_event(write_log: WriteLog, data_dir: Path, trail: Trail) -> None:
    (event,) = trail.of("UPDATE")
    path = write_log("one.json", [event], shape="pretty")
    assert path.read_text().count("\n") > 20
    archive, report = ingest_into(data_dir, [path])
    assert report.exit_code == 0
    assert report.clusters["default"].stored == 1
    assert_stored_exactly(archive, [event])


def test_directory_with_nested_files(tmp_path: Path, data_dir: Path, trail: Trail) -> None:
    inputs = tmp_path / "logs"
    (inputs / "node-a").mkdir(parents=True)
    (inputs / "node-b" / "old").mkdir(parents=True)
    half = len(trail.events) // 2
    (inputs / "node-a" / "audit.log").write_text(render(trail.events[:half]))
    (inputs / "node-b" / "old" / "batch.json").write_bytes(
        encode(render(trail.events[half:], "eventlist"), compress="gzip"))
    archive, report = ingest_into(data_dir, [inputs])
    assert report.exit_code == 0, report.to_dict()
    assert len(report.files) == 2
    assert_stored_exactly(archive, trail.events)


def _rotated_set(base: Path) -> dict[str, list[Event]]:
    """audit.log and two timestamped backups with distinct events."""
    events = bulk_events(30)
    parts = {
        "audit-2026-11-01T09-00-00.000.log.gz": events[:10],
        "audit-2026-11-01T10-00-00.000.log": events[10:20],
        "audit.log": events[20:],
    }
    base.mkdir(parents=True, exist_ok=True)
    for name, evs in parts.items():
        (base / name).write_bytes(encode(render(evs), compress="gzip" if name.endswith(".gz")
                                         else None))
    return parts


@pytest.mark.parametrize("as_directory", [True, False], ids=["directory", "paths"])
def test_rotated_set_is_read_oldest_first(tmp_path: Path, data_dir: Path,
                                          as_directory: bool) -> None:
    logs = tmp_path / "kube-apiserver"
    parts = _rotated_set(logs)
    order = list(parts)  # oldest backup, newer backup, live file
    if as_directory:
        paths: list[Path] = [logs]
    else:
        paths = [logs / "audit.log", logs / order[1], logs / order[0]]
        random.Random(3).shuffle(paths)
    archive, report = ingest_into(data_dir, paths)
    assert report.exit_code == 0, report.to_dict()
    assert [Path(f.label).name for f in report.files] == order
    assert_stored_exactly(archive, [e for evs in parts.values() for e in evs])


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_stdin_through_the_cli(cli: Callable[..., CliResult], data_dir: Path, trail: Trail,
                               compress: str | None) -> None:
    data = encode(render(trail.events, "jsonl" if compress is None else "eventlist"),
                  compress=compress)
    rc, _out, err = cli("--data-dir", data_dir, "ingest", "-", "--cluster", "piped", stdin=data)
    assert_clean(err)
    assert rc == 0, err
    assert_stored_exactly(Archive(data_dir), trail.events, "piped")


def test_shared_samples_map_cloud_records_to_their_clusters(data_dir: Path) -> None:
    mixed = SAMPLES / (SAMPLE_PREFIX + "test-audit.log")
    string_log = SAMPLES / (SAMPLE_PREFIX + "test-kube-audit.log")
    if not (mixed.exists() and string_log.exists()):
        pytest.skip("shared samples are absent")
    archive, report = ingest_into(data_dir, [mixed, string_log], cluster="flag")
    assert report.exit_code == 0, report.to_dict()
    totals = report.totals()
    assert totals.quarantined == 0 and totals.read == 6
    # the three raw events share auditID and stage: one is stored, two are duplicates
    assert (report.clusters["flag"].stored, report.clusters["flag"].duplicate) == (1, 2)
    got = rows(archive, "SELECT cluster, source_format, \"user\", verb FROM events "
                        "WHERE cluster <> 'flag'")
    assert sorted(got) == [
        ("test-aks", "aks", "aksService", "update"),
        ("test-cluster", "aks", "aksService", "update"),
        ("test-cluster", "gke", "system:gke-master-healthcheck", "get"),
    ]
    assert rows(archive, "SELECT source_format, audit_id FROM events WHERE cluster = 'flag'") == \
        [("native", "abcde12345")]


# -- settings: cluster and data dir ----------------------------------------------------


def _run(argv: list[str]) -> int:
    return main([str(a) for a in argv])


def _clusters(data: Path) -> set[str]:
    return {r[0] for r in rows(Archive(data, create=False), "SELECT DISTINCT cluster FROM events")}


@pytest.mark.parametrize(
    ("yaml_cluster", "env_cluster", "flag_cluster", "expected"),
    [
        (None, None, None, "default"),
        ("from-yaml", None, None, "from-yaml"),
        (None, "from-env", None, "from-env"),
        (None, None, "from-flag", "from-flag"),
        ("from-yaml", "from-env", None, "from-env"),
        ("from-yaml", None, "from-flag", "from-flag"),
        ("from-yaml", "from-env", "from-flag", "from-flag"),
    ])
def test_cluster_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_log: WriteLog,
                            data_dir: Path, trail: Trail, yaml_cluster: str | None,
                            env_cluster: str | None, flag_cluster: str | None,
                            expected: str) -> None:
    log = write_log("audit.log", trail.events)
    if yaml_cluster:
        Path("kubetrail.yaml").write_text(f"cluster: {yaml_cluster}\n")
    if env_cluster:
        monkeypatch.setenv("KUBETRAIL_CLUSTER", env_cluster)
    argv: list[Any] = ["--data-dir", data_dir, "--no-progress", "ingest", log]
    if flag_cluster:
        argv += ["--cluster", flag_cluster]
    assert _run(argv) == 0
    assert _clusters(data_dir) == {expected}
    assert (data_dir / "segments" / f"cluster={expected}").is_dir()


def test_cluster_from_env_and_config_in_a_real_process(cli: Callable[..., CliResult],
                                                       tmp_path: Path, write_log: WriteLog,
                                                       trail: Trail) -> None:
    log = write_log("audit.log", trail.events)
    work = tmp_path / "project"
    work.mkdir()
    (work / "kubetrail.yaml").write_text(f"cluster: from-yaml\ndata_dir: {tmp_path / 'yd'}\n")
    rc, _out, err = cli("--no-progress", "ingest", log, cwd=work,
                        env={"KUBETRAIL_CLUSTER": "from-env"})
    assert rc == 0, err
    assert _clusters(tmp_path / "yd") == {"from-env"}


@pytest.mark.parametrize(
    ("use_yaml", "use_env", "use_flag", "expected"),
    [
        (False, False, False, "xdg"),
        (True, False, False, "yaml"),
        (False, True, False, "env"),
        (False, False, True, "flag"),
        (True, True, False, "env"),
        (True, True, True, "flag"),
        (True, False, True, "flag"),
    ])
def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_env: Path,
                             write_log: WriteLog, trail: Trail, use_yaml: bool, use_env: bool,
                             use_flag: bool, expected: str) -> None:
    log = write_log("audit.log", trail.events)
    places = {"yaml": tmp_path / "yaml-dir", "env": tmp_path / "env-dir",
              "flag": tmp_path / "flag-dir",
              "xdg": clean_env / ".local" / "share" / "kubetrail"}
    if use_yaml:
        Path("kubetrail.yaml").write_text(f"data_dir: {places['yaml']}\n")
    if use_env:
        monkeypatch.setenv("KUBETRAIL_DATA_DIR", str(places["env"]))
    argv: list[Any] = ["--no-progress"]
    if use_flag:
        argv += ["--data-dir", places["flag"]]
    assert _run([*argv, "ingest", log]) == 0
    assert _clusters(places[expected]) == {"default"}
    for name, place in places.items():
        if name != expected:
            assert not (place / "segments").exists(), f"{name} was written to"


def test_xdg_data_home_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   write_log: WriteLog, trail: Trail) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert _run(["--no-progress", "ingest", write_log("a.log", trail.events)]) == 0
    assert _clusters(tmp_path / "xdg-data" / "kubetrail") == {"default"}


def test_default_data_dir_in_a_real_process(cli: Callable[..., CliResult], clean_env: Path,
                                            write_log: WriteLog, trail: Trail) -> None:
    rc, _out, err = cli("--no-progress", "ingest", write_log("a.log", trail.events))
    assert rc == 0, err
    assert_stored_exactly(Archive(clean_env / ".local/share/kubetrail"), trail.events)


def test_bad_config_value_is_a_clear_error(cli: Callable[..., CliResult], tmp_path: Path,
                                           write_log: WriteLog, trail: Trail) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "kubetrail.yaml").write_text("batch_events: lots\n")
    rc, _out, err = cli("ingest", write_log("a.log", trail.events), cwd=work)
    assert rc == 1
    assert "batch_events" in err
    assert_clean(err)


# -- the archive's promises ------------------------------------------------------------


def test_ingest_twice_adds_nothing(write_log: WriteLog, data_dir: Path, trail: Trail) -> None:
    log = write_log("audit.log", trail.events)
    archive, first = ingest_into(data_dir, [log])
    assert first.clusters["default"].stored == 21
    segments = archive.segment_files()
    _, second = ingest_into(data_dir, [log])
    assert second.exit_code == 0
    c = second.clusters.get("default")
    assert c is None or c.stored == 0
    assert [f.status for f in second.files] == ["unchanged"]
    assert archive.segment_files() == segments
    _, forced = ingest_into(data_dir, [log], force=True)
    c = forced.clusters["default"]
    assert c.stored == 0 and c.read == 21 and c.duplicate == c.read
    assert archive.segment_files() == segments
    assert_stored_exactly(archive, trail.events)


def test_same_file_under_another_cluster_is_stored_again(write_log: WriteLog, data_dir: Path,
                                                         trail: Trail) -> None:
    log = write_log("audit.log", trail.events)
    archive, _ = ingest_into(data_dir, [log], cluster="eu")
    _, report = ingest_into(data_dir, [log], cluster="us")
    assert report.clusters["us"].stored == 21 and report.clusters["us"].duplicate == 0
    assert_stored_exactly(archive, trail.events, "eu")
    assert_stored_exactly(archive, trail.events, "us")


def test_duplicates_within_one_file(write_log: WriteLog, data_dir: Path, trail: Trail) -> None:
    doubled = trail.events + trail.events[:5] + [trail.events[7]]
    archive, report = ingest_into(data_dir, [write_log("dup.log", doubled)])
    c = report.clusters["default"]
    assert (c.read, c.stored, c.duplicate) == (27, 21, 6)
    assert report.exit_code == 0
    assert_stored_exactly(archive, trail.events)


def test_duplicates_across_files_of_one_run(write_log: WriteLog, data_dir: Path,
                                            trail: Trail) -> None:
    a = write_log("a.log", trail.events[:15])
    b = write_log("b.json", trail.events[10:], shape="eventlist")
    archive, report = ingest_into(data_dir, [a, b])
    c = report.clusters["default"]
    assert (c.read, c.stored, c.duplicate) == (26, 21, 5)
    assert_stored_exactly(archive, trail.events)


def _row(archive: Archive, audit: str, stage: str = "ResponseComplete") -> dict[str, Any]:
    con = archive.connect()
    try:
        table = con.sql("SELECT * FROM events WHERE audit_id = ? AND stage = ?",
                        params=[audit, stage]).to_arrow_table()
    finally:
        con.close()
    assert table.num_rows == 1, (audit, stage, table.num_rows)
    return table.to_pylist()[0]


def test_columns_of_a_row(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    r = _row(archive, t.ids["GET_PODS"])
    (_, complete) = t.of("GET_PODS")
    assert r["cluster"] == "prod"
    assert r["time"] == datetime.fromisoformat(complete["stageTimestamp"])
    assert r["received"] == datetime.fromisoformat(complete["requestReceivedTimestamp"])
    assert (r["stage"], r["level"], r["verb"]) == ("ResponseComplete", "Metadata", "list")
    assert r["request_uri"] == "/api/v1/namespaces/shop/pods?limit=500"
    assert (r["user"], r["user_uid"]) == ("alice@example.com", "u-alice")
    assert r["groups"] == ["developers", "system:authenticated"]
    assert r["source_ips"] == ["203.0.113.9"] and r["source_ip"] == "203.0.113.9"
    assert r["user_agent"].startswith("kubectl/v1.31.0")
    assert (r["api_group"], r["api_version"], r["resource"]) == ("", "v1", "pods")
    assert (r["namespace"], r["name"], r["subresource"]) == ("shop", None, None)
    assert r["code"] == 200
    assert r["decision"] == "allow"
    assert r["reason"].startswith('RBAC: allowed by RoleBinding "dev/shop"')
    assert r["impersonated_user"] is None and r["sa_namespace"] is None and r["sa_name"] is None
    assert r["command"] is None and r["container"] is None
    assert r["latency_ms"] == pytest.approx(12.345)
    assert r["truncated"] is None
    assert r["source_format"] == "native"
    assert json.loads(r["event"]) == complete
    received = _row(archive, t.ids["GET_PODS"], "RequestReceived")
    assert received["code"] is None and received["decision"] is None
    assert received["latency_ms"] == 0


def test_forbidden_request_with_empty_reason(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    forbid = _row(archive, t.ids["FORBID"])
    assert (forbid["decision"], forbid["code"], forbid["status_reason"]) == \
        ("forbid", 403, "Forbidden")
    assert forbid["reason"] in ("", None)
    assert forbid["status_message"].startswith("secrets is forbidden")


def test_impersonated_user(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    imp = _row(archive, t.ids["IMPERSONATE"])
    assert imp["user"] == "carol@example.com"
    assert imp["impersonated_user"] == "system:serviceaccount:shop:deployer"
    assert imp["impersonated_groups"] == ["system:serviceaccounts", "system:serviceaccounts:shop",
                                          "system:authenticated"]


def test_service_account_namespace_and_name(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    sa = _row(archive, t.ids["SA_LIST"])
    assert (sa["sa_namespace"], sa["sa_name"]) == ("kube-system", "coredns")
    assert sa["api_group"] == "discovery.k8s.io"
    assert sa["groups"] == ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                            "system:authenticated"]
    lease = _row(archive, t.ids["LEASE"])
    assert lease["api_group"] == "coordination.k8s.io"
    assert (lease["sa_namespace"], lease["sa_name"]) == (None, None)


def test_exec_command_container_and_latency(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    for stage in ("RequestReceived", "ResponseStarted", "ResponseComplete"):
        ex = _row(archive, t.ids["EXEC"], stage)
        assert ex["command"] == ["/bin/sh", "-c", "id"], stage
        assert ex["container"] == "app"
        assert ex["subresource"] == "exec" and ex["name"] == "web-7d4b9c-x2x"
    assert _row(archive, t.ids["EXEC"], "ResponseStarted")["code"] == 101
    assert _row(archive, t.ids["EXEC"])["latency_ms"] == pytest.approx(42_000.0)


def test_failed_authentication_event(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    authn = _row(archive, t.ids["AUTHN_401"], "ResponseStarted")
    assert authn["code"] == 401 and authn["user"] is None and authn["decision"] is None
    assert authn["status_message"] == "Authentication failed, attempted: bearer"
    assert authn["source_ip"] == "198.51.100.23"


def test_watch_stages(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    watch = _row(archive, t.ids["WATCH"])
    assert watch["latency_ms"] == pytest.approx(8 * 60_000 + 1)
    assert watch["namespace"] is None and watch["api_group"] == ""
    assert _row(archive, t.ids["WATCH"], "ResponseStarted")["code"] == 200
    assert _row(archive, t.ids["WATCH"], "RequestReceived")["code"] is None


def test_truncated_and_forwarded_chain(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    cut = _row(archive, t.ids["TRUNCATED"])
    assert cut["truncated"] == "annotation"
    assert cut["source_ips"] == ["203.0.113.50", "10.0.1.11"]
    assert cut["source_ip"] == "203.0.113.50"
    assert cut["subresource"] == "status"


def test_bodies_are_kept_in_the_event_text(trail_archive: tuple[Archive, Trail]) -> None:
    archive, t = trail_archive
    create = _row(archive, t.ids["CREATE"])
    assert create["code"] == 201 and create["level"] == "RequestResponse"
    body = json.loads(create["event"])
    assert body == t.of("CREATE")[1]
    assert body["requestObject"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "nginx:1.25"


def test_exec_attach_and_log_parameters(write_log: WriteLog, data_dir: Path) -> None:
    base = "/api/v1/namespaces/ns/pods/p"
    cases = {
        "exec-plus": (f"{base}/exec?command=sh&command=-c&command=echo+a%2Bb%3Dc%26d&"
                      "container=side+car&stdout=true", "exec",
                      ["sh", "-c", "echo a+b=c&d"], "side car"),
        "exec-utf8": (f"{base}/exec?container=app&command=printf&command=%C3%A9t%C3%A9",
                      "exec", ["printf", "été"], "app"),
        "attach": (f"{base}/attach?container=app&stdin=true", "attach", None, "app"),
        "log": (f"{base}/log?container=app&follow=true", "log", None, "app"),
        "exec-nocontainer": (f"{base}/exec?command=ls", "exec", ["ls"], None),
    }
    events: list[Event] = []
    for n, (name, (uri, sub, _cmd, _container)) in enumerate(cases.items()):
        events += request_events(
            f"params-{n}-{name}", at=datetime.fromisoformat("2026-11-01T12:00:00+00:00"),
            verb="get" if sub == "log" else "create", uri=uri, user=user_info("u"),
            object_ref={"resource": "pods", "namespace": "ns", "name": "p", "apiVersion": "v1",
                        "subresource": sub})
    archive, report = ingest_into(data_dir, [write_log("params.log", events)])
    assert report.exit_code == 0
    for n, (name, (_uri, _sub, cmd, container)) in enumerate(cases.items()):
        r = _row(archive, f"params-{n}-{name}")
        assert r["command"] == cmd, name
        assert r["container"] == container, name


def test_segment_layout_and_types(write_log: WriteLog, data_dir: Path, trail: Trail) -> None:
    archive, report = ingest_into(data_dir, [write_log("audit.log", trail.events)],
                                  cluster="prod")
    assert report.clusters["prod"].stored == 21
    segments = archive.segment_files()
    assert segments
    layout = {p.relative_to(data_dir).parent.as_posix() for p in segments}
    assert layout == {"segments/cluster=prod/date=2026-11-01", "segments/cluster=prod/date=2026-11-02"}
    assert all(p.suffix == ".parquet" for p in segments)
    total = 0
    for seg in segments:
        table = pq.read_table(seg)
        total += table.num_rows
        dates = {t.strftime("%Y-%m-%d") for t in table.column("time").to_pylist()}
        assert dates == {seg.parent.name.removeprefix("date=")}
        schema = table.schema
        assert schema.field("audit_id").type == pa.string()
        assert schema.field("time").type == pa.timestamp("us", tz="UTC")
        assert schema.field("groups").type == pa.list_(pa.string())
        assert schema.field("code").type in (pa.int32(), pa.int64())
        parquet_schema = pq.ParquetFile(seg).schema
        for i in range(len(parquet_schema)):
            col = parquet_schema.column(i)
            assert col.physical_type != "INT96", col.path
            assert "UUID" not in str(col.logical_type).upper(), col.path
            assert col.physical_type != "FIXED_LEN_BYTE_ARRAY", col.path
    assert total == 21


def test_file_and_directory_modes(umask_022: None, write_log: WriteLog, data_dir: Path,
                                  trail: Trail) -> None:
    """Audit events are sensitive: segments and quarantine are private to the owner."""
    bad = '{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Meta\n'
    log = write_log("audit.log", trail.events)
    log.write_text(log.read_text() + bad)
    archive, report = ingest_into(data_dir, [log], cluster="prod")
    assert report.clusters["prod"].stored == 21
    assert archive.quarantine_path.exists()
    assert stat.S_IMODE(archive.quarantine_path.stat().st_mode) == 0o600
    for seg in archive.segment_files():
        assert stat.S_IMODE(seg.stat().st_mode) == 0o600, seg
    for d in [data_dir, *[p for p in data_dir.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_manifest_is_hash_chained(write_log: WriteLog, data_dir: Path, trail: Trail) -> None:
    archive, _ = ingest_into(data_dir, [write_log("a.log", trail.events[:10])], cluster="a")
    ingest_into(data_dir, [write_log("b.log", trail.events[10:])], cluster="b")
    ingest_into(data_dir, [write_log("c.log", audit_trail(id_base=500).events)], cluster="a")
    entries = archive.manifest()
    lines = [json.loads(x) for x in (data_dir / "manifest.jsonl").read_text().splitlines()]
    assert entries == lines
    assert len(entries) == len(archive.segment_files()) >= 4
    previous = ""
    for entry in entries:
        assert entry["prev"] == previous
        assert entry["hash"] and entry["hash"] != previous
        previous = entry["hash"]
        segment = data_dir / entry["segment"]
        assert hashlib.sha256(segment.read_bytes()).hexdigest() == entry["sha256"]
        assert pq.ParquetFile(segment).metadata.num_rows == entry["rows"]
    assert sorted(data_dir / e["segment"] for e in entries) == sorted(archive.segment_files())
    assert sum(e["rows"] for e in entries) == 42
    assert len({e["hash"] for e in entries}) == len(entries)


def test_cluster_names_that_are_not_path_safe(write_log: WriteLog, data_dir: Path,
                                              trail: Trail) -> None:
    name = "arn:aws:eks:eu-west-1:123456789012:cluster/prod eu"
    archive, report = ingest_into(data_dir, [write_log("a.log", trail.events)], cluster=name)
    assert report.exit_code == 0
    assert_stored_exactly(archive, trail.events, name)
    for seg in archive.segment_files():
        assert seg.resolve().is_relative_to((data_dir / "segments").resolve())
        assert seg.parent.parent.parent == data_dir / "segments"


def test_progress_reports_events_and_bytes(write_log: WriteLog, data_dir: Path) -> None:
    events = bulk_events(3000)
    log = write_log("audit.log", events)
    calls: list[tuple[int, int]] = []
    _, report = ingest_into(data_dir, [log], batch_events=500,
                            progress=lambda n, b: calls.append((n, b)))
    assert report.clusters["default"].stored == 3000
    assert calls, "long work reports progress"
    assert calls[-1][0] == 3000
    assert calls[-1][1] == log.stat().st_size
    assert [n for n, _ in calls] == sorted(n for n, _ in calls)


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-11-01T09:00:00.123456789Z", "2026-11-01T09:00:00.123456+00:00"),
    ("2026-11-02T01:30:00.000001+02:00", "2026-11-01T23:30:00.000001+00:00"),
    ("2026-11-01T09:00:00Z", "2026-11-01T09:00:00+00:00"),
    ("2026-11-01T09:00:00.123Z", "2026-11-01T09:00:00.123000+00:00"),
])
def test_timestamp_spellings(write_log: WriteLog, data_dir: Path, stamp: str,
                             expected: str) -> None:
    (event,) = bulk_events(1)
    event["stageTimestamp"] = event["requestReceivedTimestamp"] = stamp
    archive, report = ingest_into(data_dir, [write_log("t.log", [event])])
    assert report.exit_code == 0
    ((at,),) = rows(archive, "SELECT time FROM events")
    assert at == datetime.fromisoformat(expected)
    (segment,) = archive.segment_files()
    assert segment.parent.name == "date=" + expected[:10]
