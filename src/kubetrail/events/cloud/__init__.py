"""Managed-cluster exports (EKS, GKE, AKS): one module per provider, one Shape list here.

The list follows the classification table of cloud-log-formats.md §4.2, where the first
match wins: carriers that wrap many records come before the records they wrap, and the
cheap key tests that almost never match come last.
"""

from __future__ import annotations

from ..decode import Shape
from . import aks, eks, gke

__all__ = ["CLOUD_SHAPES"]

CLOUD_SHAPES: list[Shape] = [
    eks.SUBSCRIPTION,
    eks.LAMBDA,
    eks.FIREHOSE,
    aks.RECORDS,
    aks.RECORD,
    eks.EVENTS,
    eks.INSIGHTS,
    gke.ENTRY,
    gke.PUBSUB,
    aks.LA_ROW,
    aks.DIAGNOSTICS,
]
