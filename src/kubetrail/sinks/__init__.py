"""Alert sinks: where detections go (stdout, a file, a webhook, Slack, Alertmanager).

>>> from kubetrail.sinks import build_sinks
>>> with build_sinks({"sinks": [{"type": "stdout", "format": "falco"}]}) as alerts:
...     alerts.routes[0].sink.label
'stdout[0]'

See :mod:`kubetrail.sinks.alerts` for the ``alerts:`` section of kubetrail.yaml.
"""

from __future__ import annotations

from .alerts import SINK_TYPES, Option, SinkType, build_sinks
from .base import FORMATS, SEVERITY_RANK, Failure, Sink, Undelivered
from .dispatch import AlertDispatcher, Route, suppression_key
from .local import FileSink, StdoutSink
from .payload import LINK_FIELDS, alertmanager_alerts, render_link, slack_message

__all__ = [
    "FORMATS",
    "LINK_FIELDS",
    "SEVERITY_RANK",
    "SINK_TYPES",
    "AlertDispatcher",
    "Failure",
    "FileSink",
    "Option",
    "Route",
    "Sink",
    "SinkType",
    "StdoutSink",
    "Undelivered",
    "alertmanager_alerts",
    "build_sinks",
    "render_link",
    "slack_message",
    "suppression_key",
]
