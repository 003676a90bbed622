"""What happens when storing fails, or an input is rewritten: nothing lost, clear messages."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import T0, bulk_events, run_cli
from kubetrail import Archive, StoreError, ingest, object_history
from kubetrail.events.decode import Decoded, Decoder
from kubetrail.events.normalize import RawBatch, normalize_with
from kubetrail.events.reader import iter_bytes
from kubetrail.simulate import write_simulation
from kubetrail.store.archive import connection


def _count(archive: Archive) -> tuple[int, int]:
    return archive.connect().sql(
        "SELECT count(*), count(DISTINCT (cluster, audit_id, stage)) FROM events").fetchall()[0]


def test_a_failed_commit_saves_no_checkpoint_past_it(tmp_path: Path) -> None:
    """Batches after a failed one must not move the checkpoint past it (no loss on resume)."""
    first = bulk_events(3000, base=T0)
    second = bulk_events(3000, start=2_000_000, base=T0 + timedelta(days=1))
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in first + second), encoding="utf-8")
    archive = Archive(tmp_path / "data")
    # A real failure: a file stands where the second day's partition directory must go.
    blocker = archive.segments_dir / "cluster=default" / f"date={(T0 + timedelta(days=1)):%Y-%m-%d}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot write to the archive"):
        ingest(archive, [str(log)], batch_events=500)
    stored_before = _count(archive)[0]
    assert stored_before < 6000
    blocker.unlink()
    report = ingest(archive, [str(log)], batch_events=500)
    assert report.exit_code == 0
    assert _count(archive) == (6000, 6000)


def test_the_cli_reports_a_storage_failure_without_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in bulk_events(50)), encoding="utf-8")
    data = tmp_path / "data"
    blocker = data / "segments" / "cluster=default" / f"date={T0:%Y-%m-%d}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("x")
    code, _, err = run_cli("--data-dir", data, "--no-progress", "ingest", log)
    assert code == 1
    assert "Traceback" not in err
    assert "cannot write to the archive" in err and "run the same ingest again" in err


def test_a_document_that_grows_is_read_again_from_its_start(tmp_path: Path) -> None:
    events = bulk_events(2000)
    doc = tmp_path / "batch.json"

    def write(n: int) -> None:
        doc.write_text(json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                                   "items": events[:n]}, indent=1), encoding="utf-8")

    archive = Archive(tmp_path / "data")
    write(1000)
    assert ingest(archive, [str(doc)]).totals().stored == 1000
    write(2000)  # the same export, run again later: same first bytes, more items
    report = ingest(archive, [str(doc)])
    assert report.totals().quarantined == 0
    assert report.totals().stored == 1000 and report.totals().duplicate == 1000
    assert _count(archive) == (2000, 2000)


def test_history_keeps_objects_of_the_same_name_apart(tmp_path: Path) -> None:
    def create(ns: str, replicas: int, minute: int, audit: str) -> dict[str, object]:
        obj = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": ns}, "spec": {"replicas": replicas}}
        stamp = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
                "auditID": audit, "stage": "ResponseComplete", "verb": "create",
                "requestURI": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "user": {"username": f"user-{ns}"},
                "objectRef": {"resource": "deployments", "namespace": ns, "name": "web",
                              "apiGroup": "apps", "apiVersion": "v1"},
                "responseStatus": {"metadata": {}, "code": 201}, "requestObject": obj,
                "responseObject": obj, "requestReceivedTimestamp": stamp,
                "stageTimestamp": stamp}

    log = tmp_path / "a.log"
    log.write_text(json.dumps(create("team-a", 1, 0, "a1")) + "\n"
                   + json.dumps(create("team-b", 5, 1, "b1")) + "\n", encoding="utf-8")
    archive = Archive(tmp_path / "data")
    ingest(archive, [str(log)])
    entries = object_history(archive.connect(), "deployments/web")
    assert [e.namespace for e in entries] == ["team-a", "team-b"]
    second = {c.path: c for c in entries[1].changes}
    assert second["spec.replicas"].op == "added"  # a new object, not a change of team-a's
    assert "metadata.namespace" in second and second["metadata.namespace"].old is None


@pytest.mark.parametrize("args", [
    ["query", "--since", "99999999d"],
    ["timeline", "--bucket", "99999999999w"],
    ["simulate", "--events", "-5", "--out", "x.log"],
    ["simulate", "--events", "5", "--clusters", "0", "--out", "x.log"],
    ["simulate", "--duration", "99999999999w", "--out", "x.log"],
])
def test_bad_values_get_a_message_not_a_traceback(tmp_path: Path, args: list[str]) -> None:
    write_simulation(tmp_path / "s.log", events=20)
    data = tmp_path / "data"
    run_cli("--data-dir", data, "--no-progress", "ingest", tmp_path / "s.log")
    code, _, err = run_cli("--data-dir", data, *args, cwd=tmp_path)
    assert code == 1, err
    assert "Traceback" not in err and "error:" in err


def test_a_damaged_segment_is_reported_clearly(tmp_path: Path) -> None:
    write_simulation(tmp_path / "s.log", events=200)
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "--no-progress", "ingest", tmp_path / "s.log")[0] == 0
    (segment,) = Archive(data).segment_files()
    segment.write_bytes(segment.read_bytes()[:100])
    for args in (["query"], ["stats"], ["who", "x"]):
        code, _, err = run_cli("--data-dir", data, *args)
        assert code == 1 and "Traceback" not in err, err
        assert "cannot read the archive" in err


def test_a_hash_collision_never_drops_an_event(tmp_path: Path) -> None:
    """Dedupe decides on a 64-bit hash first; a seen hash is confirmed on the whole key."""
    log = "".join(json.dumps(e) + "\n" for e in bulk_events(3)).encode()
    batch = RawBatch()
    for pos, item in iter_bytes(log, "mem", Decoder(cluster="c")):
        assert isinstance(item, Decoded)
        batch.add(item, pos.line, "c", "mem")
    rows, problems = normalize_with(connection(ordered=True), batch.take())
    assert not problems
    archive = Archive(tmp_path / "data")
    key = rows.select(["cluster", "audit_id", "stage"]).to_pylist()[0]
    with archive.writer_lock(), archive.writer() as writer:
        # Another key with (as if by collision) the same hash as the first event's key.
        [(same_hash,)] = writer._con.sql("SELECT hash($c, $id, $st)", params={
            "c": key["cluster"], "id": key["audit_id"], "st": key["stage"]}).fetchall()
        writer._remember(pa.table({"cluster": [key["cluster"]], "audit_id": ["another-id"],
                                   "stage": [key["stage"]],
                                   "h": pa.array([same_hash], pa.uint64())}))
        result = writer.commit_rows(rows)
    assert result.stored == 3 and result.duplicates == 0


def test_keys_that_collide_inside_one_batch_are_decided_on_the_whole_key(tmp_path: Path) -> None:
    events = bulk_events(3)
    events.append(dict(events[1]))  # a real duplicate of the second event
    batch = RawBatch()
    log = "".join(json.dumps(e) + "\n" for e in events).encode()
    for pos, item in iter_bytes(log, "mem", Decoder(cluster="c")):
        assert isinstance(item, Decoded)
        batch.add(item, pos.line, "c", "mem")
    rows, _ = normalize_with(connection(ordered=True), batch.take())
    with Archive(tmp_path / "data").writer() as writer:
        # Every row given the same hash: three distinct keys and one repeat.
        fresh = writer._fresh(rows, np.full(4, 42, np.uint64))
    assert fresh.tolist() == [0, 1, 2]
