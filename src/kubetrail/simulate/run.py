"""``simulate()``: build the clusters, inject scenarios, merge the streams, apply the limits."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import random
from collections.abc import Iterator, Sequence
from typing import Any

from . import background, people
from .cluster import build, cluster_name
from .engine import Engine
from .scenarios import SCENARIOS, ScenarioContext
from .vocab import SEC

DEFAULT_START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
"""A fixed Monday morning (UTC), so short runs already contain office-hours activity."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FOREVER = 1 << 62

Triple = tuple[int, str, dict[str, Any]]


def rate_estimate(nodes: int) -> float:
    """Approximate events per second of one cluster (measured; used to place scenarios)."""
    return 2.25 + 0.2 * nodes


def to_us(when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * SEC + delta.microseconds


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def check_args(events: int | None, duration: dt.timedelta | None, clusters: int,
               scenarios: Sequence[str], nodes: int) -> list[str]:
    """Validate ``simulate``'s arguments eagerly (a generator would only fail when iterated)."""
    if events is None and duration is None:
        raise ValueError("give events= or duration= (or both) to bound the simulation")
    if events is not None and events < 0:
        raise ValueError(f"events must be >= 0, not {events}")
    if duration is not None and duration <= dt.timedelta(0):
        raise ValueError(f"duration must be positive, not {duration}")
    if clusters < 1:
        raise ValueError(f"clusters must be >= 1, not {clusters}")
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, not {nodes}")
    if isinstance(scenarios, str):
        scenarios = [scenarios]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(SCENARIOS))}")
    return list(scenarios)


def stream(*, events: int | None, duration: dt.timedelta | None, seed: int, clusters: int,
           scenarios: list[str], start: dt.datetime, nodes: int,
           profile: background.Profile | None = None) -> Iterator[Triple]:
    """Yield ``(stage time µs, cluster, event)`` merged across clusters, within the limits."""
    start_us = to_us(start)
    end_us = start_us + int(duration.total_seconds() * SEC) if duration is not None else _FOREVER
    prof = profile or background.Profile()
    engines: list[tuple[str, Engine]] = []
    for i in range(clusters):
        name = cluster_name(i)
        eng = Engine(random.Random(f"kubetrail-simulate:{seed}:{name}"), start_us, name)
        cl = build(i, eng, nodes)
        background.install(eng, cl, prof)
        people.install(eng, cl)
        engines.append((name, eng))
        mine = [s for k, s in enumerate(scenarios) if k % clusters == i]
        for k, s in zip(range(i, len(scenarios), clusters), mine, strict=True):
            at = _placement(k, len(scenarios), start_us, end_us, events, clusters, nodes, s)
            eng.at(at, lambda t, s=s, eng=eng, cl=cl: SCENARIOS[s].inject(ScenarioContext(eng, cl, t)))
    gens = [eng.run(end_us) for _, eng in engines]
    merged = gens[0] if len(gens) == 1 else heapq.merge(*gens)
    return merged if events is None else itertools.islice(merged, events)


def _placement(k: int, total: int, start_us: int, end_us: int, events: int | None,
               clusters: int, nodes: int, name: str) -> int:
    """Spread scenarios over the run; early enough that an event-count limit still holds them.

    With a duration the run's length is known; with an event count it is estimated from the
    background rate, and scenarios go into its first 60 % so they finish before the cut.
    """
    span = end_us - start_us
    share = 0.9
    if events is not None:
        est = int(events / (clusters * rate_estimate(nodes)) * SEC)
        if est < span:
            span, share = est, 0.6
    s_span = int(SCENARIOS[name].span.total_seconds() * SEC)
    at = int(span * share * (k + 1) / (total + 1))
    return start_us + max(0, min(at, int(span * 0.85) - s_span))


def simulate(*, events: int | None = None, duration: dt.timedelta | None = None, seed: int = 0,
             clusters: int = 1, scenarios: Sequence[str] = (), start: dt.datetime | None = None,
             nodes: int = 5, profile: background.Profile | None = None,
             ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Generate realistic audit events: ``(cluster name, audit.k8s.io/v1 Event dict)``.

    Events come in ``stageTimestamp`` order per cluster, clusters merged by time. The run stops
    after exactly ``events`` events or ``duration`` of simulated time, whichever comes first.
    The same arguments always give the same events. ``profile`` overrides the periods of the
    background sources. Event dicts share nested values: treat them as read-only.

    >>> cluster, event = next(simulate(events=1))
    >>> cluster, event["kind"]
    ('prod-eu', 'Event')
    """
    names = check_args(events, duration, clusters, scenarios, nodes)
    gen = stream(events=events, duration=duration, seed=seed, clusters=clusters, scenarios=names,
                 start=start or DEFAULT_START, nodes=nodes, profile=profile)
    return ((name, ev) for _, name, ev in gen)
