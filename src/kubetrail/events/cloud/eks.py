"""Amazon EKS audit logs as CloudWatch Logs hands them out (cloud-log-formats.md §1).

Every CloudWatch shape carries the Event verbatim as a JSON string in ``message``, so the
work here is unwrapping carriers (CLI output, subscription envelopes, Lambda, Firehose,
Logs Insights), reading the cluster from the log group, skipping what is not audit data,
and salvaging messages that CloudWatch cut and marked ``[Truncated...]`` (§1.8).

The salvage and acceptance helpers are shared with the other providers (AKS cuts its
``properties.log`` the same way), which is why they are public here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..decode import Decoded, Rejected, Shape, excerpt, native_event
from ..timeparse import micro_time, parse_time

if TYPE_CHECKING:
    from ..decode import Decoder, Item

__all__ = [
    "AUDIT_STREAM_PREFIX",
    "EVENTS",
    "FIREHOSE",
    "INSIGHTS",
    "LAMBDA",
    "SUBSCRIPTION",
    "TRUNCATED_MARK",
    "accept",
    "cluster_from_group",
    "micro_from_ms",
    "salvage",
    "salvaged_event",
    "unwrap",
]

FORMAT = "eks"
AUDIT_STREAM_PREFIX = "kube-apiserver-audit-"
TRUNCATED_MARK = "[Truncated...]"
_GROUP = re.compile(r"/aws/eks/([^/]+)/cluster")
_WS = re.compile(r"[ \t\r\n]*")
_JSON = json.JSONDecoder(strict=False)


# --- helpers shared with gke.py and aks.py -------------------------------------------------


def accept(
    event: dict[str, Any],
    dec: Decoder,
    source_format: str,
    cluster: str | None,
    truncated: str | None = None,
    text: str | None = None,
) -> Item:
    """Validate a recovered Event exactly as a native one, then stamp its provenance."""
    item = native_event(event, dec, text)
    if isinstance(item, Decoded):
        item.source_format = source_format
        item.cluster = cluster or dec.cluster
        item.truncated = truncated
    return item


def micro_from_ms(ms: Any) -> str | None:
    """CloudWatch's integer milliseconds as a MicroTime string (None if not a time)."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        if isinstance(ms, float) and ms == ms:
            ms = int(ms)
        else:
            return None
    seconds, millis = divmod(ms, 1000)
    try:
        moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    except (OverflowError, OSError, ValueError):
        return None
    return micro_time(moment)


def _skip_ws(text: str, pos: int) -> int:
    found = _WS.match(text, pos)
    return found.end() if found else pos


def salvage(text: str) -> dict[str, Any]:
    """The complete top-level members at the start of a JSON object that was cut short.

    The API server writes fields in Go struct order, so everything before the bodies
    (auditID, stage, verb, user, objectRef, responseStatus, …) usually survives a cut.
    Each member is read with the C scanner and kept only once the following ``,`` or ``}``
    proves it complete (a number cut at the end would otherwise look valid).
    """
    if text.endswith(TRUNCATED_MARK):
        text = text[: -len(TRUNCATED_MARK)]
    out: dict[str, Any] = {}
    pos = _skip_ws(text, 0)
    if not text.startswith("{", pos):
        return out
    pos += 1
    n = len(text)
    while pos < n:
        pos = _skip_ws(text, pos)
        try:
            key, pos = _JSON.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if not isinstance(key, str) or not text.startswith(":", pos):
                break
            pos = _skip_ws(text, pos + 1)
            value, pos = _JSON.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        pos = _skip_ws(text, pos)
        if pos >= n or text[pos] not in ",}":
            break
        out[key] = value
        if text[pos] == "}":
            break
        pos += 1
    return out


def salvaged_event(
    text: str,
    dec: Decoder,
    source_format: str,
    cluster: str | None,
    marker: str,
    fallback_time: str | None,
) -> Item:
    """Accept the leading fields of a cut Event, timed by its carrier when the end is lost."""
    event = salvage(text)
    if not isinstance(event.get("auditID"), str) or event.get("stage") is None:
        return Rejected(
            f"event was cut short ({marker}) before its auditID and stage; nothing to salvage",
            excerpt(text),
        )
    event.setdefault("kind", "Event")
    event.setdefault("apiVersion", "audit.k8s.io/v1")
    if "stageTimestamp" not in event:
        stamp = fallback_time or event.get("requestReceivedTimestamp")
        if stamp:
            event["stageTimestamp"] = stamp
    return accept(event, dec, source_format, cluster, marker)


def unwrap(payload: Any, dec: Decoder, source_format: str, what: str) -> Iterator[Item]:
    """Events inside a base64 (usually gzip'd) payload: Lambda, Firehose, Pub/Sub data."""
    if not isinstance(payload, str) or not payload:
        yield Rejected(f"{what} has no base64 data", excerpt(payload))
        return
    try:
        values = list(dec.values(base64.b64decode(payload)))
    except Exception as exc:  # any failure to open an opaque payload is one bad record
        yield Rejected(f"{what} data cannot be decoded: {exc}", excerpt(payload))
        return
    if not values:
        yield Rejected(f"{what} data holds no JSON", excerpt(payload))
        return
    for value in values:
        for item in dec.classify(value):
            if isinstance(item, Decoded) and item.source_format == "native":
                item.source_format = source_format  # a bare Event inside a provider carrier
            yield item


def cluster_from_group(group: Any) -> str | None:
    """`<name>` of the EKS log group ``/aws/eks/<name>/cluster`` (None for other groups)."""
    if isinstance(group, str) and group:
        found = _GROUP.search(group)
        if found:
            return found.group(1)
    return None


# --- one CloudWatch log event ---------------------------------------------------------------


def _message(
    message: Any, time: str | None, stream: Any, cluster: str | None, dec: Decoder
) -> Item:
    """One CloudWatch message → its Event, a salvaged Event, or a skip for non-audit text."""
    if isinstance(stream, str) and stream and not stream.startswith(AUDIT_STREAM_PREFIX):
        return Rejected(f"log stream {stream!r} is not an audit stream "
                        f"(audit streams start with {AUDIT_STREAM_PREFIX!r})",
                        excerpt(message), skipped=True)
    if not isinstance(message, str):
        return Rejected("CloudWatch log event has no message string", excerpt(message))
    text = message.strip()
    if not text.startswith("{"):
        return Rejected("CloudWatch message is log text, not an audit event",
                        excerpt(text), skipped=True)
    if text.endswith(TRUNCATED_MARK):
        return salvaged_event(text, dec, FORMAT, cluster, "eks-truncated", time)
    return dec.event_from_text(text, FORMAT, cluster)


# --- shapes ---------------------------------------------------------------------------------


def _is_subscription(v: dict[str, Any]) -> bool:
    return "logEvents" in v and v.get("messageType") in ("DATA_MESSAGE", "CONTROL_MESSAGE")


def _decode_subscription(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    if v["messageType"] == "CONTROL_MESSAGE":
        yield Rejected("CloudWatch Logs control message (destination health check)",
                       excerpt(v), skipped=True)
        return
    events = v["logEvents"]
    if not isinstance(events, list):
        yield Rejected("CloudWatch envelope logEvents is not a list", excerpt(v))
        return
    cluster = cluster_from_group(v.get("logGroup"))
    stream = v.get("logStream")
    for ev in events:
        if not isinstance(ev, dict):
            yield Rejected("CloudWatch log event is not an object", excerpt(ev))
            continue
        yield _message(ev.get("message"), micro_from_ms(ev.get("timestamp")), stream,
                       cluster, dec)


def _is_lambda(v: dict[str, Any]) -> bool:
    return isinstance(v.get("awslogs"), dict)


def _decode_lambda(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    yield from unwrap(v["awslogs"].get("data"), dec, FORMAT, "Lambda awslogs event")


def _is_firehose(v: dict[str, Any]) -> bool:
    records = v.get("records")
    return bool(records) and isinstance(records, list) and isinstance(records[0], dict) \
        and "data" in records[0]


def _decode_firehose(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    for record in v["records"]:
        if not isinstance(record, dict):
            yield Rejected("Firehose record is not an object", excerpt(record))
            continue
        yield from unwrap(record.get("data"), dec, FORMAT, "Firehose record")


def _is_events(v: dict[str, Any]) -> bool:
    events = v.get("events")
    if not isinstance(events, list):
        return False
    if events:
        return isinstance(events[0], dict) and "message" in events[0]
    return "searchedLogStreams" in v or "nextForwardToken" in v or "nextToken" in v


def _decode_events(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    for ev in v["events"]:
        if not isinstance(ev, dict):
            yield Rejected("CloudWatch log event is not an object", excerpt(ev))
            continue
        yield _message(ev.get("message"), micro_from_ms(ev.get("timestamp")),
                       ev.get("logStreamName"), None, dec)


def _is_insights(v: dict[str, Any]) -> bool:
    results = v.get("results")
    return isinstance(results, list) and (
        (bool(results) and isinstance(results[0], list)) or (not results and "status" in v))


def _decode_insights(v: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    for row in v["results"]:
        fields = {f.get("field"): f.get("value") for f in row if isinstance(f, dict)} \
            if isinstance(row, list) else {}
        if "@message" not in fields:
            yield Rejected("Logs Insights row has no @message field", excerpt(row))
            continue
        stamp = parse_time(fields.get("@timestamp"))
        group = fields.get("@log")  # "<account>:<log group>"
        yield _message(fields["@message"], micro_time(stamp) if stamp else None,
                       fields.get("@logStream"), cluster_from_group(group), dec)


SUBSCRIPTION = Shape("eks-subscription", FORMAT, _is_subscription, _decode_subscription,
                     "CloudWatch Logs subscription envelope (Kinesis, Firehose to S3)")
LAMBDA = Shape("eks-lambda", FORMAT, _is_lambda, _decode_lambda,
               "Lambda subscription event {awslogs: {data}}")
FIREHOSE = Shape("eks-firehose", FORMAT, _is_firehose, _decode_firehose,
                 "Firehose transform or HTTP-endpoint body (records[].data)")
EVENTS = Shape("eks-log-events", FORMAT, _is_events, _decode_events,
               "aws logs filter-log-events / get-log-events output")
INSIGHTS = Shape("eks-insights", FORMAT, _is_insights, _decode_insights,
                 "CloudWatch Logs Insights query results (@message)")
