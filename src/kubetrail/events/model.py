"""The audit Event as an immutable Python object, for code that works one event at a time.

Bulk paths never build these (they move Arrow rows of :data:`row.SCHEMA`); an AuditEvent
is a typed view over one event's JSON for history, policy replay, rules and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from .timeparse import micro_time, parse_time

__all__ = ["AuditEvent", "Level", "ObjectRef", "Stage", "UserInfo"]


class Stage(StrEnum):
    REQUEST_RECEIVED = "RequestReceived"
    RESPONSE_STARTED = "ResponseStarted"
    RESPONSE_COMPLETE = "ResponseComplete"
    PANIC = "Panic"


class Level(StrEnum):
    NONE = "None"
    METADATA = "Metadata"
    REQUEST = "Request"
    REQUEST_RESPONSE = "RequestResponse"


@dataclass(frozen=True)
class UserInfo:
    username: str | None = None
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> UserInfo | None:
        if not isinstance(d, dict):
            return None
        extra = d.get("extra") if isinstance(d.get("extra"), dict) else {}
        return cls(d.get("username"), d.get("uid"), tuple(d.get("groups") or ()),
                   {k: tuple(v) if isinstance(v, list) else (str(v),) for k, v in extra.items()})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.username:
            out["username"] = self.username
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


@dataclass(frozen=True)
class ObjectRef:
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_group: str = ""
    api_version: str | None = None
    resource_version: str | None = None
    subresource: str | None = None

    _KEYS = (("resource", "resource"), ("namespace", "namespace"), ("name", "name"),
             ("uid", "uid"), ("api_group", "apiGroup"), ("api_version", "apiVersion"),
             ("resource_version", "resourceVersion"), ("subresource", "subresource"))

    @classmethod
    def from_dict(cls, d: Any) -> ObjectRef | None:
        if not isinstance(d, dict):
            return None
        return cls(**{attr: d.get(key) or ("" if attr == "api_group" else None)
                      for attr, key in cls._KEYS})

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, attr) for attr, key in self._KEYS if getattr(self, attr)}


@dataclass(frozen=True)
class AuditEvent:
    """One ``audit.k8s.io/v1`` Event.

    >>> e = AuditEvent.from_dict({"auditID": "a1", "stage": "ResponseComplete", "verb": "get",
    ...     "requestURI": "/api/v1/pods", "stageTimestamp": "2026-11-01T10:00:00.000001Z"})
    >>> e.stage is Stage.RESPONSE_COMPLETE, e.to_dict()["stageTimestamp"]
    (True, '2026-11-01T10:00:00.000001Z')
    """

    audit_id: str
    stage: Stage
    verb: str
    request_uri: str
    level: Level = Level.METADATA
    user: UserInfo | None = None
    impersonated_user: UserInfo | None = None
    source_ips: tuple[str, ...] = ()
    user_agent: str | None = None
    object_ref: ObjectRef | None = None
    response_status: dict[str, Any] | None = None
    request_object: Any = None
    response_object: Any = None
    request_received: datetime | None = None
    stage_timestamp: datetime | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditEvent:
        return cls(
            audit_id=str(d.get("auditID", "")),
            stage=Stage(d.get("stage", "ResponseComplete")),
            verb=str(d.get("verb", "")),
            request_uri=str(d.get("requestURI", "")),
            level=Level(d.get("level", "Metadata")),
            user=UserInfo.from_dict(d.get("user")),
            impersonated_user=UserInfo.from_dict(d.get("impersonatedUser")),
            source_ips=tuple(d.get("sourceIPs") or ()),
            user_agent=d.get("userAgent"),
            object_ref=ObjectRef.from_dict(d.get("objectRef")),
            response_status=d.get("responseStatus"),
            request_object=d.get("requestObject"),
            response_object=d.get("responseObject"),
            request_received=parse_time(d.get("requestReceivedTimestamp")),
            stage_timestamp=parse_time(d.get("stageTimestamp")),
            annotations=dict(d.get("annotations") or {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditEvent:
        return cls.from_dict(orjson.loads(text))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Event", "apiVersion": "audit.k8s.io/v1",
                               "level": self.level.value, "auditID": self.audit_id,
                               "stage": self.stage.value, "requestURI": self.request_uri,
                               "verb": self.verb, "user": self.user.to_dict() if self.user else {}}
        if self.impersonated_user:
            out["impersonatedUser"] = self.impersonated_user.to_dict()
        if self.source_ips:
            out["sourceIPs"] = list(self.source_ips)
        if self.user_agent:
            out["userAgent"] = self.user_agent
        if self.object_ref:
            out["objectRef"] = self.object_ref.to_dict()
        if self.response_status is not None:
            out["responseStatus"] = self.response_status
        if self.request_object is not None:
            out["requestObject"] = self.request_object
        if self.response_object is not None:
            out["responseObject"] = self.response_object
        out["requestReceivedTimestamp"] = (micro_time(self.request_received)
                                           if self.request_received else None)
        out["stageTimestamp"] = micro_time(self.stage_timestamp) if self.stage_timestamp else None
        if self.annotations:
            out["annotations"] = self.annotations
        return out
