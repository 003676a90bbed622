"""`kubetrail simulate`: write a realistic cluster's audit log."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from ..errors import QueryError
from ..query.filters import parse_duration
from .output import err_console

SIM_FORMATS = ("jsonl", "eventlist", "eks", "gke", "aks")


def _duration(value: str) -> timedelta:
    span = parse_duration(value)
    if span is None:
        raise QueryError(f"cannot read duration {value!r}", hint="use e.g. 30m, 24h or 7d")
    return span


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.gz compresses).")],
        events: Annotated[int | None, typer.Option(
            "--events", "-n", help="Exactly this many events.")] = None,
        duration: Annotated[str | None, typer.Option(
            "--duration", "-d", help="Simulated time span, e.g. 24h.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same log.")] = 0,
        clusters: Annotated[int, typer.Option("--clusters", help="Number of clusters.")] = 1,
        nodes: Annotated[int, typer.Option(
            "--nodes", help="Nodes per cluster (10 or more: three control-plane nodes).")] = 5,
        scenario: Annotated[list[str] | None, typer.Option(
            "--scenario", "-s", help="Attack scenario to inject (repeatable); "
            "`--scenario list` shows them.")] = None,
        fmt: Annotated[str, typer.Option(
            "--format", "-f", help="Output shape: " + ", ".join(SIM_FORMATS) + ".")] = "jsonl",
    ) -> None:
        """Generate a realistic, deterministic audit log (control plane, kubelets, add-ons,
        people, CI) with optional attack scenarios, in any input shape."""
        from ..simulate import SCENARIOS, write_simulation

        if scenario and "list" in scenario:
            for name, sc in SCENARIOS.items():
                typer.echo(f"{name:22} {sc.description}")
            return
        if (events is None) == (duration is None):
            raise QueryError("give exactly one of --events or --duration",
                             hint="e.g. --events 200000 or --duration 24h")
        if fmt not in SIM_FORMATS:
            raise QueryError(f"unknown format {fmt!r}", hint="use one of: " + ", ".join(SIM_FORMATS))
        if events is not None and events < 1:
            raise QueryError(f"--events must be at least 1, got {events}")
        if clusters < 1:
            raise QueryError(f"--clusters must be at least 1, got {clusters}")
        if nodes < 1:
            raise QueryError(f"--nodes must be at least 1, got {nodes}")
        unknown = [s for s in scenario or () if s not in SCENARIOS]
        if unknown:
            raise QueryError(f"unknown scenario(s): {', '.join(unknown)}",
                             hint="known: " + ", ".join(SCENARIOS))
        summary = write_simulation(
            out, events=events, duration=_duration(duration) if duration else None,
            seed=seed, clusters=clusters, scenarios=tuple(scenario or ()), fmt=fmt, nodes=nodes)
        for f in summary.files:
            err_console.print(f"wrote {f}")
        per = ", ".join(f"{c}: {n:,}" for c, n in summary.per_cluster.items())
        err_console.print(f"{summary.events:,} events ({per}); scenarios: "
                          f"{', '.join(summary.scenarios) or 'none'}")
