"""GKE: Cloud Logging LogEntries rebuilt into Events (cloud-log-formats.md §2.4), and back."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kubetrail.events.cloud.encode import gke_entry, gke_method, gke_resource_name, to_gke
from kubetrail.events.cloud.encode import to_gke_lines as gke_lines
from kubetrail.events.cloud.gke import object_ref
from kubetrail.events.decode import Decoded, Decoder, Item, Rejected
from kubetrail.events.reader import iter_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
SAMPLE = SAMPLES / (
    "elastic_integrations_packages_kubernetes_data_stream_audit_logs__dev_test_pipeline_"
    "test-audit.log")

# The LogEntry of cloud-log-formats.md §2.2 and the Event §2.4 says it stands for.
ENTRY: dict[str, Any] = {
    "insertId": "5d0f8a2c-7b1e-4c3d-9a8f-2e4b6c8d0a1f",
    "logName": "projects/acme-prod/logs/cloudaudit.googleapis.com%2Factivity",
    "operation": {"id": "5d0f8a2c-7b1e-4c3d-9a8f-2e4b6c8d0a1f", "producer": "k8s.io",
                  "first": True, "last": True},
    "resource": {"type": "k8s_cluster", "labels": {"project_id": "acme-prod",
                                                   "location": "europe-west1",
                                                   "cluster_name": "web"}},
    "timestamp": "2026-10-07T06:21:02.112345Z",
    "receiveTimestamp": "2026-10-07T06:21:09.804412873Z",
    "labels": {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "ops" of '
                                       'ClusterRole "edit" to Group "ops@acme.example"',
        "pod-security.kubernetes.io/enforce-policy": "baseline:latest",
    },
    "protoPayload": {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io",
        "methodName": "io.k8s.core.v1.pods.exec.create",
        "resourceName": "core/v1/namespaces/shop/pods/api-7f9c/exec",
        "authenticationInfo": {"principalEmail": "alice@acme.example"},
        "authorizationInfo": [{"granted": True,
                               "permission": "io.k8s.core.v1.pods.exec.create",
                               "resource": "core/v1/namespaces/shop/pods/api-7f9c/exec"}],
        "requestMetadata": {"callerIp": "203.0.113.9",
                            "callerSuppliedUserAgent": "kubectl/v1.31.2 (linux/amd64) "
                                                       "kubernetes/abc1234"},
        "status": {},
    },
}
WORKED_EVENT: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
    "auditID": "5d0f8a2c-7b1e-4c3d-9a8f-2e4b6c8d0a1f", "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/shop/pods/api-7f9c/exec", "verb": "create",
    "user": {"username": "alice@acme.example"}, "sourceIPs": ["203.0.113.9"],
    "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/abc1234",
    "objectRef": {"resource": "pods", "namespace": "shop", "name": "api-7f9c",
                  "apiVersion": "v1", "subresource": "exec"},
    "responseStatus": {"metadata": {}, "code": 101},
    "requestReceivedTimestamp": "2026-10-07T06:21:02.112345Z",
    "stageTimestamp": "2026-10-07T06:21:02.112345Z",
    "annotations": ENTRY["labels"],
}


def entry(method: str, resource: str, **payload: Any) -> dict[str, Any]:
    out = copy.deepcopy(ENTRY)
    out["protoPayload"].update(methodName=method, resourceName=resource, **payload)
    return out


def decode(data: bytes, cluster: str | None = "cli", fmt: str = "auto") -> list[Item]:
    return [item for _, item in iter_bytes(data, "test", Decoder(cluster=cluster, fmt=fmt))]


def one(value: dict[str, Any]) -> Decoded:
    (item,) = decode(json.dumps(value).encode())
    assert isinstance(item, Decoded), item
    return item


def test_worked_example_is_rebuilt_exactly() -> None:
    item = one(ENTRY)
    assert item.event == WORKED_EVENT
    assert list(item.event) == list(WORKED_EVENT)  # upstream field order
    assert (item.cluster, item.source_format, item.truncated, item.text) == (
        "web", "gke", None, None)


def test_elastic_sample_line_is_a_non_resource_request() -> None:
    if not SAMPLE.exists():
        pytest.skip("shared samples absent")
    line = SAMPLE.read_text().splitlines()[3]
    item = one(json.loads(line))
    ev = item.event
    assert item.cluster == "test-cluster"
    assert ev["auditID"] == "1234abcd" and ev["verb"] == "get"
    assert ev["requestURI"] == "/readyz" and "objectRef" not in ev
    assert ev["user"] == {"username": "system:gke-master-healthcheck"}
    assert ev["responseStatus"] == {"metadata": {}, "code": 200}
    assert ev["stageTimestamp"] == ev["requestReceivedTimestamp"] == "2025-07-13T08:38:39.127266Z"


@pytest.mark.parametrize(("method", "resource", "ref"), [
    ("io.k8s.core.v1.namespaces.get", "core/v1/namespaces/foo",
     {"resource": "namespaces", "namespace": "foo", "name": "foo", "apiVersion": "v1"}),
    ("io.k8s.core.v1.namespaces.status.update", "core/v1/namespaces/foo/status",
     {"resource": "namespaces", "namespace": "foo", "name": "foo", "apiVersion": "v1",
      "subresource": "status"}),
    ("io.k8s.core.v1.namespaces.finalize.update", "core/v1/namespaces/foo/finalize",
     {"resource": "namespaces", "namespace": "foo", "name": "foo", "apiVersion": "v1",
      "subresource": "finalize"}),
    ("io.k8s.core.v1.namespaces.list", "core/v1/namespaces",
     {"resource": "namespaces", "apiVersion": "v1"}),
    ("io.k8s.core.v1.pods.list", "core/v1/namespaces/foo/pods",
     {"resource": "pods", "namespace": "foo", "apiVersion": "v1"}),
    ("io.k8s.core.v1.pods.list", "core/v1/pods", {"resource": "pods", "apiVersion": "v1"}),
    ("io.k8s.core.v1.nodes.status.patch", "core/v1/nodes/gke-web-1/status",
     {"resource": "nodes", "name": "gke-web-1", "apiVersion": "v1", "subresource": "status"}),
    ("io.k8s.authorization.rbac.v1.clusterroles.get",
     "rbac.authorization.k8s.io/v1/clusterroles/admin",
     {"resource": "clusterroles", "name": "admin", "apiGroup": "rbac.authorization.k8s.io",
      "apiVersion": "v1"}),
    ("com.coreos.database.etcd.v1beta2.etcdbackups.create",
     "etcd.database.coreos.com/v1beta2/namespaces/db/etcdbackups/b1",
     {"resource": "etcdbackups", "namespace": "db", "name": "b1",
      "apiGroup": "etcd.database.coreos.com", "apiVersion": "v1beta2"}),
    ("io.k8s.get", "readyz", None),
])
def test_object_ref_algorithm(method: str, resource: str, ref: dict[str, str] | None) -> None:
    assert object_ref(method, resource) == ref


def test_namespace_object_and_its_status_uris() -> None:
    ev = one(entry("io.k8s.core.v1.namespaces.status.update",
                   "core/v1/namespaces/foo/status")).event
    assert ev["requestURI"] == "/api/v1/namespaces/foo/status"
    assert ev["objectRef"]["subresource"] == "status"
    ev = one(entry("io.k8s.core.v1.pods.list", "core/v1/pods")).event
    assert ev["requestURI"] == "/api/v1/pods" and "namespace" not in ev["objectRef"]
    ev = one(entry("io.k8s.apps.v1.deployments.patch",
                   "apps/v1/namespaces/shop/deployments/web")).event
    assert ev["requestURI"] == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert ev["objectRef"]["apiGroup"] == "apps"


def test_create_is_201_and_takes_a_missing_name_from_the_response() -> None:
    ev = one(entry("io.k8s.core.v1.pods.create", "core/v1/namespaces/shop/pods",
                   request={"@type": "core.k8s.io/v1.Pod", "kind": "Pod",
                            "metadata": {"generateName": "api-"}},
                   response={"@type": "core.k8s.io/v1.Pod", "kind": "Pod",
                             "metadata": {"name": "api-x1", "namespace": "shop"}})).event
    assert ev["responseStatus"] == {"metadata": {}, "code": 201}
    assert ev["objectRef"]["name"] == "api-x1"
    assert ev["requestURI"] == "/api/v1/namespaces/shop/pods"
    assert ev["level"] == "RequestResponse"
    assert ev["requestObject"] == {"kind": "Pod", "metadata": {"generateName": "api-"}}
    assert "@type" not in ev["responseObject"]
    ev = one(entry("io.k8s.core.v1.pods.create", "core/v1/namespaces/shop/pods/api-x2")).event
    assert ev["requestURI"] == "/api/v1/namespaces/shop/pods"  # a POST to the collection
    assert ev["objectRef"]["name"] == "api-x2"


def test_grpc_permission_denied_is_403_with_the_message() -> None:
    ev = one(entry("io.k8s.core.v1.secrets.get", "core/v1/namespaces/shop/secrets/db",
                   status={"code": 7, "message": "Forbidden"})).event
    assert ev["responseStatus"] == {"metadata": {}, "code": 403, "status": "Failure",
                                    "message": "Forbidden"}


def test_status_response_is_copied_over_the_grpc_code() -> None:
    status = {"@type": "core.k8s.io/v1.Status", "kind": "Status", "apiVersion": "v1",
              "metadata": {}, "status": "Failure", "message": 'pods "a" already exists',
              "reason": "AlreadyExists", "details": {"name": "a", "kind": "pods"}, "code": 409}
    ev = one(entry("io.k8s.core.v1.pods.create", "core/v1/namespaces/shop/pods/a",
                   status={"code": 10, "message": "Conflict"}, response=status)).event
    assert ev["responseStatus"] == {"metadata": {}, "status": "Failure",
                                    "message": 'pods "a" already exists',
                                    "reason": "AlreadyExists",
                                    "details": {"name": "a", "kind": "pods"}, "code": 409}


@pytest.mark.parametrize(("op", "stage"), [
    ({"first": True, "last": True}, "ResponseComplete"),
    ({"first": True}, "ResponseStarted"),
    ({"last": True}, "ResponseComplete"),
    ({}, "ResponseComplete"),
])
def test_stage_from_operation_flags(op: dict[str, bool], stage: str) -> None:
    value = copy.deepcopy(ENTRY)
    value["operation"] = {"id": "op-1", "producer": "k8s.io", **op}
    assert one(value).event["stage"] == stage


def test_audit_id_prefers_operation_id_over_insert_id() -> None:
    value = copy.deepcopy(ENTRY)
    value["insertId"] = "ujcfwqentsny"
    assert one(value).event["auditID"] == ENTRY["operation"]["id"]
    del value["operation"]
    assert one(value).event["auditID"] == "ujcfwqentsny"


def test_identity_ip_labels_and_time() -> None:
    value = copy.deepcopy(ENTRY)
    value["protoPayload"]["authenticationInfo"] = {
        "principalEmail": "proxy@p.iam.gserviceaccount.com", "authoritySelector": "bob@x.io"}
    value["protoPayload"]["requestMetadata"]["callerIp"] = "gce-internal-ip"
    value["labels"]["cluster_version"] = "1.31.2-gke.100"
    value["timestamp"] = "2026-10-07T06:21:02.112345678Z"
    item = one(value)
    ev = item.event
    assert ev["user"] == {"username": "proxy@p.iam.gserviceaccount.com"}
    assert ev["impersonatedUser"] == {"username": "bob@x.io"}
    assert "sourceIPs" not in ev
    assert "cluster_version" not in ev["annotations"]
    assert ev["stageTimestamp"] == "2026-10-07T06:21:02.112345Z"
    value["protoPayload"]["authenticationInfo"] = {"principalSubject": "principal://x/y"}
    value["protoPayload"]["requestMetadata"]["callerIp"] = "private"
    ev = one(value).event
    assert ev["user"] == {"username": "principal://x/y"} and "sourceIPs" not in ev


def test_truncated_label_marks_the_event() -> None:
    value = copy.deepcopy(ENTRY)
    value["labels"]["audit.k8s.io/truncated"] = "true"
    item = one(value)
    assert item.truncated == "gke-truncated"


def test_other_services_are_skipped() -> None:
    value = copy.deepcopy(ENTRY)
    value["protoPayload"]["serviceName"] = "container.googleapis.com"
    value["resource"] = {"type": "gke_cluster", "labels": {}}
    request_log = "type.googleapis.com/google.appengine.logging.v1.RequestLog"
    other = {"protoPayload": {"@type": request_log}, "insertId": "x"}
    items = decode((json.dumps(value) + "\n" + json.dumps(other) + "\n").encode())
    assert all(isinstance(i, Rejected) and i.skipped for i in items)
    assert "container.googleapis.com" in items[0].reason  # type: ignore[union-attr]


def test_pubsub_push_body() -> None:
    body = {"message": {"data": base64.b64encode(json.dumps(ENTRY).encode()).decode(),
                        "attributes": {"logging.googleapis.com/timestamp": "x"},
                        "messageId": "1", "publishTime": "2026-10-07T06:21:10Z"},
            "subscription": "projects/acme-prod/subscriptions/audit"}
    item = one(body)
    assert item.event == WORKED_EVENT and item.source_format == "gke" and item.cluster == "web"


# --- encoder and round trips ----------------------------------------------------------------

UPSTREAM: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
    "auditID": "0b6e0000-0000-4000-8000-000000000001", "stage": "ResponseComplete",
    "requestURI": "/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=kubectl",
    "verb": "patch",
    "user": {"username": "alice@acme.example", "uid": "u-1",
             "groups": ["ops@acme.example", "system:authenticated"]},
    "sourceIPs": ["203.0.113.9", "10.0.0.1"], "userAgent": "kubectl/v1.31.2",
    "objectRef": {"resource": "deployments", "namespace": "shop", "name": "web",
                  "apiGroup": "apps", "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 200},
    "requestObject": {"spec": {"replicas": 3}},
    "responseObject": {"kind": "Deployment", "apiVersion": "apps/v1",
                       "metadata": {"name": "web", "namespace": "shop"}},
    "requestReceivedTimestamp": "2026-10-07T06:21:02.101000Z",
    "stageTimestamp": "2026-10-07T06:21:02.112345Z",
    "annotations": {"authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": "RBAC: allowed"},
}


def variant(**over: Any) -> dict[str, Any]:
    ev = copy.deepcopy(UPSTREAM)
    ev.update(over)
    return ev


def test_encoder_names_methods_and_resources_as_gke_does() -> None:
    assert gke_method(UPSTREAM) == "io.k8s.apps.v1.deployments.patch"
    rbac = variant(verb="create", objectRef={"resource": "clusterrolebindings", "name": "b",
                                             "apiGroup": "rbac.authorization.k8s.io",
                                             "apiVersion": "v1"})
    assert gke_method(rbac) == "io.k8s.authorization.rbac.v1.clusterrolebindings.create"
    assert gke_resource_name(rbac) == "rbac.authorization.k8s.io/v1/clusterrolebindings/b"
    ns = variant(verb="update", objectRef={"resource": "namespaces", "namespace": "foo",
                                           "name": "foo", "apiVersion": "v1",
                                           "subresource": "finalize"})
    assert gke_resource_name(ns) == "core/v1/namespaces/foo/finalize"
    nonres = variant(verb="get", requestURI="/healthz?verbose=1")
    del nonres["objectRef"]
    assert (gke_method(nonres), gke_resource_name(nonres)) == ("io.k8s.get", "healthz")


def test_round_trip_keeps_what_gke_keeps_and_drops_the_rest() -> None:
    (item,) = decode(to_gke([UPSTREAM], "web"), cluster=None)
    assert isinstance(item, Decoded)
    ev = item.event
    assert item.cluster == "web"
    for key in ("auditID", "stage", "verb", "objectRef", "userAgent", "annotations",
                "responseStatus", "responseObject", "requestObject", "stageTimestamp", "level"):
        assert ev[key] == UPSTREAM[key], key
    assert ev["user"] == {"username": "alice@acme.example"}  # groups and uid are lost
    assert ev["sourceIPs"] == ["203.0.113.9"]
    assert ev["requestURI"] == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert ev["requestReceivedTimestamp"] == UPSTREAM["stageTimestamp"]


def test_gcloud_array_is_newest_first_and_drops_request_received() -> None:
    events = [
        variant(auditID="a-1", stage="RequestReceived"),
        variant(auditID="a-1", stageTimestamp="2026-10-07T06:21:01.000000Z"),
        variant(auditID="a-2", stageTimestamp="2026-10-07T06:21:03.000000Z"),
    ]
    data = to_gke(events, "web")
    assert data.startswith(b"[\n  {")
    items = decode(data)
    assert [i.event["auditID"] for i in items if isinstance(i, Decoded)] == ["a-2", "a-1"]
    assert gke_entry(events[0], "web") is None


def test_round_trip_of_exec_failures_and_long_running_requests() -> None:
    exec_ref = {"resource": "pods", "namespace": "shop", "name": "api", "apiVersion": "v1",
                "subresource": "exec"}
    started = variant(auditID="x-1", verb="create", stage="ResponseStarted", level="Metadata",
                      objectRef=exec_ref, responseStatus={"metadata": {}, "code": 101},
                      requestURI="/api/v1/namespaces/shop/pods/api/exec?command=sh")
    for body in ("requestObject", "responseObject"):
        del started[body]
    complete = {**started, "stage": "ResponseComplete"}
    denied = variant(auditID="x-2", verb="get", level="Metadata",
                     objectRef={"resource": "secrets", "namespace": "shop", "name": "db",
                                "apiVersion": "v1"},
                     responseStatus={"metadata": {}, "status": "Failure", "code": 403,
                                     "message": "secrets \"db\" is forbidden"})
    for body in ("requestObject", "responseObject"):
        del denied[body]
    lines = gke_lines([started, complete, denied], "web")
    entries = [json.loads(line) for line in lines.splitlines()]
    assert entries[0]["operation"] == {"id": "x-1", "producer": "k8s.io", "first": True}
    assert entries[1]["operation"] == {"id": "x-1", "producer": "k8s.io", "last": True}
    assert entries[2]["protoPayload"]["status"]["code"] == 7
    assert entries[2]["receiveTimestamp"].count(".") == 1
    assert len(entries[2]["receiveTimestamp"].split(".")[1]) == 10  # 9 digits and Z
    items = [i for i in decode(lines) if isinstance(i, Decoded)]
    assert [(i.event["stage"], i.event["responseStatus"]["code"]) for i in items] == [
        ("ResponseStarted", 101), ("ResponseComplete", 101), ("ResponseComplete", 403)]
    assert items[0].event["requestURI"] == "/api/v1/namespaces/shop/pods/api/exec"
    assert items[2].event["responseStatus"]["message"] == 'secrets "db" is forbidden'


def test_oversized_bodies_are_dropped_and_labelled() -> None:
    big = variant(responseObject={"kind": "ConfigMap", "apiVersion": "v1",
                                  "data": {"k": "v" * 5000}})
    entry_ = gke_entry(big, "web", max_body=1000)
    assert entry_ is not None and "response" not in entry_["protoPayload"]
    assert entry_["labels"]["audit.k8s.io/truncated"] == "true"
    (item,) = decode(json.dumps(entry_).encode())
    assert isinstance(item, Decoded) and item.truncated == "gke-truncated"
    assert item.event["level"] == "Request"  # only a lower bound once the body is gone
