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
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any

API_VERSION = "audit.k8s.io/v1"
META, REQUEST, REQRESP = "Metadata", "Request", "RequestResponse"
SEC = 1_000_000
MIN = 60 * SEC
DAY_US = 86_400 * SEC
_UUID_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (0x4 << 76) | (0x2 << 62)

STATUS: dict[int, dict[str, Any]] = {c: {"metadata": {}, "code": c} for c in (101, 200, 201, 304)}
STATUS_DELETED: dict[str, Any] = {"metadata": {}, "status": "Success", "code": 200}
FORBID: dict[str, str] = {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
_READS = frozenset({"get", "list", "watch"})
_META_RESOURCES = frozenset(
    {"secrets", "configmaps", "tokenreviews", "subjectaccessreviews",
     "selfsubjectaccessreviews", "leases", "events"}
)
_STREAMS = frozenset({"exec", "attach", "portforward", "log", "proxy"})
_BODY_GROUPS = {
    "": frozenset({"pods", "services"}),
    "apps": frozenset({"deployments", "replicasets", "statefulsets", "daemonsets"}),
    "batch": frozenset({"jobs", "cronjobs"}),
}


def level_for(verb: str, group: str, resource: str, sub: str = "") -> str:
    """The simulated cluster's audit policy, written as code so it costs nothing per event.

    Reads and sensitive or noisy kinds stay at Metadata (bodies of secrets and tokens must never
    be logged), writes to RBAC and workload objects keep both bodies (what detections inspect),
    and every other write keeps its request body. TokenRequests log the request (audiences,
    expiry) but never the response, which holds the token.
    """
    if verb in _READS or resource in _META_RESOURCES or sub in _STREAMS:
        return META
    if sub:
        return REQUEST
    if group == "rbac.authorization.k8s.io" or resource in _BODY_GROUPS.get(group, ()):
        return REQRESP
    return REQUEST


def go_duration(us: int) -> str:
    """Format like Go's ``time.Duration.String`` (``7m3s``, ``35.68s``, ``1.15ms``)."""
    if us < 1000:
        return f"{us}µs"
    if us < SEC:
        return f"{us / 1000:.3f}".rstrip("0").rstrip(".") + "ms"
    m, s = divmod(us, MIN)
    h, m = divmod(m, 60)
    frac = f"{s / SEC:.6f}".rstrip("0").rstrip(".")
    if h:
        return f"{h}h{m}m{frac}s"
    return f"{m}m{frac}s" if m else f"{frac}s"


def latency_annotations(total_us: int, base: dict[str, str]) -> dict[str, str]:
    """Slow requests (>500 ms) get the API server's latency-tracker annotations."""
    out = dict(base)
    out["apiserver.latency.k8s.io/etcd"] = go_duration(900 + total_us % 700)
    out["apiserver.latency.k8s.io/response-write"] = go_duration(3 + total_us % 11)
    out["apiserver.latency.k8s.io/total"] = go_duration(total_us)
    return dict(sorted(out.items()))


@dataclass(slots=True)
class Identity:
    """Who sends a request: the audit ``user`` block plus where it comes from and as what.

    ``allow`` is the annotation map the authorizer attaches when it allows this caller (an
    RBAC reason, or an empty reason for the Node authorizer and ``system:masters``).
    """

    user: dict[str, Any]
    ips: list[str]
    ua: str
    allow: dict[str, str]

    @property
    def username(self) -> str:
        return str(self.user.get("username", ""))


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
        self._sec_cache: dict[int, str] = {}
        self._bits = rng.getrandbits
        # Lognormal latency tables sampled once: indexing a table is ~10x cheaper than a draw.
        self._fast = [_lognorm(rng, 3_000, 0.45) for _ in range(1024)]
        self._write = [_lognorm(rng, 9_000, 0.5) for _ in range(1024)]
        self._tiny = [_lognorm(rng, 700, 0.5) for _ in range(1024)]

    # -- small helpers used on the hot path -------------------------------------------------
    def uuid(self) -> str:
        """A UUID4 string drawn from the seeded generator (never ``uuid.uuid4``)."""
        h = "%032x" % (self._bits(128) & _UUID_MASK | _UUID_SET)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def ts(self, us: int) -> str:
        """MicroTime text (six digits, ``Z``); the per-second prefix is cached."""
        pre = self._sec_cache.get(us // SEC) or self.second(us // SEC)
        return "%s%06dZ" % (pre, us % SEC)

    def second(self, sec: int) -> str:
        """The ``YYYY-MM-DDTHH:MM:SS.`` prefix of a second (cache miss path of :meth:`ts`)."""
        cache = self._sec_cache
        if len(cache) > 4096:
            cache.clear()
        pre = cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
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
    def at(self, t: int, fn: Callable[[int], None]) -> None:
        """Call ``fn(t)`` when simulated time reaches ``t``."""
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
                item(t)

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
                uri = path_of(ref, named=verb != "create" or "subresource" in ref)
        if level == META:
            req = resp = None
        elif level == REQUEST:
            resp = None
        if not code:
            code = 201 if verb == "create" else 200
        if "lat" not in kw and "end" not in kw:
            kw["lat"] = self.fast() if verb in _READS else self.write()
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
                 omit_rr: bool = False) -> None:
        base: dict[str, Any] = {
            "kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": "",
            "stage": "RequestReceived", "requestURI": uri, "verb": verb, "user": who.user,
            "sourceIPs": who.ips, "userAgent": who.ua, "objectRef": ref,
            "responseStatus": STATUS[code], "requestReceivedTimestamp": "",
            "stageTimestamp": "", "annotations": who.allow}
        if ref is None:
            del base["objectRef"]
        rr = dict(base)
        del rr["responseStatus"], rr["annotations"]
        self.eng, self.omit_rr, self.rr = eng, omit_rr, rr
        self.rs = {**base, "stage": "ResponseStarted"}
        self.rc = {**base, "stage": "ResponseComplete"}

    def emit(self, t: int, done: int, uri: str = "", rc_ref: dict[str, str] | None = None,
             long: bool = False) -> None:
        """Issue the request at ``t``, completing at ``done`` (``long``: add ResponseStarted).

        Hot path: the clock cache and the heap are used inline rather than through methods.
        """
        eng = self.eng
        heap, seq, cache = eng.heap, eng._seq, eng._sec_cache
        h = "%032x" % (eng._bits(128) & _UUID_MASK | _UUID_SET)
        aid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        pre = cache.get(t // SEC) or eng.second(t // SEC)
        rts = "%s%06dZ" % (pre, t % SEC)
        if not self.omit_rr:
            ev = self.rr.copy()
            ev["auditID"] = aid
            if uri:
                ev["requestURI"] = uri
            ev["requestReceivedTimestamp"] = ev["stageTimestamp"] = rts
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
        pre = cache.get(done // SEC) or eng.second(done // SEC)
        ev["stageTimestamp"] = "%s%06dZ" % (pre, done % SEC)
        heappush(heap, (done, next(seq), ev))


def _lognorm(rng: random.Random, median_us: float, sigma: float) -> int:
    return max(60, int(median_us * math.exp(rng.gauss(0.0, sigma))))


def oref(
    resource: str, namespace: str = "", name: str = "", group: str = "", version: str = "v1",
    sub: str = "", uid: str = "", rv: str = "",
) -> dict[str, str]:
    """An audit objectRef with the API server's field order and empty fields omitted."""
    out = {"resource": resource, "namespace": namespace, "name": name, "uid": uid,
           "apiGroup": group, "apiVersion": version, "resourceVersion": rv, "subresource": sub}
    return {k: v for k, v in out.items() if v}


def path_of(ref: dict[str, str], named: bool = True) -> str:
    """The request path for an objectRef (``named=False`` for collection requests)."""
    group = ref.get("apiGroup")
    base = f"/apis/{group}/{ref.get('apiVersion', 'v1')}" if group else "/api/v1"
    ns = ref.get("namespace")
    if ns and not (ref["resource"] == "namespaces"):
        base += f"/namespaces/{ns}"
    base += "/" + ref["resource"]
    name = ref.get("name")
    if name and named:
        base += "/" + name
        if "subresource" in ref:
            base += "/" + ref["subresource"]
    return base


def with_ids(ref: dict[str, str], uid: str, rv: str) -> dict[str, str]:
    """The objectRef of a ResponseComplete whose request body carried uid and resourceVersion."""
    return oref(ref["resource"], ref.get("namespace", ""), ref.get("name", ""),
                ref.get("apiGroup", ""), ref.get("apiVersion", "v1"), ref.get("subresource", ""),
                uid, rv)


def forbidden(
    username: str, verb: str, resource: str, group: str = "", namespace: str = "", name: str = "",
) -> dict[str, Any]:
    """The Status an RBAC denial returns, worded exactly like the API server."""
    what = f'{resource} "{name}"' if name else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    details: dict[str, str] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    return {"metadata": {}, "status": "Failure",
            "message": f'{what} is forbidden: User "{username}" cannot {verb} resource '
                       f'"{resource}" in API group "{group}"{where}',
            "reason": "Forbidden", "details": details, "code": 403}


def not_found(resource: str, name: str, group: str = "") -> dict[str, Any]:
    """The Status of a 404 on a named object."""
    kind = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {
        "name": name, "kind": resource}
    return {"metadata": {}, "status": "Failure", "message": f'{kind} "{name}" not found',
            "reason": "NotFound", "details": details, "code": 404}


def conflict(resource: str, name: str, group: str = "") -> dict[str, Any]:
    """The Status of an optimistic-concurrency conflict (409), common for controllers."""
    kind = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {
        "name": name, "kind": resource}
    return {"metadata": {}, "status": "Failure",
            "message": f'Operation cannot be fulfilled on {kind} "{name}": the object has been '
                       "modified; please apply your changes to the latest version and try again",
            "reason": "Conflict", "details": details, "code": 409}
