"""kubetrail: collect Kubernetes audit events, keep them safely, answer who did what.

>>> from kubetrail import Archive, EventFilter, ingest, query_events  # doctest: +SKIP
"""

from .config import Settings, load_settings
from .errors import (
    ConfigError,
    InputError,
    KubetrailError,
    LegacyFormatError,
    QueryError,
    StoreError,
)
from .ingest import ClusterCounts, IngestReport, ingest
from .query.answers import (
    archive_stats,
    object_history,
    query_events,
    run_sql,
    timeline,
    top,
    who,
)
from .query.filters import EventFilter
from .store.archive import Archive

__version__ = "0.1.0"

__all__ = [
    "Archive",
    "ClusterCounts",
    "ConfigError",
    "EventFilter",
    "IngestReport",
    "InputError",
    "KubetrailError",
    "LegacyFormatError",
    "QueryError",
    "Settings",
    "StoreError",
    "__version__",
    "archive_stats",
    "ingest",
    "load_settings",
    "object_history",
    "query_events",
    "run_sql",
    "timeline",
    "top",
    "who",
]
