"""`kubetrail follow`: tail a live audit log into the archive, across rotation and restarts."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from ..events.decode import FORMATS
from ..follow import Poll, follow
from ..ingest import IngestReport
from .context import app_context
from .ingest import live_detector
from .output import err_console

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _summary(path: str, report: IngestReport) -> None:
    total = report.totals()
    err_console.print(f"followed {escape(path)} for {report.seconds:.1f} s: {total.read:,} events "
                      f"read, {total.stored:,} stored, {total.duplicate:,} duplicate, "
                      f"{total.quarantined:,} quarantined")
    for e in dict.fromkeys(report.errors):
        err_console.print(f"[red]error: {escape(e)}[/red]")
    if total.quarantined:
        err_console.print(f"[yellow]{total.quarantined:,} record(s) quarantined with file, line "
                          f"and reason in {report.quarantine_path}[/yellow]")


def _print_poll(poll: Poll) -> None:
    if poll.read or poll.quarantined:
        extra = "".join(f", {n:,} {what}" for n, what in ((poll.duplicate, "duplicate"),
                                                          (poll.quarantined, "quarantined")) if n)
        err_console.print(f"{time.strftime('%H:%M:%S')} stored {poll.stored:,} events{extra} "
                          f"from {escape(', '.join(poll.files))}")
    for e in poll.errors:
        err_console.print(f"[red]error: {escape(e)}[/red]")


def register(app: typer.Typer) -> None:
    @app.command("follow")
    def follow_cmd(
        ctx: typer.Context,
        path: Annotated[str, typer.Argument(
            help="The live audit log the API server writes (--audit-log-path); its rotated "
            "backups next to it are followed too.")],
        cluster: Annotated[str | None, typer.Option(
            "--cluster", "-c", help="Cluster name for events that do not carry one "
            "(env KUBETRAIL_CLUSTER; default: default).")] = None,
        fmt: Annotated[str, typer.Option(
            "--format", "-f", help="Input shape: " + ", ".join(FORMATS) + ".")] = "auto",
        poll: Annotated[float, typer.Option(
            "--poll", min=0.01, help="Seconds between looks at the file (each look that "
            "finds events writes a segment, as `serve` does every second).")] = 1.0,
        detect: Annotated[bool, typer.Option(
            "--detect/--no-detect", help="Run the detection rules on arriving events.")] = True,
        rules: Annotated[list[Path] | None, typer.Option(
            "--rules", help="Extra rule files or directories (repeatable).",
            show_default=False)] = None,
        quiet: Annotated[bool, typer.Option(
            "--quiet", "-q", help="Print only the summary when stopped, not a line per "
            "poll that stored events.")] = False,
    ) -> None:
        """Tail a live audit log into the archive, as `serve` stores webhook batches.

        Follows the file across rotation (rename-and-create as the API server does, and
        logrotate's copytruncate) and resumes from its checkpoint after a restart, with no
        event lost or stored twice. Runs until SIGTERM or Ctrl-C, then makes what it read
        durable and exits 0.
        """
        app_ctx = app_context(ctx)
        settings = app_ctx.settings(cluster=cluster)
        archive = app_ctx.archive(create=True)
        detector = live_detector(archive, rules, settings.alerts) if detect else None
        stop = threading.Event()
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            stop.set()
            signal.signal(signum, previous[signum])  # a second one interrupts at once

        def on_poll(p: Poll) -> None:
            if detector is not None:
                detector.flush()  # so that alerts are not held back until a run fills up
            if not quiet:
                _print_poll(p)

        for s in _STOP_SIGNALS:
            signal.signal(s, request_stop)
        try:
            if not quiet:
                err_console.print(f"following {escape(path)} into {settings.data_dir} "
                                  "(Ctrl-C to stop)")
            report = follow(archive, path, cluster=settings.cluster, fmt=fmt, poll_seconds=poll,
                            batch_events=settings.batch_events,
                            on_rows=detector.submit if detector else None, on_poll=on_poll,
                            stop=stop)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if detector is not None:
                detector.close()
        _summary(path, report)
        if detector is not None:
            err_console.print(f"{detector.stored:,} alerts stored "
                              f"({detector.severe:,} high or critical): `kubetrail alerts`")
