"""The service's Prometheus metrics, on a registry of its own (one per service instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """Counters an operator alerts on: what came in, what was kept, what was refused."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("kubetrail_events_received", "Events received in accepted "
                                "batches.", ["cluster"], registry=r)
        self.stored = Counter("kubetrail_events_stored", "Events written to the archive.",
                              ["cluster"], registry=r)
        self.duplicate = Counter("kubetrail_events_duplicate", "Events already archived "
                                 "(retried batches).", ["cluster"], registry=r)
        self.quarantined = Counter("kubetrail_events_quarantined", "Events that were not "
                                   "usable and went to quarantine.", ["cluster"], registry=r)
        self.rejected = Counter("kubetrail_batches_rejected", "Requests refused, by reason.",
                                ["reason"], registry=r)
        self.alerts = Counter("kubetrail_alerts", "Alerts raised.", ["rule", "severity"],
                              registry=r)
        self.wal_bytes = Gauge("kubetrail_wal_bytes", "Bytes of write-ahead log not yet "
                               "compacted into segments.", registry=r)
        self.compaction_lag = Gauge("kubetrail_compaction_lag_seconds", "Age of the oldest "
                                    "event not yet in a segment, at the last compaction.",
                                    registry=r)
        self.ack_seconds = Histogram(
            "kubetrail_batch_ack_seconds", "From receiving a batch to acknowledging it "
            "(durable in the write-ahead log).", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
