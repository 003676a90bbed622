"""Detection runs: log files streamed through the engine, and retro-hunts over the archive."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ..events.batches import Rejects, read_batches
from ..events.normalize import normalize_with
from ..query.filters import EventFilter
from ..redact import Redactor, redact_rows
from ..stages import ahead
from ..store.archive import Archive, connection
from .alert import Alert
from .engine import Engine, hunt_batches
from .rules import RuleSet

__all__ = ["DetectReport", "detect_paths", "hunt"]

AlertFn = Callable[[Alert], None]


@dataclass
class DetectReport:
    """What a run read and raised."""

    events: int = 0
    alerts: int = 0
    rejects: Rejects = field(default_factory=Rejects)

    @property
    def exit_code(self) -> int:
        """0 everything read, 3 some records could not be used, 1 an input was unreadable."""
        if self.rejects.files:
            return 1
        return 3 if self.rejects.records else 0


def _normalised(batches: Iterator[pa.Table], report: DetectReport, redactor: Redactor
                ) -> Iterator[pa.Table]:
    con = connection(ordered=True)
    con.execute("SET threads = 1")  # reading and detecting keep the other core busy
    try:
        for raw in batches:
            rows, problems = normalize_with(con, raw)
            rows = redact_rows(con, rows, redactor)  # alerts never carry a secret
            for p in problems:
                report.rejects.records.append((p["file"], p["line"], p["problem"]))
            report.events += rows.num_rows
            if rows.num_rows:
                yield rows.sort_by([("time", "ascending")])
    finally:
        con.close()


def _counted(batches: Iterator[pa.Table], report: DetectReport) -> Iterator[pa.Table]:
    for rows in batches:
        report.events += rows.num_rows
        yield rows


def _drain(engine: Engine, batches: Iterable[pa.Table], on_alert: AlertFn,
           report: DetectReport) -> None:
    """Every batch through the engine, then what suppression held back."""
    for rows in batches:
        for alert in engine.process(rows):
            report.alerts += 1
            on_alert(alert)
    for alert in engine.flush():
        report.alerts += 1
        on_alert(alert)


def detect_paths(paths: Sequence[str], ruleset: RuleSet, on_alert: AlertFn, *,
                 cluster: str = "default", fmt: str = "auto", state_path: Path | None = None,
                 rule_ids: Sequence[str] | None = None, batch_events: int = 100_000,
                 redactor: Redactor | None = None) -> DetectReport:
    """Stream inputs of any shape through the rules; `on_alert` gets each alert as raised.

    Reading, parsing and detecting each run on their own thread, a batch apart. Batches
    are large because each costs the rules a fixed set-up (a few tenths of a second)."""
    report = DetectReport()
    if redactor is None:  # fingerprints then hold for this run only
        redactor = Redactor(secrets.token_bytes(32))
    with Engine(ruleset, state_path=state_path, rule_ids=rule_ids) as engine:
        raw = ahead(read_batches(paths, cluster=cluster, fmt=fmt, batch_events=batch_events,
                                 rejects=report.rejects), name="kubetrail-read")
        _drain(engine, ahead(_normalised(raw, report, redactor), name="kubetrail-parse"),
               on_alert, report)
    return report


def hunt(archive: Archive, ruleset: RuleSet, on_alert: AlertFn, *,
         flt: EventFilter | None = None, rule_ids: Sequence[str] | None = None) -> DetectReport:
    """The rules over archived events in time order (retro-hunting). Stateful rules start
    from empty state: the hunted span is their whole history."""
    report = DetectReport()
    where, params = (flt or EventFilter()).where()
    con = archive.connect()
    try:
        with Engine(ruleset, rule_ids=rule_ids) as engine:
            _drain(engine, _counted(hunt_batches(con, where, params), report), on_alert, report)
    finally:
        con.close()
    return report
