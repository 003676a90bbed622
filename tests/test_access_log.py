"""Who looked at the audit log: every CLI read and every read through the service's API is
on the access log (who, what, how many rows), a hash chain `verify` checks."""

from __future__ import annotations

from pathlib import Path

import orjson

from conftest import assert_clean, bulk_events, render, run_cli
from kubetrail.store.access import access_path, read_access, record_access, verify_access
from kubetrail.store.archive import Archive


def _archive(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    log = tmp_path / "audit.log"
    log.write_text(render(bulk_events(30)))
    code, _, err = run_cli("--data-dir", data, "--no-progress", "ingest", log)
    assert code == 0, err
    return data


def test_cli_reads_are_recorded_and_shown(tmp_path: Path) -> None:
    data = _archive(tmp_path)
    for args in (["query", "--verb", "get", "--limit", "5"], ["who", "system:node:*"],
                 ["top", "users"], ["timeline"], ["alerts"], ["hunt", "--rule", "exec-into-pod"]):
        code, _, err = run_cli("--data-dir", data, *args)
        assert code == 0, (args, err)
    entries = read_access(Archive(data))
    assert [e["action"] for e in entries] == ["query", "who", "top users", "timeline",
                                              "alerts", "hunt"]
    assert entries[0]["what"] == {"verbs": ["get"]} and entries[0]["rows"] == 5
    assert all(e["who"] for e in entries)
    code, out, err = run_cli("--data-dir", data, "access-log", "-o", "json")
    assert code == 0, err
    assert [orjson.loads(line)["action"] for line in out.splitlines()] == \
        [e["action"] for e in entries]
    assert access_path(Archive(data)).stat().st_mode & 0o777 == 0o600
    assert verify_access(Archive(data)) == []


def test_an_edited_or_shortened_access_log_is_found(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "data")
    for n in range(4):
        record_access(archive, who="alice", action="query", what={"users": [f"u{n}"]}, rows=n)
    path = access_path(archive)
    lines = path.read_bytes().splitlines(keepends=True)
    entry = orjson.loads(lines[1])
    entry["who"] = "mallory"
    path.write_bytes(b"".join([lines[0], orjson.dumps(entry) + b"\n", *lines[2:]]))
    assert {p.kind for p in verify_access(archive)} == {"access-log"}
    path.write_bytes(b"".join([lines[0], *lines[2:]]))  # an entry removed
    assert any("removed" in p.message for p in verify_access(archive))
    code, _, err = run_cli("--data-dir", tmp_path / "data", "verify")
    assert code == 4 and "access-log" in err
    assert_clean(err)
