"""Sinks on this machine: JSON lines on standard output or appended to a file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..detect.alert import Alert
from .base import Undelivered, dumps

__all__ = ["FileSink", "StdoutSink"]


class StdoutSink:
    """One JSON object per line on standard output (or on `stream`, for tests and embedding).

    >>> import io
    >>> sink = StdoutSink(Alert.to_dict, stream=io.StringIO())
    >>> sink.label
    'stdout'
    """

    def __init__(self, render: Callable[[Alert], dict[str, Any]], *,
                 stream: IO[str] | None = None, label: str = "stdout") -> None:
        self._render = render
        self._stream = stream
        self.label = label

    def deliver(self, alert: Alert) -> None:
        # Resolved per call so a redirected sys.stdout (pytest, the CLI) is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(dumps(self._render(alert)).decode() + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise Undelivered(f"cannot write to standard output: {exc}") from None

    def close(self) -> None:
        """Standard output belongs to the process, so it is flushed, never closed."""
        stream = self._stream if self._stream is not None else sys.stdout
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


class FileSink:
    """JSON lines appended to `path`, created with mode 0600 (alerts name users and objects).

    The file is opened once, in append mode, so an external rotation tool should copy and
    truncate it, or the process be restarted. An existing file keeps its mode.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sink = FileSink(Path(tmp) / "alerts.jsonl", Alert.to_dict)
    ...     sink.close()
    """

    def __init__(self, path: Path, render: Callable[[Alert], dict[str, Any]], *,
                 label: str | None = None) -> None:
        self.path = path
        self._render = render
        self.label = label or f"file {path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")

    def deliver(self, alert: Alert) -> None:
        try:
            self._file.write(dumps(self._render(alert)) + b"\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            raise Undelivered(f"cannot append to {self.path}: {exc}") from None

    def close(self) -> None:
        self._file.close()
