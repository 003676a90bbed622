"""`kubetrail serve`: the audit webhook with a write-ahead log, compaction and detection,
and the query API."""

from __future__ import annotations

from .app import ServiceConfig, create_app
from .runtime import Overloaded, Runtime, RuntimeOptions

__all__ = ["Overloaded", "Runtime", "RuntimeOptions", "ServiceConfig", "create_app"]
