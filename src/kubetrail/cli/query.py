"""`kubetrail query|who|history|timeline|top|stats`: answers from the archive."""

from __future__ import annotations

from typing import Annotated, Any

import duckdb
import typer
from rich.table import Table

from ..errors import QueryError
from ..events.row import COLUMNS
from ..query import answers
from ..query.filters import EventFilter
from ..store.access import describe_filter
from .context import app_context
from .filters import with_filters
from .output import OUTPUTS, console, render_rows

_Output = Annotated[str, typer.Option("--output", "-o", help="table, json (one object a line) "
                                      "or csv.")]
_Limit = Annotated[int, typer.Option("--limit", "-l", help="At most this many rows (0: all).")]


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise QueryError(f"unknown output {output!r}", hint="use table, json or csv")


def _connect(ctx: typer.Context, output: str) -> duckdb.DuckDBPyConnection:
    """Check the output format before any work, then open the archive for reading."""
    _check_output(output)
    return app_context(ctx).archive().connect()


def _record(ctx: typer.Context, action: str, what: Any, rows: int | None) -> None:
    """Put the read on the access log (before its answer is shown)."""
    from ..store.access import current_user, record_access

    record_access(app_context(ctx).archive(), who=current_user(), action=action,
                  what=describe_filter(what), rows=rows)


def _bar(value: int, peak: int, width: int = 40) -> str:
    if not peak:
        return ""
    full = value * width / peak
    blocks = "▏▎▍▌▋▊▉█"
    whole = int(full)
    frac = int((full - whole) * 8)
    return "█" * whole + (blocks[frac - 1] if frac else "")


def register(app: typer.Typer) -> None:
    @app.command("query")
    @with_filters()
    def query_cmd(
        ctx: typer.Context,
        flt: EventFilter,
        all_stages: Annotated[bool, typer.Option(
            "--all-stages", help="Every stage of each request, not one row per request.")] = False,
        sql: Annotated[str | None, typer.Option(
            "--sql", help="Run this SQL over the view `events` instead of the filters.")] = None,
        fields: Annotated[str | None, typer.Option(
            "--fields", help="Comma-separated columns; `--fields list` shows them.")] = None,
        output: _Output = "table",
        limit: _Limit = 100,
        newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    ) -> None:
        """Find events: who did what, to which object, when, from where, and was it allowed."""
        _check_output(output)
        if fields == "list":
            render_rows([{"field": n, "type": str(t), "description": d} for n, t, d in COLUMNS],
                        output)
            return
        con = app_context(ctx).archive().connect()
        if sql:
            table = answers.run_sql(con, sql)
        else:
            cols = tuple(f.strip() for f in fields.split(",")) if fields else None
            table = answers.query_events(con, flt, fields=cols, limit=limit or None,
                                         all_stages=all_stages, newest_first=newest)
        _record(ctx, "query", {"sql": sql} if sql else flt, table.num_rows)
        render_rows(table.to_pylist(), output, columns=table.column_names)

    @app.command("who")
    @with_filters(exclude=("user",))
    def who_cmd(
        ctx: typer.Context,
        user: Annotated[str, typer.Argument(help="User or service account name (glob).")],
        flt: EventFilter,
        output: _Output = "table",
        limit: _Limit = 20,
    ) -> None:
        """What a user or service account touched, when, from where, and how often denied."""
        con = _connect(ctx, output)
        p = answers.who(con, user, flt, limit=limit)
        _record(ctx, "who", {"user": user, **describe_filter(flt)}, len(p.touched))
        if output != "table":
            render_rows([p.to_dict()] if output == "json" else p.touched, output)
            return
        if not p.requests:
            console.print(f"no requests by {user}")
            raise typer.Exit(0)
        console.print(f"[bold]{user}[/bold]: {p.requests:,} requests in "
                      f"{', '.join(p.clusters)}, first {p.first_seen:%Y-%m-%d %H:%M:%S}, "
                      f"last {p.last_seen:%Y-%m-%d %H:%M:%S}")
        console.print(f"denied {p.denied:,}, failed (code ≥ 400) {p.failed:,}")
        if p.groups:
            console.print("groups: " + ", ".join(p.groups))
        console.print("source IPs: " + ", ".join(f"{ip} ({n:,})" for ip, n in p.source_ips))
        console.print("user agents: " + "; ".join(f"{ua} ({n:,})" for ua, n in p.user_agents))
        console.print("verbs: " + ", ".join(f"{v} {n:,}" for v, n in p.verbs))
        if p.impersonated_by:
            console.print("impersonated by: " + ", ".join(f"{u} ({n})" for u, n in p.impersonated_by))
        render_rows(p.touched, "table", title="what they touched",
                    columns=["verb", "resource", "namespace", "requests", "denied", "last"])

    @app.command("history")
    def history_cmd(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(help="RESOURCE/NAME, e.g. deployments/web.")],
        namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
        cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
        writes_only: Annotated[bool, typer.Option(
            "--writes", help="Only requests that changed the object.")] = False,
        output: _Output = "table",
    ) -> None:
        """Every request that touched one object, in order, with who did it and what changed."""
        con = _connect(ctx, output)
        _record(ctx, "history", {"target": target, "namespace": namespace,
                                 "cluster": cluster}, None)
        entries = answers.object_history(con, target, namespace, cluster=cluster,
                                         include_reads=not writes_only)
        if output != "table":
            render_rows([e.to_dict() for e in entries], output)
            return
        if not entries:
            console.print(f"no requests touched {target}" + (f" in {namespace}" if namespace else ""))
            return
        for e in entries:
            verb = e.verb + (f" {e.subresource}" if e.subresource else "")
            style = "red" if (e.decision == "forbid" or (e.code or 0) >= 400) else "default"
            where = f"{e.cluster}/{e.namespace}" if e.namespace else e.cluster
            console.print(f"[{style}]{e.time:%Y-%m-%d %H:%M:%S.%f}  {where:20} {verb:18} "
                          f"{e.code or '':>4}  {e.user}[/{style}]")
            if e.note:
                console.print(f"    [dim]{e.note}[/dim]")
            for change in e.changes[:40]:
                console.print(f"    {change}", markup=False)
            if len(e.changes) > 40:
                console.print(f"    [dim]… {len(e.changes) - 40} more changes[/dim]")

    @app.command("timeline")
    @with_filters()
    def timeline_cmd(
        ctx: typer.Context,
        flt: EventFilter,
        bucket: Annotated[str, typer.Option("--bucket", "-b", help="5m, 1h, 1d ...")] = "1h",
        output: _Output = "table",
    ) -> None:
        """Requests over time as a chart in the terminal, with denied and failed counts."""
        con = _connect(ctx, output)
        rows = answers.timeline(con, flt, bucket)
        _record(ctx, "timeline", flt, len(rows))
        if output != "table":
            render_rows(rows, output)
            return
        peak = max((r["requests"] for r in rows), default=0)
        table = Table(header_style="bold", box=None)
        for col, just in (("bucket", "left"), ("requests", "right"), ("", "left"),
                          ("denied", "right"), ("failed", "right"), ("users", "right")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in rows:
            table.add_row(f"{r['bucket']:%Y-%m-%d %H:%M}", f"{r['requests']:,}",
                          f"[cyan]{_bar(r['requests'], peak)}[/cyan]",
                          f"[red]{r['denied']:,}[/red]" if r["denied"] else "0",
                          f"{r['failed']:,}", f"{r['users']:,}")
        console.print(table)

    @app.command("top")
    @with_filters()
    def top_cmd(
        ctx: typer.Context,
        dimension: Annotated[str, typer.Argument(
            help="users, resources, verbs, namespaces, source-ips, user-agents, denied, "
            "clusters.")],
        flt: EventFilter,
        output: _Output = "table",
        limit: _Limit = 10,
    ) -> None:
        """The loudest users, resources, verbs, namespaces, IPs, agents, or denied requests."""
        con = _connect(ctx, output)
        rows = answers.top(con, dimension, flt, limit=limit)
        _record(ctx, f"top {dimension}", flt, len(rows))
        render_rows(rows, output, title=f"top {dimension}")

    @app.command("stats")
    def stats_cmd(ctx: typer.Context, output: _Output = "table") -> None:
        """Events, clusters, time span and bytes on disk per event."""
        _check_output(output)
        archive = app_context(ctx).archive()
        con = archive.connect()
        s = answers.archive_stats(con, archive.bytes_on_disk(), len(archive.segment_files()))
        if output != "table":
            render_rows([s], output)
            return
        console.print(f"archive {archive.root}")
        console.print(f"{s['events']:,} events ({s['requests']:,} requests) in "
                      f"{s['segments']:,} segments, {s['bytes_on_disk'] / 1e6:,.1f} MB on disk"
                      + (f", {s['bytes_per_event']} bytes/event" if s["bytes_per_event"] else ""))
        if s["first"]:
            console.print(f"from {s['first']:%Y-%m-%d %H:%M:%S} to {s['last']:%Y-%m-%d %H:%M:%S}")
        render_rows(s["clusters"], "table", title="clusters")
