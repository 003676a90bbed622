"""Each rule's own examples, run through the real pipeline: decode, normalise, engine.

An example is one audit Event, or ``{events: [...]}`` for stateful rules that need several
(a threshold, a sequence). `match` examples must raise the rule's alert and `no_match`
examples must not; `kubetrail rules test` and the test suite run them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from ..events.decode import Decoded, Decoder
from ..events.normalize import RawBatch, normalize_with
from ..events.reader import iter_bytes
from ..store.archive import connection
from .engine import Engine
from .rules import Rule, RuleSet

__all__ = ["ExampleResult", "rows_from_events", "run_examples"]


def rows_from_events(events: Iterable[Mapping[str, Any]], cluster: str = "example") -> pa.Table:
    """Archive rows for audit events given as dicts (any shape the decoder reads)."""
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    batch = RawBatch()
    for pos, item in iter_bytes(data, "example", Decoder(cluster=cluster)):
        if isinstance(item, Decoded):
            batch.add(item, pos.line, item.cluster or cluster, "example")
    con = connection(ordered=True)
    try:
        rows, _ = normalize_with(con, batch.take())
    finally:
        con.close()
    return rows


@dataclass(frozen=True)
class ExampleResult:
    rule: str
    kind: str  # match | no_match
    index: int
    ok: bool
    detail: str = ""


def _cases(examples: Sequence[Any]) -> list[list[Mapping[str, Any]]]:
    return [list(e["events"]) if isinstance(e, Mapping) and "events" in e and "kind" not in e
            else [e] for e in examples]


def run_examples(ruleset: RuleSet, rules: Sequence[Rule] | None = None) -> list[ExampleResult]:
    """Run every example of `rules` (default: all rules of the set) in a fresh engine each."""
    out = []
    for rule in rules if rules is not None else ruleset.rules:
        for kind in ("match", "no_match"):
            for i, events in enumerate(_cases(rule.examples.get(kind, ()))):
                rows = rows_from_events(events)
                if rows.num_rows != len(events):
                    out.append(ExampleResult(rule.id, kind, i, False,
                                             f"{len(events) - rows.num_rows} example events are "
                                             "not valid audit events"))
                    continue
                rows = rows.sort_by("time")
                with Engine(ruleset, rule_ids=[rule.id]) as engine:
                    alerts = engine.process(rows) + engine.flush()
                fired = any(a.rule == rule.id for a in alerts)
                ok = fired if kind == "match" else not fired
                detail = "" if ok else ("did not fire" if kind == "match" else
                                        f"fired: {alerts[0].message}")
                out.append(ExampleResult(rule.id, kind, i, ok, detail))
    return out
