"""The ``alerts:`` section of kubetrail.yaml, turned into an :class:`AlertDispatcher`.

.. code-block:: yaml

    alerts:
      min_severity: low        # alerts below are not sent at all (default info: everything)
      suppress: 10m            # same rule + key within this window: the first alert at once,
                               # then one more carrying the count (default 0: off). The key is
                               # the rule's group, else (user, namespace, name).
      sinks:
        - type: stdout         # JSON lines on standard output
          format: json         # json (Alert.to_dict) | falco (Falco's output shape)
        - type: file           # JSON lines appended to a file created with mode 0600
          path: /var/log/kubetrail/alerts.jsonl
          format: json
        - type: webhook        # POST each alert as JSON
          url: https://example.com/hook
          format: json
          headers: {Authorization: "Bearer ..."}
          timeout: 5s          # per attempt
          retries: 3           # after the first attempt: connection errors, timeouts, 5xx, 429
          backoff: 1s          # first wait; doubles each retry, with jitter
          max_backoff: 30s     # cap on one wait, including what Retry-After asks for
        - type: slack          # Slack incoming webhook: severity, rule, who/what/where/when
          url: https://hooks.slack.com/services/...
          link: https://kubetrail.example/events/{audit_id}   # optional "Link" field
        - type: alertmanager   # POST {url}/api/v2/alerts: labels, annotations, startsAt, endsAt
          url: http://alertmanager:9093
          resolve_after: 1h    # endsAt = event time + this
          link: https://kubetrail.example/events/{audit_id}   # optional generatorURL

Every sink also takes ``min_severity``. Durations are a number with ``ms``, ``s``, ``m``,
``h`` or ``d``, or a bare number of seconds. ``timeout``, ``retries``, ``backoff`` and
``max_backoff`` apply to the three HTTP sinks, ``headers`` to webhook and alertmanager, and
``link`` (placeholders: ``{audit_id}``, ``{cluster}``, ``{name}``, ``{namespace}``,
``{resource}``, ``{rule}``, ``{severity}``, ``{user}``, ``{verb}``) to slack and alertmanager.
The section is read from the file only; every problem is reported in one
:class:`~kubetrail.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..detect.alert import template_fields
from ..errors import ConfigError
from .base import FORMATS, SEVERITY_RANK, Sink
from .dispatch import AlertDispatcher, Route
from .local import FileSink, StdoutSink
from .payload import LINK_FIELDS

__all__ = ["SINK_TYPES", "Option", "SinkType", "build_sinks"]

# -- value parsers: each returns the value or raises ValueError("must be ...") -----------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def _duration(value: Any, *, positive: bool = False) -> float:
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m[1]) * _UNITS[m[2]]
    if seconds is None or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"must be a duration such as 500ms, 5s or 10m, got {value!r}")
    return seconds


def _severity(value: Any) -> str:
    if value not in SEVERITY_RANK:
        raise ValueError(f"must be one of {', '.join(SEVERITY_RANK)}, got {value!r}")
    return str(value)


def _format(value: Any) -> str:
    if value not in FORMATS:
        raise ValueError(f"must be one of {', '.join(FORMATS)}, got {value!r}")
    return str(value)


def _url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return str(value)


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a file path, got {value!r}")
    return Path(value).expanduser()


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return value


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str | int | float) for k, v in value.items()):
        raise ValueError("must be a mapping of header names to values, "
                         "e.g. {Authorization: \"Bearer ...\"}")
    return {k: str(v) for k, v in value.items()}


def _link(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL template, got {value!r}")
    try:
        names = template_fields(value)
    except ValueError:
        raise ValueError(f"has unbalanced braces: {value!r}") from None
    unknown = sorted(set(names) - set(LINK_FIELDS))
    if unknown:
        raise ValueError(f"uses unknown placeholder(s) {', '.join(unknown)}")
    return value


# -- the registry ----------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One key of a sink (or of the section): how to read it, its default, what it means."""

    parse: Callable[[Any], Any]
    help: str
    default: Any = _REQUIRED
    example: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class SinkType:
    """A sink kind as configured: its options and how to build it from their values."""

    help: str
    build: Callable[[Mapping[str, Any], str], Sink]
    options: Mapping[str, Option] = field(default_factory=dict)


def _http(payload: str, values: Mapping[str, Any], label: str) -> Sink:
    try:
        from . import http
    except ImportError:  # pragma: no cover - only the HTTP sinks need httpx
        raise ConfigError(f"{label}: HTTP sinks need the httpx package",
                          hint="pip install httpx") from None
    from . import payload as p

    url = values["url"]
    body: Callable[..., Any]
    if payload == "alertmanager":
        if not url.rstrip("/").endswith("/api/v2/alerts"):
            url = url.rstrip("/") + "/api/v2/alerts"
        body = partial(p.alertmanager_alerts, resolve_after=timedelta(seconds=values["resolve_after"]),
                       link=values["link"])
    elif payload == "slack":
        body = partial(p.slack_message, link=values["link"])
    else:
        body = FORMATS[values["format"]]
    policy = http.RetryPolicy(timeout=values["timeout"], retries=values["retries"],
                              backoff=values["backoff"], max_backoff=values["max_backoff"])
    sink = http.HTTPSink(url, body, policy, headers=values.get("headers"))
    sink.label = f"{label} {sink.label}"
    return sink


_MIN_SEVERITY = Option(_severity, "least severe alert sent", "info", "min_severity: high")
_FORMAT = Option(_format, "json (kubetrail's alert) or falco (Falco's output)", "json")
_URL = Option(_url, "where to POST", example="url: https://example.com/hook")
_RETRY = {
    "timeout": Option(partial(_duration, positive=True), "wait for one attempt", 5.0),
    "retries": Option(_count, "attempts after the first (errors, timeouts, 5xx, 429)", 3),
    "backoff": Option(_duration, "first wait between attempts; doubles, with jitter", 1.0),
    "max_backoff": Option(_duration, "cap on one wait, Retry-After included", 30.0),
}
_HEADERS = Option(_headers, "extra HTTP headers", {})
_LINK = Option(_link, "URL template; placeholders: " + ", ".join(f"{{{f}}}" for f in LINK_FIELDS), None)

#: Every sink type, by the name used in ``type:``.
SINK_TYPES: dict[str, SinkType] = {
    "stdout": SinkType("JSON lines on standard output",
                       lambda v, label: StdoutSink(FORMATS[v["format"]], label=label),
                       {"format": _FORMAT}),
    "file": SinkType("JSON lines appended to a file (created 0600)",
                     lambda v, label: FileSink(v["path"], FORMATS[v["format"]],
                                               label=f"{label} {v['path']}"),
                     {"path": Option(_path, "file to append to",
                                     example="path: /var/log/kubetrail/alerts.jsonl"),
                      "format": _FORMAT}),
    "webhook": SinkType("POST each alert as JSON, retried", partial(_http, "webhook"),
                        {"url": _URL, "format": _FORMAT, "headers": _HEADERS, **_RETRY}),
    "slack": SinkType("Slack incoming webhook message", partial(_http, "slack"),
                      {"url": Option(_url, "the incoming webhook URL",
                                     example="url: https://hooks.slack.com/services/T/B/X"),
                       "link": _LINK, **_RETRY}),
    "alertmanager": SinkType(
        "Alertmanager v2 API (POST /api/v2/alerts)", partial(_http, "alertmanager"),
        {"url": Option(_url, "Alertmanager base URL", example="url: http://alertmanager:9093"),
         "headers": _HEADERS, "resolve_after": Option(partial(_duration, positive=True),
                                                      "endsAt is the event time plus this", 3600.0),
         "link": _LINK, **_RETRY}),
}

_SECTION = {"min_severity": _MIN_SEVERITY,
            "suppress": Option(_duration, "window folding repeats into one counted alert", 0.0),
            "sinks": Option(lambda v: v, "list of sinks", [])}


# -- reading the section ---------------------------------------------------------------


def _read(options: Mapping[str, Option], raw: Mapping[str, Any], where: str,
          problems: list[tuple[str, str]]) -> dict[str, Any]:
    """Values of `options` from `raw`, defaults filled in; each problem appended."""
    values: dict[str, Any] = {}
    for key in raw:
        if key not in options and key != "type":
            problems.append((f"{where}: unknown key {key!r}",
                             "known keys: " + ", ".join(sorted(options))))
    for key, option in options.items():
        if key not in raw or raw[key] is None:
            if option.required:
                problems.append((f"{where}: {key} is required",
                                 f"add it, e.g. {option.example}" if option.example else ""))
            else:
                values[key] = option.default
            continue
        try:
            values[key] = option.parse(raw[key])
        except ValueError as exc:
            problems.append((f"{where}: {key} {exc}", option.help))
    return values


def build_sinks(config: Mapping[str, Any], *, where: str = "alerts") -> AlertDispatcher:
    """An :class:`AlertDispatcher` for the ``alerts:`` section (`where` prefixes messages,
    e.g. ``"kubetrail.yaml: alerts"``); raises :class:`ConfigError` naming every problem.

    >>> with build_sinks({"min_severity": "high", "sinks": [{"type": "stdout"}]}) as alerts:
    ...     [route.sink.label for route in alerts.routes]
    ['stdout[0]']
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {config!r}",
                          hint="keys: " + ", ".join(_SECTION))
    section = _read(_SECTION, config, where, problems)
    sinks = section.get("sinks", [])
    if not isinstance(sinks, list):
        problems.append((f"{where}.sinks must be a list of sinks, got {sinks!r}",
                         "start each sink with `- type: ...`"))
        sinks = []
    planned: list[tuple[SinkType, dict[str, Any], str, str]] = []
    for index, raw in enumerate(sinks):
        spot = f"{where}.sinks[{index}]"
        kind = raw.get("type") if isinstance(raw, Mapping) else None
        if not isinstance(kind, str) or kind not in SINK_TYPES:
            got = f"unknown sink type {kind!r}" if isinstance(raw, Mapping) and "type" in raw \
                else "each sink needs a type"
            problems.append((f"{spot}: {got}", "known types: " + ", ".join(SINK_TYPES)))
            continue
        spec = SINK_TYPES[kind]
        values = _read({**spec.options, "min_severity": _MIN_SEVERITY}, raw,
                       f"{spot} ({kind})", problems)
        planned.append((spec, values, f"{kind}[{index}]", spot))
    if problems:
        _raise(problems, where)
    routes: list[Route] = []
    try:
        for spec, values, label, spot in planned:
            try:
                routes.append(Route(spec.build(values, label), values["min_severity"]))
            except OSError as exc:
                raise ConfigError(f"{spot}: cannot open {exc.filename}: {exc.strerror}",
                                  hint="check the directory exists and is writable") from None
    except BaseException:
        for route in routes:
            route.sink.close()
        raise
    return AlertDispatcher(routes, min_severity=section["min_severity"],
                           suppress=timedelta(seconds=section["suppress"]))


def _raise(problems: list[tuple[str, str]], where: str) -> None:
    if len(problems) == 1:
        message, hint = problems[0]
        raise ConfigError(message, hint=hint or None)
    lines = "".join(f"\n  - {message}" + (f" ({hint})" if hint else "") for message, hint in problems)
    raise ConfigError(f"{where} has {len(problems)} problems:{lines}",
                      hint="see the alerts section of docs/config.md")
