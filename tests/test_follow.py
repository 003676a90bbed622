"""`kubetrail follow`: a real subprocess tailing real files across appends, rotation
(rename-and-create, copytruncate), cut lines, kill -9 and SIGTERM; every event stored once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import orjson
import pytest

from conftest import assert_clean, audit_id, bulk_events, cli_env, compact, rows
from kubetrail.cli import main
from kubetrail.detect.store import read_alerts
from kubetrail.ingest import IngestSession
from kubetrail.simulate import write_simulation
from kubetrail.sources.files import InputFile, rotated_set
from kubetrail.store.archive import Archive

POLL = "0.1"
DEADLINE = 30.0  # seconds any one wait may take on a loaded machine
BACKLOG = 30_000  # events: three read blocks of ~10k, each a committed batch at 2,000 a batch

Key = tuple[str, str]


def lines(start: int, n: int, *, pad: int = 100) -> list[str]:
    """`n` distinct JSON lines (every third the RequestReceived stage of the request before
    it), made fast from one template as a busy API server's log looks."""
    (template,) = bulk_events(1, pad=pad)
    text = compact(template)
    marker = template["auditID"]
    out = []
    for i in range(start, start + n):
        second_stage = i % 3 == 1
        line = text.replace(marker, audit_id(20_000_000 + i - second_stage))
        if second_stage:
            line = line.replace('"stage":"ResponseComplete"', '"stage":"RequestReceived"')
        out.append(line + "\n")
    return out


def keys(chunk: list[str] | str) -> set[Key]:
    text = chunk if isinstance(chunk, str) else "".join(chunk)
    return {(e["auditID"], e["stage"]) for e in map(orjson.loads, text.splitlines())}


def append(path: Path, chunk: list[str] | str) -> set[Key]:
    """Append whole lines the way the API server does (one write, flushed); their keys."""
    written = keys(chunk)  # first: the follower starts reading as soon as they are written
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(chunk if isinstance(chunk, str) else "".join(chunk))
    return written


def archived(data: Path) -> list[Key]:
    if not (data / "segments").exists():
        return []
    return [(a, s) for a, s in rows(Archive(data), "SELECT audit_id, stage FROM events")]


def wait_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Follower:
    """`kubetrail follow` in a subprocess; stderr goes to a file (a pipe could fill up)."""

    def __init__(self, tmp: Path, data: Path, log: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.data = data
        self.err_path = tmp / f"follow-{time.monotonic_ns()}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetrail", "--data-dir", str(data), "--no-progress",
             "follow", str(log), "--poll", POLL, *args],
            env=cli_env(env), stdout=subprocess.DEVNULL, stderr=self._err)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.kill()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, expected: set[Key]) -> None:
        """Until the archive holds at least `expected` (and the follower is still alive)."""
        def done() -> bool:
            assert self.proc.poll() is None, f"follow exited early:\n{self.stderr}"
            return expected <= set(archived(self.data))
        wait_until(done, f"{len(expected)} events in the archive")

    def stop(self) -> str:
        """SIGTERM; asserts a clean exit 0; the stderr."""
        # Not before the handlers are in place (they are when it says what it follows).
        wait_until(lambda: "following" in self.stderr or self.proc.poll() is not None,
                   "the follower to start")
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=DEADLINE)
        self._err.close()
        err = self.stderr
        assert rc == 0, err
        assert_clean(err)
        return err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        self._err.close()


def assert_exactly(data: Path, expected: set[Key]) -> None:
    got = archived(data)
    assert len(got) == len(set(got)), "an event was stored twice"
    assert set(got) == expected


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "logs" / "audit.log"
    path.parent.mkdir()
    path.touch()
    return path


def test_appended_lines_are_stored_while_following(tmp_path: Path, data_dir: Path,
                                                   log: Path) -> None:
    expected = append(log, lines(0, 50))
    with Follower(tmp_path, data_dir, log, "--no-detect") as f:
        f.wait_for(expected)
        for start in (50, 80, 200):
            expected |= append(log, lines(start, 30))
            f.wait_for(expected)
        err = f.stop()
    assert_exactly(data_dir, expected)
    assert "stored 30 events from audit.log" in err
    assert f"{len(expected)} events read, {len(expected)} stored, 0 duplicate" in err


def test_rename_and_create_rotation(tmp_path: Path, data_dir: Path, log: Path) -> None:
    """The API server's rotation: audit.log renamed to a timestamped backup, a new one made.
    Lines written just before the rename are read from the backup."""
    expected = append(log, lines(0, 200))
    with Follower(tmp_path, data_dir, log, "--no-detect") as f:
        f.wait_for(expected)
        expected |= append(log, lines(200, 100))  # likely not yet read when renamed
        log.rename(log.with_name("audit-2026-11-02T10-00-00.000.log"))
        expected |= append(log, lines(300, 40))
        f.wait_for(expected)
        expected |= append(log, lines(340, 10))
        f.wait_for(expected)
        f.stop()
    assert_exactly(data_dir, expected)


def test_copytruncate_rotation(tmp_path: Path, data_dir: Path, log: Path) -> None:
    """logrotate's copytruncate: audit.log copied to audit.log.1 then truncated in place. The
    copy is finished from the live file's checkpoint; the truncated file, smaller than its
    checkpoint, is read from its start; nothing is skipped when it outgrows the old offset."""
    expected = append(log, lines(0, 200))
    with Follower(tmp_path, data_dir, log, "--no-detect") as f:
        f.wait_for(expected)
        expected |= append(log, lines(200, 100))  # likely only in the copy
        shutil.copyfile(log, log.with_name("audit.log.1"))
        os.truncate(log, 0)
        expected |= append(log, lines(300, 20))
        f.wait_for(expected)
        f.stop()
    assert_exactly(data_dir, expected)
    # Again while nothing follows: the truncated file regrows past its old checkpoint.
    log.with_name("audit.log.1").rename(log.with_name("audit.log.2"))
    shutil.copyfile(log, log.with_name("audit.log.1"))
    os.truncate(log, 0)
    expected |= append(log, lines(320, 150))
    with Follower(tmp_path, data_dir, log, "--no-detect") as f:
        f.wait_for(expected)
        f.stop()
    assert_exactly(data_dir, expected)


def test_line_cut_by_a_poll_is_read_once_complete(tmp_path: Path, data_dir: Path,
                                                  log: Path) -> None:
    """A last line still being written is left until its newline comes, never quarantined:
    in the middle of the log, and as the first line of a new log after a rotation."""
    chunk = lines(0, 18)
    cut = len(chunk[10]) // 2
    expected = append(log, chunk[:10])
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(chunk[10][:cut])
    with Follower(tmp_path, data_dir, log, "--no-detect") as f:
        f.wait_for(expected)
        time.sleep(0.5)  # several polls see the cut line and leave it
        assert set(archived(data_dir)) == expected
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(chunk[10][cut:])
        expected |= keys(chunk[10:11]) | append(log, chunk[11:16])
        f.wait_for(expected)
        log.rename(log.with_name("audit-2026-11-02T10-00-00.000.log"))
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(chunk[16][:cut])
        time.sleep(0.5)
        assert set(archived(data_dir)) == expected
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(chunk[16][cut:])
        expected |= keys(chunk[16:17]) | append(log, chunk[17:])
        f.wait_for(expected)
        f.stop()
    assert_exactly(data_dir, expected)
    assert not Archive(data_dir).quarantine_path.exists()


def test_kill_9_mid_stream_and_restart_across_a_rotation(tmp_path: Path, data_dir: Path,
                                                         log: Path) -> None:
    """Killed while a backlog is read (batches committed, the next ones in flight), then the
    log rotates before the restart: the archive ends up with every event, each once."""
    env = {"KUBETRAIL_BATCH_EVENTS": "2000"}
    expected = append(log, lines(0, BACKLOG))
    with Follower(tmp_path, data_dir, log, "--no-detect", env=env) as f:
        wait_until(lambda: any((data_dir / "segments").glob("*/*/*.parquet")),
                   "the first segment")
        f.kill()
    assert f.proc.returncode == -signal.SIGKILL
    stored = archived(data_dir)
    assert len(stored) == len(set(stored))
    assert 0 < len(stored) < len(expected), "the kill should land in the middle of the backlog"
    expected |= append(log, lines(BACKLOG, 500))
    log.rename(log.with_name("audit-2026-11-02T10-00-00.000.log"))
    expected |= append(log, lines(BACKLOG + 500, 500))
    with Follower(tmp_path, data_dir, log, "--no-detect", env=env) as f:
        f.wait_for(expected)
        expected |= append(log, lines(BACKLOG + 1000, 100))
        f.wait_for(expected)
        f.stop()
    assert_exactly(data_dir, expected)
    assert len(expected) == BACKLOG + 1100


def test_sigterm_stops_at_a_committed_batch_and_resumes_there(tmp_path: Path, data_dir: Path,
                                                            log: Path) -> None:
    env = {"KUBETRAIL_BATCH_EVENTS": "2000"}
    expected = append(log, lines(0, 100))
    with Follower(tmp_path, data_dir, log, "--no-detect", env=env) as f:
        f.wait_for(expected)
        first = set((data_dir / "segments").glob("*/*/*.parquet"))
        expected |= append(log, lines(100, 20_000, pad=3000))  # 70 MB: 9 read blocks
        wait_until(lambda: set((data_dir / "segments").glob("*/*/*.parquet")) > first,
                   "a segment of the backlog")
        err = f.stop()
    assert "followed" in err
    stored = archived(data_dir)
    assert len(stored) == len(set(stored)) and set(stored) <= expected
    assert len(stored) < len(expected), "the stop should land in the middle of the backlog"
    with Follower(tmp_path, data_dir, log, "--no-detect", env=env) as f:
        f.wait_for(expected)
        err = f.stop()
    assert_exactly(data_dir, expected)
    # The stop saved its checkpoint where its last batch ended: nothing is read twice.
    rest = len(expected) - len(stored)
    assert f"{rest:,} events read, {rest:,} stored, 0 duplicate" in err


def test_alerts_for_an_attack_appended_while_following(tmp_path: Path, data_dir: Path,
                                                       log: Path) -> None:
    traffic = tmp_path / "sim" / "audit.log"
    write_simulation(traffic, events=2000, seed=7, scenarios=["exec-shell"])
    text = traffic.read_text(encoding="utf-8")
    cut = text.index("\n", len(text) // 4) + 1
    alerts_file = data_dir / "alerts" / "alerts.jsonl"

    def raised(rule: str) -> bool:
        if not alerts_file.exists():
            return False
        return any(b'"rule":"' + rule.encode() + b'"' in line
                   for line in alerts_file.read_bytes().splitlines())

    expected = append(log, text[:cut])
    with Follower(tmp_path, data_dir, log) as f:  # detection is on by default
        f.wait_for(expected)
        expected |= append(log, text[cut:])
        f.wait_for(expected)
        # Raised while following (flushed after the poll), not only when stopped.
        wait_until(lambda: raised("exec-credential-file-read"), "the exec alert")
        err = f.stop()
    assert_exactly(data_dir, expected)
    alerts = read_alerts(Archive(data_dir))
    rules = {a["rule"] for a in alerts}
    assert {"exec-credential-file-read", "exec-into-pod"} <= rules
    keys = [(a["rule"], a["auditID"]) for a in alerts]
    assert len(keys) == len(set(keys)), "an alert was raised twice"
    assert f"{len(alerts):,} alerts stored" in err


def test_missing_file_is_an_error_with_a_hint(tmp_path: Path, data_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    for path, message in ((tmp_path / "nope" / "audit.log", "No such file or directory"),
                          (logs / "audit.log", "no such file, and no rotated backups of it")):
        logs.mkdir(exist_ok=True)
        assert main(["--data-dir", str(data_dir), "follow", str(path)]) == 1
        err = capsys.readouterr().err
        assert message in err and "hint:" in err, err


def test_a_file_that_grew_while_it_was_read_is_not_read_again(tmp_path: Path,
                                                              data_dir: Path) -> None:
    """The live file grows while a pass reads it: the next pass finds it unchanged (it
    would otherwise be read again from its start, every event a duplicate)."""
    log = tmp_path / "audit.log"
    expected = append(log, lines(0, 100))
    grown: list[set[Key]] = []

    def grow_once(_events: int, _bytes: int) -> None:  # called as the pass starts reading
        if not grown:
            grown.append(append(log, lines(100, 50)))

    archive = Archive(data_dir)
    inputs = [InputFile(log, str(log))]
    with archive.writer_lock(), IngestSession(archive, progress=grow_once) as session:
        (first,) = session.read(inputs)
        (second,) = session.read(inputs)
    assert grown and first.events == 150
    assert second.status == "unchanged"
    counts = session.report.totals()
    assert (counts.read, counts.stored, counts.duplicate) == (150, 150, 0)
    assert_exactly(data_dir, expected | grown[0])


def test_rotated_set_holds_the_backups_oldest_first_then_the_live_file(tmp_path: Path) -> None:
    names = ["audit.log", "audit-2026-11-01T10-00-00.000.log", "audit.log.2.gz", "audit.log.1",
             "audit-2026-11-02T10-00-00.000.log.gz", "audit.log-20261103",
             "other.log", "audit.log.bak", "audit-x.log", "other-2026-11-01T10-00-00.000.log"]
    order = ["audit.log.2.gz", "audit-2026-11-01T10-00-00.000.log", "audit.log.1",
             "audit-2026-11-02T10-00-00.000.log.gz", "audit.log-20261103"]
    for name in names:
        (tmp_path / name).write_text("{}\n")
    for age, name in enumerate(reversed(order)):
        os.utime(tmp_path / name, ns=(time.time_ns(), time.time_ns() - (age + 1) * 10**9))
    os.utime(tmp_path / "audit.log", ns=(0, 0))  # the live file is last, whatever its time
    (tmp_path / "audit.log.3").mkdir()  # not a file
    assert [p.name for p in rotated_set(tmp_path / "audit.log")] == [*order, "audit.log"]
    (tmp_path / "audit.log").unlink()  # between a rename and the create
    assert [p.name for p in rotated_set(tmp_path / "audit.log")] == order
