"""Request classes: the rows of a batch grouped by the values rules test most.

Nearly every rule starts with who, which verb, which resource and what outcome, and a batch
of a hundred thousand events holds only a few hundred distinct combinations of those. So the
engine tests each rule once per class first: a rule that reads nothing else is decided for
the whole class there, and every other rule is then run only over the rows of the classes it
could match (the few percent of traffic that is not routine). Class verdicts are cached
across batches, since the same classes recur.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .condition import Condition, compile_possible

__all__ = [
    "CLASS_COLUMNS",
    "CLASS_FIELDS",
    "ClassTests",
    "class_fields_read",
    "classify",
    "decided_by_class",
    "gate_sql",
]

#: The fields whose values make a class (the ones rules test on nearly every row).
CLASS_FIELDS = ("stage", "level", "verb", "resource", "subresource", "api_group", "namespace",
                "code", "decision", "user", "groups", "impersonated_user", "user_agent",
                "source_ip", "source_ips")
#: What a class carries to the class-level tests: its fields and the client address's
#: forms (functions of `source_ip` and `source_ips`, see engine.with_ip_columns).
CLASS_COLUMNS = (*CLASS_FIELDS, "kt_source_ip_public", "kt_source_ip_v4", "kt_source_ip_v6",
                 "kt_source_ips_public", "kt_source_ips_v4", "kt_source_ips_v6")
_KNOWN = frozenset(CLASS_FIELDS)
_LIMIT = 1 << 62


def _reads_only_class_fields(node: tuple[Any, ...]) -> bool:
    kind = node[0]
    if kind in ("and", "or"):
        return all(_reads_only_class_fields(n) for n in node[1])
    if kind == "not":
        return _reads_only_class_fields(node[1])
    if kind == "const":
        return True
    if kind == "quant":
        return False
    return node[1] in _KNOWN


def class_fields_read(conditions: Sequence[Condition | None]) -> tuple[str, ...]:
    """The class fields a class test over these conditions (and the stage) reads."""
    out = {"stage"}
    for c in conditions:
        if c is not None:
            out.update(f for f in c.fields if f in _KNOWN)
    return tuple(f for f in CLASS_FIELDS if f in out)


def decided_by_class(conditions: list[Condition | None]) -> bool:
    """Do these conditions read only class fields (so one row of a class answers for all)?"""
    return all(c is None or _reads_only_class_fields(c.node) for c in conditions)


def gate_sql(stages: tuple[str, ...], conditions: list[Condition | None]) -> str:
    """A test on class fields that is true for every class a row of which could match: each
    condition with everything else it reads taken as unknown (exceptions left out)."""
    parts = ["stage IN (" + ", ".join(f"'{s}'" for s in stages) + ")"]
    parts += [f"(({compile_possible(c, _KNOWN)}) IS NOT FALSE)" for c in conditions if c is not None]
    return " AND ".join(parts)


def _list_keys(array: pa.ListArray) -> pa.Array:
    """Each list as bytes that are equal exactly when the lists are: its elements' codes,
    four bytes each (a missing element has a code of its own), and b"N" for a missing list."""
    missing = pc.is_null(array)
    filled = pc.if_else(missing, pa.scalar([], array.type), array) if array.null_count else array
    codes, _ = _codes(pc.list_flatten(filled))
    words = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4), len(codes), [None, pa.py_buffer(codes.astype(np.int32).tobytes())])
    offsets = pc.subtract(filled.offsets, filled.offsets[0])
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, words.cast(pa.binary())), b"")
    return pc.if_else(missing, pa.scalar(b"N", pa.binary()), joined) if array.null_count else joined


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """(a small integer per row that is equal exactly when the values are, how many)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type):
        array = _list_keys(array)
    encoded = pc.dictionary_encode(array)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    n = len(encoded.dictionary)
    if encoded.null_count:
        indices = np.where(pc.is_null(encoded).to_numpy(zero_copy_only=False), n, indices)
    return indices.astype(np.int64), n + 1


def classify(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(the class of each row, the first row of each class); classes are numbered in the
    order of their first row."""
    if not rows.num_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = np.zeros(rows.num_rows, np.int64)
    bound = 1
    for name in CLASS_FIELDS:
        codes, n = _codes(rows.column(name))
        if bound * n >= _LIMIT:  # renumber densely before the key could overflow
            _, key = np.unique(key, return_inverse=True)
            bound = int(key.max()) + 1
        key = key * n + codes
        bound *= n
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], first[order]


def _class_keys(classes: pa.Table) -> tuple[dict[str, list[Any]], list[tuple[Any, ...]]]:
    """(each class field's values, each class's whole key) as hashable Python values."""
    values = {f: [tuple(v) if isinstance(v, list) else v for v in classes.column(f).to_pylist()]
              for f in CLASS_FIELDS}
    return values, list(zip(*values.values(), strict=True))


class ClassTests:
    """The class-level test of every branch, run once per distinct value of what it reads.

    A test's verdict depends only on the class fields it reads, so tests are grouped by that
    set and each group keeps its verdicts by those fields' values: a class that is new only
    because of a new client address is tested again only by the rules that look at
    addresses. Each group's tests are one statement, planned once (planning, and setting up
    a large expression for each run, cost far more than testing a few hundred classes)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tests: Sequence[tuple[str, tuple[str, ...]]],
                 empty: pa.Table) -> None:
        self._con = con
        self._width = len(tests)
        by_fields: dict[tuple[str, ...], list[int]] = {}
        for index, (_, fields) in enumerate(tests):
            by_fields.setdefault(fields, []).append(index)
        self._groups: list[tuple[tuple[str, ...], np.ndarray, dict[tuple[Any, ...], np.ndarray]]] = [
            (fields, np.array(members, np.int64), {}) for fields, members in by_fields.items()]
        self._whole: dict[tuple[Any, ...], np.ndarray] = {}  # every test, by the whole class
        con.register("kt_empty_classes", empty.select(list(CLASS_COLUMNS)))
        con.execute("CREATE TEMP TABLE kt_classes AS SELECT *, 0::BIGINT AS cid "
                    "FROM kt_empty_classes")
        con.unregister("kt_empty_classes")
        for g, (_, members, _) in enumerate(self._groups):
            con.execute(f"PREPARE kt_class_tests_{g} AS " + " UNION ALL ".join(
                f"SELECT {k} AS t, cid FROM kt_classes WHERE {tests[i][0]}"
                for k, i in enumerate(members.tolist())))

    def may_match(self, classes: pa.Table) -> np.ndarray:
        """Per class: could any test pass (true unless known to fail them all)? Runs no test."""
        _, whole = _class_keys(classes)
        return np.array([(row := self._whole.get(key)) is None or bool(row.any())
                         for key in whole], bool)

    def verdicts(self, classes: pa.Table) -> np.ndarray:
        """classes x tests: the verdict of every test for every class (CLASS_COLUMNS)."""
        values, whole = _class_keys(classes)
        out = np.zeros((classes.num_rows, self._width), bool)
        unknown = [i for i, key in enumerate(whole) if key not in self._whole]
        if unknown:  # assemble their rows from each group's verdicts, testing what is new
            keyed = [[tuple(values[f][i] for f in fields) for i in unknown]
                     for fields, _, _ in self._groups]
            untested = sorted({j for keys, (_, _, cache) in zip(keyed, self._groups, strict=True)
                               for j, key in enumerate(keys) if key not in cache})
            if untested:
                self._test(classes.take(pa.array([unknown[j] for j in untested], pa.int64())),
                           [[keys[j] for j in untested] for keys in keyed])
            if len(self._whole) > 100_000:
                self._whole.clear()
            for j, i in enumerate(unknown):
                row = np.zeros(self._width, bool)
                for keys, (_, members, cache) in zip(keyed, self._groups, strict=True):
                    row[members] = cache[keys[j]]
                self._whole[whole[i]] = row
        for i, key in enumerate(whole):
            out[i] = self._whole[key]
        return out

    def _test(self, classes: pa.Table, keyed: list[list[tuple[Any, ...]]]) -> None:
        """Run each group's tests over `classes` (keyed: each group's key of each class)."""
        self._con.register("kt_incoming_classes", classes.append_column(
            "cid", pa.array(range(classes.num_rows), pa.int64())))
        try:
            self._con.execute("DELETE FROM kt_classes")
            self._con.execute("INSERT INTO kt_classes BY NAME SELECT * FROM kt_incoming_classes")
        finally:
            self._con.unregister("kt_incoming_classes")
        for g, ((_, members, cache), keys) in enumerate(zip(self._groups, keyed, strict=True)):
            if all(key in cache for key in keys):
                continue
            if len(cache) > 100_000:
                cache.clear()
            found = np.zeros((len(keys), len(members)), bool)
            pairs = self._con.execute(f"EXECUTE kt_class_tests_{g}").fetchall()
            if pairs:
                at = np.array(pairs, np.int64)
                found[at[:, 1], at[:, 0]] = True
            for cid, key in enumerate(keys):
                cache.setdefault(key, found[cid])
