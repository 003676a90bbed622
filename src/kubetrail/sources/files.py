"""Expanding paths into input files, in the order their events were written.

kube-apiserver rotates ``audit.log`` into ``audit-<UTC 2006-01-02T15-04-05.000>.log`` (plus
``.gz`` when compressed), so a rotated set is read backups-oldest-first, then the live file.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError
from ..events.compression import is_compressed

__all__ = ["InputFile", "expand_paths", "rotation_key"]

_ROTATED = re.compile(
    r"^(?P<base>.+?)-(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d{3})?)"
    r"(?P<ext>\.[^.]+)?(?P<gz>\.gz)?$")
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

    def fingerprint(self) -> str | None:
        """Identity of the file's content, robust to renames (rotation) and appends."""
        if self.path is None:
            return None
        head = self._head(_FINGERPRINT_BYTES)
        return hashlib.sha256(head).hexdigest()[:32] + f":{len(head)}"

    def compressed(self) -> bool:
        """Whether the file is compressed (its offsets then count decompressed bytes)."""
        return self.path is not None and is_compressed(self._head(4))

    def size(self) -> int:
        if self.path is None:
            return 0
        try:
            return self.path.stat().st_size
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=self.label) from None

    def _head(self, n: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:  # type: ignore[arg-type]
                return fh.read(n)
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=self.label,
                             hint="check the file's permissions") from None


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
