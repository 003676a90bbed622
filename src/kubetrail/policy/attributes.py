"""The request attributes the policy saw, recovered from a recorded audit event.

The API server evaluates its policy on the attributes its request-info parser derived
from the URL, before the body was read (reference §5). An event's `objectRef` is mostly
those attributes, but not always: a create's `objectRef.name` is filled in from the body
afterwards, so the name is taken from the path, which is what the policy matched on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from .model import Attributes

__all__ = ["RequestPath", "attributes_from_event", "attributes_from_fields", "parse_request_path"]

_NAMESPACE_SUBRESOURCES = ("status", "finalize")


class RequestPath:
    """What kube-apiserver's request-info parser reads from a resource path."""

    __slots__ = ("api_group", "api_version", "name", "namespace", "resource", "subresource",
                 "verb_prefix")

    def __init__(self) -> None:
        self.api_group = self.api_version = self.namespace = ""
        self.resource = self.subresource = self.name = self.verb_prefix = ""


def parse_request_path(uri: str, verb: str = "") -> RequestPath | None:
    """Split a resource request's URI like the API server; None for a non-resource path.

    `/api/v1/namespaces/ns/pods/p/exec` → namespace ns, resource pods, name p, subresource
    exec; the legacy `/api/v1/watch/...` and `/proxy/...` prefixes are noted in
    `verb_prefix`; a list or watch (`verb`) selecting `metadata.name=X` is named X."""
    raw_path, _, query = uri.partition("?")
    path = unquote(raw_path)  # the API server parses the decoded URL path
    parts = path.strip("/").split("/") if path.strip("/") else []
    info = RequestPath()
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        info.api_version, rest = parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return None
        info.api_group, info.api_version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return None  # /api/v1, /apis/group/v1: discovery, a non-resource request
    if rest[0] in ("watch", "proxy"):
        info.verb_prefix, rest = rest[0], rest[1:]
        if not rest:
            return info
    if rest[0] == "namespaces" and len(rest) > 1:
        info.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if len(rest) >= 3 and info.verb_prefix != "proxy":
        info.subresource = rest[2]
    if len(rest) >= 2:
        info.name = rest[1]
    info.resource = rest[0]
    # Only a GET without a name becomes list/watch with a selected name; the legacy /watch/
    # prefix sets the verb first, and its fieldSelector names nothing.
    if not info.name and query and verb in ("list", "watch") and info.verb_prefix != "watch":
        info.name = _selected_name(query)
    return info


def _selected_name(query: str) -> str:
    """X from fieldSelector=metadata.name=X (or ==X), the only selector that names a list."""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "fieldSelector":
            continue
        for term in value.split(","):
            field, sep, wanted = term.partition("==")
            if not sep:
                field, sep, wanted = term.partition("=")
            if sep and field.strip() == "metadata.name" and _path_segment(wanted):
                return wanted
    return ""


def _path_segment(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


def attributes_from_fields(
    *, user: str | None, groups: Sequence[str] | None, verb: str | None,
    request_uri: str | None, object_ref: Mapping[str, Any] | None,
) -> Attributes:
    """Attributes from an event's parts (as stored in the archive's columns)."""
    uri = request_uri or ""
    path = unquote(uri.partition("?")[0])
    if object_ref is None:
        return Attributes(user=user, groups=tuple(groups or ()), verb=verb or "", path=path)
    parsed = parse_request_path(uri, verb or "")
    ref = {k: (v if isinstance(v, str) else "") for k, v in object_ref.items()}
    if parsed is None:  # objectRef without a resource path (synthetic): trust objectRef
        return Attributes(
            user=user, groups=tuple(groups or ()), verb=verb or "", resource_request=True,
            path=path, namespace=ref.get("namespace", ""), api_group=ref.get("apiGroup", ""),
            api_version=ref.get("apiVersion", ""), resource=ref.get("resource", ""),
            subresource=ref.get("subresource", ""), name=ref.get("name", ""))
    return Attributes(
        user=user, groups=tuple(groups or ()), verb=verb or "", resource_request=True,
        path=path, namespace=parsed.namespace, api_group=parsed.api_group,
        api_version=parsed.api_version, resource=parsed.resource,
        subresource=parsed.subresource, name=parsed.name)


def attributes_from_event(event: Mapping[str, Any]) -> Attributes:
    """The attributes kube-apiserver evaluated its policy on for the request of `event`.

    A request that failed authentication is recorded with an empty `user`; the policy saw
    no user at all, so `user` is None."""
    raw_user = event.get("user")
    user: str | None = None
    groups: list[str] = []
    if isinstance(raw_user, Mapping) and (raw_user.get("username") or raw_user.get("groups")):
        name = raw_user.get("username")
        user = name if isinstance(name, str) else ""
        raw_groups = raw_user.get("groups")
        groups = [g for g in raw_groups if isinstance(g, str)] if isinstance(raw_groups, list) else []
    ref = event.get("objectRef")
    verb = event.get("verb")
    uri = event.get("requestURI")
    return attributes_from_fields(
        user=user, groups=groups, verb=verb if isinstance(verb, str) else "",
        request_uri=uri if isinstance(uri, str) else "",
        object_ref=ref if isinstance(ref, Mapping) else None)
