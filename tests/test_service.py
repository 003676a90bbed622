"""`kubetrail serve`: a real uvicorn server on 127.0.0.1, driven the way kube-apiserver's
webhook backend drives it (EventLists of 400, several in flight, retries with backoff).
Every event sent is stored exactly once, through retries, overload and kill -9; every kind
of refusal has its status, reason and metric; TLS and mutual TLS work with real certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import assert_clean, cli_env, run_cli
from kubetrail.service.client import WebhookSender, batches_of, event_list, tls_context
from kubetrail.simulate import write_simulation
from kubetrail.store.archive import Archive

WRITE_TOKEN = "w-" + "a" * 30
PROD_TOKEN = "p-" + "b" * 30
READ_TOKEN = "r-" + "c" * 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    port: int

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode("utf-8", "replace")


_RUNNING: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_server_left_behind() -> Iterator[None]:
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start(data_dir: Path, *args: str | Path, port: int | None = None, tls: bool = False,
          wait: float = 30) -> Server:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetrail", "--data-dir", str(data_dir), "serve", "--port",
         str(port), *map(str, args)], env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    _RUNNING.append(proc)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:  # uvicorn binds once the pipeline has started
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"serve exited {proc.returncode}: {err.decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("serve did not start listening")
    return Server(proc, f"{'https' if tls else 'http'}://127.0.0.1:{port}", port)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim") / "audit.log"
    write_simulation(out, events=6_000, seed=21, scenarios=["exec-shell", "secrets-dump"])
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, Path]:
    write = tmp_path / "tokens"
    write.write_text(f"# API servers\n{WRITE_TOKEN}\n{PROD_TOKEN} prod-eu,prod-us\n")
    read = tmp_path / "read-tokens"
    read.write_text(f"{READ_TOKEN}\n")
    return write, read


def archived(data_dir: Path) -> list[tuple[str, str, str]]:
    con = Archive(data_dir, create=False).connect()
    try:
        return [tuple(r) for r in con.execute(
            "SELECT cluster, audit_id, stage FROM events").fetchall()]
    finally:
        con.close()


def keys(events: Sequence[dict[str, Any]], cluster: str) -> list[tuple[str, str, str]]:
    return [(cluster, e["auditID"], e["stage"]) for e in events]


# -- exactly once ----------------------------------------------------------------------------


def test_batches_from_concurrent_senders_are_stored_exactly_once(
        tmp_path: Path, tokens: tuple[Path, Path], events: list[dict[str, Any]]) -> None:
    write, read = tokens
    server = start(tmp_path / "data", "--tokens-file", write, "--read-tokens-file", read,
                   "--no-detect")
    batches = batches_of(events)
    with WebhookSender(f"{server.base}/v1/clusters/prod-eu/audit", token=PROD_TOKEN,
                       initial_backoff=0.05) as sender:
        report = sender.send_all(batches, concurrency=4)
        # The API server retries a batch whose answer it did not see: send some again.
        for batch in batches[:3]:
            assert sender.send(batch)
    assert report.batches == len(batches) and report.dropped == 0
    metrics = httpx.get(f"{server.base}/metrics").text
    assert f'kubetrail_events_received_total{{cluster="prod-eu"}} {len(events) + 1200}.0' in metrics
    code, err = server.stop()
    assert code == 0, err
    assert_clean(err)
    stored = archived(tmp_path / "data")
    assert sorted(stored) == sorted(keys(events, "prod-eu"))  # none lost, none twice
    # Graceful shutdown compacted everything: the log is empty.
    assert Archive(tmp_path / "data").connect().execute(
        "SELECT count(*) FROM events").fetchone() == (len(events),)


def test_kill_9_mid_stream_then_restart_loses_nothing_and_stores_nothing_twice(
        tmp_path: Path, events: list[dict[str, Any]]) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = start(data, "--no-auth", "--no-detect", port=port)
    batches = batches_of(events, 200)
    sender = WebhookSender(f"http://127.0.0.1:{port}/v1/audit", attempts=200,
                           initial_backoff=0.05, timeout=5)
    results: list[bool] = []
    done = threading.Event()

    def send() -> None:
        report = sender.send_all(batches, concurrency=3)
        results.append(report.dropped == 0)
        done.set()

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill once part of the stream is acknowledged
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        line = [x for x in text.splitlines() if x.startswith("kubetrail_events_received_total")]
        if line and float(line[0].split()[-1]) >= len(events) / 3:
            break
        time.sleep(0.02)
    server.proc.kill()
    server.proc.wait()
    assert not done.is_set()
    time.sleep(0.5)  # the senders keep retrying meanwhile
    server = start(data, "--no-auth", "--no-detect", port=port)
    thread.join(timeout=120)
    sender.close()
    assert results == [True]
    code, err = server.stop()
    assert code == 0, err
    stored = archived(data)
    assert len(stored) == len(set(stored)) == len(events)
    assert set(stored) == set(keys(events, "default"))


def test_a_torn_write_ahead_log_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    from kubetrail.store.wal import WriteAheadLog

    wal = WriteAheadLog(tmp_path / "wal")
    wal.append([("a", b'{"items":[1,\n2]}'), ("b", b"{}")])
    wal.close()
    path = next((tmp_path / "wal").glob("wal-*.log"))
    whole = path.stat().st_size
    with open(path, "ab") as fh:  # a crash in the middle of the next record
        fh.write(b"KTW1\x00\x00\x01\x00garbage")
    wal = WriteAheadLog(tmp_path / "wal")
    assert path.stat().st_size == whole
    assert [(r.cluster, r.body) for r in wal.pending()] == [
        ("a", b'{"items":[1,\n2]}'), ("b", b"{}")]
    wal.append([("c", b"")])
    records = list(wal.pending())
    assert [r.cluster for r in records] == ["a", "b", "c"]
    wal.mark_compacted(records[1].end)
    assert [r.cluster for r in wal.pending()] == ["c"]
    wal.close()
    assert [r.cluster for r in WriteAheadLog(tmp_path / "wal").pending()] == ["c"]


# -- refusals --------------------------------------------------------------------------------


def test_authentication_and_authorisation(tmp_path: Path, tokens: tuple[Path, Path],
                                          events: list[dict[str, Any]]) -> None:
    write, read = tokens
    server = start(tmp_path / "data", "--tokens-file", write, "--read-tokens-file", read,
                   "--no-detect")
    body = event_list(events[:10])
    url = f"{server.base}/v1/clusters/prod-eu/audit"

    def post(url: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(url, content=body, headers=headers)

    missing = post(url, None)
    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
    assert post(url, "not-a-token-at-all-xxxxxxxxxx").status_code == 401
    assert post(url, READ_TOKEN).status_code == 401  # a read token cannot write
    other = post(f"{server.base}/v1/clusters/staging/audit", PROD_TOKEN)
    assert other.status_code == 403 and "staging" in other.json()["message"]
    assert post(f"{server.base}/v1/audit", PROD_TOKEN).status_code == 403  # cluster "default"
    assert post(url, PROD_TOKEN).status_code == 200
    assert post(f"{server.base}/v1/clusters/staging/audit", WRITE_TOKEN).status_code == 200
    # Reads take a read token, and only a read token.
    assert httpx.get(f"{server.base}/v1/events").status_code == 401
    assert httpx.get(f"{server.base}/v1/events",
                     headers={"Authorization": f"Bearer {WRITE_TOKEN}"}).status_code == 401
    ok = httpx.get(f"{server.base}/v1/stats", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["events"] == 20
    from kubetrail.store.access import read_access

    (seen,) = read_access(Archive(tmp_path / "data"))  # the read is on the access log
    assert (seen["who"], seen["action"]) == ("token read-tokens:1", "api stats")
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'kubetrail_batches_rejected_total{reason="unauthenticated"} 5.0' in metrics
    assert 'kubetrail_batches_rejected_total{reason="forbidden"} 2.0' in metrics
    assert server.stop()[0] == 0


def test_bad_bodies_are_refused_with_the_reason(tmp_path: Path, events: list[dict[str, Any]]
                                                ) -> None:
    server = start(tmp_path / "data", "--no-auth", "--no-detect", "--max-body", "20000")
    url = f"{server.base}/v1/audit"
    cases = [
        (b'{"kind": "EventList", "items": [', 400, "invalid_json"),
        (orjson.dumps(events[0]), 400, "not_eventlist"),
        (b'[1, 2]', 400, "not_eventlist"),
        (orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []}),
         400, "bad_version"),
        (orjson.dumps({"kind": "EventList", "items": [1]}), 400, "not_eventlist"),
        (event_list(events[:400]), 413, "too_large"),
    ]
    for body, status, reason in cases:
        response = httpx.post(url, content=body)
        assert response.status_code == status, (reason, response.text)
        assert response.json()["error"] == reason and response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced as it arrives
        body = event_list(events[:400])
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    assert httpx.post(url, content=chunks()).status_code == 413
    assert httpx.post(url, content=event_list([])).status_code == 200
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'kubetrail_batches_rejected_total{reason="not_eventlist"} 3.0' in metrics
    assert 'kubetrail_batches_rejected_total{reason="too_large"} 2.0' in metrics
    assert 'kubetrail_batches_rejected_total{reason="invalid_json"} 1.0' in metrics
    assert server.stop()[0] == 0


def test_overload_answers_429_with_retry_after_and_retries_get_through(
        tmp_path: Path, events: list[dict[str, Any]]) -> None:
    # A queue of one byte: a batch is taken only when nothing else waits for the disk.
    server = start(tmp_path / "data", "--no-auth", "--no-detect", "--queue-bytes", "1")
    batches = batches_of(events, 100)

    def raw(batch: Sequence[dict[str, Any]]) -> httpx.Response:
        return httpx.post(f"{server.base}/v1/audit", content=event_list(batch))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(raw, batches[:32]))
    refused = [a for a in answers if a.status_code == 429]
    assert refused, "no batch was refused"
    assert all(a.headers["retry-after"] == "1" for a in refused)
    with WebhookSender(f"{server.base}/v1/audit", initial_backoff=0.02, attempts=50) as sender:
        report = sender.send_all(batches, concurrency=8)
    assert report.dropped == 0
    assert server.stop()[0] == 0
    stored = archived(tmp_path / "data")
    assert sorted(stored) == sorted(keys(events, "default"))


# -- TLS ---------------------------------------------------------------------------------------


def _certificates(directory: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, issuer: x509.Name, signer: Any, key: Any, *, ca: bool,
              san: list[x509.GeneralName] | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: Any) -> None:
        (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("kubetrail test CA", name("kubetrail test CA"), ca_key, ca_key, ca=True)
    write("ca", ca, ca_key)
    for stem, san in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                      ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(stem, ca.subject, ca_key, key, ca=False, san=san), key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = issue("stranger", name("stranger"), stranger_key, stranger_key, ca=False)
    write("stranger", stranger, stranger_key)
    return {p.stem + p.suffix: p for p in directory.iterdir()}


def test_mutual_tls(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    certs = _certificates(tmp_path)
    server = start(tmp_path / "data", "--tls-cert", certs["server.crt"], "--tls-key",
                   certs["server.key"], "--client-ca", certs["ca.crt"], "--no-detect", tls=True)
    url = f"{server.base}/v1/clusters/edge/audit"
    body = event_list(events[:50])
    ca = str(certs["ca.crt"])
    with pytest.raises(httpx.TransportError):  # no client certificate: no handshake
        httpx.post(url, content=body, verify=tls_context(ca))
    with pytest.raises(httpx.TransportError):  # one the CA did not sign
        httpx.post(url, content=body, verify=tls_context(
            ca, (str(certs["stranger.crt"]), str(certs["stranger.key"]))))
    with WebhookSender(url, ca=ca,
                       cert=(str(certs["client.crt"]), str(certs["client.key"]))) as sender:
        assert sender.send(events[:50])
    assert server.stop()[0] == 0
    assert len(archived(tmp_path / "data")) == 50


def test_the_kubeconfig_policy_flags_writes_is_served(
        tmp_path: Path, tokens: tuple[Path, Path], events: list[dict[str, Any]]) -> None:
    """What `kubetrail policy flags --webhook-url ...` writes for the API server, read the way
    client-go reads it, gets through TLS, mutual TLS and the token check."""
    from kubetrail.policy.flags import FlagOptions, apiserver_config

    certs = _certificates(tmp_path)
    port = free_port()
    server = start(tmp_path / "data", "--tls-cert", certs["server.crt"], "--tls-key",
                   certs["server.key"], "--client-ca", certs["ca.crt"], "--tokens-file",
                   tokens[0], "--no-detect", port=port, tls=True)
    token_file = tmp_path / "token"
    token_file.write_text(PROD_TOKEN + "\n")
    config = apiserver_config(FlagOptions(
        "/etc/kubernetes/audit/policy.yaml",
        webhook_url=f"https://127.0.0.1:{port}/v1/clusters/prod-eu/audit",
        webhook_ca=str(certs["ca.crt"]), webhook_token_file=str(token_file),
        webhook_client_cert=str(certs["client.crt"]), webhook_client_key=str(certs["client.key"])))
    assert config.webhook_kubeconfig is not None
    with WebhookSender.from_kubeconfig(config.webhook_kubeconfig) as sender:
        assert sender.send(events[:400])
    assert server.stop()[0] == 0
    assert sorted(archived(tmp_path / "data")) == sorted(keys(events[:400], "prod-eu"))


def test_tls_with_tokens(tmp_path: Path, tokens: tuple[Path, Path],
                         events: list[dict[str, Any]]) -> None:
    certs = _certificates(tmp_path)
    server = start(tmp_path / "data", "--tls-cert", certs["server.crt"], "--tls-key",
                   certs["server.key"], "--tokens-file", tokens[0], "--no-detect", tls=True)
    url = f"{server.base}/v1/audit"
    ca = str(certs["ca.crt"])
    assert httpx.post(url, content=event_list(events[:5]),
                      verify=tls_context(ca)).status_code == 401
    with WebhookSender(url, token=WRITE_TOKEN, ca=ca) as sender:
        assert sender.send(events[:5])
    assert server.stop()[0] == 0


# -- reading while serving -------------------------------------------------------------------


def test_queries_alerts_health_and_the_cli_alongside(tmp_path: Path, tokens: tuple[Path, Path],
                                                     events: list[dict[str, Any]]) -> None:
    write, read = tokens
    data = tmp_path / "data"
    server = start(data, "--tokens-file", write, "--read-tokens-file", read)  # detection on
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert httpx.get(f"{server.base}/healthz").text == "ok"
    assert httpx.get(f"{server.base}/readyz").status_code == 200
    with WebhookSender(f"{server.base}/v1/audit", token=WRITE_TOKEN) as sender:
        assert sender.send_all(batches_of(events), concurrency=2).dropped == 0
    # Events are queryable at once (the log is read together with the segments).
    page = httpx.get(f"{server.base}/v1/events", headers=auth,
                     params={"resource": "pods/exec", "limit": 5}).json()
    assert page["items"] and all(i["resource"] == "pods" and i["subresource"] == "exec"
                                 for i in page["items"])
    everything = []
    offset: int | None = 0
    while offset is not None:
        page = httpx.get(f"{server.base}/v1/events", headers=auth,
                         params={"limit": 2500, "offset": offset}).json()
        everything += page["items"]
        offset = page.get("next_offset")
    assert len(everything) == len({e["auditID"] for e in events})  # one row per request
    # The CLI reads the same data dir while the service holds it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, out, err = run_cli("--data-dir", data, "stats", "-o", "json")
        if code == 0 and orjson.loads(out)["events"] == len(events):
            break
        time.sleep(0.2)
    assert code == 0 and orjson.loads(out)["events"] == len(events), err
    # Detection ran on the arriving events; alerts are stored and served.
    wanted = {"exec-credential-file-read", "secrets-listed-across-namespaces"}  # the scenarios
    deadline = time.monotonic() + 15
    rules: set[str] = set()
    while time.monotonic() < deadline and not wanted <= rules:
        rules = {a["rule"] for a in httpx.get(f"{server.base}/v1/alerts", headers=auth,
                                               params={"min_severity": "high"}).json()["items"]}
        time.sleep(0.2)
    assert wanted <= rules
    assert "kubetrail_alerts_total{" in httpx.get(f"{server.base}/metrics").text
    schema = httpx.get(f"{server.base}/openapi.json").json()
    assert {"/v1/audit", "/v1/clusters/{cluster}/audit", "/v1/events", "/v1/alerts",
            "/v1/stats"} <= set(schema["paths"])
    assert server.stop()[0] == 0


# -- refusing to start unsafely --------------------------------------------------------------


def test_serve_refuses_configurations_that_would_be_unsafe(tmp_path: Path) -> None:
    code, _, err = run_cli("--data-dir", tmp_path, "serve")
    assert code != 0 and "no authentication" in err
    assert_clean(err)
    code, _, err = run_cli("--data-dir", tmp_path, "serve", "--no-auth", "--host", "0.0.0.0")
    assert code != 0 and "loopback" in err
    short = tmp_path / "short"
    short.write_text("abc\n")
    code, _, err = run_cli("--data-dir", tmp_path, "serve", "--tokens-file", short)
    assert code != 0 and "too short" in err and f"{short}:1" in err
    code, _, err = run_cli("--data-dir", tmp_path, "serve", "--no-auth", "--client-ca", short)
    assert code != 0 and "--tls-cert" in err
    assert_clean(err)


def test_a_second_service_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    server = start(tmp_path / "data", "--no-auth", "--no-detect")
    proc = subprocess.run([sys.executable, "-m", "kubetrail", "--data-dir", str(tmp_path / "data"),
                           "serve", "--no-auth", "--port", str(free_port())], env=cli_env(),
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode != 0 and b"another kubetrail process" in proc.stderr
    assert server.stop()[0] == 0


def test_the_kubernetes_manifest_runs_the_service_as_documented() -> None:
    import yaml

    root = Path(__file__).resolve().parents[1]
    docs = list(yaml.safe_load_all((root / "deploy/kubernetes/kubetrail.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service"} <= set(kinds)
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    (container,) = deployment["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("serve") - 1] == "--data-dir=/data"
    code, out, _ = run_cli("serve", "--help")
    assert code == 0
    for arg in args[args.index("serve") + 1:]:
        assert arg.split("=")[0] in out, arg
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for arg in args:
        if arg.startswith(("--tls-", "--tokens-file", "--read-tokens-file")):
            assert any(arg.split("=")[1].startswith(m) for m in mounts), arg
    tokens = kinds["Secret"]["stringData"]
    assert set(tokens) == {"tokens", "read-tokens"}


def test_the_service_applies_retention_by_itself(tmp_path: Path,
                                                 events: list[dict[str, Any]]) -> None:
    config = tmp_path / "kubetrail.yaml"
    config.write_text("retention:\n  max_age: 1d\n")  # the simulated events are older
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetrail", "--config", str(config), "--data-dir",
         str(tmp_path / "data"), "serve", "--no-auth", "--no-detect", "--port", str(port)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _RUNNING.append(proc)
    server = Server(proc, f"http://127.0.0.1:{port}", port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    with WebhookSender(f"{server.base}/v1/audit") as sender:
        assert sender.send(events[:400])
    archive = Archive(tmp_path / "data")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e.get("op") == "delete"
                                                  for e in archive.manifest()):
        time.sleep(0.2)
    assert server.stop()[0] == 0
    assert archived(tmp_path / "data") == []  # removed by age, on the record
    code, out, err = run_cli("--data-dir", tmp_path / "data", "verify")
    assert code == 0 and "removed by retention" in out, err
