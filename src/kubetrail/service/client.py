"""A sender that behaves like kube-apiserver's audit webhook backend.

EventLists of up to 400 events POSTed as application/json (with client-go's `?timeout=30s`),
several batches in flight, every failure (a connection error or any status outside
200-206) retried with exponential backoff (factor 1.5, up to 20 % jitter), a batch dropped
after its last attempt. The tests and the benchmark drive `kubetrail serve` with it, so the
service is held to what a real API server does.
"""

from __future__ import annotations

import base64
import random
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

__all__ = ["SendReport", "WebhookSender", "batches_of", "event_list", "tls_context"]


def tls_context(ca: str | None = None, cert: tuple[str, str] | None = None
                ) -> ssl.SSLContext:
    """Verify the server against `ca` (else the system's roots); present `cert` (certificate
    and key files) when given, as the kubeconfig's client-certificate does."""
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def event_list(events: Sequence[Mapping[str, Any]]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                         "metadata": {}, "items": list(events)})


@dataclass
class SendReport:
    """What a run of sends did."""

    batches: int = 0
    events: int = 0
    dropped: int = 0  # batches given up after the last attempt
    attempts: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # non-200 answers by status
    errors: int = 0  # connection failures
    latencies: list[float] = field(default_factory=list)  # seconds per acknowledged POST
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class WebhookSender:
    """POSTs EventLists to one URL the way the API server's webhook backend does."""

    def __init__(self, url: str, *, token: str | None = None, ca: str | None = None,
                 cert: tuple[str, str] | None = None, attempts: int = 5,
                 initial_backoff: float = 10.0, timeout: float = 30.0) -> None:
        self.url = url
        self.attempts = attempts
        self.initial_backoff = initial_backoff
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(headers=headers, verify=tls_context(ca, cert),
                                    timeout=timeout, params={"timeout": "30s"})

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Mapping[str, Any], **options: Any) -> WebhookSender:
        """A sender set up as the API server sets itself up from its webhook kubeconfig
        (the current context's server, CA, bearer token and client certificate)."""
        current = kubeconfig["current-context"]
        context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in kubeconfig["clusters"]
                       if c["name"] == context["cluster"])
        user = next((u["user"] for u in kubeconfig.get("users", [])
                     if u["name"] == context.get("user")), {})
        sender = cls(cluster["server"], token=user.get("token"), **options)
        context_tls = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            context_tls = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        if cluster.get("insecure-skip-tls-verify"):
            context_tls.check_hostname = False
            context_tls.verify_mode = ssl.CERT_NONE
        if "client-certificate-data" in user:
            with tempfile.TemporaryDirectory() as tmp:  # ssl loads a chain only from files
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.touch(0o600)
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                context_tls.load_cert_chain(cert, key)
        sender._client.close()
        sender._client = httpx.Client(headers=sender._client.headers, verify=context_tls,
                                      timeout=sender._client.timeout, params={"timeout": "30s"})
        return sender

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, events: Sequence[Mapping[str, Any]], report: SendReport | None = None
             ) -> bool:
        """One batch, retried until acknowledged or out of attempts."""
        return self.send_encoded(event_list(events), len(events), report)

    def send_encoded(self, body: bytes, count: int, report: SendReport | None = None) -> bool:
        """As :meth:`send`, for an EventList already encoded (`count` events)."""
        report = report if report is not None else SendReport()
        delay = self.initial_backoff
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(delay * (1 + random.random() * 0.2))
                delay *= 1.5
            started = time.perf_counter()
            try:
                response = self._client.post(self.url, content=body)
            except httpx.TransportError:
                with report._lock:
                    report.attempts += 1
                    report.errors += 1
                continue
            with report._lock:
                report.attempts += 1
                if 200 <= response.status_code <= 206:
                    report.latencies.append(time.perf_counter() - started)
                    report.batches += 1
                    report.events += count
                    return True
                report.statuses[response.status_code] = (
                    report.statuses.get(response.status_code, 0) + 1)
        with report._lock:
            report.dropped += 1
        return False

    def send_all(self, batches: Iterable[Sequence[Mapping[str, Any]]], *, concurrency: int = 4
                 ) -> SendReport:
        """Every batch, `concurrency` in flight at a time."""
        return self.send_all_encoded(((event_list(b), len(b)) for b in batches),
                                     concurrency=concurrency)

    def send_all_encoded(self, bodies: Iterable[tuple[bytes, int]], *, concurrency: int = 4
                         ) -> SendReport:
        """Every (EventList body, events in it), `concurrency` in flight at a time."""
        report = SendReport()
        with ThreadPoolExecutor(concurrency, thread_name_prefix="kubetrail-send") as pool:
            for _ in pool.map(lambda b: self.send_encoded(b[0], b[1], report), bodies):
                pass
        return report


def batches_of(events: Sequence[Mapping[str, Any]], size: int = 400
               ) -> list[Sequence[Mapping[str, Any]]]:
    """Events cut into batches as the webhook backend does (at most `size` each)."""
    return [events[i:i + size] for i in range(0, len(events), size)]

