"""The command line: every command's happy path in every output format (real subprocesses),
its help, and the exit codes and messages of bad flags."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kubetrail
from conftest import (
    CliResult,
    WriteLog,
    assert_clean,
    audit_trail,
    ingest_into,
    render,
    run_cli_many,
)
from kubetrail.cli import main
from kubetrail.events.row import SCHEMA
from kubetrail.query.answers import DEFAULT_FIELDS

OUTPUTS = ("table", "json", "csv")
COMMANDS: dict[str, list[str]] = {
    "query": ["query"],
    "who": ["who", "bob@example.com"],
    "history": ["history", "deployments/web", "-n", "shop"],
    "timeline": ["timeline", "--bucket", "1h"],
    "top": ["top", "users"],
    "stats": ["stats"],
}
EXTRA: dict[str, list[str]] = {
    "fields-list": ["query", "--fields", "list"],
    "fields-list-json": ["query", "--fields", "list", "-o", "json"],
    "exec-fields": ["query", "--resource", "pods/exec", "--fields",
                    "time,user,namespace,name,command,source_ip", "-o", "json"],
    "sql": ["query", "--sql", "SELECT verb, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
            "-o", "csv"],
    "all-stages": ["query", "--all-stages", "-o", "json", "--limit", "0"],
    "limit": ["query", "--limit", "2", "-o", "json"],
    "filters": ["query", "--user", "alice*", "--verb", "create", "--resource", "deployments.apps",
                "-n", "shop", "--code", "2xx", "--decision", "allow", "--source-ip",
                "203.0.113.0/24", "--user-agent", "kubectl", "--since",
                "2026-11-01T09:00:00Z", "--until", "2026-11-02T00:00:00Z", "--cluster", "prod",
                "-o", "json"],
    "ipv6": ["query", "--source-ip", "2001:db8::/32", "-o", "json"],
    "top-denied": ["top", "denied", "-o", "json"],
    "who-sa": ["who", "system:serviceaccount:shop:deployer"],
    "bad-since": ["query", "--since", "yesterday"],
    "bad-code": ["query", "--code", "forbidden"],
    "bad-output": ["query", "-o", "yaml"],
    "bad-dimension": ["top", "nosuch"],
    "bad-sql": ["query", "--sql", "SELEKT 1"],
    "version": ["--version"],
}
#: Run as real subprocesses (all at once); the rest through `main()` in this process, which
#: is the same code without paying an interpreter start-up per run.
IN_SUBPROCESS = {*(f"{c}/table" for c in COMMANDS), "query/json", "stats/csv", "ipv6",
                 "bad-since", "bad-output", "version"}
ALL_CALLS: dict[str, list[str]] = {
    **{f"{name}/{output}": [*args, "-o", output]
       for name, args in COMMANDS.items() for output in OUTPUTS},
    **EXTRA,
}


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    log = base / "audit.log"
    log.write_text(render(audit_trail().events))
    _, report = ingest_into(base / "data", [log], cluster="prod")
    assert report.exit_code == 0
    return base / "data"


@pytest.fixture(scope="module")
def subprocess_results(archive_dir: Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> dict[str, CliResult]:
    home = tmp_path_factory.mktemp("home")
    keys = sorted(IN_SUBPROCESS)
    argvs: list[list[str | Path]] = [["--data-dir", archive_dir, *ALL_CALLS[k]] for k in keys]
    return dict(zip(keys, run_cli_many(argvs, env={"HOME": str(home)}), strict=True))


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capfd: pytest.CaptureFixture[str]) -> Run:
    """`kubetrail.cli.main(argv)` in this process → (exit code, stdout, stderr)."""

    def call(*argv: str | Path) -> tuple[int, str, str]:
        capfd.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capfd.readouterr()
        return rc, out, err

    return call


class Results:
    """CLI results by name: subprocess ones precomputed, the others run on demand."""

    def __init__(self, sub: dict[str, CliResult], run: Run, data: Path) -> None:
        self.sub, self.run, self.data = sub, run, data

    def __getitem__(self, key: str) -> CliResult:
        if key in self.sub:
            return self.sub[key]
        return self.run("--data-dir", self.data, *ALL_CALLS[key])


@pytest.fixture
def results(subprocess_results: Results, run: Run, archive_dir: Path) -> Results:
    return Results(subprocess_results, run, archive_dir)


def ok(results: Results, key: str) -> str:
    rc, out, err = results[key]
    assert_clean(err)
    assert rc == 0, err
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert all(line.startswith("{") for line in lines), text[:500]
    return [json.loads(line) for line in lines]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("output", OUTPUTS)
def test_every_command_in_every_output(results: Results, command: str,
                                       output: str) -> None:
    out = ok(results, f"{command}/{output}")
    assert out.strip()
    if output == "json":
        assert json_lines(out)
    elif output == "csv":
        assert csv_rows(out)


def test_query_outputs(results: Results) -> None:
    rows = json_lines(ok(results, "query/json"))
    assert len(rows) == 14
    assert tuple(rows[0]) == DEFAULT_FIELDS
    assert rows[0]["user"] == "system:node:node-1" and rows[0]["cluster"] == "prod"
    assert rows[0]["time"].startswith("2026-11-01T09:00:00.012345")
    table = csv_rows(ok(results, "query/csv"))
    assert len(table) == 14 and tuple(table[0]) == DEFAULT_FIELDS
    assert [r["user"] for r in table] == [r["user"] or "" for r in rows]
    text = ok(results, "query/table")
    for word in ("alice@example.com", "mallory@example.com", "deployments", "forbid"):
        assert word in text


def test_who_outputs(results: Results) -> None:
    (profile,) = json_lines(ok(results, "who/json"))
    assert profile["user"] == "bob@example.com" and profile["requests"] == 4
    assert profile["first_seen"].startswith("2026-11-01T09:20:00")
    text = ok(results, "who/table")
    for word in ("bob@example.com", "192.0.2.44", "2001:db8::7", "kubectl/v1.30.2", "denied"):
        assert word in text
    touched = csv_rows(ok(results, "who/csv"))
    assert {r["resource"] for r in touched} == {"deployments", "pods/exec", "configmaps"}
    assert "impersonated by" in ok(results, "who-sa") and "carol@example.com" in \
        ok(results, "who-sa")


def test_history_outputs(results: Results) -> None:
    entries = json_lines(ok(results, "history/json"))
    assert [(e["verb"], e["user"]) for e in entries] == [
        ("create", "alice@example.com"), ("update", "bob@example.com"),
        ("patch", "alice@example.com"), ("delete", "bob@example.com")]
    assert entries[1]["changes"] == [{"path": "spec.template.spec.containers[app].image",
                                      "op": "changed", "old": "nginx:1.25", "new": "nginx:1.26"}]
    text = ok(results, "history/table")
    assert "nginx:1.25" in text and "nginx:1.26" in text
    assert text.index("alice@example.com") < text.index("bob@example.com")
    assert len(csv_rows(ok(results, "history/csv"))) == 4


def test_timeline_outputs(results: Results) -> None:
    buckets = json_lines(ok(results, "timeline/json"))
    assert sum(b["requests"] for b in buckets) == 14
    assert buckets[0]["bucket"].startswith("2026-11-01T09:00:00")
    assert buckets[0]["denied"] == 1
    text = ok(results, "timeline/table")
    assert "2026-11-01 09:00" in text and "█" in text
    assert sum(int(r["requests"]) for r in csv_rows(ok(results, "timeline/csv"))) == 14


def test_top_and_stats_outputs(results: Results) -> None:
    users = json_lines(ok(results, "top/json"))
    assert users[0]["value"] == "bob@example.com" and users[0]["requests"] == 4
    assert csv_rows(ok(results, "top/csv"))[0]["value"] == "bob@example.com"
    assert "bob@example.com" in ok(results, "top/table")
    (denied,) = json_lines(ok(results, "top-denied"))
    assert "mallory@example.com" in denied["value"]
    (stats,) = json_lines(ok(results, "stats/json"))
    assert (stats["events"], stats["requests"]) == (21, 14)
    assert stats["bytes_per_event"] > 0
    text = ok(results, "stats/table")
    assert "21 events" in text and "bytes/event" in text and "prod" in text
    assert csv_rows(ok(results, "stats/csv"))[0]["events"] == "21"


def test_query_fields_list(results: Results) -> None:
    text = ok(results, "fields-list")
    for name in SCHEMA.names:
        assert name in text
    listed = json_lines(ok(results, "fields-list-json"))
    assert [f["field"] for f in listed] == SCHEMA.names
    assert all(f["description"] for f in listed)


def test_query_options(results: Results) -> None:
    (execs,) = json_lines(ok(results, "exec-fields"))
    assert execs == {"time": execs["time"], "user": "bob@example.com", "namespace": "shop",
                     "name": "web-7d4b9c-x2x", "command": ["/bin/sh", "-c", "id"],
                     "source_ip": "192.0.2.44"}
    verbs = {r["verb"]: int(r["n"]) for r in csv_rows(ok(results, "sql"))}
    assert verbs["list"] == 6 and sum(verbs.values()) == 21
    assert len(json_lines(ok(results, "all-stages"))) == 21
    assert len(json_lines(ok(results, "limit"))) == 2
    (create,) = json_lines(ok(results, "filters"))
    assert (create["verb"], create["name"]) == ("create", "web")


def test_ipv6_source_filter(results: Results) -> None:
    (row,) = json_lines(ok(results, "ipv6"))
    assert (row["user"], row["verb"], row["source_ip"]) == ("bob@example.com", "update",
                                                            "2001:db8::7")


@pytest.mark.parametrize(("key", "words"), [
    ("bad-since", ("yesterday", "24h")),
    ("bad-code", ("forbidden", "4xx")),
    ("bad-output", ("yaml", "json")),
    ("bad-dimension", ("nosuch", "users")),
    ("bad-sql", ("sql",)),
])
def test_bad_flags(results: Results, key: str, words: tuple[str, ...]) -> None:
    rc, out, err = results[key]
    assert_clean(err)
    assert rc == 1, (rc, err)
    assert err.startswith("kubetrail: error:") or "error" in err.lower()
    for word in words:
        assert word.lower() in err.lower(), (word, err)
    assert not out.strip()


def test_version(results: Results) -> None:
    assert ok(results, "version").strip() == f"kubetrail {kubetrail.__version__}"


# -- help and more errors -------------------------------------------------------------


@pytest.mark.parametrize("command", ["ingest", "query", "who", "history", "timeline", "top",
                                     "stats", "simulate"])
def test_help_of_each_command(run: Run, command: str) -> None:
    rc, out, err = run(command, "--help")
    assert rc == 0, err
    assert "Usage" in out and command in out


def test_main_help_lists_commands(run: Run) -> None:
    rc, out, _ = run("--help")
    assert rc == 0
    for command in ("ingest", "query", "who", "history", "timeline", "top", "stats"):
        assert command in out
    assert "--data-dir" in out


@pytest.mark.parametrize("argv", [
    ["query", "--limit", "-1"],
    ["top", "users", "--limit", "-5"],
    ["who", "bob@example.com", "--limit", "-1"],
], ids=["query", "top", "who"])
def test_negative_limit_is_a_clear_error(run: Run, archive_dir: Path, argv: list[str]) -> None:
    rc, _out, err = run("--data-dir", archive_dir, *argv)
    assert rc in (1, 2), err
    assert "limit" in err.lower()


@pytest.mark.parametrize(("argv", "words"), [
    (["query", "--fields", "user,nosuch"], ("nosuch",)),
    (["history", "deployments"], ("resource/name",)),
    (["timeline", "--bucket", "1x"], ("1x",)),
    (["query", "--decision", "maybe"], ("maybe", "allow")),
    (["query", "--source-ip", "300.1.1.1"], ("300.1.1.1",)),
    (["query", "--until", "2026-02-30T00:00:00Z"], ("2026-02-30",)),
    (["who", "x", "-o", "xml"], ("xml",)),
])
def test_more_bad_flags(run: Run, archive_dir: Path, argv: list[str],
                        words: tuple[str, ...]) -> None:
    rc, out, err = run("--data-dir", archive_dir, *argv)
    assert rc == 1, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)
    assert not out.strip()


def test_usage_errors_exit_2(run: Run, archive_dir: Path) -> None:
    rc, _out, err = run("--data-dir", archive_dir, "query", "--no-such-flag")
    assert rc == 2 and "no-such-flag" in err
    rc, _out, err = run("--data-dir", archive_dir, "nosuchcommand")
    assert rc == 2


def test_query_without_an_archive(run: Run, tmp_path: Path) -> None:
    rc, _out, err = run("--data-dir", tmp_path / "nowhere", "query")
    assert rc == 1
    assert "nowhere" in err and "ingest" in err.lower()
    assert not (tmp_path / "nowhere").exists()


def test_ingest_json_summary(run: Run, write_log: WriteLog, tmp_path: Path) -> None:
    trail = audit_trail()
    log = write_log("audit.log", trail.events)
    rc, out, err = run("--data-dir", tmp_path / "d", "ingest", log, "--json", "-c", "prod")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["clusters"]["prod"] == {"read": 21, "stored": 21, "duplicate": 0,
                                           "quarantined": 0, "skipped": 0}
    assert summary["exit_code"] == 0 and summary["files"][0]["status"] == "read"
    rc, out, err = run("--data-dir", tmp_path / "d", "ingest", log, "--json", "-c", "prod",
                       "--force")
    assert rc == 0
    assert json.loads(out)["clusters"]["prod"]["duplicate"] == 21


def test_ingest_table_summary(run: Run, write_log: WriteLog, tmp_path: Path) -> None:
    log = write_log("audit.log", audit_trail().events)
    bad = write_log("bad.log", [])
    bad.write_text("not json\n")
    rc, _out, err = run("--data-dir", tmp_path / "d", "--no-progress", "ingest", log, bad,
                       "--cluster", "prod")
    assert rc == 3
    for word in ("prod", "read", "stored", "duplicate", "quarantined", "21", "events/s"):
        assert word in err, word
    assert "quarantine" in err


def test_unknown_ingest_format(run: Run, write_log: WriteLog, tmp_path: Path) -> None:
    rc, _out, err = run("--data-dir", tmp_path / "d", "ingest",
                        write_log("a.log", audit_trail().events), "--format", "xml")
    assert rc == 1 and "xml" in err


@pytest.fixture(scope="module")
def thirty_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 users, each reading pods in a namespace of their own."""
    from conftest import bulk_events, user_info

    base = tmp_path_factory.mktemp("thirty")
    events = bulk_events(30)
    for n, e in enumerate(events):
        e["user"] = user_info(f"user-{n:02d}")
        e["objectRef"]["namespace"] = f"ns-{n:02d}"
    log = base / "many.log"
    log.write_text(render(events))
    ingest_into(base / "data", [log])
    return base / "data"


@pytest.mark.parametrize("argv", [
    ["query", "-o", "json"],
    ["top", "users", "-o", "json"],
    ["top", "namespaces", "-o", "json"],
    ["who", "user-*", "-o", "csv"],  # what they touched
], ids=["query", "top-users", "top-namespaces", "who"])
def test_limit_zero_means_all(run: Run, thirty_users: Path, argv: list[str]) -> None:
    """`--limit` is documented as "At most this many rows (0: all)" on every command."""
    rc, out, err = run("--data-dir", thirty_users, *argv, "--limit", "0")
    assert rc == 0, err
    got = csv_rows(out) if "csv" in argv else json_lines(out)
    assert len(got) == 30
