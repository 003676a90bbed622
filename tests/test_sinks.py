"""Alert sinks against a real HTTP server on 127.0.0.1, real files and real stdout."""

from __future__ import annotations

import io
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

import kubetrail.sinks
from kubetrail import ConfigError, load_settings
from kubetrail.detect.alert import Alert
from kubetrail.sinks import AlertDispatcher, Route, StdoutSink, build_sinks

T = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
#: Retry settings that keep the tests fast: waits of a few milliseconds.
FAST = {"timeout": "2s", "retries": 3, "backoff": "1ms", "max_backoff": "20ms"}

ALERT = Alert(
    rule="exec-into-pod", title="Shell in a pod", severity="high", behaviours=("execution",),
    tags=("mitre:T1609",), time=T, cluster="prod", audit_id="a-1", user="alice@example.com",
    verb="create", resource="pods", subresource="exec", namespace="payments", name="web-1",
    source_ips=("10.0.0.7",), user_agent="kubectl/v1.30.0",
    message="alice@example.com ran sh in payments/web-1",
    evidence={"command": ["sh"]}, stage="ResponseStarted", code=101, decision="allow")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; requests to the test server must go straight to it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- a recording HTTP server -----------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class Recorder(ThreadingHTTPServer):
    """Records every POST; answers with the queued replies first, then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out has hung up on a slow reply: expected, not worth a trace."""


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                body))
            reply = self.server.replies.pop(0) if self.server.replies else Reply()
        time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# -- every sink delivers the right body ------------------------------------------------


def test_webhook_posts_the_alert_dict_with_headers(server: Recorder) -> None:
    config = {"sinks": [{"type": "webhook", "url": server.url + "/hook",
                         "headers": {"Authorization": "Bearer s3cret"}, **FAST}]}
    with build_sinks(config) as alerts:
        assert alerts.send(ALERT) == []
    [request] = server.requests
    assert request.path == "/hook"
    assert request.json() == ALERT.to_dict()
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["content-type"] == "application/json"
    assert alerts.sent == {f"webhook[0] {server.url}": 1}


def test_webhook_falco_format(server: Recorder) -> None:
    with build_sinks({"sinks": [{"type": "webhook", "url": server.url, "format": "falco"}]}) as alerts:
        alerts.send(ALERT)
    body = server.requests[0].json()
    assert body == ALERT.to_falco()
    assert body["priority"] == "Error" and body["output_fields"]["ka.user.name"] == "alice@example.com"


def test_slack_message_names_rule_severity_who_what_where(server: Recorder) -> None:
    config = {"sinks": [{"type": "slack", "url": server.url + "/services/T0/B0/XYZ",
                         "link": "https://kt.example/events/{cluster}/{audit_id}"}]}
    with build_sinks(config) as alerts:
        alerts.send(replace(ALERT, count=4, window=(T, T + timedelta(minutes=3))))
    body = server.requests[0].json()
    assert server.requests[0].path == "/services/T0/B0/XYZ"
    assert body["text"].startswith("[HIGH] Shell in a pod (exec-into-pod): alice@example.com ran sh")
    header, message, facts, context = body["blocks"]
    assert header["type"] == "header" and "HIGH: Shell in a pod" in header["text"]["text"]
    assert message["text"]["text"] == ALERT.message
    fields = [f["text"] for f in facts["fields"]]
    assert "*Severity*\nhigh" in fields and "*Rule*\n`exec-into-pod`" in fields
    assert "*Who*\nalice@example.com from 10.0.0.7" in fields
    assert "*What*\ncreate pods/exec (101 allow)" in fields
    assert "*Where*\nprod / payments / web-1" in fields
    assert any(f.startswith("*Count*\n4 between 2026-11-01T09:00:00Z") for f in fields)
    assert "*Link*\n<https://kt.example/events/prod/a-1|open in kubetrail>" in fields
    assert "auditID `a-1`" in context["elements"][0]["text"]
    # The label names the host only: a Slack webhook's path is its secret.
    assert list(alerts.sent) == [f"slack[0] {server.url}"]


def test_slack_escapes_markup_in_user_controlled_text(server: Recorder) -> None:
    with build_sinks({"sinks": [{"type": "slack", "url": server.url}]}) as alerts:
        alerts.send(replace(ALERT, message="<!channel> & <https://evil|click>", name="<x>"))
    body = server.requests[0].json()
    assert body["blocks"][1]["text"]["text"] == "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
    assert "<!channel>" not in body["text"]


def test_alertmanager_v2_body(server: Recorder) -> None:
    config = {"sinks": [{"type": "alertmanager", "url": server.url + "/", "resolve_after": "30m",
                         "link": "https://kt.example/e/{audit_id}"}]}
    with build_sinks(config) as alerts:
        alerts.send(ALERT)
    request = server.requests[0]
    assert request.path == "/api/v2/alerts"
    [posted] = request.json()
    assert posted["labels"] == {"alertname": "exec-into-pod", "severity": "high", "cluster": "prod",
                                "namespace": "payments", "user": "alice@example.com", "verb": "create",
                                "resource": "pods", "name": "web-1", "source": "kubetrail"}
    assert posted["annotations"]["summary"] == ALERT.message
    assert posted["annotations"]["description"].startswith("Shell in a pod: alice@example.com create")
    assert posted["annotations"]["audit_id"] == "a-1"
    assert posted["startsAt"] == "2026-11-01T09:00:00Z"
    assert posted["endsAt"] == "2026-11-01T09:30:00Z"
    assert posted["generatorURL"] == "https://kt.example/e/a-1"


def test_stdout_sink_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with build_sinks({"sinks": [{"type": "stdout"}, {"type": "stdout", "format": "falco"}]}) as alerts:
        alerts.send(ALERT)
    out = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line) for line in out] == [ALERT.to_dict(), ALERT.to_falco()]


def test_file_sink_appends_json_lines_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "log" / "alerts.jsonl"
    config = {"sinks": [{"type": "file", "path": str(path)}]}
    with build_sinks(config) as alerts:
        alerts.send(ALERT)
        alerts.send(replace(ALERT, audit_id="a-2"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with build_sinks(config) as alerts:  # a restart appends, never truncates
        alerts.send(replace(ALERT, audit_id="a-3"))
    assert [a["auditID"] for a in lines(path)] == ["a-1", "a-2", "a-3"]
    assert lines(path)[0] == ALERT.to_dict()
    falco = tmp_path / "falco.jsonl"
    with build_sinks({"sinks": [{"type": "file", "path": str(falco), "format": "falco"}]}) as alerts:
        alerts.send(ALERT)
    assert lines(falco) == [ALERT.to_falco()]


# -- retries and failures --------------------------------------------------------------


def test_5xx_and_429_are_retried_until_success(server: Recorder) -> None:
    server.fail(Reply(500), Reply(429, {"Retry-After": "0"}), Reply(503))
    with build_sinks({"sinks": [{"type": "webhook", "url": server.url, **FAST}]}) as alerts:
        assert alerts.send(ALERT) == []
    assert len(server.requests) == 4
    assert all(r.json() == ALERT.to_dict() for r in server.requests)
    assert sum(alerts.sent.values()) == 1 and not alerts.failed


def test_retry_after_is_honoured_up_to_max_backoff(server: Recorder) -> None:
    server.fail(Reply(429, {"Retry-After": "3600"}), Reply(503, {"Retry-After": "0.2"}))
    started = time.monotonic()
    with build_sinks({"sinks": [{"type": "webhook", "url": server.url, "retries": 2,
                                 "backoff": "1ms", "max_backoff": "300ms"}]}) as alerts:
        assert alerts.send(ALERT) == []
    elapsed = time.monotonic() - started
    assert len(server.requests) == 3
    assert 0.45 <= elapsed < 2  # 0.3 s (capped from an hour) + 0.2 s as asked


def test_other_4xx_is_not_retried_and_is_reported(server: Recorder,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    server.fail(Reply(400, body=b"invalid_payload"))
    with build_sinks({"sinks": [{"type": "slack", "url": server.url, **FAST}]}) as alerts:
        [failure] = alerts.send(ALERT)
    assert len(server.requests) == 1
    assert failure.sink == f"slack[0] {server.url}" and failure.rule == "exec-into-pod"
    assert "HTTP 400 Bad Request: invalid_payload (not retried" in failure.reason
    assert alerts.failed == {failure.sink: 1} and list(alerts.failures) == [failure]
    assert f"kubetrail: alert sink slack[0] {server.url} failed for rule exec-into-pod" \
        in capsys.readouterr().err


def test_giving_up_after_the_retries(server: Recorder) -> None:
    server.fail(*[Reply(502)] * 5)
    with build_sinks({"sinks": [{"type": "webhook", "url": server.url, **FAST, "retries": 2}]},
                     ) as alerts:
        [failure] = alerts.send(ALERT)
    assert len(server.requests) == 3
    assert failure.reason.startswith("HTTP 502 Bad Gateway")
    assert failure.reason.endswith("(gave up after 3 attempts)")


def test_unreachable_server_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with build_sinks({"sinks": [{"type": "alertmanager", "url": f"http://127.0.0.1:{port}",
                                 **FAST, "retries": 1}]}) as alerts:
        [failure] = alerts.send(ALERT)
    assert failure.reason.startswith(f"cannot reach http://127.0.0.1:{port}")
    assert failure.reason.endswith("(gave up after 2 attempts)")
    assert "cannot reach" in capsys.readouterr().err


def test_a_slow_server_times_out_and_is_retried(server: Recorder) -> None:
    server.fail(Reply(delay=0.3), Reply(delay=0.3))
    with build_sinks({"sinks": [{"type": "webhook", "url": server.url, **FAST,
                                 "timeout": "50ms", "retries": 1}]}) as alerts:
        [failure] = alerts.send(ALERT)
    assert failure.reason == f"no answer from {server.url} within 0.05s (gave up after 2 attempts)"


def test_a_failing_sink_does_not_cost_the_others(server: Recorder, tmp_path: Path) -> None:
    server.fail(Reply(401), Reply(401))

    class Broken:
        label = "broken"

        def deliver(self, alert: Alert) -> None:
            raise RuntimeError("bug in a sink")

        def close(self) -> None:
            raise RuntimeError("cannot close either")

    path = tmp_path / "alerts.jsonl"
    built = build_sinks({"sinks": [{"type": "webhook", "url": server.url, **FAST},
                                   {"type": "file", "path": str(path)}]})
    err = io.StringIO()
    alerts = AlertDispatcher([Route(Broken()), *built.routes], stderr=err)
    with alerts:
        failures = alerts.send(ALERT) + alerts.send(replace(ALERT, audit_id="a-2"))
    assert [(f.sink, f.audit_id) for f in failures] == [
        ("broken", "a-1"), (f"webhook[0] {server.url}", "a-1"),
        ("broken", "a-2"), (f"webhook[0] {server.url}", "a-2")]
    assert failures[0].reason == "bug in a sink"
    assert [a["auditID"] for a in lines(path)] == ["a-1", "a-2"]
    assert alerts.sent == {f"file[1] {path}": 2}
    assert "alert sink broken did not close cleanly: cannot close either" in err.getvalue()


# -- severity and suppression ----------------------------------------------------------


def test_min_severity_for_all_sinks_and_per_sink(tmp_path: Path) -> None:
    everything, urgent = tmp_path / "all.jsonl", tmp_path / "urgent.jsonl"
    config = {"min_severity": "medium", "sinks": [
        {"type": "file", "path": str(everything)},
        {"type": "file", "path": str(urgent), "min_severity": "critical"}]}
    with build_sinks(config) as alerts:
        for severity in ("info", "low", "medium", "high", "critical"):
            alerts.send(replace(ALERT, severity=severity))
    assert [a["severity"] for a in lines(everything)] == ["medium", "high", "critical"]
    assert [a["severity"] for a in lines(urgent)] == ["critical"]
    assert alerts.filtered == 2


def test_suppression_sends_the_first_then_one_with_the_count(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    alerts = build_sinks({"suppress": "10m", "sinks": [{"type": "file", "path": str(path)}]})
    for i in range(5):
        alerts.send(replace(ALERT, time=T + timedelta(seconds=i), audit_id=f"a-{i}"))
    alerts.send(replace(ALERT, name="web-2", audit_id="other"))  # another object: its own key
    assert [(a["auditID"], a.get("count")) for a in lines(path)] == [("a-0", None), ("other", None)]
    assert alerts.suppressed == 4
    assert alerts.close() == []
    sent = lines(path)
    assert len(sent) == 3
    assert sent[2]["count"] == 5 and sent[2]["auditID"] == "a-4"
    assert sent[2]["window"] == {"start": "2026-11-01T09:00:00Z", "end": "2026-11-01T09:00:04Z"}
    with pytest.raises(RuntimeError, match="closed"):
        alerts.send(ALERT)
    assert alerts.close() == []  # closing twice is harmless


def test_a_passed_window_releases_its_count_with_the_next_alert(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    with build_sinks({"suppress": "10m", "sinks": [{"type": "file", "path": str(path)}]}) as alerts:
        for i in range(3):
            alerts.send(replace(ALERT, time=T + timedelta(minutes=i)))
        alerts.send(replace(ALERT, time=T + timedelta(minutes=11), audit_id="late"))
        assert [(a["auditID"], a.get("count")) for a in lines(path)] == [
            ("a-1", None), ("a-1", 3), ("late", None)]
    assert len(lines(path)) == 3  # nothing more was held back


def test_suppression_keys_on_the_rule_group_when_there_is_one(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    with build_sinks({"suppress": 600, "sinks": [{"type": "file", "path": str(path)}]}) as alerts:
        for name in ("a", "b", "c"):  # different objects, one group: one burst
            alerts.send(replace(ALERT, name=name, group={"user": "alice@example.com"}))
    assert [(a["name"], a.get("count")) for a in lines(path)] == [("a", None), ("c", 3)]


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(("config", "message", "hint"), [
    ({"sinks": [{"type": "pagerduty"}]}, "alerts.sinks[0]: unknown sink type 'pagerduty'",
     "known types: stdout, file, webhook, slack, alertmanager"),
    ({"sinks": [{"path": "x"}]}, "alerts.sinks[0]: each sink needs a type", "known types"),
    ({"sinks": [{"type": "stdout"}, {"type": "webhook"}]}, "alerts.sinks[1] (webhook): url is required",
     "e.g. url: https://example.com/hook"),
    ({"sinks": [{"type": "file", "format": "json"}]}, "alerts.sinks[0] (file): path is required",
     "path: /var/log"),
    ({"sinks": [{"type": "slack", "url": "hooks.slack.com/x"}]},
     "url must be an http:// or https:// URL, got 'hooks.slack.com/x'", "incoming webhook"),
    ({"suppress": "10 minutes"}, "alerts: suppress must be a duration such as 500ms, 5s or 10m, "
     "got '10 minutes'", "window"),
    ({"sinks": [{"type": "webhook", "url": "http://h", "timeout": "0s"}]},
     "alerts.sinks[0] (webhook): timeout must be a duration", "one attempt"),
    ({"sinks": [{"type": "webhook", "url": "http://h", "backoff": "soon"}]},
     "backoff must be a duration such as 500ms, 5s or 10m, got 'soon'", "doubles"),
    ({"min_severity": "urgent"}, "alerts: min_severity must be one of info, low, medium, high, critical, "
     "got 'urgent'", "least severe"),
    ({"sinks": [{"type": "stdout", "min_severity": "HIGH"}]},
     "alerts.sinks[0] (stdout): min_severity must be one of", "least severe"),
    ({"sinks": [{"type": "stdout", "format": "xml"}]}, "format must be one of json, falco", "falco"),
    ({"sinks": [{"type": "webhook", "url": "http://h", "retries": -1}]}, "retries must be a whole number",
     "attempts"),
    ({"sinks": [{"type": "webhook", "url": "http://h", "headers": ["a"]}]}, "headers must be a mapping",
     "headers"),
    ({"sinks": [{"type": "slack", "url": "http://h", "link": "https://k/{auditid}"}]},
     "link uses unknown placeholder(s) auditid", "{audit_id}"),
    ({"sinks": [{"type": "stdout", "colour": "red"}]}, "alerts.sinks[0] (stdout): unknown key 'colour'",
     "known keys: format, min_severity"),
    ({"sink": []}, "alerts: unknown key 'sink'", "known keys: min_severity, sinks, suppress"),
    ({"sinks": {"type": "stdout"}}, "alerts.sinks must be a list of sinks", "- type:"),
])
def test_config_errors_name_the_key_and_the_sink(config: dict[str, Any], message: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_sinks(config)
    assert message in caught.value.message
    assert hint in (caught.value.hint or "")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        build_sinks({"min_severity": "urgent", "sinks": [{"type": "webhook"}, {"type": "nope"}]},
                    where="kubetrail.yaml: alerts")
    message = str(caught.value)
    assert message.startswith("kubetrail.yaml: alerts has 3 problems:")
    assert "kubetrail.yaml: alerts.sinks[0] (webhook): url is required" in message
    assert "kubetrail.yaml: alerts.sinks[1]: unknown sink type 'nope'" in message


def test_a_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    first = tmp_path / "first.jsonl"
    with pytest.raises(ConfigError, match=r"alerts.sinks\[1\]: cannot open"):
        build_sinks({"sinks": [{"type": "file", "path": str(first)},
                               {"type": "file", "path": str(blocker / "alerts.jsonl")}]})


def test_kubetrail_yaml_alerts_section_reaches_build_sinks(tmp_path: Path) -> None:
    cfg = tmp_path / "kubetrail.yaml"
    cfg.write_text("cluster: prod\nalerts:\n  min_severity: high\n  suppress: 10m\n"
                   "  sinks:\n    - type: stdout\n      format: falco\n")
    settings = load_settings(env={"HOME": str(tmp_path), "KUBETRAIL_ALERTS": "ignored"},
                             config_path=cfg)
    assert settings.alerts == {"min_severity": "high", "suppress": "10m",
                               "sinks": [{"type": "stdout", "format": "falco"}]}
    with build_sinks(settings.alerts) as alerts:
        assert (alerts.min_severity, alerts.suppress) == ("high", timedelta(minutes=10))
    assert load_settings(env={"HOME": str(tmp_path)}).alerts == {}
    cfg.write_text("alerts: [stdout]\n")
    with pytest.raises(ConfigError, match="alerts must be a mapping"):
        load_settings(env={"HOME": str(tmp_path)}, config_path=cfg)


def test_dispatcher_and_public_surface() -> None:
    assert all(hasattr(kubetrail.sinks, name) for name in kubetrail.sinks.__all__)
    out = io.StringIO()
    with AlertDispatcher([Route(StdoutSink(Alert.to_dict, stream=out))]) as alerts:
        alerts.send(ALERT)
    assert orjson.loads(out.getvalue()) == ALERT.to_dict()
    with pytest.raises(ValueError, match="unknown severity"):
        AlertDispatcher([], min_severity="urgent")
