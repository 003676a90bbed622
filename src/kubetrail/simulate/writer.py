"""``write_simulation()``: stream a simulation to disk as native or cloud-provider files.

Nothing is accumulated: each event is serialised with orjson as it is generated and written
in chunks through a (optionally gzip) file, so memory stays flat for any size. On request the
output also copies the Go encoder's ``\\u0026`` escaping of ``& < >`` inside strings.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from .background import Profile
from .cluster import _CLUSTERS, cluster_name
from .run import DEFAULT_START, Triple, check_args, from_us, stream, to_us

FORMATS = ("jsonl", "eventlist", "eks", "gke", "aks")
_BATCH = 400  # --audit-webhook-batch-max-size
_BATCH_WAIT_US = 30_000_000  # --audit-webhook-batch-max-wait
_EKS_CHUNK = 1000
_EVENT_PREFIX = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
_LIST_HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['


@dataclass
class SimulationSummary:
    """What :func:`write_simulation` wrote. ``end`` is the last written event's stage time."""

    files: list[Path]
    events: int
    per_cluster: dict[str, int]
    scenarios: list[str]
    start: dt.datetime
    end: dt.datetime
    bytes: int
    format: str = "jsonl"


def go_escape(line: bytes) -> bytes:
    """Escape ``& < >`` as Go's encoding/json does (they only occur inside JSON strings)."""
    if b"&" in line:
        line = line.replace(b"&", b"\\u0026")
    if b"<" in line or b">" in line:
        line = line.replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
    return line


def cluster_path(out: Path, cluster: str) -> Path:
    """``audit.log`` -> ``audit.prod-eu.log``; ``audit.jsonl.gz`` -> ``audit.prod-eu.jsonl.gz``."""
    name, gz = (out.name[:-3], ".gz") if out.name.endswith(".gz") else (out.name, "")
    base = Path(name)
    return out.with_name(f"{base.stem}.{cluster}{base.suffix}{gz}")


def _open(path: Path, stack: ExitStack) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = stack.enter_context(open(path, "wb"))  # noqa: SIM115
    if path.name.endswith(".gz"):
        # mtime=0 and no file name keep gzip output byte-identical for the same seed.
        return stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                 compresslevel=3, mtime=0))
    return raw


def write_simulation(out: Path, *, events: int | None = None,
                     duration: dt.timedelta | None = None, seed: int = 0, clusters: int = 1,
                     scenarios: Sequence[str] = (), fmt: str = "jsonl",
                     start: dt.datetime | None = None, nodes: int = 5,
                     go_json: bool = False, profile: Profile | None = None) -> SimulationSummary:
    """Simulate and write to ``out`` (gzip when it ends in ``.gz``), returning a summary.

    ``jsonl``: one Event per line. ``eventlist``: EventList documents, one per line, batched
    like the webhook backend (≤400 events or 30 s). ``eks``/``gke``/``aks``: the providers'
    export shapes; GKE and AKS records name their cluster, so all clusters share one file.
    Native formats and EKS (whose ``filter-log-events`` output does not name the log
    group) with several clusters write one file per cluster next to ``out``
    (see :func:`cluster_path`). ``go_json`` escapes ``&``,
    ``<`` and ``>`` as ``\\u0026``-style escapes like the API server's Go encoder does (the same
    JSON, byte-faithful to real logs, ~10 % slower). ``events`` counts records written, so a
    cloud export (which drops some stages) still holds exactly that many.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = write_simulation(pathlib.Path(d) / "audit.log", events=500, clusters=2)
    ...     [p.name for p in s.files], s.events
    (['audit.prod-eu.log', 'audit.prod-us.log'], 500)
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    names = check_args(events, duration, clusters, scenarios, nodes)
    out = Path(out)
    begin = start or DEFAULT_START
    # Cloud exports drop some stages: count records written so `events` is exact everywhere.
    limit_in_stream = events if fmt in ("jsonl", "eventlist") else None
    gen = stream(events=limit_in_stream, duration=duration, seed=seed, clusters=clusters,
                 scenarios=names, start=begin, nodes=nodes, profile=profile)
    per: dict[str, int] = {cluster_name(i): 0 for i in range(clusters)}
    with ExitStack() as stack:
        if fmt in ("jsonl", "eventlist"):
            one = clusters == 1
            paths = {c: out if one else cluster_path(out, c) for c in per}
            files = {c: _open(p, stack) for c, p in paths.items()}
            writer = _write_jsonl if fmt == "jsonl" else _write_eventlists
            last = writer(gen, files, per, go_json)
            written = list(paths.values())
        elif fmt == "eks" and clusters > 1:
            # `aws logs filter-log-events` reads one log group, i.e. one cluster, and its
            # output does not name the group: one file per cluster, as a user would have.
            paths = {c: cluster_path(out, c) for c in per}
            files = {c: _open(p, stack) for c, p in paths.items()}
            last = _write_cloud(fmt, gen, files, per, events)
            written = list(paths.values())
        else:
            f = _open(out, stack)
            last = _write_cloud(fmt, gen, {c: f for c in per}, per, events)
            written = [out]
    return SimulationSummary(
        files=written, events=sum(per.values()), per_cluster=per, scenarios=names,
        start=begin if begin.tzinfo else begin.replace(tzinfo=dt.UTC),
        end=from_us(last) if last else from_us(to_us(begin)),
        bytes=sum(p.stat().st_size for p in written), format=fmt)


def _write_jsonl(gen: Iterator[Triple], files: dict[str, IO[bytes]], per: dict[str, int],
                 escape: bool) -> int:
    """One Event per line; lines are joined and written in chunks (fewer, larger writes)."""
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    chunks: dict[str, list[bytes]] = {c: [] for c in files}
    last = 0
    for t, cluster, ev in gen:
        line = dumps(ev, option=opt)
        if escape:
            line = go_escape(line)
        chunk = chunks[cluster]
        chunk.append(line)
        if len(chunk) >= 512:
            files[cluster].write(b"".join(chunk))
            per[cluster] += 512
            chunk.clear()
        last = t
    for cluster, chunk in chunks.items():
        files[cluster].write(b"".join(chunk))
        per[cluster] += len(chunk)
    return last


def _write_eventlists(gen: Iterator[Triple], files: dict[str, IO[bytes]], per: dict[str, int],
                      escape: bool) -> int:
    """Per cluster, close a batch at 400 items or once its first event is 30 s old."""
    batches: dict[str, list[bytes]] = {c: [] for c in files}
    opened: dict[str, int] = {}
    cut = len(_EVENT_PREFIX)
    last = 0

    def flush(cluster: str) -> None:
        items = batches[cluster]
        if items:
            files[cluster].write(_LIST_HEAD + b",".join(items) + b"]}\n")
            items.clear()

    for t, cluster, ev in gen:
        items = batches[cluster]
        if items and (len(items) >= _BATCH or t - opened[cluster] >= _BATCH_WAIT_US):
            flush(cluster)
        if not items:
            opened[cluster] = t
        # Items in an EventList carry no kind/apiVersion: drop the fixed prefix bytes.
        line = orjson.dumps(ev)
        items.append(b"{" + (go_escape(line) if escape else line)[cut:])
        per[cluster] += 1
        last = t
    for cluster in files:
        flush(cluster)
    return last


def _encoder(fmt: str) -> Callable[[dict[str, Any], str], Any]:
    """Adapt the per-event cloud encoders (imported lazily; they live in ``events.cloud``).

    EKS's fixed audit policy omits RequestReceived, so those events are not exported; each
    cluster writes to its own stream, which is how several clusters share one file.
    """
    from ..events.cloud import encode

    if fmt == "eks":
        streams: dict[str, str] = {}

        def eks(ev: dict[str, Any], c: str) -> Any:
            if ev["stage"] == "RequestReceived":
                return None
            stream = streams.get(c) or streams.setdefault(c, encode.eks_stream(c))
            return encode.eks_log_event(ev, stream=stream)
        return eks
    if fmt == "gke":
        loc = {c[0]: c[1] for c in _CLUSTERS}
        return lambda ev, c: encode.gke_entry(ev, c, project="kubetrail-sim",
                                              location=loc.get(c, "us-west1"))
    return lambda ev, c: encode.aks_record(ev, c)


def _write_cloud(fmt: str, gen: Iterator[Triple], files: dict[str, IO[bytes]],
                 per: dict[str, int], limit: int | None) -> int:
    encode = _encoder(fmt)
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    chunks: dict[str, list[dict[str, Any]]] = {c: [] for c in files}  # eks: per output file
    lines: list[bytes] = []
    n, last = 0, 0
    for t, cluster, ev in gen:
        if limit is not None and n >= limit:
            break
        rec = encode(ev, cluster)
        if rec is None:
            continue
        n += 1
        per[cluster] += 1
        last = t
        if fmt == "eks":
            chunk = chunks[cluster]
            chunk.append(rec)
            if len(chunk) >= _EKS_CHUNK:
                files[cluster].write(dumps({"events": chunk, "searchedLogStreams": []},
                                           option=opt))
                chunk.clear()
        else:
            lines.append(dumps(rec, option=opt))
            if len(lines) >= 512:
                files[cluster].write(b"".join(lines))
                lines.clear()
    if lines:
        next(iter(files.values())).write(b"".join(lines))  # gke/aks: one file for all
    for cluster, chunk in chunks.items():
        if chunk:
            files[cluster].write(dumps({"events": chunk, "searchedLogStreams": []}, option=opt))
    return last
