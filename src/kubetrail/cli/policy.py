"""`kubetrail policy ...`: validate, evaluate, explain, lint, simulate, diff, recommend, flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InputError, PolicyError, QueryError
from .context import app_context
from .filters import FILTER_OPTIONS, build_filter
from .output import console, err_console

policy_app = typer.Typer(
    name="policy", no_args_is_help=True,
    help="Audit policy: validate, evaluate and explain exactly as kube-apiserver does; lint, "
         "replay over recorded traffic, compare, recommend, and print the API server flags.",
)

_File = Annotated[str, typer.Argument(metavar="FILE", help="Policy file (YAML or JSON; - for stdin).")]
_Requests = Annotated[list[str] | None, typer.Option(
    "--request", "-r", help="Request attributes as JSON, an audit Event, or @FILE of JSON lines "
    "(repeatable; @- reads stdin).", show_default=False)]
_Logs = Annotated[list[str] | None, typer.Argument(
    metavar="[LOG]...", help="Audit logs to replay (any shape kubetrail ingest reads).",
    show_default=False)]
_FromArchive = Annotated[bool, typer.Option(
    "--archive", help="Replay the archived events instead of log files.")]
_Output = Annotated[str, typer.Option("--output", "-o", help="table or json.")]
_Since = FILTER_OPTIONS["since"][0]
_Cluster = FILTER_OPTIONS["cluster"][0]


def _read_text(spec: str, what: str) -> tuple[str, str]:
    """(text, label) of a file, or of stdin for '-'."""
    if spec == "-":
        return sys.stdin.read(), "<stdin>"
    path = Path(spec).expanduser()
    try:
        return path.read_text(encoding="utf-8-sig"), str(path)
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=spec, hint="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory", path=spec, hint="give a file") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", path=spec) from None
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror or exc}", path=spec) from None


def _policy(spec: str) -> Any:
    from ..policy import load_policy

    text, label = _read_text(spec, "policy file")
    policy = load_policy(text, source=label)
    for warning in policy.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {label}: {warning}")
    return policy


def _check_output(output: str) -> None:
    if output not in ("table", "json"):
        raise QueryError(f"unknown output {output!r}", hint="use table or json")


def _json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\n")
    sys.stdout.buffer.flush()


def _requests(specs: list[str] | None) -> list[Any]:
    """Attributes from --request values: inline JSON, or @file with one JSON per line."""
    from ..policy import Attributes, attributes_from_event

    if not specs:
        raise QueryError("no request given", hint='use --request \'{"verb": "get", ...}\' or '
                         "--request @requests.jsonl")
    out = []
    for spec in specs:
        if spec.startswith("@"):
            text, label = _read_text(spec[1:], "request file")
            items = [(f"{label}:{n}", line) for n, line in enumerate(text.splitlines(), 1)
                     if line.strip()]
        else:
            items = [("--request", spec)]
        for where, raw in items:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON: {exc}",
                                 hint="one JSON object per request") from None
            is_event = isinstance(data, dict) and ("auditID" in data or data.get("kind") == "Event")
            try:
                out.append(attributes_from_event(data) if is_event else Attributes.from_dict(data))
            except InputError as exc:
                raise InputError(f"{where}: {exc.message}", hint=exc.hint) from None
    return out


def _traffic(ctx: typer.Context, logs: list[str] | None, archive: bool, since: str | None,
             cluster: list[str] | None) -> Any:
    from ..policy.traffic import load_traffic

    if bool(logs) == archive:
        raise QueryError("give audit log files or --archive (one of them)",
                         hint="e.g. `kubetrail policy simulate policy.yaml audit.log`")
    if logs:
        return load_traffic(logs)
    flt = build_filter({"since": since, "cluster": cluster})
    return load_traffic(archive=app_context(ctx).archive(), flt=flt)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _count(n: float) -> str:
    return f"{round(n):,}"


@policy_app.command("validate")
def validate_cmd(file: _File, output: _Output = "table") -> None:
    """Check a policy as the API server's loader would: "valid", or every problem with its
    field path (exit 1)."""
    from ..policy import load_policy

    _check_output(output)
    text, label = _read_text(file, "policy file")
    if output == "json":
        try:
            policy = load_policy(text, source=label)
        except PolicyError as exc:
            _json({"valid": False, "problems": [{"field": p, "reason": r} for p, r in exc.problems]})
            raise typer.Exit(1) from None
        _json({"valid": True, "rules": len(policy.rules), "warnings": list(policy.warnings)})
        return
    policy = _policy(file)
    console.print(f"valid: {label} ({len(policy.rules)} rules)")


@policy_app.command("eval")
def eval_cmd(file: _File, request: _Requests = None) -> None:
    """One JSON decision per request: level, omitStages, omitManagedFields and the rule."""
    policy = _policy(file)
    for attrs in _requests(request):
        _json(policy.evaluate(attrs).to_dict())


@policy_app.command("explain")
def explain_cmd(file: _File, request: _Requests = None, output: _Output = "table") -> None:
    """Which rule decides each request, and why every earlier rule did not match."""
    _check_output(output)
    policy = _policy(file)
    for n, attrs in enumerate(_requests(request)):
        result = policy.explain(attrs)
        d = result.decision
        if output == "json":
            _json({"request": attrs.to_dict(), "decision": d.to_dict(),
                   "skipped": [{"rule": m.index, "selector": m.selector, "reason": m.reason}
                               for m in result.misses]})
            continue
        if n:
            console.print()
        who = attrs.user if attrs.user is not None else "(no user)"
        what = (f"{attrs.resource}{'/' + attrs.subresource if attrs.subresource else ''}"
                if attrs.resource_request else attrs.path)
        ns = f" in {attrs.namespace}" if attrs.namespace else ""
        console.print(f"[bold]{escape(f'{who} {attrs.verb} {what}{ns}')}[/bold]")
        for m in result.misses:
            rule = policy.rules[m.index]
            console.print(f"  rule {m.index} ({rule.level}): no — {m.selector}: "
                          f"{escape(m.reason)}")
        if d.rule_index is None:
            console.print("  no rule matched → level [bold]None[/bold] (the API server's "
                          "default: nothing is recorded)")
        else:
            stages = ", ".join(d.omit_stages) or "none"
            console.print(f"  rule {d.rule_index} matches → level [bold]{d.level}[/bold], "
                          f"omitted stages: {stages}, managedFields "
                          f"{'omitted' if d.omit_managed_fields else 'kept'}")


@policy_app.command("lint")
def lint_cmd(
    file: Annotated[str | None, typer.Argument(metavar="FILE", help="Policy file (- for stdin).",
                                               show_default=False)] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 1 when any finding is an error (for CI).")] = False,
    list_checks: Annotated[bool, typer.Option("--list", help="List the checks and exit.")] = False,
    output: _Output = "table",
) -> None:
    """Findings with id, severity, rule, message and fix: secrets logged in bodies, gaps,
    shadowed rules, noisy rules, exec not recorded, ..."""
    from ..policy.lint import LINT_CHECKS, lint_policy

    _check_output(output)
    if list_checks:
        for check_id, description in LINT_CHECKS.items():
            console.print(f"{check_id:32} {description}")
        return
    if file is None:
        raise QueryError("no policy file given", hint="kubetrail policy lint policy.yaml")
    findings = lint_policy(_policy(file))
    if output == "json":
        for f in findings:
            _json(f.to_dict())
    elif findings:
        table = Table(header_style="bold", show_lines=True)
        for col in ("severity", "id", "rule", "message", "fix"):
            table.add_column(col, overflow="fold")
        colours = {"error": "red", "warning": "yellow", "info": "cyan"}
        for f in findings:
            table.add_row(f"[{colours.get(f.severity, 'white')}]{f.severity}[/]", f.id,
                          "-" if f.rule_index is None else str(f.rule_index), escape(f.message),
                          escape(f.fix))
        console.print(table)
    else:
        console.print("no findings")
    errors = sum(f.severity == "error" for f in findings)
    if output != "json":
        err_console.print(f"{len(findings)} findings, {errors} errors")
    if strict and errors:
        raise typer.Exit(1)


def _print_simulation(sim: Any, policy: Any) -> None:
    days = sim.days
    before, after = sim.before.per_day(days), sim.after.per_day(days)
    console.print(f"Replayed {sim.before.requests:,} requests ({sim.before.events:,.0f} events) "
                  f"over {days:.2f} days.")
    table = Table(title="Volume per rule (per day)", header_style="bold")
    for col, justify in (("rule", "right"), ("level", "left"), ("selects", "left"),
                         ("requests", "right"), ("events", "right"), ("bytes", "right"),
                         ("share", "right"), ("loudest requests", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in sim.rules:
        if r.index is None and not r.volume.requests:
            continue
        per = r.volume.per_day(days)
        share = f"{100 * r.volume.bytes / sim.after.bytes:.0f}%" if sim.after.bytes else "-"
        loud = "; ".join(f"{t['user']} {t['verb']} {t['what']} ({v.per_day(days).events:,.0f})"
                         for t, v in r.top)
        selects = _selects(policy.rules[r.index]) if r.index is not None else "(nothing matched)"
        table.add_row("-" if r.index is None else str(r.index), r.level, escape(selects),
                      _count(per.requests), _count(per.events), _size(per.bytes), share,
                      escape(loud))
    console.print(table)
    console.print(f"per day as recorded: {_count(before.events)} events, {_size(before.bytes)}; "
                  f"under this policy: {_count(after.events)} events, {_size(after.bytes)}")
    noisy = [str(r.index) if r.index is not None else "default" for r in sim.noisiest(3)]
    if noisy:
        console.print(f"noisiest rules: {', '.join(noisy)}")
    if sim.blind:
        blind = Table(title="Detection rules this policy would blind", header_style="bold")
        for col in ("rule", "severity", "needs", "blind requests", "why"):
            blind.add_column(col, overflow="fold")
        for b in sim.blind:
            blind.add_row(b.rule, b.severity, b.needs, f"{b.blind:,} of {b.requests:,}",
                          escape("; ".join(b.reasons[:3])))
        console.print(blind)
    else:
        console.print("no detection rule would lose what it watches")
    if sim.estimated_bodies:
        console.print(f"[dim]{sim.estimated_bodies:,} requests' body sizes were estimated from "
                      "similar requests[/dim]")
    for warning in sim.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


def _selects(rule: Any) -> str:
    parts = []
    if rule.users:
        parts.append("users " + ",".join(rule.users[:3]) + ("…" if len(rule.users) > 3 else ""))
    if rule.user_groups:
        parts.append("groups " + ",".join(rule.user_groups[:3]))
    if rule.verbs:
        parts.append("verbs " + ",".join(rule.verbs))
    if rule.resources:
        res = [f"{r}{'.' + gr.group if gr.group else ''}" for gr in rule.resources
               for r in (gr.resources or ("*",))]
        parts.append(",".join(res[:4]) + ("…" if len(res) > 4 else ""))
    if rule.namespaces:
        parts.append("in " + ",".join(n or '""' for n in rule.namespaces[:3]))
    if rule.non_resource_urls:
        parts.append(",".join(rule.non_resource_urls[:3]))
    return "; ".join(parts) or "everything"


@policy_app.command("simulate")
def simulate_cmd(ctx: typer.Context, file: _File, logs: _Logs = None,
                 archive: _FromArchive = False, since: _Since = None,
                 cluster: _Cluster = None, output: _Output = "table",
                 rules: Annotated[list[Path] | None, typer.Option(
                     "--rules", help="Detection rule files to check besides the built-in pack.",
                     show_default=False)] = None) -> None:
    """Replay a policy over recorded traffic: events and bytes per rule, totals before and
    after, the noisiest rules, and the detection rules it would blind."""
    from ..detect.rules import load_rules
    from ..policy.replay import simulate_policy

    _check_output(output)
    policy = _policy(file)
    detection = load_rules([str(p) for p in rules or ()]).rules
    sim = simulate_policy(policy, _traffic(ctx, logs, archive, since, cluster),
                          detection_rules=detection)
    if output == "json":
        _json(sim.to_dict())
    else:
        _print_simulation(sim, policy)


@policy_app.command("diff")
def diff_cmd(ctx: typer.Context,
             first: Annotated[str, typer.Argument(metavar="A", help="The current policy.")],
             second: Annotated[str, typer.Argument(metavar="B", help="The proposed policy.")],
             logs: _Logs = None, archive: _FromArchive = False, since: _Since = None,
             cluster: _Cluster = None, output: _Output = "table",
             limit: Annotated[int, typer.Option("--limit", "-l", help="Rows to show (0: all).")] = 30,
             ) -> None:
    """The requests whose audit level (or omitted stages) changes from A to B, grouped."""
    from ..policy.replay import diff_policies

    _check_output(output)
    a, b = _policy(first), _policy(second)
    result = diff_policies(a, b, _traffic(ctx, logs, archive, since, cluster))
    if output == "json":
        _json(result.to_dict())
        return
    days = result.first.days
    changes = result.changes[:limit] if limit else result.changes
    table = Table(title=f"Requests recorded differently ({len(result.changes)} groups)",
                  header_style="bold")
    for col in ("A → B", "verb", "what", "rules", "requests/day", "events/day A → B", "users"):
        table.add_column(col, overflow="fold")
    for ch in changes:
        arrow = {"more": "[green]↑[/green]", "less": "[red]↓[/red]"}.get(ch.kind, "~")
        table.add_row(f"{arrow} {ch.before} → {ch.after}", escape(ch.verb), escape(ch.what),
                      f"{_rule(ch.rule_before)} → {_rule(ch.rule_after)}",
                      _count(ch.requests / days),
                      f"{_count(ch.events_before / days)} → {_count(ch.events_after / days)}",
                      escape(", ".join(ch.examples)))
    console.print(table)
    fa, fb = result.first.after.per_day(days), result.second.after.per_day(days)
    console.print(f"per day: A {_count(fa.events)} events, {_size(fa.bytes)}; "
                  f"B {_count(fb.events)} events, {_size(fb.bytes)}; "
                  f"{_count(result.unchanged_requests / days)} requests/day unchanged")


def _rule(index: int | None) -> str:
    return "default" if index is None else str(index)


@policy_app.command("recommend")
def recommend_cmd(
    profile: Annotated[str, typer.Option("--profile", help="baseline or strict.")] = "baseline",
    from_logs: Annotated[list[str] | None, typer.Option(
        "--from", help="Audit logs to tune the policy to (repeatable).", show_default=False)] = None,
    max_events: Annotated[int | None, typer.Option(
        "--max-events-per-day", help="Drop the noisiest low-risk system reads until the "
        "projected volume fits (needs --from).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of "
                                             "stdout.", show_default=False)] = None,
) -> None:
    """A commented policy that passes lint: credentials at Metadata, RBAC and workload writes
    with bodies, exec recorded, system noise dropped, RequestReceived omitted."""
    from ..policy.recommend import recommend_policy
    from ..policy.traffic import load_traffic

    if max_events is not None and not from_logs:
        raise QueryError("--max-events-per-day needs --from LOG",
                         hint="the volume is projected from recorded traffic")
    if max_events is not None and max_events < 1:
        raise QueryError(f"--max-events-per-day must be at least 1, got {max_events}")
    traffic = load_traffic(from_logs) if from_logs else None
    text = recommend_policy(profile, traffic=traffic, max_events_per_day=max_events)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=str(out)) from None
    err_console.print(f"wrote {out}")


@policy_app.command("flags")
def flags_cmd(
    file: _File,
    log_path: Annotated[str | None, typer.Option("--log-path", help="--audit-log-path on the "
                                                 "node (- for stdout).", show_default=False)] = None,
    maxage: Annotated[int | None, typer.Option("--maxage", help="Days to keep rotated logs.",
                                               show_default=False)] = None,
    maxbackup: Annotated[int | None, typer.Option("--maxbackup", help="Rotated logs to keep.",
                                                  show_default=False)] = None,
    maxsize: Annotated[int | None, typer.Option("--maxsize", help="MB before rotation.",
                                                show_default=False)] = None,
    compress: Annotated[bool, typer.Option("--compress", help="gzip rotated logs.")] = False,
    log_mode: Annotated[str | None, typer.Option("--log-mode", help="batch, blocking or "
                                                 "blocking-strict.", show_default=False)] = None,
    webhook_url: Annotated[str | None, typer.Option(
        "--webhook-url", help="URL of `kubetrail serve`.", show_default=False)] = None,
    webhook_ca: Annotated[str | None, typer.Option(
        "--webhook-ca", help="CA bundle for the webhook's TLS certificate.",
        show_default=False)] = None,
    webhook_token_file: Annotated[str | None, typer.Option(
        "--webhook-token-file", help="File holding the bearer token kubetrail serve expects.",
        show_default=False)] = None,
    webhook_client_cert: Annotated[str | None, typer.Option(
        "--webhook-client-cert", help="Client certificate the API server presents (mutual "
        "TLS: kubetrail serve --client-ca).", show_default=False)] = None,
    webhook_client_key: Annotated[str | None, typer.Option(
        "--webhook-client-key", help="Its private key.", show_default=False)] = None,
    webhook_insecure: Annotated[bool, typer.Option(
        "--webhook-insecure", help="Skip TLS verification (not for production).")] = False,
    webhook_config_path: Annotated[str, typer.Option(
        "--webhook-config-path", help="Where the webhook kubeconfig lives on the node.")
    ] = "/etc/kubernetes/audit/webhook.kubeconfig",
    webhook_mode: Annotated[str | None, typer.Option(
        "--webhook-mode", help="batch, blocking or blocking-strict.", show_default=False)] = None,
    webhook_initial_backoff: Annotated[str | None, typer.Option(
        "--webhook-initial-backoff", help="e.g. 10s.", show_default=False)] = None,
    truncate: Annotated[bool, typer.Option("--truncate", help="Enable event truncation.")] = False,
    policy_path: Annotated[str, typer.Option(
        "--policy-path", help="Where the policy file lives on the control-plane node.")
    ] = "/etc/kubernetes/audit/policy.yaml",
) -> None:
    """The kube-apiserver arguments, the static-pod manifest patch and the webhook
    kubeconfig that make the API server write audit events with this policy."""
    from ..policy.flags import FlagOptions, apiserver_config, render

    _policy(file)  # a policy the API server would refuse is not worth deploying
    config = apiserver_config(FlagOptions(
        policy_file=policy_path, log_path=log_path, maxage=maxage, maxbackup=maxbackup,
        maxsize=maxsize, compress=compress, log_mode=log_mode, webhook_url=webhook_url,
        webhook_ca=webhook_ca, webhook_token_file=webhook_token_file,
        webhook_client_cert=webhook_client_cert, webhook_client_key=webhook_client_key,
        webhook_insecure=webhook_insecure, webhook_config_path=webhook_config_path,
        webhook_mode=webhook_mode, webhook_initial_backoff=webhook_initial_backoff,
        truncate=truncate))
    sys.stdout.write(render(config))


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app)


__all__ = ["policy_app", "register"]
