"""AKS: resource-log records and Log Analytics rows → Events (cloud-log-formats.md §3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kubetrail.events.cloud.aks import cluster_from_id
from kubetrail.events.cloud.encode import aks_record, aks_resource_id, to_aks, to_eks
from kubetrail.events.decode import Decoded, Decoder, Item, Rejected
from kubetrail.events.reader import iter_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
PREFIX = "elastic_integrations_packages_kubernetes_data_stream_audit_logs__dev_test_pipeline_"
MIXED_SAMPLE = SAMPLES / (PREFIX + "test-audit.log")
STRING_SAMPLE = SAMPLES / (PREFIX + "test-kube-audit.log")

EVENT: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
    "auditID": "0b6e1111-2222-4333-8444-555566667777", "stage": "ResponseComplete",
    "requestURI": "/api/v1/nodes/aks-pool-1-vmss000000/status?timeout=10s", "verb": "patch",
    "user": {"username": "system:node:aks-pool-1-vmss000000",
             "groups": ["system:nodes", "system:authenticated"]},
    "impersonatedUser": {"username": "someone"},
    "sourceIPs": ["10.224.0.4"], "userAgent": "kubelet/v1.31.2",
    "objectRef": {"resource": "nodes", "name": "aks-pool-1-vmss000000", "apiVersion": "v1",
                  "subresource": "status"},
    "responseStatus": {"metadata": {}, "code": 200},
    "requestObject": {"status": {"conditions": [{"type": "Ready", "message": "m" * 40}]}},
    "responseObject": {"kind": "Node", "apiVersion": "v1", "status": {"images": ["i"] * 5}},
    "requestReceivedTimestamp": "2026-10-07T06:21:02.101000Z",
    "stageTimestamp": "2026-10-07T06:21:02.113600Z",
    "annotations": {"authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": ""},
}


def decode(data: bytes, cluster: str | None = None, fmt: str = "auto") -> list[Item]:
    return [item for _, item in iter_bytes(data, "test", Decoder(cluster=cluster, fmt=fmt))]


def one(value: Any, cluster: str | None = None) -> Item:
    (item,) = decode(json.dumps(value).encode(), cluster)
    return item


def good(value: Any, cluster: str | None = None) -> Decoded:
    item = one(value, cluster)
    assert isinstance(item, Decoded), item
    return item


def test_sample_with_log_as_a_json_string() -> None:
    if not STRING_SAMPLE.exists():
        pytest.skip("shared samples absent")
    record = json.loads(STRING_SAMPLE.read_text())
    item = good(record)
    assert item.cluster == "test-cluster" and item.source_format == "aks"
    assert item.event["auditID"] == "ad26f7bc-f1c6-4097-90f1-e0924e12f257"
    assert item.event["objectRef"]["resourceVersion"] == "93076016"
    assert item.text == record["properties"]["log"].strip()
    assert item.truncated is None


def test_sample_with_log_as_an_object() -> None:
    if not MIXED_SAMPLE.exists():
        pytest.skip("shared samples absent")
    record = json.loads(MIXED_SAMPLE.read_text().splitlines()[4])
    item = good(record)
    assert item.cluster == "test-aks" and item.text is None
    assert item.event == record["properties"]["log"]


def test_whole_elastic_fixture_mixes_native_gke_and_aks() -> None:
    if not MIXED_SAMPLE.exists():
        pytest.skip("shared samples absent")
    items = decode(MIXED_SAMPLE.read_bytes(), cluster="flag")
    assert [i.source_format for i in items if isinstance(i, Decoded)] == [
        "native", "native", "native", "gke", "aks"]
    assert [i.cluster for i in items if isinstance(i, Decoded)] == [
        "flag", "flag", "flag", "test-cluster", "test-aks"]


def test_cluster_name_from_the_upper_cased_resource_id() -> None:
    rid = aks_resource_id("Web-Prod")
    assert rid.endswith("/MANAGEDCLUSTERS/WEB-PROD")
    assert cluster_from_id(rid) == "web-prod"
    assert cluster_from_id(rid, "Web-Prod") == "Web-Prod"  # the configured spelling wins
    assert cluster_from_id(rid, "other") == "web-prod"
    assert cluster_from_id("/SUBSCRIPTIONS/x/RESOURCEGROUPS/y") is None
    assert cluster_from_id(None) is None


def test_round_trip_storage_blob() -> None:
    events = [EVENT, {**EVENT, "auditID": "second", "stage": "RequestReceived"}]
    data = to_aks(events, "web")
    lines = data.splitlines()
    record = json.loads(lines[0])
    assert record["properties"]["log"].endswith("\n")
    assert len(record["time"].split(".")[1]) == 8  # 7 digits and Z, like Azure
    items = decode(data)
    assert [i.event for i in items if isinstance(i, Decoded)] == events
    assert all(isinstance(i, Decoded) and i.cluster == "web" for i in items)
    assert items[0].text == json.dumps(EVENT, separators=(",", ":"))  # type: ignore[union-attr]


def test_event_hub_body_with_mixed_categories() -> None:
    klog = aks_record(EVENT, "web")
    klog["category"] = "kube-apiserver"
    klog["properties"]["log"] = "I1007 06:21:02.101 1 httplog.go:132] GET /healthz 200\n"
    admin = aks_record(EVENT, "web", category="kube-audit-admin")
    body = {"records": [aks_record(EVENT, "web"), klog, admin,
                        {**aks_record(EVENT, "other"), "category": "guard"}]}
    items = decode(json.dumps(body).encode())
    assert [type(i).__name__ for i in items] == ["Decoded", "Rejected", "Decoded", "Rejected"]
    assert all(i.skipped for i in items if isinstance(i, Rejected))
    assert "kube-apiserver" in items[1].reason  # type: ignore[union-attr]


def test_log_with_raw_control_characters_is_read_tolerantly() -> None:
    record = aks_record(EVENT, "web")
    text = json.dumps({**EVENT, "userAgent": "bad\tagent"}, separators=(",", ":"))
    record["properties"]["log"] = text.replace("\\t", "\t") + "\r\n"
    item = good(record)
    assert item.event["userAgent"] == "bad\tagent"
    assert item.text is None  # not strict JSON: the archive re-serialises it


def test_log_cut_at_16_kib_is_salvaged() -> None:
    big = copy.deepcopy(EVENT)
    big["responseObject"]["status"]["images"] = ["registry/image:tag"] * 2000
    record = aks_record(big, "web", max_log=16 * 1024)
    assert len(record["properties"]["log"].encode()) <= 16 * 1024
    item = good(record)
    assert item.truncated == "aks-truncated" and item.text is None
    for key in ("auditID", "stage", "verb", "user", "impersonatedUser", "objectRef",
                "responseStatus", "requestObject"):
        assert item.event[key] == EVENT[key]
    assert "responseObject" not in item.event and "annotations" not in item.event
    assert item.event["stageTimestamp"] == "2026-10-07T06:21:02.113720Z"  # the record time


def test_log_cut_before_the_stage_is_rejected() -> None:
    record = aks_record(EVENT, "web", max_log=60)
    item = one(record)
    assert isinstance(item, Rejected) and not item.skipped
    assert "aks-truncated" in item.reason


def test_log_that_is_not_an_object_is_rejected() -> None:
    record = aks_record(EVENT, "web")
    record["properties"]["log"] = "[1, 2]"
    item = one(record)
    assert isinstance(item, Rejected) and "not a JSON object" in item.reason
    del record["properties"]["log"]
    assert isinstance(one(record), Rejected)


LA_ROW: dict[str, Any] = {
    "TenantId": "t", "TimeGenerated": "2026-10-07T06:21:02.2000000Z",
    "Level": "RequestResponse", "AuditId": EVENT["auditID"], "Stage": "ResponseComplete",
    "RequestUri": EVENT["requestURI"], "Verb": "patch",
    "User": json.dumps(EVENT["user"]), "SourceIps": '["10.224.0.4"]',
    "UserAgent": "kubelet/v1.31.2", "ObjectRef": EVENT["objectRef"],
    "ResponseStatus": '{"metadata":{},"code":200}',
    "RequestObject": json.dumps(EVENT["requestObject"]),
    "ResponseObject": "skipped-too-big-size-object",
    "RequestReceivedTime": "2026-10-07T06:21:02.1010000Z",
    "StageReceivedTime": "2026-10-07T06:21:02.1136001Z",
    "Annotations": json.dumps(EVENT["annotations"]), "PodName": "kube-apiserver-abc",
    "SourceSystem": "Azure", "Type": "AKSAudit",
    "_ResourceId": aks_resource_id("web").lower(),
}


def test_log_analytics_row() -> None:
    item = good(LA_ROW)
    ev = item.event
    assert item.cluster == "web" and item.truncated == "aks-too-big" and item.text is None
    assert "responseObject" not in ev and "impersonatedUser" not in ev
    expected = {k: v for k, v in EVENT.items() if k not in ("responseObject", "impersonatedUser")}
    assert ev == {**expected, "stageTimestamp": "2026-10-07T06:21:02.113600Z"}
    assert list(ev) == list(expected)


def test_log_analytics_export_array_with_object_columns() -> None:
    row = {**LA_ROW, "User": EVENT["user"], "ResponseObject": EVENT["responseObject"],
           "Annotations": {}}
    items = decode(json.dumps([row, {**row, "AuditId": "b"}], indent=2).encode())
    assert len(items) == 2 and all(isinstance(i, Decoded) for i in items)
    assert items[0].truncated is None  # type: ignore[union-attr]
    assert "annotations" not in items[0].event  # type: ignore[union-attr]


def test_azure_diagnostics_rows() -> None:
    row = {"TimeGenerated": "2026-10-07T06:21:02.2000000Z", "Category": "kube-audit",
           "log_s": json.dumps(EVENT), "pod_s": "kube-apiserver-abc",
           "Resource": "WEB", "ResourceId": aks_resource_id("web")}
    item = good(row, cluster="Web")
    assert item.event == EVENT and item.cluster == "Web"
    assert good({k: v for k, v in row.items() if k != "ResourceId"}).cluster == "web"
    skipped = one({**row, "Category": "kube-scheduler", "log_s": "I1007 scheduled"})
    assert isinstance(skipped, Rejected) and skipped.skipped


def test_format_restriction_to_aks() -> None:
    (item,) = decode(to_eks([EVENT], "e"), fmt="aks")
    assert isinstance(item, Rejected) and "aks record" in item.reason
    assert len(decode(to_aks([EVENT], "a"), fmt="aks")) == 1
