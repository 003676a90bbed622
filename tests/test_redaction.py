"""Redaction: canary secrets in every place the API server logs them, sent through every
entry point (ingest, follow, serve, detect and its alerts, quarantine). No canary byte
sequence may remain in any file under the data dir (Parquet read back decompressed), in any
alert, or on stdout; equal secrets still give equal fingerprints."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import T0, audit_id, cli_env, render, request_events, run_cli, user_info
from kubetrail.redact import MARKER_PREFIX, RedactionConfig, Redactor, load_redactor

ALICE = user_info("alice@example.com", ["system:authenticated"])
C = "ktcanary"  # every canary holds this, so a leak of any of them is found


def canaries() -> dict[str, str]:
    return {
        "secret_data": base64.b64encode(f"{C}-secret-data-value".encode()).decode(),
        "string_data": f"{C}-string-data-value",
        "token_request": f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ{C}xx.{C}signaturepart",
        "token_review": f"{C}-bearer-token-under-review-0123456789",
        "uri_token": f"{C}-uri-token",
        "env_value": f"{C}-env-password",
        "kubeconfig": f"apiVersion: v1\nkind: Config\nusers:\n- user:\n    client-key-data: {C}KEYDATA\n",
        "private_key": f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{C}PRIVATE\n-----END RSA PRIVATE KEY-----",
        "aws_key": "AKIA" + "KTCANARY12345678",
        "user_path": f"{C}-user-configured-path",
    }


def canary_events(n0: int = 0) -> list[dict[str, Any]]:
    k = canaries()
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "db", "namespace": "shop", "annotations": {
                  "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                      {"apiVersion": "v1", "kind": "Secret", "stringData": {
                          "password": k["string_data"]}})}},
              "data": {"password": k["secret_data"]}, "stringData": {"p2": k["string_data"]}}
    ref = {"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"containers": [{"name": "web", "image": "nginx", "env": [
               {"name": "DB_PASSWORD", "value": k["env_value"]},
               {"name": "AWS_ID", "value": k["aws_key"]}]}]}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube", "namespace": "shop"},
          "data": {"config": k["kubeconfig"], "key.pem": k["private_key"],
                   "custom": k["user_path"]}}
    at = T0 + timedelta(minutes=n0)
    events: list[dict[str, Any]] = []
    events += request_events(audit_id(n0 + 1), at=at, verb="create", level="RequestResponse",
                             uri="/api/v1/namespaces/shop/secrets", user=ALICE, object_ref=ref,
                             code=201, request_object=secret, response_object=secret)
    events += request_events(audit_id(n0 + 2), at=at, verb="list", level="RequestResponse",
                             uri="/api/v1/secrets?limit=500", user=ALICE,
                             object_ref={"resource": "secrets", "apiVersion": "v1"},
                             response_object={"kind": "SecretList", "apiVersion": "v1",
                                              "items": [secret]})
    events += request_events(audit_id(n0 + 3), at=at, verb="patch", level="Request",
                             uri="/api/v1/namespaces/shop/secrets/db", user=ALICE,
                             object_ref=ref, request_object={"data": {"password": k["secret_data"]}})
    events += request_events(
        audit_id(n0 + 4), at=at, verb="create", level="RequestResponse",
        uri="/api/v1/namespaces/shop/serviceaccounts/app/token", user=ALICE,
        object_ref={"resource": "serviceaccounts", "subresource": "token", "namespace": "shop",
                    "name": "app", "apiVersion": "v1"}, code=201,
        request_object={"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
        response_object={"kind": "TokenRequest", "status": {"token": k["token_request"]}})
    events += request_events(
        audit_id(n0 + 5), at=at, verb="create", level="RequestResponse",
        uri="/apis/authentication.k8s.io/v1/tokenreviews", user=ALICE,
        object_ref={"resource": "tokenreviews", "apiGroup": "authentication.k8s.io",
                    "apiVersion": "v1"}, code=201,
        request_object={"kind": "TokenReview", "spec": {"token": k["token_review"]}},
        response_object={"kind": "TokenReview", "spec": {"token": k["token_review"]},
                         "status": {"authenticated": True}})
    events += request_events(audit_id(n0 + 6), at=at, verb="list",
                             uri=f"/api/v1/namespaces/shop/pods?token={k['uri_token']}&limit=5",
                             user=ALICE, object_ref={"resource": "pods", "namespace": "shop",
                                                     "apiVersion": "v1"})
    events += request_events(audit_id(n0 + 7), at=at, verb="create", level="RequestResponse",
                             uri="/api/v1/namespaces/shop/pods", user=ALICE, code=201,
                             object_ref={"resource": "pods", "namespace": "shop", "name": "web",
                                         "apiVersion": "v1"},
                             request_object=pod, response_object=pod)
    events += request_events(audit_id(n0 + 8), at=at, verb="create", level="RequestResponse",
                             uri="/api/v1/namespaces/shop/configmaps", user=ALICE, code=201,
                             object_ref={"resource": "configmaps", "namespace": "shop",
                                         "name": "kube", "apiVersion": "v1"},
                             request_object=cm, response_object=cm)
    return events


USER_CONFIG = {"paths": ["requestObject.data.custom", "responseObject.data.custom"]}


def assert_no_canary(data: bytes | str, where: str) -> None:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    assert C not in text and C.upper() not in text, f"canary in {where}"


def scan_data_dir(root: Path) -> int:
    """Every file under the data dir, Parquet segments read back decompressed."""
    files = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        files += 1
        assert_no_canary(path.read_bytes(), str(path))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                column = table.column(name)
                if pa.types.is_string(column.type) or pa.types.is_list(column.type):
                    assert_no_canary(orjson.dumps(column.to_pylist()), f"{path}:{name}")
    return files


# -- the redactor ----------------------------------------------------------------------------


@pytest.fixture
def redactor(tmp_path: Path) -> Redactor:
    return load_redactor(tmp_path, USER_CONFIG)


def test_every_place_a_secret_is_logged_is_redacted(redactor: Redactor) -> None:
    events = canary_events()
    texts = pa.array([orjson.dumps(e).decode() for e in events])
    clean = redactor.texts(texts).to_pylist()
    for before, after in zip(texts.to_pylist(), clean, strict=True):
        assert_no_canary(after, before[:120])
        assert orjson.loads(after)["auditID"] == orjson.loads(before)["auditID"]
    created = orjson.loads(clean[0])
    data = created["requestObject"]["data"]["password"]
    assert data.startswith(MARKER_PREFIX + "hmac-sha256:")
    # Equal values, equal fingerprints: the same secret in the request, response and list.
    listed = orjson.loads(clean[1])["responseObject"]["items"][0]["data"]["password"]
    assert listed == data == created["responseObject"]["data"]["password"]
    assert orjson.loads(clean[2])["requestObject"]["data"]["password"] == data
    # What is not secret stays as it was.
    assert created["requestObject"]["metadata"]["name"] == "db"
    pod = orjson.loads(clean[6])["requestObject"]
    assert pod["spec"]["containers"][0]["image"] == "nginx"
    assert pod["spec"]["containers"][0]["env"][0]["name"] == "DB_PASSWORD"
    uri = orjson.loads(clean[5])["requestURI"]
    assert uri.startswith("/api/v1/namespaces/shop/pods?token=kubetrail") and "limit=5" in uri


def test_other_keys_give_other_fingerprints_and_nothing_else_is_touched(
        tmp_path: Path, redactor: Redactor) -> None:
    other = load_redactor(tmp_path / "other", None)
    assert redactor.marker("x") != other.marker("x") and redactor.marker("x") == redactor.marker("x")
    plain = request_events(audit_id(99), at=T0, verb="get", uri="/api/v1/namespaces/a/pods/b",
                           user=ALICE, object_ref={"resource": "pods", "namespace": "a",
                                                   "name": "b", "apiVersion": "v1"})
    text = orjson.dumps(plain[0]).decode()
    texts = pa.array([text] * 3)
    assert redactor.texts(texts) is texts  # not even parsed
    off = Redactor(b"k" * 32, RedactionConfig(enabled=False))
    leaky = pa.array([orjson.dumps(e).decode() for e in canary_events()])
    assert off.texts(leaky) is leaky


def test_redaction_settings_are_checked(tmp_path: Path) -> None:
    from kubetrail.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        load_redactor(tmp_path, {"enable": False})
    with pytest.raises(ConfigError, match="bad regular expression"):
        load_redactor(tmp_path, {"patterns": ["("]})
    assert not (tmp_path / "keys").exists()  # nothing made for settings that are wrong
    load_redactor(tmp_path, {"patterns": [r"\bcorp-[0-9]{6}\b"]})
    key = tmp_path / "keys" / "redaction.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32


# -- every entry point ------------------------------------------------------------------------


def _log(tmp_path: Path, name: str = "audit.log", n0: int = 0) -> Path:
    path = tmp_path / name
    path.write_text(render(canary_events(n0)) + '{"kind":"Event","auditID":"x","note":"'
                    + canaries()["aws_key"] + '"\n' + '{"truncated": "' + canaries()["aws_key"] + "\n")
    return path


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "kubetrail.yaml"
    path.write_text("redaction:\n  paths: [requestObject.data.custom, responseObject.data.custom]\n"
                    "alerts:\n  sinks:\n    - {type: file, path: " + str(tmp_path / "sink.jsonl") + "}\n")
    return path


def test_ingest_detect_and_quarantine_keep_no_canary(tmp_path: Path) -> None:
    data, config = tmp_path / "data", _config(tmp_path)
    code, out, err = run_cli("--config", config, "--data-dir", data, "--no-progress", "ingest",
                             "--detect", _log(tmp_path))
    assert code == 3, err  # the two broken lines are quarantined
    assert_no_canary(out + err, "ingest output")
    code, out, err = run_cli("--config", config, "--data-dir", data, "detect", "-o", "json",
                             _log(tmp_path, "again.log", 100))
    assert code == 3, err
    assert out.strip() and "secret" in out  # rules fired on the secrets, without them
    assert_no_canary(out + err, "detect output")
    assert scan_data_dir(data) >= 5
    assert_no_canary((tmp_path / "sink.jsonl").read_bytes(), "alert sink")
    code, out, _ = run_cli("--config", config, "--data-dir", data, "query", "--all-stages",
                           "--fields", "event", "-o", "json", "--limit", "100")
    assert code == 0 and MARKER_PREFIX in out
    assert_no_canary(out, "query")


def _wait_for(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_follow_keeps_no_canary(tmp_path: Path) -> None:
    data, config = tmp_path / "data", _config(tmp_path)
    log = tmp_path / "live" / "audit.log"
    log.parent.mkdir()
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "kubetrail", "--config", str(config),
                             "--data-dir", str(data), "follow", str(log), "--poll", "0.1"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with open(log, "a") as fh:
            fh.write(render(canary_events()))
        from kubetrail.store.archive import Archive

        def stored() -> bool:
            return (data / "segments").exists() and Archive(data).connect().execute(
                "SELECT count(*) FROM events").fetchone()[0] >= 8
        _wait_for(stored)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_no_canary(out + err, "follow output")
    scan_data_dir(data)


def _events_in(body: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": body})


def test_the_webhook_keeps_no_canary_even_in_its_write_ahead_log(tmp_path: Path) -> None:
    import httpx

    from test_service import free_port

    data, config = tmp_path / "data", _config(tmp_path)
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "kubetrail", "--config", str(config),
                                 "--data-dir", str(data), "serve", "--no-auth", "--port",
                                 str(port)], env=cli_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False
        _wait_for(up, 30)
        return proc

    proc = start()
    items = [{k: v for k, v in e.items() if k not in ("kind", "apiVersion")}
             for e in canary_events()]  # as the webhook backend sends list items
    response = httpx.post(f"http://127.0.0.1:{port}/v1/audit", content=_events_in(items))
    assert response.status_code == 200
    proc.kill()  # before compaction, so the log itself is on disk to be checked
    proc.communicate()
    wal = list((data / "wal").glob("wal-*.log"))
    assert wal and any(w.stat().st_size for w in wal)
    scan_data_dir(data)
    proc = start()  # compacts the log
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_no_canary(out + err, "serve output")
    assert scan_data_dir(data) >= 3
    assert list((data / "segments").rglob("*.parquet"))


def iter_lines(path: Path) -> Iterator[bytes]:
    yield from path.read_bytes().splitlines()
