"""The filter options shared by query, timeline, top, who and history.

Declared once here; `with_filters` adds them to a command's signature and hands the
command a ready :class:`~kubetrail.query.filters.EventFilter` instead.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..query.filters import EventFilter, parse_when

_Multi = list[str] | None

FILTER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "user": (Annotated[_Multi, typer.Option(
        "--user", "-u", help="User or service account (glob; also matches the impersonated "
        "user).", rich_help_panel="Filters")], None),
    "group": (Annotated[_Multi, typer.Option(
        "--group", help="A group of the user.", rich_help_panel="Filters")], None),
    "verb": (Annotated[_Multi, typer.Option(
        "--verb", help="get, list, watch, create, update, patch, delete, ...",
        rich_help_panel="Filters")], None),
    "resource": (Annotated[_Multi, typer.Option(
        "--resource", "-r", help="pods, pods/exec, deployments.apps, ...",
        rich_help_panel="Filters")], None),
    "namespace": (Annotated[_Multi, typer.Option(
        "--namespace", "-n", help="Namespace (glob).", rich_help_panel="Filters")], None),
    "name": (Annotated[_Multi, typer.Option(
        "--name", help="Object name (glob).", rich_help_panel="Filters")], None),
    "code": (Annotated[_Multi, typer.Option(
        "--code", help="Response code: 403, 4xx or 400-499.", rich_help_panel="Filters")], None),
    "decision": (Annotated[str | None, typer.Option(
        "--decision", help="Authorization decision: allow or forbid.",
        rich_help_panel="Filters")], None),
    "source_ip": (Annotated[_Multi, typer.Option(
        "--source-ip", help="Source address or CIDR (any address of the chain).",
        rich_help_panel="Filters")], None),
    "user_agent": (Annotated[_Multi, typer.Option(
        "--user-agent", help="User agent (substring, or glob with *).",
        rich_help_panel="Filters")], None),
    "since": (Annotated[str | None, typer.Option(
        "--since", help="24h, 7d or RFC 3339.", rich_help_panel="Filters")], None),
    "until": (Annotated[str | None, typer.Option(
        "--until", help="24h, 7d or RFC 3339.", rich_help_panel="Filters")], None),
    "cluster": (Annotated[_Multi, typer.Option(
        "--cluster", "-c", help="Cluster name (glob).", rich_help_panel="Filters")], None),
}


def build_filter(values: dict[str, Any]) -> EventFilter:
    def many(key: str) -> tuple[str, ...]:
        return tuple(values.get(key) or ())

    return EventFilter(
        users=many("user"), groups=many("group"), verbs=many("verb"),
        resources=many("resource"), namespaces=many("namespace"), names=many("name"),
        codes=many("code"), decision=values.get("decision"), source_ips=many("source_ip"),
        user_agents=many("user_agent"),
        since=parse_when(values["since"]) if values.get("since") else None,
        until=parse_when(values["until"]) if values.get("until") else None,
        clusters=many("cluster"),
    )


def with_filters(*, exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared filter options; it receives them as `flt: EventFilter`."""
    names = [n for n in FILTER_OPTIONS if n not in exclude]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in sig.parameters.values() if p.name != "flt"]
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY,
                                     annotation=FILTER_OPTIONS[n][0], default=FILTER_OPTIONS[n][1])
                   for n in names]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return func(*args, flt=build_filter(values), **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # Typer must see the new signature, not the original
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
