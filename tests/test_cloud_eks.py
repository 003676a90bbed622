"""EKS: CloudWatch Logs shapes → Events (cloud-log-formats.md §1), and the EKS encoder."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from kubetrail.events.cloud.eks import micro_from_ms, salvage
from kubetrail.events.cloud.encode import (
    eks_envelope,
    eks_log_event,
    eks_stream,
    to_eks,
    to_gke_lines,
)
from kubetrail.events.decode import Decoded, Decoder, Item, Rejected
from kubetrail.events.reader import iter_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
NATIVE_SAMPLE = SAMPLES / (
    "elastic_integrations_packages_kubernetes_data_stream_audit_logs__dev_test_pipeline_"
    "test-audit.log")

BASE: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
    "auditID": "6f1c2a9e-0d3b-4f7a-9c51-1b2e3d4f5a6b", "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/shop/configmaps/cfg", "verb": "update",
    "user": {"username": "arn:aws:sts::111122223333:assumed-role/Dev/alice-example.com",
             "uid": "aws-iam-authenticator:111122223333:AROAEXAMPLEID",
             "groups": ["system:authenticated"],
             "extra": {"principalId": ["AROAEXAMPLEID"]}},
    "sourceIPs": ["203.0.113.9"], "userAgent": "kubectl/v1.31.2",
    "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "cfg",
                  "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 200},
    "requestObject": {"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": "x" * 50}},
    "responseObject": {"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": "x" * 50}},
    "requestReceivedTimestamp": "2026-10-07T06:21:02.101000Z",
    "stageTimestamp": "2026-10-07T06:21:02.112345Z",
    "annotations": {"authorization.k8s.io/decision": "allow"},
}


def make(n: int = 1, **over: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        ev = copy.deepcopy(BASE)
        ev["auditID"] = f"{BASE['auditID'][:-4]}{i:04d}"
        ev.update(over)
        out.append(ev)
    return out


def decode(data: bytes, cluster: str | None = "cli", fmt: str = "auto") -> list[Item]:
    return [item for _, item in iter_bytes(data, "test", Decoder(cluster=cluster, fmt=fmt))]


def decoded(items: list[Item]) -> list[Decoded]:
    assert all(isinstance(i, Decoded) for i in items), items
    return [i for i in items if isinstance(i, Decoded)]


def gz_b64(value: Any) -> str:
    return base64.b64encode(gzip.compress(json.dumps(value).encode())).decode()


def test_filter_log_events_output_keeps_the_message_verbatim() -> None:
    events = make(3)
    items = decoded(decode(to_eks(events, "prod-eu")))
    assert [d.event for d in items] == events
    assert {d.source_format for d in items} == {"eks"}
    assert {d.cluster for d in items} == {"cli"}  # the CLI output names no log group
    assert items[0].text == json.dumps(events[0], separators=(",", ":"))
    assert all(d.truncated is None for d in items)


def test_get_log_events_output_without_stream_names() -> None:
    log_events = [eks_log_event(e) for e in make(2)]
    body = {"events": log_events, "nextForwardToken": "f/1/s", "nextBackwardToken": "b/1/s"}
    items = decoded(decode(json.dumps(body, indent=4).encode()))
    assert len(items) == 2


def test_empty_filter_log_events_output_yields_nothing() -> None:
    assert decode(b'{"events": [], "searchedLogStreams": []}') == []


def test_native_samples_wrapped_in_cloudwatch() -> None:
    if not NATIVE_SAMPLE.exists():
        pytest.skip("shared samples absent")
    natives = [json.loads(line) for line in NATIVE_SAMPLE.read_text().splitlines()[:3]]
    items = decoded(decode(to_eks(natives, "demo", style="subscription")))
    assert [d.event for d in items] == natives
    assert {d.cluster for d in items} == {"demo"}


def test_subscription_envelope_gives_cluster_from_log_group() -> None:
    envelope = eks_envelope([eks_log_event(e) for e in make(2)], "prod-eu")
    items = decoded(decode(gzip.compress(json.dumps(envelope).encode())))
    assert [d.cluster for d in items] == ["prod-eu", "prod-eu"]
    assert items[0].source_format == "eks"


def test_firehose_to_s3_concatenated_gzip_members() -> None:
    events = make(250)  # three envelopes, one gzip member each
    data = to_eks(events, "prod-eu", style="subscription")
    assert data.count(b"\x1f\x8b\x08") >= 3
    items = decoded(decode(data, cluster=None))
    assert [d.event["auditID"] for d in items] == [e["auditID"] for e in events]
    assert {d.cluster for d in items} == {"prod-eu"}


def test_firehose_to_s3_gzip_of_gzip_members() -> None:
    data = gzip.compress(to_eks(make(120), "prod-eu", style="subscription"))
    assert len(decoded(decode(data))) == 120


def test_control_message_is_skipped_not_quarantined() -> None:
    control = {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "",
               "logStream": "", "subscriptionFilters": [],
               "logEvents": [{"id": "", "timestamp": 1791354000000,
                              "message": "CWL CONTROL MESSAGE: Checking health of destination"}]}
    data = gzip.compress(json.dumps(control).encode()) + to_eks(make(1), "c", style="subscription")
    items = decode(data)
    assert isinstance(items[0], Rejected) and items[0].skipped
    assert "control message" in items[0].reason
    assert isinstance(items[1], Decoded)


def test_lambda_subscription_event() -> None:
    data = to_eks(make(3), "prod-eu", style="lambda")
    assert json.loads(data.splitlines()[0])["awslogs"]["data"].startswith("H4sI")
    items = decoded(decode(data))
    assert len(items) == 3 and items[0].cluster == "prod-eu"


def test_base64_gzip_text_pasted_as_the_whole_input() -> None:
    envelope = eks_envelope([eks_log_event(e) for e in make(2)], "pasted")
    items = decoded(decode(gz_b64(envelope).encode()))
    assert [d.cluster for d in items] == ["pasted", "pasted"]


def test_firehose_http_endpoint_body() -> None:
    data = to_eks(make(150), "prod-eu", style="firehose")
    body = json.loads(data)
    assert "requestId" in body and len(body["records"]) == 2
    assert len(decoded(decode(data))) == 150


def test_firehose_transform_event_with_several_envelopes_per_record() -> None:
    first = eks_envelope([eks_log_event(e) for e in make(1)], "a")
    second = eks_envelope([eks_log_event(e) for e in make(1, auditID="x-2")], "b")
    blob = gzip.compress(json.dumps(first).encode()) + gzip.compress(json.dumps(second).encode())
    body = {"invocationId": "i-1", "deliveryStreamArn": "arn:aws:firehose:…", "region": "eu",
            "records": [{"recordId": "r1", "approximateArrivalTimestamp": 1,
                         "data": base64.b64encode(blob).decode()}]}
    items = decoded(decode(json.dumps(body).encode()))
    assert [(d.cluster, d.event["auditID"]) for d in items] == [
        ("a", make(1)[0]["auditID"]), ("b", "x-2")]


def test_firehose_record_holding_extracted_messages_only() -> None:
    lines = "\n".join(json.dumps(e) for e in make(2)) + "\n"
    body = {"requestId": "r", "timestamp": 1,
            "records": [{"data": base64.b64encode(lines.encode()).decode()}]}
    items = decoded(decode(json.dumps(body).encode()))
    assert [d.source_format for d in items] == ["eks", "eks"]


@pytest.mark.parametrize(("data", "reason"), [
    (base64.b64encode(b"\x1f\x8bnot gzip").decode(), "cannot be decoded"),
    (base64.b64encode(gzip.compress(b"{not json", mtime=0)).decode(), "cannot be decoded"),
    ("!!!", "holds no JSON"),
    (5, "no base64 data"),
])
def test_bad_payload_is_rejected_with_a_reason(data: Any, reason: str) -> None:
    (item,) = decode(json.dumps({"awslogs": {"data": data}}).encode())
    assert isinstance(item, Rejected) and not item.skipped
    assert reason in item.reason


def test_logs_insights_results() -> None:
    event = make(1)[0]
    body = {"results": [[
        {"field": "@timestamp", "value": "2026-10-07 06:21:02.112"},
        {"field": "@message", "value": json.dumps(event)},
        {"field": "@log", "value": "111122223333:/aws/eks/insight/cluster"},
        {"field": "@ptr", "value": "CmAKJwoj"},
    ]], "statistics": {"recordsMatched": 1.0}, "status": "Complete"}
    (item,) = decoded(decode(json.dumps(body).encode()))
    assert item.event == event and item.cluster == "insight"


def test_non_audit_streams_and_klog_text_are_skipped() -> None:
    klog = {"logStreamName": "kube-apiserver-0123456789abcdef0123456789abcdef",
            "timestamp": 1791354062112, "message": "I1007 06:21:02.101 1 trace.go:236] Trace"}
    authn = {"logStreamName": "authenticator-0123", "timestamp": 1791354062112,
             "message": 'time="2026-10-07T06:21:02Z" level=info msg="access granted"'}
    nameless = {"timestamp": 1791354062112, "message": "E1007 06:21:02.101 controller.go:1]"}
    audit = eks_log_event(make(1)[0], stream=eks_stream("c"))
    items = decode(json.dumps({"events": [klog, authn, nameless, audit]}).encode())
    assert [type(i).__name__ for i in items] == ["Rejected"] * 3 + ["Decoded"]
    assert all(i.skipped for i in items if isinstance(i, Rejected))
    assert "not an audit stream" in items[0].reason  # type: ignore[union-attr]


def test_truncated_message_keeps_leading_fields_and_cloudwatch_time() -> None:
    event = make(1)[0]
    event["requestObject"] = {"kind": "ConfigMap", "data": {"big": "y" * 5000}}
    log_event = eks_log_event(event, max_message=2000)
    assert log_event["message"].endswith("[Truncated...]")
    log_event["message"] += "\r"  # CRLF left over by a tool must not hide the marker
    items = decode(json.dumps({"events": [log_event]}).encode())
    (item,) = decoded(items)
    assert item.truncated == "eks-truncated" and item.text is None
    ev = item.event
    for key in ("auditID", "stage", "verb", "user", "objectRef", "responseStatus",
                "sourceIPs", "level", "requestURI"):
        assert ev[key] == event[key]
    assert "requestObject" not in ev and "annotations" not in ev
    assert "requestReceivedTimestamp" not in ev
    assert ev["stageTimestamp"] == micro_from_ms(log_event["timestamp"])
    assert ev["stageTimestamp"] == "2026-10-07T06:21:02.112000Z"


def test_truncated_before_stage_is_rejected() -> None:
    message = '{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"ab'
    log_event = {"timestamp": 1791354062112, "message": message + "[Truncated...]"}
    (item,) = decode(json.dumps({"events": [log_event]}).encode())
    assert isinstance(item, Rejected) and not item.skipped
    assert "auditID and stage" in item.reason


def test_salvage_keeps_only_members_proven_complete() -> None:
    assert salvage('{"a": 1, "b": {"c": [1, 2]}, "code": 20') == {"a": 1, "b": {"c": [1, 2]}}
    assert salvage('{"a":"x","b":"unterminated[Truncated...]') == {"a": "x"}
    assert salvage('{"a":1}') == {"a": 1}
    assert salvage("not json") == {}


def test_micro_from_ms() -> None:
    assert micro_from_ms(1791354062112) == "2026-10-07T06:21:02.112000Z"
    assert micro_from_ms(0) == "1970-01-01T00:00:00.000000Z"
    assert micro_from_ms("1791354062112") is None
    assert micro_from_ms(True) is None


def test_invalid_message_without_marker_is_quarantined() -> None:
    log_event = {"logStreamName": eks_stream("c"), "timestamp": 1, "message": '{"kind":"Ev'}
    (item,) = decode(json.dumps({"events": [log_event]}).encode())
    assert isinstance(item, Rejected) and not item.skipped


def test_format_restriction_to_eks() -> None:
    gke = to_gke_lines(make(1), "g")
    (item,) = decode(gke, fmt="eks")
    assert isinstance(item, Rejected) and "eks record" in item.reason
    assert len(decoded(decode(to_eks(make(1), "c"), fmt="eks"))) == 1


def test_event_ids_are_big_decimal_strings_and_stable() -> None:
    a = eks_log_event(make(1)[0])
    b = eks_log_event(make(1)[0])
    assert a == b and len(a["eventId"]) == 56 and a["eventId"].isdigit()
    assert a["timestamp"] == 1791354062112
