"""Who looked at the audit log: every query, hunt and report, on a hash chain of its own.

An audit trail is itself sensitive: who searched for whom is worth knowing. Each read
through kubetrail (the CLI's queries, hunts and reports, the service's read API) appends an
entry to `<data-dir>/access/access.jsonl` — who (the OS user, or the API token's name), when,
what (the command and its filter) and how many rows — chained like the manifest (each entry
carries the hash of the one before) and, with a signing key, signed. Several processes may
append at once: the file is locked while the head is read and the entry written.
"""

from __future__ import annotations

import dataclasses
import fcntl
import getpass
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..errors import StoreError
from .archive import Archive, chain_head, ensure_dir
from .evidence import Problem, check_chain, entry_hash, read_chain

__all__ = ["access_path", "current_user", "describe_filter", "read_access", "record_access",
           "verify_access"]


def access_path(archive: Archive) -> Path:
    return archive.root / "access" / "access.jsonl"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def describe_filter(flt: Any) -> dict[str, Any]:
    """A filter (dataclass or mapping) as JSON-ready data, empty fields left out."""
    data = dataclasses.asdict(flt) if dataclasses.is_dataclass(flt) else dict(flt or {})
    out = {}
    for key, value in data.items():
        if value in (None, (), [], {}, "") or key == "extra":
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def record_access(archive: Archive, *, who: str, action: str,
                  what: Mapping[str, Any] | None = None, rows: int | None = None) -> None:
    """Append one read to the access log (durably, before the answer is shown)."""
    from .evidence import append_signature

    path = access_path(archive)
    try:
        ensure_dir(path.parent)
        with open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            seq, prev = chain_head(fh)
            entry: dict[str, Any] = {
                "seq": seq + 1, "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "who": who, "action": action, "what": dict(what or {}), "rows": rows,
                "prev": prev}
            entry["hash"] = entry_hash(entry)
            fh.seek(0, os.SEEK_END)
            fh.write(orjson.dumps(entry, default=str) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            if archive.signer is not None:
                append_signature(path.parent, archive.signer, entry["seq"], entry["hash"],
                                 name="access.sig.jsonl")
        os.chmod(path, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write the access log {path}: {exc.strerror or exc}",
                         hint="reads are recorded before they are answered; fix the "
                         "permissions or free some space") from None


def read_access(archive: Archive) -> list[dict[str, Any]]:
    path = access_path(archive)
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def verify_access(archive: Archive) -> list[Problem]:
    """The access log's chain: edited, removed, inserted or reordered entries."""
    problems: list[Problem] = []
    entries = read_chain(access_path(archive), "access log", problems, kind="access-log",
                         skip_blank=False)
    check_chain(entries, "access log", problems, broken="access-log", edited="access-log")
    return problems
