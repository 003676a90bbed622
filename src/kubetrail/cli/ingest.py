"""`kubetrail ingest`: read audit logs of any shape into the archive."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..events.decode import FORMATS
from ..ingest import IngestReport, ingest
from ..store.archive import Archive
from .context import app_context
from .output import console, err_console

if TYPE_CHECKING:
    from ..detect.live import LiveDetector


def _summary(report: IngestReport) -> None:
    table = Table(title="ingest summary", header_style="bold")
    for col in ("cluster", "read", "stored", "duplicate", "quarantined", "skipped"):
        table.add_column(col, justify="left" if col == "cluster" else "right")
    for name, c in sorted(report.clusters.items()):
        table.add_row(name, *(f"{getattr(c, k):,}" for k in
                              ("read", "stored", "duplicate", "quarantined", "skipped")))
    total = report.totals()
    rate = total.read / report.seconds if report.seconds else 0.0
    err_console.print(table)
    err_console.print(f"{total.read:,} events in {report.seconds:.1f} s ({rate:,.0f} events/s)")
    for f in report.files:
        if f.status == "unchanged":
            err_console.print(f"[dim]{f.label}: unchanged since the last ingest, skipped "
                              "(use --force to read it again)[/dim]")
        elif f.error:
            err_console.print(f"[yellow]{f.label}: {f.error}[/yellow]")
    for e in report.errors:
        err_console.print(f"[red]error: {e}[/red]")
    if total.quarantined:
        err_console.print(f"[yellow]{total.quarantined:,} record(s) quarantined with file, line "
                          f"and reason in {report.quarantine_path}; the reasons:[/yellow]")
        for reason, n in report.reasons.most_common(8):
            err_console.print(f"  {n:>8,}  {reason}", markup=False, highlight=False)


def live_detector(archive: Archive, rules: list[Path] | None, alerts: Mapping[str, Any]
                  ) -> LiveDetector:
    """The bundled rules plus `rules`, alerts stored and sent to the configured sinks."""
    from ..detect.live import LiveDetector
    from ..detect.rules import load_rules
    from ..sinks import build_sinks

    return LiveDetector(archive, load_rules([str(p) for p in rules or ()]), build_sinks(alerts))


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        ctx: typer.Context,
        paths: Annotated[list[str], typer.Argument(
            help="Files, directories, rotated sets (audit.log and its backups), or - for "
            "stdin. Any shape: JSON lines, EventList, EKS/GKE/AKS exports, gzip.")],
        cluster: Annotated[str | None, typer.Option(
            "--cluster", "-c", help="Cluster name for inputs that do not carry one "
            "(env KUBETRAIL_CLUSTER; default: default). Cloud records name their own.")] = None,
        fmt: Annotated[str, typer.Option(
            "--format", "-f", help="Input shape: " + ", ".join(FORMATS) + ".")] = "auto",
        force: Annotated[bool, typer.Option(
            "--force", help="Read inputs again even if unchanged since the last ingest "
            "(duplicates are still not stored).")] = False,
        json_summary: Annotated[bool, typer.Option(
            "--json", help="Print the summary as JSON on stdout.")] = False,
        detect: Annotated[bool, typer.Option(
            "--detect", help="Run the detection rules on the new events and store the alerts "
            "(`kubetrail alerts`).")] = False,
        rules: Annotated[list[Path] | None, typer.Option(
            "--rules", help="Extra rule files or directories for --detect (repeatable).",
            show_default=False)] = None,
    ) -> None:
        """Read audit events into the archive: deduplicated, resumable, bad lines quarantined.

        Exit code 0 when everything was stored, 3 when some input was quarantined (the rest
        is stored), 1 when an input could not be read at all.
        """
        app_ctx = app_context(ctx)
        settings = app_ctx.settings(cluster=cluster)
        archive = app_ctx.archive(create=True)
        detector = live_detector(archive, rules, settings.alerts) if detect else None
        on_rows = detector.submit if detector else None
        if app_ctx.show_progress() and not json_summary:
            with Progress(SpinnerColumn(), TextColumn("ingesting"),
                          TextColumn("{task.completed:,.0f} events"),
                          TextColumn("{task.fields[rate]:,.0f} events/s"),
                          TimeElapsedColumn(), console=err_console, transient=True) as bar:
                task = bar.add_task("ingest", total=None, rate=0.0)
                started = time.monotonic()

                def progress(events: int, _bytes: int) -> None:
                    elapsed = max(time.monotonic() - started, 1e-6)
                    bar.update(task, completed=events, rate=events / elapsed)

                try:
                    report = ingest(archive, paths, cluster=settings.cluster, fmt=fmt,
                                    batch_events=settings.batch_events, force=force,
                                    progress=progress, on_rows=on_rows)
                finally:
                    if detector:
                        detector.close()
        else:
            try:
                report = ingest(archive, paths, cluster=settings.cluster, fmt=fmt,
                                batch_events=settings.batch_events, force=force,
                                on_rows=on_rows)
            finally:
                if detector:
                    detector.close()
        if json_summary:
            import orjson

            console.file.write(orjson.dumps(report.to_dict()).decode() + "\n")
        else:
            _summary(report)
            if detector:
                err_console.print(f"{detector.stored:,} alerts stored "
                                  f"({detector.severe:,} high or critical): `kubetrail alerts`")
        raise typer.Exit(report.exit_code)
