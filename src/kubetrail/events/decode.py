"""JSON values → audit Events, one :class:`Decoded` or :class:`Rejected` each.

Each value is classified by its keys through a registry of :class:`Shape` s: native Events
and EventLists here, the managed clusters' exports in ``cloud/`` (see
shared/reference/cloud-log-formats.md §4.2). Nothing here raises for one bad record; it
becomes a :class:`Rejected` with a reason. Reading files is :mod:`.reader`'s job.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InputError
from .compression import decompress
from .jsontext import iter_values, to_text

__all__ = [
    "FORMATS",
    "NATIVE_SHAPES",
    "Decoded",
    "Decoder",
    "Item",
    "Rejected",
    "Shape",
    "all_shapes",
    "dumps_text",
    "excerpt",
    "native_event",
]


@dataclass(slots=True)
class Decoded:
    """One audit Event recovered from an input, with what its carrier said about it."""

    event: dict[str, Any]
    cluster: str | None = None
    source_format: str = "native"
    truncated: str | None = None
    text: str | None = None  # the Event's JSON text, when the input held it verbatim


@dataclass(slots=True)
class Rejected:
    """A record that is not a usable audit Event; goes to quarantine with its reason."""

    reason: str
    excerpt: str = ""
    skipped: bool = False  # True for records that are fine but not audit data (counted apart)
    pending: bool = False  # True for a last line still being written: read again later


Item = Decoded | Rejected


@dataclass(frozen=True)
class Shape:
    """A recognisable JSON shape: `match` tests a dict's keys, `decode` yields its events."""

    name: str
    family: str
    match: Callable[[dict[str, Any]], bool]
    decode: Callable[[dict[str, Any], Decoder], Iterator[Item]]
    description: str = ""


def dumps_text(value: Any) -> str:
    """JSON text of a decoded value; integers beyond 64 bits (which orjson refuses) too."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else dumps_text(value)
    return text if len(text) <= limit else text[:limit] + "…"


def native_event(event: dict[str, Any], dec: Decoder, text: str | None = None) -> Item:
    """A native Event; only its apiVersion is checked here, the rest by the row SQL."""
    version = event.get("apiVersion")
    if version is not None and version != "audit.k8s.io/v1":
        if version in ("audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1"):
            return Rejected(
                f"apiVersion {version} is not supported: it was removed in Kubernetes 1.24; "
                "re-export the log from a cluster that writes audit.k8s.io/v1",
                excerpt(text or event),
            )
        return Rejected(f"unknown audit apiVersion {version!r} (expected audit.k8s.io/v1)",
                        excerpt(text or event))
    return Decoded(event, dec.cluster, "native", None, text)


def _decode_event(value: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    yield native_event(value, dec)


def _decode_event_list(value: dict[str, Any], dec: Decoder) -> Iterator[Item]:
    items = value.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        yield Rejected("EventList.items is not a list", excerpt(value))
        return
    version = value.get("apiVersion")
    for item in items:
        if not isinstance(item, dict):
            yield Rejected("EventList item is not an object", excerpt(item))
            continue
        if version and "apiVersion" not in item:
            item["apiVersion"] = version
        yield native_event(item, dec)


def _is_event(v: dict[str, Any]) -> bool:
    return v.get("kind") == "Event" and str(v.get("apiVersion", "")).startswith("audit.k8s.io/")


def _is_bare_event(v: dict[str, Any]) -> bool:
    return "kind" not in v and "auditID" in v and "stage" in v and "verb" in v


NATIVE_SHAPES: list[Shape] = [
    Shape("event", "native", _is_event, _decode_event, "audit.k8s.io/v1 Event"),
    Shape("eventlist", "native", lambda v: v.get("kind") == "EventList", _decode_event_list,
          "audit.k8s.io/v1 EventList (the webhook body)"),
    Shape("bare-event", "native", _is_bare_event, _decode_event,
          "Event without kind/apiVersion (list item, stripped export)"),
]


@functools.cache
def all_shapes() -> tuple[Shape, ...]:
    """The registry: native shapes first, then each provider's (imported lazily)."""
    from .cloud import CLOUD_SHAPES

    return tuple(NATIVE_SHAPES + CLOUD_SHAPES)

#: --format names → the shape families they admit (None = all).
FORMATS: dict[str, frozenset[str] | None] = {
    "auto": None,
    "native": frozenset({"native"}),
    "jsonl": frozenset({"native"}),
    "eventlist": frozenset({"native"}),
    "event": frozenset({"native"}),
    "eks": frozenset({"eks"}),
    "gke": frozenset({"gke"}),
    "aks": frozenset({"aks"}),
}


@dataclass
class Decoder:
    """Turns JSON values into Items; shared by every shape so they can recurse."""

    cluster: str | None = None
    fmt: str = "auto"
    shapes: list[Shape] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise InputError(f"unknown format {self.fmt!r}",
                             hint="use one of: " + ", ".join(FORMATS))
        families = FORMATS[self.fmt]
        self.shapes = [s for s in all_shapes() if families is None or s.family in families]

    def classify(self, value: Any) -> Iterator[Item]:
        """Every Event inside one JSON value (which may be a container of many)."""
        if isinstance(value, list):
            for element in value:
                yield from self.classify(element)
            return
        if not isinstance(value, dict):
            yield Rejected(f"JSON {type(value).__name__} is not an audit event", excerpt(value))
            return
        kind = value.get("kind")
        if kind == "Event" and self.shapes and self.shapes[0].family == "native":
            yield native_event(value, self)  # the hot path: skip the registry walk
            return
        for shape in self.shapes:
            if shape.match(value):
                yield from shape.decode(value, self)
                return
        if kind == "Event":
            yield native_event(value, self)
            return
        expected = "an audit event" if self.fmt == "auto" else f"a {self.fmt} record"
        yield Rejected(f"JSON object is not {expected} (keys: {', '.join(list(value)[:8])})",
                       excerpt(value))

    def event_from_text(self, text: str, source_format: str, cluster: str | None) -> Item:
        """An Event held as JSON text inside a carrier (CloudWatch message, AKS log)."""
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Rejected(f"embedded event is not valid JSON: {exc}", excerpt(text))
        if not isinstance(value, dict):
            return Rejected("embedded event is not a JSON object", excerpt(text))
        item = native_event(value, self, text.strip())
        if isinstance(item, Decoded):
            item.source_format = source_format
            item.cluster = cluster or self.cluster
        return item

    def values(self, data: bytes) -> Iterator[Any]:
        """Every JSON value in a blob: decompressed, then back to back or one per line."""
        text = to_text(decompress(data))
        yield from (value for value, _, _ in iter_values(text, 0))
