"""The discrete-event core of the simulator: one time-ordered heap per cluster.

Every request is turned into its audit events (one per stage) at the moment it is issued and
the events are pushed onto the heap keyed by their ``stageTimestamp``; periodic sources are
callables on the same heap. Popping the heap therefore yields events in file order, which is
what a real API server log looks like (a watch's ResponseComplete lands minutes after its
RequestReceived, interleaved with everything else).

Times are integer microseconds since the Unix epoch: cheap to compare and add, and exactly the
resolution of a Kubernetes MicroTime. Event dicts share their nested values (user, objectRef,
responseStatus, annotations) with other events for speed, so consumers must treat them as
read-only.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import Any

from .vocab import (
    API_VERSION,
    META,
    MIN,
    READS,
    REQUEST,
    SEC,
    STATUS,
    Identity,
    level_for,
    path_of,
)

Event = dict[str, Any]
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant digit


class Engine:
    """One cluster's event heap, clock, random source and resourceVersion counter."""

    def __init__(self, rng: random.Random, start_us: int, name: str = "") -> None:
        self.rng = rng
        self.name = name
        self.now = start_us
        self.start = start_us
        self.heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()
        self._rv = 1_000_000 + rng.randrange(9_000_000)
        self._minutes: dict[int, str] = {}
        self._bits = rng.getrandbits
        self._ids: list[str] = []
        # Lognormal latency tables sampled once: indexing a table is ~10x cheaper than a draw.
        self._fast = [_lognorm(rng, 3_000, 0.45) for _ in range(1024)]
        self._write = [_lognorm(rng, 9_000, 0.5) for _ in range(1024)]
        self._tiny = [_lognorm(rng, 700, 0.5) for _ in range(1024)]

    # -- small helpers used on the hot path -------------------------------------------------
    def uuid(self) -> str:
        """A UUID4 string drawn from the seeded generator (never ``uuid.uuid4``)."""
        ids = self._ids
        return ids.pop() if ids else self._refill()

    def _refill(self) -> str:
        """Format 4096 UUIDs at once from one block of random bytes (~20 % cheaper)."""
        h = self.rng.randbytes(16 * 4096).hex()
        v = _VARIANT
        self._ids = [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{v[h[i + 16]]}"
                     f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]
        return self._ids.pop()

    def ts(self, us: int) -> str:
        """MicroTime text (six digits, ``Z``); the per-minute prefix is cached."""
        pre = self._minutes.get(us // MIN) or self.minute(us // MIN)
        return "%s%02d.%06dZ" % (pre, us // SEC % 60, us % SEC)  # noqa: UP031 (faster)

    def minute(self, minute: int) -> str:
        """The ``YYYY-MM-DDTHH:MM:`` prefix of a minute (cache miss path of :meth:`ts`)."""
        cache = self._minutes
        if len(cache) > 4096:
            cache.clear()
        pre = cache[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        return pre

    def fast(self) -> int:
        """Latency of a cached read or a lease update (median ~3 ms)."""
        return self._fast[self._bits(10)]

    def write(self) -> int:
        """Latency of a create/patch/update (median ~9 ms)."""
        return self._write[self._bits(10)]

    def tiny(self) -> int:
        """Latency of fast-path answers: 403, 404, health probes (median ~0.7 ms)."""
        return self._tiny[self._bits(10)]

    def rv(self) -> str:
        """Next cluster-wide resourceVersion (etcd revision), as text like the API returns."""
        self._rv += 1 + self._bits(2)
        return str(self._rv)

    def jitter(self, us: int, frac: float) -> int:
        """A period stretched by up to ``frac`` (client-go ``JitterUntil`` only lengthens)."""
        return us + int(us * frac * self.rng.random())

    # -- scheduling -------------------------------------------------------------------------
    def at(self, t: int, fn: Callable[[int], Event | None]) -> None:
        """Call ``fn(t)`` when simulated time reaches ``t``; an event it returns is output then."""
        heappush(self.heap, (t, next(self._seq), fn))

    def push(self, t: int, event: dict[str, Any]) -> None:
        """Queue an event for time ``t`` (its stageTimestamp is set here)."""
        event["stageTimestamp"] = self.ts(t)
        heappush(self.heap, (t, next(self._seq), event))

    def run(self, end_us: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """Yield ``(stage time, cluster name, event)`` in time order until ``end_us``."""
        heap = self.heap
        name = self.name
        while heap:
            t, _, item = heappop(heap)
            if t >= end_us:
                return
            if item.__class__ is dict:
                yield t, name, item
            else:
                self.now = t
                ev = item(t)
                if ev.__class__ is dict:  # tolerate callables that return other things
                    yield t, name, ev

    # -- requests ---------------------------------------------------------------------------
    def request(
        self,
        t: int,
        who: Identity,
        verb: str,
        uri: str,
        ref: dict[str, str] | None = None,
        *,
        code: int = 200,
        level: str = META,
        lat: int = 0,
        end: int = 0,
        status: dict[str, Any] | None = None,
        req: Any = None,
        resp: Any = None,
        ann: dict[str, str] | None = None,
        rc_ref: dict[str, str] | None = None,
        omit_rr: bool = False,
    ) -> int:
        """Issue one request at ``t``; schedule its stage events and return its completion time.

        ``end`` marks a long-running request (watch, exec, log, port-forward, proxy): it gets a
        ResponseStarted event shortly after arrival and completes at ``end``. Otherwise the
        request completes after ``lat`` microseconds. ``rc_ref`` is the objectRef once the body
        has been decoded (uid/resourceVersion of an update, the name of a create).
        """
        aid = self.uuid()
        rts = self.ts(t)
        push = self.push
        user, ips, ua = who.user, who.ips, who.ua
        if not omit_rr:
            ev = {"kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": aid,
                  "stage": "RequestReceived", "requestURI": uri, "verb": verb, "user": user,
                  "sourceIPs": ips, "userAgent": ua, "objectRef": ref,
                  "requestReceivedTimestamp": rts, "stageTimestamp": rts}
            if ref is None:
                del ev["objectRef"]
            push(t, ev)
        st = status if status is not None else STATUS[code]
        a = ann if ann is not None else who.allow
        if end:
            rs = {"kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": aid,
                  "stage": "ResponseStarted", "requestURI": uri, "verb": verb, "user": user,
                  "sourceIPs": ips, "userAgent": ua, "objectRef": ref, "responseStatus": st,
                  "requestReceivedTimestamp": rts, "stageTimestamp": "", "annotations": a}
            if ref is None:
                del rs["objectRef"]
            started = t + 200 + self._bits(11)
            push(started, rs)
            done = max(end, started + 1)
        else:
            done = t + max(lat, 40)
        rc = {"kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": aid,
              "stage": "ResponseComplete", "requestURI": uri, "verb": verb, "user": user,
              "sourceIPs": ips, "userAgent": ua, "objectRef": rc_ref or ref, "responseStatus": st,
              "requestObject": req, "responseObject": resp, "requestReceivedTimestamp": rts,
              "stageTimestamp": "", "annotations": a}
        if ref is None:
            del rc["objectRef"]
        if req is None:
            del rc["requestObject"]
        if resp is None:
            del rc["responseObject"]
        push(done, rc)
        return done

    def call(
        self, t: int, who: Identity, verb: str, ref: dict[str, str] | None, *, query: str = "",
        uri: str = "", req: Any = None, resp: Any = None, code: int = 0, **kw: Any,
    ) -> int:
        """Issue a request described by its objectRef: path, level, bodies and latency follow.

        The policy decides which bodies survive, so callers may always pass them.
        """
        if ref is None:
            level = META
        else:
            level = level_for(verb, ref.get("apiGroup", ""), ref["resource"],
                              ref.get("subresource", ""))
            if not uri:
                collection = verb in ("create", "list", "watch", "deletecollection")
                uri = path_of(ref, named=not collection or "subresource" in ref)
        if level == META:
            req = resp = None
        elif level == REQUEST:
            resp = None
        if not code:
            code = 201 if verb == "create" else 200
        if "lat" not in kw and "end" not in kw:
            kw["lat"] = self.fast() if verb in READS else self.write()
        return self.request(t, who, verb, uri + query, ref, code=code, level=level, req=req,
                            resp=resp, **kw)

    def rv_now(self) -> str:
        """The current resourceVersion, as informers send it when they (re)start a watch."""
        return str(self._rv)

    def unauthenticated(
        self, t: int, verb: str, uri: str, ref: dict[str, str] | None, ips: list[str], ua: str,
        method: str = "bearer",
    ) -> None:
        """A failed authentication: exactly one ResponseStarted event, code 401, empty user."""
        rts = self.ts(t)
        ev = {"kind": "Event", "apiVersion": API_VERSION, "level": META, "auditID": self.uuid(),
              "stage": "ResponseStarted", "requestURI": uri, "verb": verb, "user": {},
              "sourceIPs": ips, "userAgent": ua, "objectRef": ref,
              "responseStatus": {"metadata": {}, "status": "Failure",
                                 "message": f"Authentication failed, attempted: {method}",
                                 "reason": "Unauthorized", "code": 401},
              "requestReceivedTimestamp": rts, "stageTimestamp": ""}
        if ref is None:
            del ev["objectRef"]
        self.push(t + 150 + self._bits(9), ev)


class Template:
    """A fixed request shape (who, verb, URI, objectRef, level) that is issued over and over.

    Heartbeats, probes and watches are ~90 % of the stream: copying prepared stage dicts and
    setting four keys is several times cheaper than building each event from scratch.
    """

    __slots__ = ("eng", "omit_rr", "rc", "rr", "rs")

    def __init__(self, eng: Engine, who: Identity, verb: str, uri: str,
                 ref: dict[str, str] | None, *, level: str = META, code: int = 200,
                 omit_rr: bool = False, ann: dict[str, str] | None = None) -> None:
        base: dict[str, Any] = {
            "kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": "",
            "stage": "RequestReceived", "requestURI": uri, "verb": verb, "user": who.user,
            "sourceIPs": who.ips, "userAgent": who.ua, "objectRef": ref,
            "responseStatus": STATUS[code], "requestReceivedTimestamp": "",
            "stageTimestamp": "", "annotations": who.allow if ann is None else ann}
        if ref is None:
            del base["objectRef"]
        rr = dict(base)
        del rr["responseStatus"], rr["annotations"]
        self.eng, self.omit_rr, self.rr = eng, omit_rr, rr
        self.rs = {**base, "stage": "ResponseStarted"}
        self.rc = {**base, "stage": "ResponseComplete"}

    def emit(self, t: int, done: int, uri: str = "", rc_ref: dict[str, str] | None = None,
             long: bool = False, now: bool = False) -> Event | None:
        """Issue the request at ``t``, completing at ``done`` (``long``: add ResponseStarted).

        With ``now`` the RequestReceived event is returned instead of queued: a source running
        at ``t`` hands it straight back to :meth:`Engine.run`, saving a heap round trip.
        Hot path: the clock cache and the heap are used inline rather than through methods.
        """
        eng = self.eng
        first = None
        heap, seq, cache, ids = eng.heap, eng._seq, eng._minutes, eng._ids
        aid = ids.pop() if ids else eng._refill()
        pre = cache.get(t // MIN) or eng.minute(t // MIN)
        rts = "%s%02d.%06dZ" % (pre, t // SEC % 60, t % SEC)  # noqa: UP031
        if not self.omit_rr:
            ev = self.rr.copy()
            ev["auditID"] = aid
            if uri:
                ev["requestURI"] = uri
            ev["requestReceivedTimestamp"] = ev["stageTimestamp"] = rts
            if now:
                first = ev
            else:
                heappush(heap, (t, next(seq), ev))
        if long:
            started = t + 200 + eng._bits(11)
            ev = self.rs.copy()
            ev["auditID"] = aid
            if uri:
                ev["requestURI"] = uri
            ev["requestReceivedTimestamp"] = rts
            ev["stageTimestamp"] = eng.ts(started)
            heappush(heap, (started, next(seq), ev))
        ev = self.rc.copy()
        ev["auditID"] = aid
        if uri:
            ev["requestURI"] = uri
        if rc_ref is not None:
            ev["objectRef"] = rc_ref
        ev["requestReceivedTimestamp"] = rts
        pre = cache.get(done // MIN) or eng.minute(done // MIN)
        ev["stageTimestamp"] = "%s%02d.%06dZ" % (pre, done // SEC % 60, done % SEC)  # noqa: UP031
        heappush(heap, (done, next(seq), ev))
        return first

    def finish(self, t: int, done: int, rc_ref: dict[str, str] | None = None) -> Event:
        """The ResponseComplete of a request received at ``t``, for a source running at ``done``.

        Only for templates without RequestReceived (heartbeats): the event is returned for
        immediate output, never queued, which halves the cost of the most frequent events.
        """
        eng = self.eng
        cache, ids = eng._minutes, eng._ids
        ev = self.rc.copy()
        ev["auditID"] = ids.pop() if ids else eng._refill()
        if rc_ref is not None:
            ev["objectRef"] = rc_ref
        pre = cache.get(t // MIN) or eng.minute(t // MIN)
        ev["requestReceivedTimestamp"] = "%s%02d.%06dZ" % (pre, t // SEC % 60, t % SEC)  # noqa: UP031
        pre = cache.get(done // MIN) or eng.minute(done // MIN)
        ev["stageTimestamp"] = "%s%02d.%06dZ" % (pre, done // SEC % 60, done % SEC)  # noqa: UP031
        return ev


def _lognorm(rng: random.Random, median_us: float, sigma: float) -> int:
    return max(60, int(median_us * math.exp(rng.gauss(0.0, sigma))))
