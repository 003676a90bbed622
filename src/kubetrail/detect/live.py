"""Detection beside a pipeline that stores events (`ingest --detect`, and the services).

Each run of the rules has a fixed cost, so stored rows are gathered into runs of many events;
to hold few of them meanwhile, rows of a class known to match no rule are dropped as they
come (Engine.sieve), and usually nine in ten go. The rules run on a thread of their own, so
that storing goes on; at most one run waits for them, so a producer faster than detection
is held back rather than letting memory grow. Alerts are appended to the archive and handed
to the sinks in order.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from ..sinks import AlertDispatcher
from ..store.archive import Archive
from .alert import Alert
from .engine import Engine
from .rules import RuleSet
from .store import append_alerts

__all__ = ["LiveDetector"]


class LiveDetector:
    """The rules over every batch of newly stored rows; alerts stored and sent."""

    def __init__(self, archive: Archive, ruleset: RuleSet, sinks: AlertDispatcher, *,
                 batch_events: int = 100_000, run_events: int = 500_000,
                 state_path: Path | None = None,
                 on_alert: Callable[[Alert], None] | None = None) -> None:
        self.archive = archive
        self.sinks = sinks
        self.batch_events = max(1, batch_events)  # rows held (those the sieve kept)
        self.run_events = max(1, run_events)  # events seen
        self.on_alert = on_alert
        self.engine = Engine(ruleset, state_path=state_path or archive.state_dir
                             / "detect-state.json")
        self.stored = self.severe = 0
        self._pending: list[pa.Table] = []
        self._rows = self._seen = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kubetrail-detect")
        self._running: deque[Future[None]] = deque()

    def submit(self, rows: pa.Table) -> None:
        """Rows that are now stored (never a duplicate), in order."""
        if not rows.num_rows:
            return
        self._seen += rows.num_rows
        kept = self.engine.sieve(rows)  # on the caller's thread: it reads what rules learnt
        if kept.num_rows:
            self._pending.append(kept)
            self._rows += kept.num_rows
        if self._rows >= self.batch_events or self._seen >= self.run_events:
            self.flush()

    def flush(self, *, wait: bool = False) -> None:
        """Hand what is gathered to the rules (a service calls this on a timer, so that a
        quiet cluster's events are not held back)."""
        if self._pending:
            rows = pa.concat_tables(self._pending).sort_by([("time", "ascending")])
            self._pending, self._rows, self._seen = [], 0, 0
            self._running.append(self._thread.submit(self._run, rows))
        while self._running and (wait or len(self._running) > 1):
            self._running.popleft().result()

    def _run(self, rows: pa.Table) -> None:
        self._keep(self.engine.process(rows))

    def _keep(self, alerts: list[Alert]) -> None:
        self.stored += append_alerts(self.archive, alerts)
        self.severe += sum(a.severity in ("high", "critical") for a in alerts)
        for alert in alerts:
            self.sinks.send(alert)
            if self.on_alert is not None:
                self.on_alert(alert)

    def close(self) -> None:
        """Run what is left, release what suppression held back, save the state."""
        try:
            self.flush(wait=True)
            self._thread.submit(lambda: self._keep(self.engine.flush())).result()
        finally:
            while self._running:  # after an error: let what was started finish
                with contextlib.suppress(Exception):
                    self._running.popleft().result()
            self._thread.submit(self.engine.close).result()
            self._thread.shutdown(wait=True)
            self.sinks.close()
