"""The engine's shortcut: rules are tested once per class of rows (who, verb, resource,
outcome, ...) before any row is looked at. These tests hold it to the plain way: every rule's
full condition over every row gives exactly the same matches, on simulated attacks in every
cloud shape and on every example event of the pack; and rows share a class only when they
agree on every class field."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetrail.detect import Engine, load_rules
from kubetrail.detect.classes import CLASS_FIELDS, classify
from kubetrail.detect.condition import POD_PARTS_SQL
from kubetrail.detect.engine import MACROS_SQL, create_batch_table, with_ip_columns
from kubetrail.detect.examples import rows_from_events
from kubetrail.events.batches import read_batches
from kubetrail.events.normalize import normalize_with
from kubetrail.events.row import SCHEMA
from kubetrail.simulate import SCENARIOS, write_simulation
from kubetrail.stages import ahead
from kubetrail.store.archive import connection


def plain_matches(engine: Engine, rows: pa.Table) -> set[tuple[int, int]]:
    """(row, branch) pairs from every rule's whole condition over every row."""
    con = duckdb.connect()
    for macro in MACROS_SQL:
        con.execute(macro)
    create_batch_table(con)
    table = with_ip_columns(rows.select(SCHEMA.names).cast(SCHEMA))
    table = table.append_column("rid", pa.array(range(rows.num_rows), pa.int64()))
    con.register("incoming", table)
    con.execute(f"INSERT INTO batch BY NAME SELECT *, {POD_PARTS_SQL} FROM incoming")
    assert engine.sql is not None
    found = {(rid, b) for b, rid in con.execute(engine.sql).fetchall()}
    con.close()
    return found


def engine_matches(engine: Engine, rows: pa.Table) -> set[tuple[int, int]]:
    hits = engine._matches(with_ip_columns(rows.select(SCHEMA.names).cast(SCHEMA)))
    assert [tuple(h) for h in hits.tolist()] == sorted(tuple(h) for h in hits.tolist())
    return {(rid, b) for rid, b in hits.tolist()}


def simulated_rows(tmp_path: Path, fmt: str, seed: int) -> Iterator[pa.Table]:
    out = tmp_path / f"sim-{fmt}.log"
    write_simulation(out, events=6_000, seed=seed, scenarios=sorted(SCENARIOS), fmt=fmt)
    con = connection(ordered=True)
    paths = sorted(str(p) for p in tmp_path.glob(f"sim-{fmt}*"))
    for raw in read_batches(paths, batch_events=2_500):
        rows, problems = normalize_with(con, raw)
        assert not problems
        yield rows
    con.close()


@pytest.mark.parametrize("fmt", ["jsonl", "eks", "gke", "aks"])
def test_class_shortcut_matches_exactly_what_every_rule_matches_row_by_row(
        tmp_path: Path, fmt: str) -> None:
    engine = Engine(load_rules())
    total = 0
    try:
        # Several batches through one engine: later ones reuse the verdicts of earlier ones.
        for rows in simulated_rows(tmp_path, fmt, seed=len(fmt)):
            expected = plain_matches(engine, rows)
            assert engine_matches(engine, rows) == expected
            total += len(expected)
    finally:
        engine.close()
    assert total > 100  # the attack scenarios matched plenty


def test_class_shortcut_on_every_example_event_of_the_pack() -> None:
    ruleset = load_rules()
    events = [event for rule in ruleset.rules for cases in rule.examples.values()
              for case in cases for event in (case if isinstance(case, list) else [case])]
    rows = rows_from_events(events)
    with Engine(ruleset) as engine:
        expected = plain_matches(engine, rows)
        assert engine_matches(engine, rows) == expected
        assert engine_matches(engine, rows) == expected  # again, from the cached verdicts
    assert len({b for _, b in expected}) > 100


_texts = st.one_of(st.none(), st.sampled_from(["", "a", "b", "a,b", "1:a", "N", "-", "é"]))
_lists = st.one_of(st.none(), st.lists(_texts, max_size=3))


@st.composite
def _rows(draw: Any) -> pa.Table:
    n = draw(st.integers(1, 30))
    columns: dict[str, Any] = {}
    for field in SCHEMA:
        if field.name not in CLASS_FIELDS:
            continue
        if pa.types.is_list(field.type):
            columns[field.name] = pa.array(draw(st.lists(_lists, min_size=n, max_size=n)),
                                           field.type)
        elif pa.types.is_integer(field.type):
            values = draw(st.lists(st.one_of(st.none(), st.sampled_from([200, 403, 0])),
                                   min_size=n, max_size=n))
            columns[field.name] = pa.array(values, field.type)
        else:
            columns[field.name] = pa.array(draw(st.lists(_texts, min_size=n, max_size=n)),
                                           field.type)
    return pa.table(columns)


@settings(max_examples=300, deadline=None)
@given(_rows())
def test_rows_share_a_class_exactly_when_every_class_field_is_equal(rows: pa.Table) -> None:
    of_row, first = classify(rows)
    values = rows.to_pylist()
    keys = [tuple(repr(v[f]) for f in CLASS_FIELDS) for v in values]
    for i in range(rows.num_rows):
        for j in range(rows.num_rows):
            assert (of_row[i] == of_row[j]) == (keys[i] == keys[j])
    assert sorted(first.tolist()) == first.tolist()  # numbered in order of first row
    assert [of_row[f] for f in first] == list(range(len(first)))


def test_classify_sliced_and_chunked_columns() -> None:
    groups = pa.chunked_array([pa.array([["x"], ["y", None]]),
                               pa.array([None, [], ["x"], ["y", None]]).slice(0)])
    table = pa.table({f: pa.nulls(6, pa.string()) for f in CLASS_FIELDS if f not in
                      ("groups", "source_ips", "code")})
    table = table.append_column("groups", groups).append_column(
        "source_ips", pa.array([None] * 6, pa.list_(pa.string()))).append_column(
        "code", pa.array([1] * 6, pa.int32()))
    of_row, _ = classify(table.slice(0))
    assert of_row.tolist() == [0, 1, 2, 3, 0, 1]


# -- the stages helper ---------------------------------------------------------------------


def test_ahead_keeps_order_and_raises_where_consumed() -> None:
    assert list(ahead(iter(range(100)), depth=3)) == list(range(100))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("bad batch")

    got = []
    with pytest.raises(ValueError, match="bad batch"):
        for item in ahead(failing()):
            got.append(item)
    assert got == [1]


def test_ahead_stops_its_thread_when_the_consumer_stops() -> None:
    produced = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()

    stream = ahead(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(5)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 4  # bounded: no more than depth ahead, then stopped
    assert not [t for t in threading.enumerate() if t.name == "kubetrail-stage"]


def test_ahead_of_nothing() -> None:
    assert list(ahead(iter(()))) == []
    assert np.array_equal(classify(pa.table({f: pa.array([], pa.string())
                                             for f in CLASS_FIELDS}))[0], np.zeros(0))


# -- detection beside storing ---------------------------------------------------------------


@pytest.mark.parametrize(("batch_events", "run_events"), [(400, 2_000), (100_000, 500_000)])
def test_live_detector_sieves_and_gathers_without_changing_the_alerts(
        tmp_path: Path, batch_events: int, run_events: int) -> None:
    from kubetrail.detect.live import LiveDetector
    from kubetrail.detect.store import read_alerts
    from kubetrail.sinks import build_sinks
    from kubetrail.store.archive import Archive

    chunks = [rows.sort_by("time") for rows in simulated_rows(tmp_path, "jsonl", seed=9)]
    ruleset = load_rules()
    with Engine(ruleset) as engine:
        expected = [a.to_dict() for rows in chunks for a in engine.process(rows)]
        expected += [a.to_dict() for a in engine.flush()]
    archive = Archive(tmp_path / "data")
    live = LiveDetector(archive, ruleset, build_sinks({}), batch_events=batch_events,
                        run_events=run_events)
    for rows in chunks:  # as the archive writer hands them over, several per run
        for part in (rows.slice(0, 1000), rows.slice(1000)):
            live.submit(part)
    live.close()
    got = read_alerts(archive)
    key = lambda a: (a["rule"], str(a["auditID"]), a.get("count"), a["message"])  # noqa: E731
    assert len(expected) > 50
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert live.stored == len(expected)
