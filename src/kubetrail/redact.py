"""Redaction: secrets leave an audit event before anything is written or sent.

Upstream Kubernetes logs Secret data in full at RequestResponse, tokens in TokenRequest and
TokenReview bodies, and whatever people put in env values, ConfigMaps and query strings.
kubetrail replaces each such value with a marker that carries a keyed fingerprint
(HMAC-SHA256 under a key kept in the data dir), so equal values can still be correlated —
"the same token was used from two addresses" — without the value being stored.

Speed: an event is parsed only if a cheap scan of its text (RE2, vectorised over the batch)
finds something that could need redacting; the rest pass untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError

__all__ = ["MARKER_PREFIX", "RedactionConfig", "Redactor", "load_redactor", "redact_rows"]

MARKER_PREFIX = "kubetrail:redacted:"

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_URI_PARAMS = re.compile(r"^(access_?token|token|id_token|refresh_token|password|passwd|pwd|"
                         r"secret|client_secret|api_?key|apikey|auth|authorization|"
                         r"x-amz-security-token|x-amz-signature|sig|signature)$", re.I)
_QUERY_HINT = re.compile(r"(?i)(?:^|&)(?:access_?token|token|id_token|refresh_token|password|"
                         r"passwd|pwd|secret|client_secret|api_?key|apikey|auth|authorization|"
                         r"x-amz-security-token|x-amz-signature|sig|signature)=|eyJ|AKIA|ASIA|"
                         r"gh[pousr]_|xox[abposr]-|AIza|glpat-|%40|@")
_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|"
                       r"CREDENTIAL|AUTH|DSN|CONNECTION_?STRING)", re.I)
# Values that are credentials wherever they appear (the part that matches is replaced).
_VALUE_PATTERNS = (
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack tokens
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API keys
    r"\bglpat-[A-Za-z0-9_-]{20,}\b",  # GitLab tokens
    r"(?i:\b(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis|amqp)://[^:/\s]+:[^@/\s]+@)",
)
# Strings that hold a kubeconfig or similar credential file: replaced whole.
_BLOB = re.compile(r"client-key-data|client-certificate-data|\"private_key\"|aws_secret_access_key"
                   r"|(?m:^\s*token:\s*\S)")
# A cheap scan of the event text: anything the walk below could act on.
_PREFILTER = (
    r'"(?:data|stringData)"\s*:|' + re.escape(_LAST_APPLIED) + r'|"token"\s*:'
    r'|[?&](?i:access_?token|token|id_token|refresh_token|password|passwd|pwd|secret|'
    r'client_secret|api_?key|apikey|auth|authorization|x-amz-security-token|x-amz-signature|'
    r'sig|signature)='
    r'|(?i:"name"\s*:\s*"[^"]*(?:password|passwd|secret|token|api_?key|access_?key|'
    r'private_?key|credential|auth|dsn|connection_?string))'
    r'|PRIVATE KEY-----|eyJ[A-Za-z0-9_-]{8,}\.eyJ|AKIA|ASIA|gh[pousr]_|xox[abposr]-|AIza|glpat-'
    r'|client-key-data|private_key|aws_secret_access_key|://[^:/\s"]+:[^@/\s"]+@'
)


@dataclass(frozen=True)
class RedactionConfig:
    """What to redact beyond the built-in rules (the `redaction:` section of kubetrail.yaml)."""

    enabled: bool = True
    paths: tuple[str, ...] = ()  # dotted paths from the event root; `*` for every list item
    patterns: tuple[str, ...] = ()  # regular expressions over every string value
    key_file: Path | None = None  # HMAC key; default <data-dir>/keys/redaction.key

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RedactionConfig:
        data = dict(data or {})
        unknown = set(data) - {"enabled", "paths", "patterns", "key_file"}
        if unknown:
            raise ConfigError(f"redaction: unknown setting(s) {', '.join(sorted(unknown))}",
                              hint="known: enabled, paths, patterns, key_file")
        paths = data.get("paths") or []
        patterns = data.get("patterns") or []
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError("redaction.paths must be a list of dotted paths",
                              hint="e.g. requestObject.spec.password")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError("redaction.patterns must be a list of regular expressions")
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"redaction.patterns: bad regular expression {p!r}: {exc}"
                                  ) from None
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("redaction.enabled must be true or false")
        key = data.get("key_file")
        return cls(enabled, tuple(paths), tuple(patterns),
                   Path(str(key)).expanduser() if key else None)


def _key(path: Path) -> bytes:
    """The HMAC key at `path`, created (32 random bytes, 0600) on first use."""
    try:
        if not path.exists():
            from .store.archive import ensure_dir

            ensure_dir(path.parent)  # 0700, as every directory of the data dir
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        key = path.read_bytes()
    except FileExistsError:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read or create the redaction key {path}: "
                          f"{exc.strerror or exc}", hint="check the permissions") from None
    if len(key) < 16:
        raise ConfigError(f"the redaction key {path} is too short",
                          hint="delete it to have a new one made (fingerprints then change)")
    return key


@dataclass
class Redactor:
    """Redacts event texts; one per process (it holds the HMAC key)."""

    key: bytes
    config: RedactionConfig = field(default_factory=RedactionConfig)
    redacted: int = 0  # values replaced so far

    def __post_init__(self) -> None:
        self._values = re.compile("|".join(f"(?:{p})" for p in (*_VALUE_PATTERNS,
                                                                  *self.config.patterns)))
        names = [p.rsplit(".", 1)[-1] for p in self.config.paths]
        extra = "|".join(f'"{re.escape(n)}"' for n in names if n != "*")
        user = "|".join(f"(?:{p})" for p in self.config.patterns)
        self._prefilter = "|".join(x for x in (_PREFILTER, extra, user) if x)
        self._strings_hint = "|".join(f"(?:{p})" for p in (*_VALUE_PATTERNS, _BLOB.pattern,
                                                             *self.config.patterns))

    # -- markers ---------------------------------------------------------------------------

    def marker(self, value: Any) -> str:
        """The stand-in for a secret value: equal values give equal markers."""
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        digest = hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()[:20]
        self.redacted += 1
        return f"{MARKER_PREFIX}hmac-sha256:{digest}"

    # -- batches ---------------------------------------------------------------------------

    def texts(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Event texts with every secret replaced; untouched texts are not parsed."""
        at, redacted = self.changes(texts)
        if not len(at):
            return texts
        column = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        mask = np.zeros(len(column), bool)
        mask[at] = True
        return pc.replace_with_mask(column, pa.array(mask), pa.array(redacted, pa.string()))

    def changes(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
        """(the positions of the texts that held a secret, their redacted texts)."""
        none: tuple[np.ndarray, list[str]] = (np.zeros(0, np.int64), [])
        if not self.config.enabled or not len(texts):
            return none
        column = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        maybe = pc.match_substring_regex(column, self._prefilter)
        if not pc.any(maybe).as_py():
            return none
        at = np.flatnonzero(maybe.to_numpy(zero_copy_only=False))
        candidates = column.take(pa.array(at))
        # Which of them need every string matched against the credential patterns (RE2,
        # vectorised: Python's engine takes far longer on large bodies).
        strings = pc.match_substring_regex(candidates, self._strings_hint).to_pylist()
        changed_at, changed = [], []
        for i, text, deep in zip(at.tolist(), candidates.to_pylist(), strings, strict=True):
            if text:
                clean = self.text(text, strings=bool(deep))
                if clean is not text:
                    changed_at.append(i)
                    changed.append(clean)
        return np.array(changed_at, np.int64), changed

    def text(self, text: str, *, strings: bool | None = None) -> str:
        """One event's JSON text, redacted (returned as it was when nothing needed to go).
        `strings`: whether any string could match the credential patterns (None: find out)."""
        if not self.config.enabled:
            return text
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._strings(text)  # not JSON: still no credential goes through
        if strings is None:
            strings = bool(self._values.search(text) or _BLOB.search(text))
        if not isinstance(event, dict) or not self.event(event, strings=strings):
            return text
        return orjson.dumps(event).decode()

    def body(self, body: bytes) -> bytes:
        """An EventList as received by the webhook, its events redacted (the bytes as they
        were when nothing needed to go)."""
        if not self.config.enabled or not re.search(self._prefilter.encode(), body):
            return body
        doc = orjson.loads(body)
        items = doc.get("items") if isinstance(doc, dict) else None
        changed = False
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                changed |= self.event(item)
        return orjson.dumps(doc) if changed else body

    # -- one event -------------------------------------------------------------------------

    def event(self, event: dict[str, Any], *, strings: bool = True) -> bool:
        """Redact a decoded event in place; True when anything changed. `strings=False`
        skips matching every string against the credential patterns (the caller knows the
        text holds none)."""
        ref = event.get("objectRef") if isinstance(event.get("objectRef"), dict) else {}
        resource, sub = ref.get("resource"), ref.get("subresource")
        changed = False
        for key in ("requestObject", "responseObject"):
            body = event.get(key)
            if isinstance(body, dict | list):
                changed |= self._body(body, resource, sub)
        uri = event.get("requestURI")
        if isinstance(uri, str):
            clean = self.uri(uri)
            if clean != uri:
                event["requestURI"], changed = clean, True
        for path in self.config.paths:
            changed |= self._path(event, path.split("."))
        return self._walk(event, strings) or changed

    def uri(self, uri: str) -> str:
        """Credentials in a request URI's query string (and URL user info) replaced."""
        path, sep, query = uri.partition("?")
        if not sep or not _QUERY_HINT.search(query):
            return uri
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(_URI_PARAMS.match(k) for k, _ in pairs) and not self._values.search(query):
            return uri
        clean = [(k, self.marker(v) if _URI_PARAMS.match(k) else self._strings(v))
                 for k, v in pairs]
        return path + "?" + urlencode(clean, quote_via=quote, safe="/:,=*")

    def _body(self, body: dict[str, Any] | list[Any], resource: Any, sub: Any) -> bool:
        changed = False
        if isinstance(body, list):  # a JSON patch of a secret: its values go
            if resource == "secrets":
                for op in body:
                    if isinstance(op, dict) and "value" in op:
                        op["value"], changed = self._hide(op["value"]), True
            return changed
        if resource == "secrets":
            for obj in _objects(body):
                changed |= self._secret(obj, force=True)
        if resource == "serviceaccounts" and sub == "token":
            status = body.get("status")
            if isinstance(status, dict) and status.get("token"):
                status["token"], changed = self.marker(status["token"]), True
        if resource == "tokenreviews":
            spec = body.get("spec")
            if isinstance(spec, dict) and spec.get("token"):
                spec["token"], changed = self.marker(spec["token"]), True
        return changed

    def _secret(self, obj: dict[str, Any], *, force: bool = False) -> bool:
        """A Secret (or a patch of one): its data, stringData and last-applied copy."""
        if not force and obj.get("kind") != "Secret":
            return False
        changed = False
        for key in ("data", "stringData"):
            values = obj.get(key)
            if isinstance(values, dict):
                for name, value in values.items():
                    if value is not None and not _is_marker(value):
                        values[name], changed = self.marker(value), True
            elif values is not None and not _is_marker(values):
                obj[key], changed = self.marker(values), True
        meta = obj.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if isinstance(annotations, dict) and annotations.get(_LAST_APPLIED) and not _is_marker(
                annotations[_LAST_APPLIED]):
            annotations[_LAST_APPLIED], changed = self.marker(annotations[_LAST_APPLIED]), True
        return changed

    def _walk(self, node: Any, strings: bool = True) -> bool:
        """Everywhere: Secrets in lists and templates, credential-named env values,
        kubeconfig blobs and credential-looking strings."""
        changed = False
        if isinstance(node, dict):
            if node.get("kind") == "Secret":
                changed |= self._secret(node)
            name = node.get("name")
            if isinstance(name, str) and "value" in node and _ENV_NAME.search(name) and \
                    isinstance(node["value"], str) and node["value"] and \
                    not _is_marker(node["value"]):
                node["value"], changed = self.marker(node["value"]), True
            annotations = node.get("annotations")
            if isinstance(annotations, dict) and _LAST_APPLIED in annotations and \
                    '"Secret"' in str(annotations[_LAST_APPLIED]) and \
                    not _is_marker(annotations[_LAST_APPLIED]):
                annotations[_LAST_APPLIED], changed = self.marker(annotations[_LAST_APPLIED]), True
        elif not isinstance(node, list):
            return False
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in children:  # values are replaced in place, never added
            if isinstance(value, str):
                if strings:
                    clean = self._strings(value)
                    if clean is not value:
                        node[key], changed = clean, True
            elif isinstance(value, dict | list):
                changed |= self._walk(value, strings)
        return changed

    def _strings(self, value: str) -> str:
        """A string with credential-looking parts replaced (the same object if none)."""
        if _is_marker(value):
            return value
        if _BLOB.search(value):
            return self.marker(value)
        if not self._values.search(value):
            return value
        return self._values.sub(lambda m: self.marker(m.group(0)), value)

    def _hide(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.marker(v) if v is not None else v for k, v in value.items()}
        return self.marker(value)

    def _path(self, node: Any, parts: Sequence[str]) -> bool:
        if not parts:
            return False
        head, rest = parts[0], parts[1:]
        children: Iterable[tuple[Any, Any]]
        if head == "*" and isinstance(node, list):
            children = enumerate(node)
        elif isinstance(node, dict) and head in node:
            children = [(head, node[head])]
        else:
            return False
        changed = False
        for key, child in list(children):
            if not rest:
                if child is not None and not _is_marker(child):
                    node[key], changed = self.marker(child), True
            else:
                changed |= self._path(child, rest)
        return changed


_URI_CANDIDATE = (r"(?i)[?&](?:access_?token|token|id_token|refresh_token|password|passwd|pwd|"
                  r"secret|client_secret|api_?key|apikey|auth|authorization|x-amz-security-token|"
                  r"x-amz-signature|sig|signature)=|://[^/]*@|eyJ|AKIA|ASIA")


def redact_rows(con: Any, rows: pa.Table, redactor: Redactor) -> pa.Table:
    """Normalised rows (SCHEMA, `event` included) with every secret gone from the event and
    from what was derived from it.

    Only events that carry a body (level Request or above) or whose URI has a query
    credential can hold a secret: the rest are never scanned. An event that changes is
    normalised again from its redacted text, so no column keeps what was removed."""
    from .events.normalize import normalize_with
    from .events.row import RAW_SCHEMA

    if not redactor.config.enabled or not rows.num_rows:
        return rows
    bodies = pc.is_in(rows.column("level"), pa.array(["Request", "RequestResponse"]))
    uris = pc.match_substring_regex(rows.column("request_uri"), _URI_CANDIDATE)
    maybe = pc.fill_null(pc.or_(bodies, uris), True)
    if redactor.config.paths or redactor.config.patterns:
        maybe = pa.array(np.ones(rows.num_rows, bool))  # user rules may look anywhere
    at = np.flatnonzero(maybe.to_numpy(zero_copy_only=False))
    if not len(at):
        return rows
    changed, redacted = redactor.changes(rows.column("event").take(pa.array(at)))
    if not len(changed):
        return rows
    where = at[changed]
    picked = rows.take(pa.array(where))
    raw = pa.Table.from_arrays([
        pa.array(redacted, pa.string()), pa.array(np.zeros(len(where), np.int64)),
        picked.column("cluster"), picked.column("source_format"), picked.column("truncated"),
        pa.repeat(pa.scalar("", pa.string()), len(where))], schema=RAW_SCHEMA)
    fresh, problems = normalize_with(con, raw)
    if problems or fresh.num_rows != len(where):
        raise RuntimeError("a redacted event no longer normalises")  # a bug, never data
    fresh = fresh.select(rows.column_names).cast(rows.schema)
    index = np.arange(rows.num_rows)
    keep = np.ones(rows.num_rows, bool)
    keep[where] = False
    order = np.argsort(np.concatenate([index[keep], where]), kind="stable")
    return pa.concat_tables([rows.filter(pa.array(keep)), fresh]).take(pa.array(order))


def _objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects a body carries: itself, a list's items, a watch event's object."""
    out = [body]
    items = body.get("items")
    if isinstance(items, list):
        out += [i for i in items if isinstance(i, dict)]
    obj = body.get("object")
    if isinstance(obj, dict):
        out.append(obj)
    return out


def _is_marker(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MARKER_PREFIX)


def load_redactor(data_dir: Path, section: Mapping[str, Any] | None) -> Redactor:
    """The redactor for a data dir and the `redaction:` settings (on unless disabled)."""
    config = RedactionConfig.from_mapping(section)
    key = _key(config.key_file or Path(data_dir).expanduser() / "keys" / "redaction.key")
    return Redactor(key, config)
