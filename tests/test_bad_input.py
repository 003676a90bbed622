"""Bad input: each case gets a clear message, the good part is stored, nothing crashes.

Every case runs the real CLI in a subprocess (all at once, each with its own data dir) and
checks the exit code, what was stored, the quarantine records (file, line, reason) and that
stderr holds no traceback. Hypothesis then throws mutated events and random bytes at the
decoder and at a whole ingest.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import os
import random
import tempfile
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import (
    CliResult,
    Event,
    assert_clean,
    audit_trail,
    bulk_events,
    compact,
    ingest_into,
    quarantine_records,
    render,
    rows,
    run_cli_many,
)
from kubetrail.cli import main
from kubetrail.errors import KubetrailError
from kubetrail.events.decode import Decoded, Decoder, Rejected
from kubetrail.events.reader import _split_lines, iter_bytes
from kubetrail.store.archive import Archive

GOOD = bulk_events(40)
TRAIL = audit_trail().events


def jsonl(events: list[Event]) -> list[str]:
    return [compact(e) for e in events]


def lines_file(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def v1beta1(e: Event) -> Event:
    old = copy.deepcopy(e)
    old["apiVersion"] = "audit.k8s.io/v1beta1"
    old["metadata"] = {"creationTimestamp": old["stageTimestamp"]}
    old["timestamp"] = old["stageTimestamp"]
    return old


LEGACY = (
    '2017-03-21T03:57:09.106841886-04:00 AUDIT: id="c939d2a7-1c37-4ef1-b2f7-4ba9b1e43b53" '
    'ip="127.0.0.1" method="GET" user="admin" groups="\\"system:masters\\",'
    '\\"system:authenticated\\"" as="<self>" asgroups="<lookup>" namespace="default" '
    'uri="/api/v1/namespaces/default/pods"\n'
    '2017-03-21T03:57:09.108403639-04:00 AUDIT: id="c939d2a7-1c37-4ef1-b2f7-4ba9b1e43b53" '
    'response="200"\n')


def cut_gzip() -> tuple[bytes, int]:
    """A gzip of 3000 events cut in the middle, and how many whole lines it still holds."""
    events = bulk_events(3000, start=5_000_000)
    data = gzip.compress(lines_file(jsonl(events)), compresslevel=6)
    cut = data[: len(data) // 2]
    prefix = zlib.decompressobj(wbits=31).decompress(cut)
    return cut, prefix.count(b"\n")


def binary_garbage() -> bytes:
    data = bytearray(random.Random(7).randbytes(64 * 1024))
    data[:4] = b"\x7fELF"
    data[100:104] = b"\x00\x00\x00\x00"
    return bytes(data)


@dataclass
class Case:
    """One bad input: files to write, what must happen."""

    files: dict[str, bytes]
    exit_code: int
    stored: int  # events the archive must hold afterwards
    bad_lines: dict[str, list[int]] = field(default_factory=dict)  # file → quarantined lines
    reason: tuple[str, ...] = ()  # words every quarantine reason must contain (any case)
    stderr: tuple[str, ...] = ()  # words stderr must contain (any case)
    missing: bool = False  # pass a path that does not exist
    huge: bool = False


def _cases() -> dict[str, Case]:
    g = jsonl(GOOD)
    cut, whole_lines = cut_gzip()
    huge_event = copy.deepcopy(TRAIL[4])  # the create, with a requestObject
    huge_event["requestObject"]["metadata"]["annotations"] = {"blob": "x" * (20 << 20)}
    return {
        "truncated-line": Case(
            {"a.log": lines_file([*g[:10], g[10][:90], *g[11:]])}, 3, 39, {"a.log": [11]},
            ("truncat",)),
        "truncated-first-line": Case(
            {"a.log": lines_file([g[0][:90], *g[1:]])}, 3, 39, {"a.log": [1]}, ("truncat",)),
        # A last line with no newline may still be being written (a live audit.log): it is
        # left for the next run with a message, not quarantined, and nothing else is lost.
        "truncated-last-line-no-newline": Case(
            {"a.log": ("\n".join([*g[:-1], g[-1][:120]])).encode()}, 0, 39,
            stderr=("no newline", "line 40")),
        "non-json-line": Case(
            {"a.log": lines_file([*g[:5], "I0101 12:00:00.000 apiserver started", *g[5:]])},
            3, 40, {"a.log": [6]}, ("json",)),
        "json-not-an-event": Case(
            {"a.log": lines_file([*g[:3], '{"foo": 1}', *g[3:6], "[1,2]", '"str"', "42",
                                  *g[6:]])},
            3, 40, {"a.log": [4, 8, 9, 10]}, ()),
        "missing-fields": Case(
            {"a.log": lines_file([
                *g[:2],
                compact({k: v for k, v in GOOD[40 - 1].items() if k != "auditID"}),
                *g[2:4],
                compact({**GOOD[0], "auditID": "bad-stage", "stage": "Sometime"}),
                compact({**GOOD[0], "auditID": "bad-time", "stageTimestamp": "yesterday",
                         "requestReceivedTimestamp": "not a time"}),
                compact({**GOOD[0], "auditID": "no-time", "stageTimestamp": None,
                         "requestReceivedTimestamp": None}),
                *g[4:]])},
            3, 40, {"a.log": [3, 6, 7, 8]}, ()),
        "timestamp-out-of-range": Case(
            {"a.log": lines_file([
                *g[:2],
                compact({**GOOD[0], "auditID": "year-10000",
                         "stageTimestamp": "10000-01-01T00:00:00.000000Z",
                         "requestReceivedTimestamp": "10000-01-01T00:00:00.000000Z"}),
                *g[2:]])},
            3, 40, {"a.log": [3]}, ("timestamp",)),
        "v1beta1": Case(
            {"old.log": lines_file([*g[:20], *jsonl([v1beta1(e) for e in TRAIL[:3]]), *g[20:]])},
            3, 40, {"old.log": [21, 22, 23]}, ("v1beta1", "1.24"),
            ("v1beta1",)),  # "v1beta1 gets a clear message": on screen, not only on file
        "legacy-format": Case({"apiserver.log": LEGACY.encode()}, 1, 0, {}, (), ("legacy",)),
        "legacy-line-in-json": Case(
            {"a.log": lines_file([*g[:5], LEGACY.splitlines()[0], *g[5:]])}, 3, 40,
            {"a.log": [6]}, ("legacy",)),
        "huge-integer-in-pretty-event": Case(
            {"a.json": render([*GOOD[:5], {**GOOD[5], "requestObject": {"n": 2**64}},
                               *GOOD[6:]], "pretty").encode()}, 0, 40),
        "20mb-line": Case(
            {"big.log": lines_file([*g[:20], compact(huge_event), *g[20:]])}, 0, 41, huge=True),
        "binary-garbage": Case(
            {"a.log": lines_file(g[:20]), "garbage.bin": binary_garbage(),
             "z.log": lines_file(g[20:])},
            1, 40, {}, (), ("garbage.bin", "binary")),
        "empty-file": Case({"nothing.log": b"", "z.log": lines_file(g)}, 0, 40, {}, (),
                           ("empty",)),
        "only-empty-file": Case({"nothing.log": b""}, 0, 0, {}, (), ("empty",)),
        "whitespace-only-file": Case({"blank.log": b"\n\n   \n\t\n"}, 0, 0),
        "corrupt-gzip": Case({"cut.log.gz": cut}, 3, whole_lines),
        "missing-path": Case({"z.log": lines_file(g)}, 1, 0, {}, (), ("no such file",),
                             missing=True),
    }


CASES = _cases()


@dataclass
class Outcome:
    rc: int
    out: str
    err: str
    data: Path
    inputs: Path


#: Cases run as real subprocesses (all at once); the others through `kubetrail.cli.main`
#: in this process, which is the same code without an interpreter start-up per case.
IN_SUBPROCESS = {"truncated-line", "legacy-format", "binary-garbage", "empty-file",
                 "corrupt-gzip", "missing-path", "20mb-line"}


def _in_process(argv: list[str | Path]) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except Exception:  # what a subprocess would print as a traceback
            err.write("Traceback (most recent call last):\n" + traceback.format_exc())
            rc = 1
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case ingested through the CLI, each into its own data dir."""
    base = tmp_path_factory.mktemp("bad")
    home = base / "home"
    home.mkdir()
    calls: dict[str, list[str | Path]] = {}
    places: dict[str, tuple[Path, Path]] = {}
    for n, (name, case) in enumerate(CASES.items()):
        # neutral directory names, so that no word of a case name shows up in a message
        inputs, data = base / f"case{n}" / "in", base / f"case{n}" / "data"
        inputs.mkdir(parents=True)
        paths: list[str | Path] = []
        for fname, content in case.files.items():
            (inputs / fname).write_bytes(content)
            paths.append(inputs / fname)
        if case.missing:
            paths.insert(0, inputs / "does-not-exist.log")
        calls[name] = ["--data-dir", data, "--no-progress", "ingest", *paths]
        places[name] = (data, inputs)
    sub = [n for n in CASES if n in IN_SUBPROCESS]
    results = dict(zip(sub, run_cli_many([calls[n] for n in sub], env={"HOME": str(home)},
                                         workers=3), strict=True))
    with pytest.MonkeyPatch.context() as mp:  # the module runs before the per-test clean_env
        for var in list(os.environ):
            if var.startswith(("KUBETRAIL_", "XDG_")):
                mp.delenv(var)
        mp.setenv("HOME", str(home))
        mp.chdir(home)
        for name in CASES:
            if name not in results:
                results[name] = _in_process(calls[name])
    return {name: Outcome(*results[name], *places[name]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_exit_code_and_no_traceback(outcomes: dict[str, Outcome], name: str) -> None:
    o, case = outcomes[name], CASES[name]
    assert_clean(o.err)
    assert o.rc == case.exit_code, o.err
    for word in case.stderr:
        assert word.lower() in o.err.lower(), (word, o.err)
    assert o.err.strip(), "a person must be told what happened"


@pytest.mark.parametrize("name", list(CASES))
def test_good_part_is_stored(outcomes: dict[str, Outcome], name: str) -> None:
    o, case = outcomes[name], CASES[name]
    if not o.data.exists():
        assert case.stored == 0
        return
    archive = Archive(o.data)
    count, distinct = rows(archive, "SELECT count(*), count(DISTINCT (audit_id, stage)) "
                                    "FROM events")[0]
    assert count == distinct == case.stored
    if case.huge:
        (size,) = rows(archive, "SELECT max(length(event)) FROM events")[0]
        assert size > 20 << 20


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.exit_code == 3])
def test_quarantine_names_file_line_and_reason(outcomes: dict[str, Outcome], name: str) -> None:
    o, case = outcomes[name], CASES[name]
    records = quarantine_records(Archive(o.data))
    assert records, "nothing was quarantined"
    for r in records:
        assert r["file"] and r["reason"] and isinstance(r["line"], int), r
        assert Path(r["file"]).parent == o.inputs, r
        assert all(w.lower() in r["reason"].lower() for w in case.reason), r
    assert "quarantine" in o.err.lower()
    for fname, expected in case.bad_lines.items():
        got = sorted({r["line"] for r in records if Path(r["file"]).name == fname})
        assert got == expected, records


def test_v1beta1_reason_explains_the_removal(outcomes: dict[str, Outcome]) -> None:
    records = quarantine_records(Archive(outcomes["v1beta1"].data))
    assert len(records) == 3
    for r in records:
        assert "audit.k8s.io/v1beta1" in r["reason"] and "1.24" in r["reason"]


def test_corrupt_gzip_is_named(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["corrupt-gzip"]
    reasons = [r["reason"].lower() for r in quarantine_records(Archive(o.data))]
    assert any("gzip" in r or "compress" in r for r in reasons), reasons
    assert "cut.log.gz" in o.err


def test_missing_fields_each_have_their_reason(outcomes: dict[str, Outcome]) -> None:
    records = quarantine_records(Archive(outcomes["missing-fields"].data))
    by_line = {r["line"]: r["reason"].lower() for r in records}
    assert "auditid" in by_line[3]
    assert "stage" in by_line[6]
    assert "timestamp" in by_line[7] and "timestamp" in by_line[8]


def test_json_that_is_not_an_event_is_named(outcomes: dict[str, Outcome]) -> None:
    records = quarantine_records(Archive(outcomes["json-not-an-event"].data))
    reasons = {r["line"]: r["reason"] for r in records}
    assert "foo" in reasons[4]  # the keys it did have
    assert all("event" in reasons[n].lower() or "json" in reasons[n].lower() for n in reasons)


def test_summary_counts_per_cluster(outcomes: dict[str, Outcome]) -> None:
    err = outcomes["truncated-line"].err
    assert "default" in err
    for word in ("read", "stored", "duplicate", "quarantined"):
        assert word in err


# -- Hypothesis ------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_value = st.recursive(
    json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
odd_times = st.sampled_from([
    "10000-01-01T00:00:00.000000Z", "0000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z",
    "2026-13-45T25:61:61Z", "2026-11-01", "2026-11-01T09:00:00.1234567890123Z",
    "294247-01-10T04:00:54.775807Z", "1969-12-31T23:59:59.999999Z", "", "Z", "now",
    "2026-11-01 09:00:00", "2026-11-01T09:00:00+14:00", "9999-12-31T23:59:59.999999Z",
])
STRING_FIELDS = ["level", "auditID", "stage", "requestURI", "verb", "userAgent",
                 "requestReceivedTimestamp", "stageTimestamp", "apiVersion", "kind"]


@st.composite
def mutated_event(draw: st.DrawFn) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(TRAIL)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "replace", "unicode", "time", "nested"]))
        key = draw(st.sampled_from(sorted(event) or ["auditID"]))
        if action == "drop":
            event.pop(key, None)
        elif action == "replace":
            event[key] = draw(json_value)
        elif action == "unicode":
            event[draw(st.sampled_from(STRING_FIELDS))] = draw(st.text(min_size=0, max_size=30))
        elif action == "time":
            event[draw(st.sampled_from(["stageTimestamp", "requestReceivedTimestamp"]))] = \
                draw(odd_times)
        else:
            part = draw(st.sampled_from(["user", "objectRef", "responseStatus", "annotations",
                                         "impersonatedUser"]))
            inner = event.get(part)
            if not isinstance(inner, dict):
                inner = event[part] = {}
            inner[draw(st.sampled_from(["username", "groups", "code", "resource",
                                        "subresource", "authorization.k8s.io/decision",
                                        "namespace", "uid"]))] = draw(json_value)
    return event


def _serialise(event: dict[str, Any], style: str) -> str:
    if style == "compact":
        return compact(event)
    if style == "ascii":
        return json.dumps(event)
    return json.dumps(event, indent=1)


def _items(data: bytes) -> list[Decoded | Rejected]:
    out = []
    for _pos, item in iter_bytes(data, "hypothesis", Decoder(cluster="h")):
        assert isinstance(item, Decoded | Rejected), item
        out.append(item)
    return out


# No shrinking: a failure is reported as found (the explicit tests below pin down the
# minimal cases), which keeps a failing run as fast as a passing one.
HYP = settings(max_examples=60, deadline=None, database=None,
               phases=(Phase.explicit, Phase.generate),
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow, HealthCheck.data_too_large])


@HYP
@given(events=st.lists(mutated_event(), min_size=1, max_size=4),
       style=st.sampled_from(["compact", "ascii", "pretty"]))
def test_mutated_events_through_the_decoder(events: list[dict[str, Any]], style: str) -> None:
    data = "\n".join(_serialise(e, style) for e in events).encode()
    items = _items(data)
    assert items, "every record must come out as an event or a rejection"


def _check_ingest(path: Path, data_dir: Path) -> None:
    archive = Archive(data_dir)
    try:
        report = ingest_into(data_dir, [path])[1]
    except KubetrailError as exc:  # a deliberate, explained refusal (legacy text, ...)
        assert str(exc)
        return
    t = report.totals()
    assert t.read == t.stored + t.duplicate + t.quarantined, report.to_dict()
    assert report.exit_code in (0, 1, 3)
    assert report.exit_code != 0 or t.quarantined == 0
    assert len(quarantine_records(archive)) == t.quarantined
    con = archive.connect()
    try:
        table = con.sql("SELECT * FROM events").to_arrow_table()
        assert table.num_rows == t.stored
        table.to_pylist()  # every stored value must be readable back
    finally:
        con.close()


@settings(HYP, max_examples=30)
@given(events=st.lists(mutated_event(), min_size=1, max_size=5),
       style=st.sampled_from(["compact", "ascii", "pretty"]))
def test_mutated_events_through_a_whole_ingest(events: list[dict[str, Any]], style: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        path.write_text("\n".join([compact(GOOD[0])] + [_serialise(e, style) for e in events])
                        + "\n", encoding="utf-8")
        _check_ingest(path, Path(tmp) / "data")
        stored = rows(Archive(Path(tmp) / "data"), "SELECT count(*) FROM events "
                                                   "WHERE audit_id = ?", [GOOD[0]["auditID"]])
        assert stored == [(1,)]


PREFIXES = [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"BZh", b"BZh91AY&SY", b"\x28\xb5\x2f\xfd",
            b"H4sI", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"{", b"[",
            b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",', b'{"kind":"EventList","items":',
            b"\n\n{", b'"', b"2026-11-01T09:00:00.000000+00:00 stream {"]
random_input = st.builds(lambda p, b: p + b, st.sampled_from(PREFIXES), st.binary(max_size=300))
text_input = st.builds(lambda p, t: p + t.encode(),
                       st.sampled_from(PREFIXES),
                       st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200))


@HYP
@given(data=st.one_of(random_input, text_input))
def test_random_bytes_at_the_decoder(data: bytes) -> None:
    try:
        _items(data)
    except KubetrailError as exc:  # a whole input refused with a message (binary data)
        assert str(exc)


@settings(HYP, max_examples=30)
@given(data=st.one_of(random_input, text_input))
def test_random_bytes_through_a_whole_ingest(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.log"
        path.write_bytes(data)
        _check_ingest(path, Path(tmp) / "data")


@pytest.mark.parametrize("data", [
    b"\x1f\x8b\x08\x00garbage",
    gzip.compress(b'{"a":1}\n' * 50)[:-20],
    b"H4sI!!not base64!!",
    b"BZh9garbage",
], ids=["gzip-magic", "cut-gzip", "base64-gzip-magic", "bzip2-magic"])
def test_compressed_looking_garbage_at_the_decoder(data: bytes) -> None:
    """What Hypothesis finds first: input that looks compressed but does not decompress
    must come out as a rejection or a clear KubetrailError, not a zlib/bz2/binascii error."""
    try:
        items = _items(data)
    except KubetrailError as exc:
        assert str(exc)
    else:
        assert items and all(isinstance(i, Rejected) for i in items)


def test_truncated_json_line_at_the_decoder() -> None:
    """A cut line after the first one is a rejection, as it is in a file ingest."""
    good, cut = jsonl(GOOD[:2])
    items = _items((good + "\n" + cut[:80] + "\n").encode())
    assert [type(i) for i in items] == [Decoded, Rejected]
    assert "truncat" in items[1].reason.lower()  # type: ignore[union-attr]


def test_huge_integer_in_a_document() -> None:
    """JSON allows integers beyond 64 bits; an event holding one is not a crash."""
    doc = json.dumps({**GOOD[0], "requestObject": {"n": 2**64}}, indent=2).encode()
    (item,) = _items(doc)
    assert isinstance(item, Decoded | Rejected)
    bad = json.dumps({**GOOD[0], "apiVersion": [-(2**63) - 1]}, indent=2).encode()
    (item,) = _items(bad)
    assert isinstance(item, Rejected)


def test_random_lines_mixed_with_good_ones(tmp_path: Path) -> None:
    """A file that is mostly good keeps every good event whatever the bad lines are."""
    rnd = random.Random(11)
    lines: list[str] = []
    good = 0
    for i, e in enumerate(jsonl(bulk_events(300, start=7_000_000))):
        if i % 10 == 3:
            junk = rnd.choice([e[: rnd.randrange(1, len(e))], e.replace('"', "'", 3),
                               "".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(40)),
                               "{}", "[]", "null", e + "}", e.replace('"stage"', '"stag"')])
            lines.append(junk)
        else:
            lines.append(e)
            good += 1
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    archive, report = ingest_into(tmp_path / "data", [path])
    assert report.exit_code == 3
    t = report.totals()
    assert t.stored == good
    assert t.read == t.stored + t.duplicate + t.quarantined
    assert rows(archive, "SELECT count(*) FROM events") == [(good,)]


def test_render_helpers_are_consistent() -> None:
    """Guards the fixtures: what the bad-input cases count as good is really good."""
    assert render(GOOD[:2]).count("\n") == 2
    assert len({e["auditID"] for e in GOOD}) == 40



@given(st.lists(st.sampled_from([b"\n", b"\r", b"{", b"x", b"\xc3\xa9", b"\xff", b""]), max_size=60))
@settings(max_examples=300, deadline=None)
def test_blocks_split_into_lines_exactly_as_bytes_split(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _split_lines(memoryview(data)).to_pylist() == data.split(b"\n")
