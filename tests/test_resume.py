"""Interrupted and repeated ingests: no event lost, none stored twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from conftest import (
    CliResult,
    WriteLog,
    audit_id,
    bulk_events,
    cli_env,
    compact,
    encode,
    ingest_into,
    render,
    rows,
    run_cli_many,
)
from kubetrail.store.archive import Archive

KILL_EVENTS = 60_000


def write_many(path: Path, n: int) -> None:
    """`n` distinct events (every third one the RequestReceived stage of the request
    before it), written fast from a template, as a busy API server's log looks."""
    (template,) = bulk_events(1, pad=100)
    text = compact(template)
    marker_id, marker_time = template["auditID"], template["stageTimestamp"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            second_stage = i % 3 == 1
            line = text.replace(marker_id, audit_id(10_000_000 + i - second_stage))
            if second_stage:
                line = line.replace('"stage":"ResponseComplete"', '"stage":"RequestReceived"')
            minute, second = divmod(i // 50, 60)
            stamp = (f"2026-11-01T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}."
                     f"{i % 1_000_000:06d}Z")
            fh.write(line.replace(marker_time, stamp) + "\n")


def file_keys(path: Path) -> set[tuple[str, str]]:
    keys = set()
    with open(path, "rb") as fh:
        for line in fh:
            e = orjson.loads(line)
            keys.add((e["auditID"], e["stage"]))
    return keys


def count_and_distinct(data: Path) -> tuple[int, int]:
    (got,) = rows(Archive(data), "SELECT count(*), count(DISTINCT (audit_id, stage)) FROM events")
    return got[0], got[1]


def test_kill_and_resume(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    log = tmp_path / "audit.log"
    write_many(log, KILL_EVENTS)
    keys = file_keys(log)
    expected = len(keys)
    assert expected == KILL_EVENTS
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetrail", "--data-dir", str(data), "--no-progress",
         "ingest", str(log)],
        env=cli_env({"KUBETRAIL_BATCH_EVENTS": "2000"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any((data / "segments").glob("*/*/*.parquet")):
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    stored_before, distinct_before = count_and_distinct(data)
    assert stored_before == distinct_before
    assert 0 < stored_before < expected, "the kill should land in the middle of the ingest"
    print(f"killed after {stored_before} of {expected} events")

    rc, out, err = cli("--data-dir", data, "--no-progress", "ingest", log, "--json",
                       env={"KUBETRAIL_BATCH_EVENTS": "2000"})
    assert rc == 0, err
    summary = json.loads(out)
    c = summary["clusters"]["default"]
    assert c["stored"] == expected - stored_before
    assert c["read"] == c["stored"] + c["duplicate"]
    assert count_and_distinct(data) == (expected, expected)
    archive = Archive(data)
    assert set(rows(archive, "SELECT audit_id, stage FROM events")) == keys
    manifest = archive.manifest()
    segments = {p.relative_to(data).as_posix() for p in archive.segment_files()}
    assert {e["segment"] for e in manifest} <= segments
    (dupes,) = rows(archive, "SELECT count(*) FROM (SELECT audit_id, stage FROM events "
                             "GROUP BY ALL HAVING count(*) > 1)")
    assert dupes == (0,)


def test_appended_file_reads_only_the_new_part(write_log: WriteLog, data_dir: Path) -> None:
    first, more = bulk_events(30), bulk_events(10, start=2_000_000)
    log = write_log("audit.log", first)
    assert log.stat().st_size > 4096
    archive, report = ingest_into(data_dir, [log])
    assert [f.status for f in report.files] == ["read"]
    assert report.clusters["default"].stored == 30
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(render(more))
    _, report = ingest_into(data_dir, [log])
    assert [f.status for f in report.files] == ["resumed"]
    c = report.clusters["default"]
    assert (c.read, c.stored, c.duplicate, c.quarantined) == (10, 10, 0, 0)
    assert report.files[0].events == 10
    _, report = ingest_into(data_dir, [log])
    assert [f.status for f in report.files] == ["unchanged"]
    assert report.totals().stored == 0
    assert rows(archive, "SELECT count(*), count(DISTINCT audit_id) FROM events") == [(40, 40)]


def test_appended_lines_keep_their_line_numbers(write_log: WriteLog, data_dir: Path) -> None:
    log = write_log("audit.log", bulk_events(30))
    archive, _ = ingest_into(data_dir, [log])
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(render(bulk_events(2, start=3_000_000)) + "this is not json\n")
    _, report = ingest_into(data_dir, [log])
    assert report.exit_code == 3
    lines = [json.loads(x)["line"] for x in archive.quarantine_path.read_text().splitlines()]
    assert lines == [33]


def test_unchanged_file_is_reported_unchanged(write_log: WriteLog, data_dir: Path,
                                             cli: Callable[..., CliResult]) -> None:
    log = write_log("audit.log", bulk_events(30))
    ingest_into(data_dir, [log])
    rc, _out, err = cli("--data-dir", data_dir, "--no-progress", "ingest", log)
    assert rc == 0, err
    assert "unchanged" in err


def test_rotated_file_is_recognised_after_rename(tmp_path: Path, data_dir: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "audit.log"
    live.write_text(render(bulk_events(30)))
    ingest_into(data_dir, [logs])
    live.rename(logs / "audit-2026-11-01T10-00-00.000.log")
    live.write_text(render(bulk_events(20, start=4_000_000)))
    archive, report = ingest_into(data_dir, [logs])
    assert [(Path(f.label).name, f.status) for f in report.files] == [
        ("audit-2026-11-01T10-00-00.000.log", "unchanged"), ("audit.log", "read")]
    assert report.totals().stored == 20
    assert rows(archive, "SELECT count(*) FROM events") == [(50,)]


@pytest.mark.parametrize("compress", ["gzip", "bzip2"])
def test_compressed_file_ingested_twice(tmp_path: Path, data_dir: Path, compress: str) -> None:
    path = tmp_path / "audit.log.gz"
    path.write_bytes(encode(render(bulk_events(50)), compress=compress))
    ingest_into(data_dir, [path])
    archive, report = ingest_into(data_dir, [path])
    assert [f.status for f in report.files] == ["unchanged"]
    assert rows(archive, "SELECT count(*) FROM events") == [(50,)]


def test_line_being_written_is_read_once_complete(write_log: WriteLog, data_dir: Path) -> None:
    """Ingesting the live audit.log while the API server writes it: the last line may be
    cut. Once the rest of it is written, the next ingest must store that event."""
    events = bulk_events(36)
    lines = [compact(e) for e in events]
    log = write_log("audit.log", [])
    log.write_text("\n".join(lines[:30]) + "\n" + lines[30][:200], encoding="utf-8")
    archive, report = ingest_into(data_dir, [log])
    assert report.clusters["default"].stored == 30
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(lines[30][200:] + "\n" + "\n".join(lines[31:]) + "\n")
    _, report = ingest_into(data_dir, [log])
    assert report.clusters["default"].stored == 6
    assert set(rows(archive, "SELECT audit_id FROM events")) == {(e["auditID"],) for e in events}


def test_duplicates_across_batches_of_one_run(tmp_path: Path, data_dir: Path) -> None:
    """The same events twice in a file big enough for several committed batches."""
    one = tmp_path / "one.log"
    write_many(one, 16_000)
    log = tmp_path / "twice.log"
    log.write_bytes(one.read_bytes() * 2)
    archive, report = ingest_into(data_dir, [log], batch_events=2000)
    c = report.clusters["default"]
    assert (c.read, c.stored, c.duplicate) == (32_000, 16_000, 16_000)
    assert len(archive.segment_files()) > 1
    assert count_and_distinct(data_dir) == (16_000, 16_000)


def test_concurrent_ingests_store_each_event_once(tmp_path: Path, data_dir: Path) -> None:
    """Two ingests at once (an overlapping cron run) into one archive: one writer at a time,
    and the overlap of their inputs is stored once."""
    events = bulk_events(3000)
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text(render(events[:2000]))
    b.write_text(render(events[1000:]))
    results = run_cli_many([["--data-dir", data_dir, "--no-progress", "ingest", a, "--json"],
                            ["--data-dir", data_dir, "--no-progress", "ingest", b, "--json"]],
                           workers=2)
    for rc, _out, err in results:
        assert rc == 0, err
    stored = sum(json.loads(out)["clusters"]["default"]["stored"] for _rc, out, _err in results)
    assert stored == 3000
    assert count_and_distinct(data_dir) == (3000, 3000)
