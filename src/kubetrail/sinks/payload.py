"""Alert bodies for chat and alerting systems: a Slack message and an Alertmanager alert.

Pure functions of an :class:`~kubetrail.detect.alert.Alert`, so they are tested without a
network. Slack: https://api.slack.com/messaging/webhooks and the Block Kit reference.
Alertmanager: the v2 OpenAPI spec, ``POST /api/v2/alerts`` takes a list of postable alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..detect.alert import Alert

__all__ = ["LINK_FIELDS", "alertmanager_alerts", "render_link", "slack_message"]

#: Placeholders a `link:` template may use, e.g. ``https://kt.example/events/{audit_id}``.
LINK_FIELDS = ("audit_id", "cluster", "name", "namespace", "resource", "rule", "severity",
               "user", "verb")

_EMOJI = {"info": ":information_source:", "low": ":large_blue_circle:",
          "medium": ":large_yellow_circle:", "high": ":large_orange_circle:",
          "critical": ":red_circle:"}


def render_link(template: str, alert: Alert) -> str:
    """Fill a link template; values are URL-escaped and a missing one becomes ``-``."""
    return template.format_map({f: quote(str(getattr(alert, f) or "-"), safe="")
                                for f in LINK_FIELDS})


def _time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _what(alert: Alert) -> str:
    resource = alert.resource or "-"
    if alert.subresource:
        resource += f"/{alert.subresource}"
    outcome = " ".join(str(x) for x in (alert.code, alert.decision) if x)
    return f"{alert.verb or '-'} {resource}" + (f" ({outcome})" if outcome else "")


def _where(alert: Alert) -> str:
    return " / ".join((alert.cluster or "-", alert.namespace or "(cluster scope)", alert.name or "-"))


# -- Slack -----------------------------------------------------------------------------


def _esc(text: str, limit: int = 2000) -> str:
    """Slack mrkdwn needs only &, < and > escaped; fields hold at most 2000 characters."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(alert: Alert, link: str | None = None) -> dict[str, Any]:
    """An incoming-webhook message: `text` (severity, title, rule and message) is what
    notifications show; `blocks` lay out who, what, where and when, the count of a suppressed
    burst, and `link` (a template of :data:`LINK_FIELDS`) when one is configured."""
    who = alert.user or "-"
    if alert.source_ips:
        who += f" from {', '.join(alert.source_ips)}"
    epoch = int(alert.time.timestamp())
    fields = [
        f"*Severity*\n{alert.severity}",
        f"*Rule*\n`{_esc(alert.rule)}`",
        f"*Who*\n{_esc(who)}",
        f"*What*\n{_esc(_what(alert))}",
        f"*Where*\n{_esc(_where(alert))}",
        # Slack shows the date in the reader's time zone; the fallback text is UTC.
        f"*When*\n<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{_time(alert.time)}>",
    ]
    if alert.count is not None:
        span = ""
        if alert.window is not None:
            span = f" between {_time(alert.window[0])} and {_time(alert.window[1])}"
        fields.append(f"*Count*\n{alert.count}{span}")
    if link:
        fields.append(f"*Link*\n<{render_link(link, alert)}|open in kubetrail>")
    context = [f"auditID `{_esc(alert.audit_id or '-')}`"]
    if alert.user_agent:
        context.append(f"user agent {_esc(alert.user_agent, 300)}")
    if alert.tags or alert.behaviours:
        context.append("tags " + _esc(", ".join((*alert.tags, *alert.behaviours)), 300))
    header = f"{_EMOJI.get(alert.severity, '')} {alert.severity.upper()}: {alert.title}".strip()
    return {
        "text": _esc(f"[{alert.severity.upper()}] {alert.title} ({alert.rule}): {alert.message}",
                     3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                        "text": header if len(header) <= 150 else header[:149] + "…"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _esc(alert.message, 3000)}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


# -- Alertmanager ----------------------------------------------------------------------


def alertmanager_alerts(alert: Alert, resolve_after: timedelta = timedelta(hours=1),
                        link: str | None = None) -> list[dict[str, Any]]:
    """The v2 body: a list with one alert. Labels identify it (Alertmanager groups and
    deduplicates on them), so they hold what the alert is about, never the audit ID;
    `endsAt` is `resolve_after` past the event, as an audit event has no end of its own."""
    labels = {"alertname": alert.rule, "severity": alert.severity, "cluster": alert.cluster,
              "namespace": alert.namespace, "user": alert.user, "verb": alert.verb,
              "resource": alert.resource, "name": alert.name, "source": "kubetrail"}
    annotations = {
        "summary": alert.message,
        "description": f"{alert.title}: {alert.user or '-'} {_what(alert)} in {_where(alert)}",
        "title": alert.title, "audit_id": alert.audit_id,
        "source_ips": ", ".join(alert.source_ips), "user_agent": alert.user_agent,
        "count": None if alert.count is None else str(alert.count),
    }
    body: dict[str, Any] = {
        "labels": {k: str(v) for k, v in labels.items() if v},
        "annotations": {k: str(v) for k, v in annotations.items() if v},
        "startsAt": _time(alert.window[0] if alert.window else alert.time),
        "endsAt": _time(alert.time + resolve_after),
    }
    if link:
        body["generatorURL"] = render_link(link, alert)
    return [body]
