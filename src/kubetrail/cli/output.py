"""Rendering results: tables for people, JSON lines for programs, CSV for sheets."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

__all__ = ["OUTPUTS", "console", "err_console", "render_rows"]

OUTPUTS = ("table", "json", "csv")
# Tables piped to a file or a pager keep their rows on one line instead of wrapping at 80.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


def render_rows(rows: list[dict[str, Any]], output: str, *, title: str | None = None,
                columns: list[str] | None = None) -> None:
    """Print rows in the chosen output format."""
    columns = columns or (list(rows[0]) if rows else [])
    if output == "json":
        out = sys.stdout.buffer
        for row in rows:
            out.write(orjson.dumps(row, default=_json_default,
                                   option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC) + b"\n")
        out.flush()
        return
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return
    table = Table(title=title, show_lines=False, header_style="bold", expand=False)
    for c in columns:
        table.add_column(c, overflow="fold", justify="right" if c in (
            "code", "requests", "denied", "failed", "events", "count", "users") else "left")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    console.print(table)
    if not rows:
        console.print("[dim]no matching events[/dim]")
