"""Expanding paths into input files, in the order their events were written.

kube-apiserver rotates ``audit.log`` into ``audit-<UTC 2006-01-02T15-04-05.000>.log`` (plus
``.gz`` when compressed), so a rotated set is read backups-oldest-first, then the live file.
:func:`rotated_set` finds the set of one live file (logrotate's names too) for following it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError
from ..events.compression import is_compressed

__all__ = ["InputFile", "expand_paths", "rotated_set", "rotation_key"]

_ROTATED = re.compile(
    r"^(?P<base>.+?)-(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d{3})?)"
    r"(?P<ext>\.[^.]+)?(?P<gz>\.gz)?$")
_LOGROTATE = re.compile(r"^(?:\.\d+|-\d{8,})(?:\.gz)?$")  # audit.log.1, audit.log-20261102.gz
_FINGERPRINT_BYTES = 1024


@dataclass(frozen=True)
class InputFile:
    """One input: a file path, or stdin when `path` is None."""

    path: Path | None
    label: str

    def open(self) -> IO[bytes]:
        if self.path is None:
            return sys.stdin.buffer
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", path=self.label,
                             hint="check the path and its permissions") from None

    def identify(self, handle: IO[bytes]) -> tuple[str | None, int, bool]:
        """(fingerprint, size, compressed) of this input as open in `handle`.

        The fingerprint is a hash of the first bytes: the content's identity, robust to
        renames (rotation) and appends. All three come from the open file, so a path that
        is renamed and replaced meanwhile cannot mix two files. A compressed file's offsets
        count decompressed bytes. Standard input has no fingerprint."""
        if self.path is None:
            return None, 0, False
        try:
            head = os.pread(handle.fileno(), _FINGERPRINT_BYTES, 0)
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=self.label,
                             hint="check the file's permissions") from None
        fingerprint = hashlib.sha256(head).hexdigest()[:32] + f":{len(head)}"
        return fingerprint, size, is_compressed(head[:4])


def rotation_key(path: Path) -> tuple[str, int, str, str]:
    """Sort key putting a rotated set in write order: backups by timestamp, live file last."""
    m = _ROTATED.match(path.name)
    if m:
        live = m.group("base") + (m.group("ext") or "")
        return (str(path.parent / live), 0, m.group("stamp"), path.name)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return (str(path.parent / name), 1, "", path.name)


def expand_paths(paths: list[str]) -> list[InputFile]:
    """Every input file, with directories expanded and rotated sets put in write order."""
    result: list[InputFile] = []
    if not paths:
        raise InputError("no input given", hint="name one or more files or directories, or - for stdin")
    for raw in paths:
        if raw == "-":
            result.append(InputFile(None, "<stdin>"))
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
            if not files:
                raise InputError("directory holds no files", path=raw)
            result.extend(InputFile(p, str(p)) for p in sorted(files, key=rotation_key))
        elif path.is_file():
            result.append(InputFile(path, raw))
        elif path.exists():
            raise InputError("not a regular file", path=raw)
        else:
            raise InputError("no such file or directory", path=raw,
                             hint="check the path; use - to read standard input")
    # Files named together that form a rotated set are read in write order too.
    files = [f for f in result if f.path is not None]
    if len(files) > 1 and len(files) == len(result):
        result = sorted(result, key=lambda f: rotation_key(f.path))  # type: ignore[arg-type]
    return result


def rotated_set(live: Path) -> list[Path]:
    """The backups of the live file `live`, oldest first, then `live` itself if it exists.

    Backups are named the API server's way (``audit-2026-11-02T10-00-00.000.log``, ``.gz``)
    or logrotate's (``audit.log.1``, ``audit.log-20261102``, ``.gz``: copytruncate), and
    are put in the order they were last written. A file that vanishes meanwhile is left out.
    """
    try:
        names = os.listdir(live.parent)
    except OSError as exc:
        raise InputError(f"cannot list the directory: {exc.strerror}", path=str(live.parent),
                         hint="check that it exists and that kubetrail may read it") from None
    found: list[tuple[int, str, Path]] = []
    for name in names:
        m = _ROTATED.match(name)
        if not (name == live.name or (m and m.group("base") + (m.group("ext") or "") == live.name)
                or (name.startswith(live.name) and _LOGROTATE.match(name[len(live.name):]))):
            continue
        path = live.parent / name
        try:
            st = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime_ns if name != live.name else 2**63, name, path))
    return [path for _, _, path in sorted(found)]
