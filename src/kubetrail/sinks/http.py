"""Delivery over HTTP: one POST per alert, retried with exponential backoff and jitter.

Retried: connection errors, timeouts, 5xx and 429 (waiting as long as ``Retry-After`` asks,
up to `max_backoff`). Not retried: any other status, since sending the same body again would
fail the same way (a 400 from Slack means the payload, a 401 or 404 the URL or token).
Delivery is synchronous: the caller waits at most about
``(retries + 1) × timeout + Σ min(backoff × 2^n, max_backoff)`` per alert.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..detect.alert import Alert
from .base import Undelivered, dumps

__all__ = ["HTTPSink", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for one attempt and how to space the next ones (seconds).

    >>> RetryPolicy(retries=2, backoff=0.5).delay(1, random.Random(0)) <= 1.0
    True
    """

    timeout: float = 5.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Wait before retry number `attempt + 1`: exponential, capped, with jitter in
        [50%, 100%] so many kubetrail instances do not retry in lockstep."""
        return min(self.max_backoff, self.backoff * 2**attempt) * rng.uniform(0.5, 1.0)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by ``Retry-After`` (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_text(response: httpx.Response) -> str:
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    body = " ".join(response.text.split())[:200]
    return f"{text}: {body}" if body else text


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of `url`: what reports show, since paths and query strings
    often hold secrets (a Slack webhook's path is its token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class HTTPSink:
    """POSTs `payload(alert)` as JSON to `url`, retrying as `policy` says.

    `payload` shapes the body (an alert's dict, a Slack message, an Alertmanager list), so
    the webhook, Slack and Alertmanager sinks are this class with different payloads.

    >>> sink = HTTPSink("https://example.com/hook", Alert.to_dict, RetryPolicy(retries=0))
    >>> sink.label
    'https://example.com'
    >>> sink.close()
    """

    def __init__(self, url: str, payload: Callable[[Alert], Any], policy: RetryPolicy, *,
                 headers: Mapping[str, str] | None = None, label: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.policy = policy
        self.label = label or _origin(url)
        self._payload = payload
        self._sleep = sleep
        self._rng = random.Random()
        self._client = httpx.Client(
            timeout=policy.timeout, follow_redirects=False,
            headers={"user-agent": "kubetrail", "content-type": "application/json",
                     **(headers or {})})

    def deliver(self, alert: Alert) -> None:
        self.post(dumps(self._payload(alert)))

    def post(self, body: bytes) -> None:
        """Send `body`; raise :class:`Undelivered` once retrying cannot help."""
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = self._client.post(self.url, content=body)
            except httpx.TimeoutException:
                reason = f"no answer from {_origin(self.url)} within {self.policy.timeout:g}s"
            except httpx.TransportError as exc:
                reason = f"cannot reach {_origin(self.url)}: {str(exc) or type(exc).__name__}"
            else:
                if response.is_success:
                    return
                reason = _status_text(response)
                if response.status_code != 429 and response.status_code < 500:
                    raise Undelivered(f"{reason} (not retried: check the url, token and payload)")
                wait = _retry_after(response)
            if attempt >= self.policy.retries:
                tries = "attempt" if attempt == 0 else "attempts"
                raise Undelivered(f"{reason} (gave up after {attempt + 1} {tries})")
            delay = self.policy.delay(attempt, self._rng) if wait is None \
                else min(wait, self.policy.max_backoff)
            self._sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._client.close()
