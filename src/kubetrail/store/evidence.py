"""Tamper evidence: the manifest's hash chain, signed heads, and their verification.

Every sealed segment is recorded in `manifest.jsonl` with its SHA-256, row count and time
range; each entry carries the hash of the one before (`prev`) and its own (`hash`, over the
entry's other fields), so an entry cannot be changed, removed, inserted or moved without
breaking the chain from there on. Deletions by retention are entries too (`op: delete`),
so a segment that retention removed is not reported missing.

A chain alone can be rebuilt by whoever rewrites the archive. So the head (sequence number
and hash) is signed with an Ed25519 key after every commit (`manifest.sig.jsonl`), a key
that should live outside the data dir; and `kubetrail verify --head` prints the head for
anchoring elsewhere (a ticket, a git commit, a transparency log). Verification then says
exactly what is wrong: a modified, missing or inserted segment, a rewritten, reordered or
truncated manifest, or a signature that does not hold.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ConfigError, StoreError

__all__ = ["SIGNATURES", "Problem", "Signer", "Verification", "check_chain", "entry_hash",
           "generate_keys", "key_id", "load_public_key", "read_chain", "verify_archive"]

SIGNATURES = "manifest.sig.jsonl"
_CONTEXT = b"kubetrail manifest head v1\n"


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash a manifest entry carries: SHA-256 of its other fields, keys sorted."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _message(seq: int, head: str, signed: str) -> bytes:
    return _CONTEXT + f"{seq}\n{head}\n{signed}".encode()


# -- keys ------------------------------------------------------------------------------------


def generate_keys(private_path: Path, *, force: bool = False) -> tuple[Path, str]:
    """A new signing key at `private_path` (0600) and its public key beside it (`.pub`);
    returns (public key path, key id)."""
    public_path = private_path.with_suffix(".pub")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise ConfigError(f"{path} exists", hint="use --force to replace it (archives "
                              "signed with the old key then verify only with the old public key)")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path, key_id(key.public_key())


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the public key {path}: {exc}",
                          hint="give the .pub file `kubetrail keys generate` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key",
                          hint="give the .pub file `kubetrail keys generate` wrote")
    return key


@dataclass
class Signer:
    """Signs manifest heads with an Ed25519 private key."""

    key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the signing key {path}: {exc}",
                              hint="create one with `kubetrail keys generate`, or unset "
                              "signing_key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 private key",
                              hint="create one with `kubetrail keys generate`")
        return cls(key, key_id(key.public_key()))

    def sign(self, seq: int, head: str) -> dict[str, Any]:
        signed = datetime.now(UTC).isoformat(timespec="seconds")
        signature = self.key.sign(_message(seq, head, signed))
        return {"seq": seq, "hash": head, "signed": signed, "key_id": self.key_id,
                "signature": signature.hex()}


# -- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing found wrong; `kind` names the class of tampering."""

    kind: str  # modified | missing | inserted | chain | truncated | rewritten | signature | damaged
    message: str


@dataclass
class Verification:
    problems: list[Problem] = field(default_factory=list)
    segments: int = 0  # live segments checked
    rows: int = 0
    deleted: int = 0  # segments removed by retention, as recorded
    head_seq: int = 0
    head_hash: str = ""
    signed_seq: int | None = None  # the latest head whose signature holds
    signed_at: str | None = None
    key_id: str | None = None
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "segments": self.segments, "rows": self.rows,
                "deleted": self.deleted, "bytes": self.bytes, "head": {"seq": self.head_seq,
                                                                       "hash": self.head_hash},
                "signed": {"seq": self.signed_seq, "at": self.signed_at, "key_id": self.key_id},
                "problems": [{"kind": p.kind, "message": p.message} for p in self.problems]}


def read_chain(path: Path, what: str, problems: list[Problem], *, kind: str = "damaged",
               skip_blank: bool = True) -> list[dict[str, Any]]:
    """The entries of a JSON-lines log; a line that is not an entry is a problem of `kind`."""
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if skip_blank and not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            problems.append(Problem(kind, f"{what} line {number} is not JSON: the file was "
                                    "edited or damaged"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(kind, f"{what} line {number} is not an entry"))
            continue
        out.append(value)
    return out


def check_chain(entries: list[dict[str, Any]], what: str, problems: list[Problem], *,
                broken: str = "chain", edited: str = "rewritten") -> list[bool]:
    """The hash chain of a log's entries: numbered in order, each linking to the one before
    and matching its own hash. Returns, per entry, whether it was edited."""
    prev, expected = "", 1
    flags = []
    for entry in entries:
        seq = entry.get("seq")
        if seq != expected:
            problems.append(Problem(broken, f"{what} entry {seq} follows entry {expected - 1}: "
                                    "entries were removed, inserted or reordered"))
        if entry.get("prev") != prev:
            problems.append(Problem(broken, f"{what} entry {seq} does not link to the entry "
                                    "before it: entries were removed, inserted or reordered"))
        changed = entry_hash(entry) != entry.get("hash")
        if changed:
            named = f" ({entry['segment']})" if "segment" in entry else ""
            problems.append(Problem(edited, f"{what} entry {seq}{named} does not match its "
                                    "hash: it was edited"))
        flags.append(changed)
        prev = str(entry.get("hash", ""))
        expected = (seq if isinstance(seq, int) else expected) + 1
    return flags


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_archive(root: Path, segment_files: list[Path], public_key: Ed25519PublicKey | None
                   ) -> Verification:
    """Check every segment against the manifest, the manifest's chain, and its signatures."""
    result = Verification()
    problems = result.problems
    entries = read_chain(root / "manifest.jsonl", "manifest", problems)
    live: dict[str, dict[str, Any]] = {}
    hashes: dict[int, str] = {}
    on_disk_edited: set[str] = set()
    for entry, edited in zip(entries, check_chain(entries, "manifest", problems), strict=True):
        seq = entry.get("seq")
        if isinstance(seq, int):
            hashes[seq] = str(entry.get("hash", ""))
        segment = str(entry.get("segment", ""))
        if entry.get("op") == "delete":
            if live.pop(segment, None) is not None:
                result.deleted += 1
            else:
                problems.append(Problem("chain", f"manifest entry {seq} deletes {segment}, "
                                        "which no earlier entry added"))
        elif not edited:  # an edited entry says nothing trustworthy about its segment
            live[segment] = entry
        else:
            on_disk_edited.add(segment)
    if entries:
        result.head_seq = int(entries[-1].get("seq", 0) or 0)
        result.head_hash = str(entries[-1].get("hash", ""))
    on_disk = {str(p.relative_to(root)): p for p in segment_files
                if str(p.relative_to(root)) not in on_disk_edited}
    for segment, entry in live.items():
        path = on_disk.pop(segment, None)
        if path is None:
            problems.append(Problem("missing", f"segment {segment} (manifest entry "
                                    f"{entry.get('seq')}, {entry.get('rows')} rows) is missing: "
                                    "deleted outside retention"))
            continue
        result.segments += 1
        result.bytes += path.stat().st_size
        if _file_sha256(path) != entry.get("sha256"):
            problems.append(Problem("modified", f"segment {segment} was modified: its SHA-256 "
                                    f"differs from manifest entry {entry.get('seq')}"))
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # a file that matches its hash but is not Parquet
            rows = -1
        if rows != entry.get("rows"):
            problems.append(Problem("modified", f"segment {segment} holds {rows} rows, its "
                                    f"manifest entry {entry.get('rows')}"))
        result.rows += max(rows, 0)
    for segment in sorted(on_disk):
        problems.append(Problem("inserted", f"segment {segment} is not in the manifest: added "
                                "outside kubetrail, or its manifest entries were removed"))
    _check_signatures(root, public_key, hashes, result)
    return result


def _check_signatures(root: Path, public_key: Ed25519PublicKey | None, hashes: dict[int, str],
                      result: Verification) -> None:
    problems = result.problems
    signatures = read_chain(root / SIGNATURES, "signature file", problems)
    if not signatures:
        return
    if public_key is None:
        problems.append(Problem("signature", "the manifest is signed but no public key was given "
                                "to check it: pass --public-key"))
        return
    kid = key_id(public_key)
    latest: dict[str, Any] | None = None
    for sig in signatures:
        seq, head = sig.get("seq"), sig.get("hash")
        try:
            public_key.verify(bytes.fromhex(str(sig.get("signature", ""))),
                              _message(int(seq), str(head), str(sig.get("signed"))))  # type: ignore[arg-type]
        except (InvalidSignature, ValueError, TypeError):
            problems.append(Problem("signature", f"the signature of manifest head {seq} does not "
                                    f"hold under key {kid}: forged, edited, or made with another "
                                    "key"))
            continue
        if not isinstance(seq, int) or seq not in hashes:
            problems.append(Problem("truncated", f"manifest head {seq} was signed at "
                                    f"{sig.get('signed')} but the manifest ends at entry "
                                    f"{result.head_seq}: entries were removed from its end"))
        elif hashes[seq] != head:
            problems.append(Problem("rewritten", f"manifest entry {seq} is not the one signed at "
                                    f"{sig.get('signed')}: the manifest was rewritten"))
        if latest is None or (isinstance(seq, int) and seq >= int(latest["seq"])):
            latest = sig
    if latest is not None:
        result.signed_seq, result.signed_at = int(latest["seq"]), str(latest["signed"])
        result.key_id = kid


def append_signature(root: Path, signer: Signer, seq: int, head: str, *,
                     name: str = SIGNATURES) -> None:
    """Sign a chain's head and append the signature durably (to `root/name`)."""
    line = orjson.dumps(signer.sign(seq, head)) + b"\n"
    path = root / name
    try:
        with open(path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="free some space or fix the permissions") from None
