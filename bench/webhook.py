"""Webhook throughput: `kubetrail serve` against a bare endpoint that only reads the body.

Both are driven by the same sender (kubetrail.service.client, which behaves like the API
server's webhook backend) with pre-encoded EventLists of 400 events, several in flight.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from kubetrail.service.client import WebhookSender, batches_of, event_list
from kubetrail.simulate import write_simulation

ROOT = Path(__file__).resolve().parents[1]


async def bare(scope, receive, send):  # type: ignore[no-untyped-def]
    """The ceiling: an ASGI app that reads the whole body and answers 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1].decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def _drive(url: str, bodies: list[tuple[bytes, int]], concurrency: int) -> dict[str, float]:
    with WebhookSender(url, initial_backoff=0.05, attempts=20) as sender:
        sender.send_all_encoded(bodies[:10], concurrency=concurrency)  # warm up
        started = time.perf_counter()
        report = sender.send_all_encoded(bodies[10:], concurrency=concurrency)
        seconds = time.perf_counter() - started
    return {"events_per_s": report.events / seconds, "p50_ms": 1000 * report.percentile(0.5),
            "p99_ms": 1000 * report.percentile(0.99), "seconds": seconds,
            "dropped": report.dropped, "retried": sum(report.statuses.values()) + report.errors}


def _paced(url: str, bodies: list[tuple[bytes, int]], rate: float) -> dict[str, float]:
    """Batches sent at a fixed rate (events/s); latency counted from when each batch was due
    to be sent, so a stall is not hidden by the sender waiting for it."""
    from concurrent.futures import ThreadPoolExecutor

    latencies: list[float] = []
    lock = threading.Lock()
    with WebhookSender(url, initial_backoff=0.05, attempts=20) as sender:
        start = time.perf_counter() + 0.2
        due, at = [], start
        for _, count in bodies:
            due.append(at)
            at += count / rate

        def send(i: int) -> None:
            pause = due[i] - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sender.send_encoded(*bodies[i])
            with lock:
                latencies.append(time.perf_counter() - due[i])

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(send, range(len(bodies))))
        seconds = time.perf_counter() - start
    latencies.sort()
    return {"events_per_s": sum(c for _, c in bodies) / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def webhook_benchmark(work: Path, events: int = 200_000, concurrency: int = 8,
                      detect: bool = True, rate: float = 20_000
                      ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(kubetrail serve flat out, bare endpoint flat out, kubetrail serve at `rate`)."""
    log = work / "webhook-sim.log"
    write_simulation(log, events=events, seed=31, scenarios=("exec-shell", "brute-force"))
    docs = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    bodies = [(event_list(b), len(b)) for b in batches_of(docs, 400)]
    env = {"PYTHONPATH": str(ROOT / "src") + ":" + str(ROOT / "bench")}
    results = []
    for paced, command in (
        (False, [sys.executable, "-m", "kubetrail", "--data-dir", str(work / "serve"), "serve",
                 "--no-auth", "--detect" if detect else "--no-detect"]),
        (False, [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"),
                 "webhook:bare", "--log-level", "warning"]),
        (True, [sys.executable, "-m", "kubetrail", "--data-dir", str(work / "serve-paced"),
                "serve", "--no-auth", "--detect" if detect else "--no-detect"]),
    ):
        port = _port()
        proc = subprocess.Popen([*command, "--port", str(port)], env={**_environ(), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait(port, proc)
            url = f"http://127.0.0.1:{port}/v1/audit"
            results.append(_paced(url, bodies, rate) if paced
                           else _drive(url, bodies, concurrency))
        finally:
            proc.terminate()
            proc.communicate(timeout=120)
    return results[0], results[1], results[2]


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
