"""`kubetrail detect|hunt|alerts|rules`: the detection engine from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from ..errors import QueryError
from .context import app_context
from .filters import FILTER_OPTIONS, build_filter
from .output import console, err_console

_Rules = Annotated[list[Path] | None, typer.Option(
    "--rules", help="Extra rule files or directories (after the built-in pack; repeatable).",
    show_default=False)]
_NoBuiltin = Annotated[bool, typer.Option("--no-builtin", help="Leave the built-in pack out.")]
_Rule = Annotated[list[str] | None, typer.Option(
    "--rule", help="Run only this rule (repeatable; disabled rules too).", show_default=False)]
_Since = FILTER_OPTIONS["since"][0]
_Until = FILTER_OPTIONS["until"][0]
_Cluster = FILTER_OPTIONS["cluster"][0]
_User = FILTER_OPTIONS["user"][0]
_Namespace = FILTER_OPTIONS["namespace"][0]
_DETECT_OUTPUTS = ("table", "json", "falco")
_SEVERITY_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red",
                   "critical": "bold red"}


def _ruleset(rules: list[Path] | None, no_builtin: bool) -> Any:
    from ..detect.rules import load_rules

    return load_rules([str(p) for p in rules or ()], builtin=not no_builtin)


class _Printer:
    """Alerts to stdout as they come: JSON lines, Falco JSON, or a table at the end."""

    def __init__(self, output: str) -> None:
        if output not in _DETECT_OUTPUTS:
            raise QueryError(f"unknown output {output!r}", hint="use table, json or falco")
        self.output = output
        self.rows: list[Any] = []

    def __call__(self, alert: Any) -> None:
        if self.output == "json":
            sys.stdout.buffer.write(orjson.dumps(alert.to_dict()) + b"\n")
            sys.stdout.buffer.flush()
        elif self.output == "falco":
            sys.stdout.buffer.write(orjson.dumps(alert.to_falco()) + b"\n")
            sys.stdout.buffer.flush()
        else:
            self.rows.append(alert)

    def finish(self) -> None:
        if self.output != "table":
            return
        if not self.rows:
            console.print("no alerts")
            return
        table = Table(header_style="bold")
        for col in ("time", "severity", "rule", "user", "what", "message"):
            table.add_column(col, overflow="fold")
        for a in self.rows:
            what = "/".join(x for x in (a.namespace, a.resource, a.name) if x) or "-"
            style = _SEVERITY_STYLE.get(a.severity, "")
            table.add_row(a.time.strftime("%Y-%m-%d %H:%M:%S"), f"[{style}]{a.severity}[/]",
                          escape(a.rule), escape(a.user or "-"), escape(what),
                          escape(a.message + (f" (×{a.count})" if a.count else "")))
        console.print(table)


def _report_rejects(report: Any) -> None:
    for message in report.rejects.files:
        err_console.print(f"[red]error: {escape(message)}[/red]")
    records = report.rejects.records
    if records:
        err_console.print(f"[yellow]{len(records):,} record(s) could not be read:[/yellow]")
        for file, line, reason in records[:10]:
            err_console.print(f"  {file}:{line}: {reason}", markup=False, highlight=False)
        if len(records) > 10:
            err_console.print(f"  ... and {len(records) - 10:,} more")


def register(app: typer.Typer) -> None:
    rules_app = typer.Typer(name="rules", no_args_is_help=True,
                            help="The detection rules: list, show, validate, test, import Sigma.")
    app.add_typer(rules_app)

    @app.command("detect")
    def detect_cmd(
        ctx: typer.Context,
        paths: Annotated[list[str], typer.Argument(help="Audit logs of any shape (- for stdin).")],
        rules: _Rules = None, no_builtin: _NoBuiltin = False, rule: _Rule = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table, json (one alert a "
                                            "line) or falco (Falco's JSON alerts).")] = "table",
        cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster name for "
                                                    "inputs that carry none.")] = None,
        fmt: Annotated[str, typer.Option("--format", "-f", help="Input shape.")] = "auto",
        stateless: Annotated[bool, typer.Option(
            "--stateless", help="Do not load or save baselines and windows in the data dir.")
        ] = False,
    ) -> None:
        """Stream audit logs through the rules and print the alerts.

        Exit 0 when the input was read (alerts or not), 3 when part of it could not be read,
        1 on a fatal error."""
        from ..detect.run import detect_paths
        from ..sinks import build_sinks

        printer = _Printer(output)
        app_ctx = app_context(ctx)
        settings = app_ctx.settings(cluster=cluster)
        ruleset = _ruleset(rules, no_builtin)
        archive = app_ctx.archive(create=True)
        state = None if stateless else archive.state_dir / "detect-state.json"
        with build_sinks(settings.alerts) as sinks:
            def both(alert: Any) -> None:
                printer(alert)
                sinks.send(alert)

            report = detect_paths(paths, ruleset, both, cluster=settings.cluster, fmt=fmt,
                                  state_path=state, rule_ids=rule, redactor=archive.redactor)
        printer.finish()
        _report_rejects(report)
        err_console.print(f"{report.events:,} events, {report.alerts:,} alerts")
        raise typer.Exit(report.exit_code)

    @app.command("hunt")
    def hunt_cmd(
        ctx: typer.Context,
        rules: _Rules = None, no_builtin: _NoBuiltin = False, rule: _Rule = None,
        since: _Since = None, until: _Until = None,
        cluster: _Cluster = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table, json or falco.")
                          ] = "table",
        store: Annotated[bool, typer.Option("--store", help="Also keep the alerts in the "
                                            "archive (`kubetrail alerts`).")] = False,
    ) -> None:
        """Run the rules (or one) over the archive in time order: retro-hunting."""
        from ..detect.run import hunt
        from ..detect.store import append_alerts

        printer = _Printer(output)
        archive = app_context(ctx).archive()
        found: list[Any] = []

        def keep(alert: Any) -> None:
            printer(alert)
            found.append(alert)

        flt = build_filter({"since": since, "until": until, "cluster": cluster})
        from ..store.access import current_user, describe_filter, record_access

        record_access(archive, who=current_user(), action="hunt",
                      what={"rules": list(rule or []), **describe_filter(flt)})
        report = hunt(archive, _ruleset(rules, no_builtin), keep, flt=flt, rule_ids=rule)
        printer.finish()
        if store:
            append_alerts(archive, found)
        err_console.print(f"{report.events:,} events hunted, {report.alerts:,} alerts")

    @app.command("alerts")
    def alerts_cmd(
        ctx: typer.Context,
        rule: Annotated[list[str] | None, typer.Option("--rule", help="Rule id (glob).",
                                                       show_default=False)] = None,
        severity: Annotated[str | None, typer.Option(
            "--severity", help="At least this severity: info, low, medium, high, critical.",
            show_default=False)] = None,
        behaviour: Annotated[list[str] | None, typer.Option(
            "--behaviour", help="Catalogue id, e.g. B18.", show_default=False)] = None,
        user: _User = None, namespace: _Namespace = None,
        since: _Since = None, until: _Until = None,
        cluster: _Cluster = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
        limit: Annotated[int, typer.Option("--limit", "-l", help="At most this many (0: all).")
                         ] = 0,
    ) -> None:
        """The alerts stored by `ingest --detect` (and `hunt --store`), oldest first."""
        from ..detect.rules import SEVERITIES
        from ..detect.store import AlertFilter, read_alerts
        from ..query.filters import parse_when

        if severity is not None and severity not in SEVERITIES:
            raise QueryError(f"unknown severity {severity!r}", hint="use " + ", ".join(SEVERITIES))
        if output not in ("table", "json"):
            raise QueryError(f"unknown output {output!r}", hint="use table or json")
        flt = AlertFilter(rules=tuple(rule or ()), min_severity=severity,
                          users=tuple(user or ()), namespaces=tuple(namespace or ()),
                          clusters=tuple(cluster or ()), behaviours=tuple(behaviour or ()),
                          since=parse_when(since) if since else None,
                          until=parse_when(until) if until else None)
        from ..store.access import current_user, describe_filter, record_access

        archive = app_context(ctx).archive()
        alerts = read_alerts(archive, flt, limit)
        record_access(archive, who=current_user(), action="alerts", what=describe_filter(flt),
                      rows=len(alerts))
        if output == "json":
            for a in alerts:
                sys.stdout.buffer.write(orjson.dumps(a, default=str, option=orjson.OPT_UTC_Z) + b"\n")
            return
        table = Table(header_style="bold")
        for col in ("time", "severity", "rule", "user", "namespace", "message"):
            table.add_column(col, overflow="fold")
        for a in alerts:
            style = _SEVERITY_STYLE.get(a["severity"], "")
            table.add_row(str(a["time"])[:19], f"[{style}]{a['severity']}[/]", escape(a["rule"]),
                          escape(str(a.get("user") or "-")), escape(str(a.get("namespace") or "-")),
                          escape(str(a.get("message") or "")))
        console.print(table)
        if not alerts:
            console.print("no alerts")

    @rules_app.command("list")
    def rules_list(rules: _Rules = None, no_builtin: _NoBuiltin = False,
                   output: Annotated[str, typer.Option("--output", "-o", help="table or json.")
                                     ] = "table") -> None:
        """Every rule: id, severity, behaviours, state, enabled."""
        rs = _ruleset(rules, no_builtin)
        rows = [{"rule": r.id, "severity": r.severity, "behaviours": list(r.behaviours),
                 "tags": list(r.tags), "kind": "sequence" if r.sequence else
                 (r.state.kind if r.state else "event"), "enabled": r.enabled, "title": r.title}
                for r in rs.rules]
        if output == "json":
            for row in rows:
                sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
            return
        table = Table(header_style="bold")
        for col in ("rule", "severity", "behaviours", "kind", "enabled", "title"):
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(row["rule"], row["severity"], ",".join(row["behaviours"]), row["kind"],
                          "yes" if row["enabled"] else "no", escape(row["title"]))
        console.print(table)
        err_console.print(f"{len(rows)} rules")

    @rules_app.command("show")
    def rules_show(rule_id: Annotated[str, typer.Argument(metavar="RULE")], rules: _Rules = None,
                   no_builtin: _NoBuiltin = False,
                   sql: Annotated[bool, typer.Option("--sql", help="Also print the compiled SQL."
                                                     )] = False) -> None:
        """One rule as written (after overrides), and where it comes from."""
        import yaml

        rule = _ruleset(rules, no_builtin).get(rule_id)
        console.print(f"# {rule.source}", markup=False)
        spec = {k: v for k, v in rule.spec.items() if k != "examples"}
        sys.stdout.write(yaml.safe_dump([spec], sort_keys=False, allow_unicode=True))
        if sql:
            sys.stdout.write(f"# compiled condition:\n{rule.sql}\n")

    @rules_app.command("validate")
    def rules_validate(paths: Annotated[list[Path] | None, typer.Argument(
            help="Rule files or directories (with the built-in pack unless --no-builtin).")] = None,
            no_builtin: _NoBuiltin = False) -> None:
        """Load and compile rules, reporting every problem with file, line and field."""
        rs = _ruleset(paths, no_builtin)
        console.print(f"valid: {len(rs.rules)} rules, {len(rs.lists)} lists, "
                      f"{len(rs.macros)} macros")

    @rules_app.command("test")
    def rules_test(paths: Annotated[list[Path] | None, typer.Argument(
            help="Extra rule files or directories.")] = None, no_builtin: _NoBuiltin = False,
            rule: _Rule = None) -> None:
        """Run every rule's match / no_match examples (exit 1 on any failure)."""
        from ..detect.examples import run_examples

        rs = _ruleset(paths, no_builtin)
        chosen = [rs.get(r) for r in rule] if rule else list(rs.rules)
        results = run_examples(rs, chosen)
        failed = [r for r in results if not r.ok]
        for r in failed:
            err_console.print(f"[red]FAIL[/red] {r.rule} {r.kind}[{r.index}]: {escape(r.detail)}")
        missing = [r.id for r in chosen if not r.examples.get("match") or not
                   r.examples.get("no_match")]
        for rid in missing:
            err_console.print(f"[yellow]no examples[/yellow] {rid} (needs match and no_match)")
        console.print(f"{len(results) - len(failed)}/{len(results)} examples pass "
                      f"({len(chosen)} rules)")
        if failed:
            raise typer.Exit(1)

    @rules_app.command("import-sigma")
    def rules_import_sigma(
        paths: Annotated[list[Path], typer.Argument(help="Sigma rule files or directories.")],
        out: Annotated[Path | None, typer.Option("--out", help="Write the kubetrail rule file "
                                                 "here instead of stdout.",
                                                 show_default=False)] = None,
    ) -> None:
        """Convert Sigma rules for Kubernetes audit logs into kubetrail rules (with pySigma);
        what cannot be converted is named."""
        from ..detect.sigma import convert_sigma, to_yaml

        conversions = convert_sigma([str(p) for p in paths])
        for c in conversions:
            for problem in c.problems:
                err_console.print(f"[yellow]{escape(c.source)}[/yellow]: {escape(problem)}")
            for note in c.notes:
                err_console.print(f"[dim]{escape(c.source)}: {escape(note)}[/dim]")
        text = to_yaml(conversions)
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text, encoding="utf-8")
        done = sum(c.rule is not None for c in conversions)
        err_console.print(f"{done}/{len(conversions)} Sigma rules converted")
