"""The errors kubetrail raises, all rooted at :class:`KubetrailError`.

    KubetrailError
    ├── ConfigError       bad kubetrail.yaml, environment variable or flag
    ├── InputError        an input cannot be read at all (missing, unreadable, unknown format)
    │   └── LegacyFormatError  the API server's legacy text format
    ├── StoreError        the archive cannot be read or written
    ├── QueryError        a filter or SQL query is invalid
    └── PolicyError       an audit Policy the API server would refuse to load

A record that is not a usable event is never raised: it is quarantined with its reason
(see :class:`kubetrail.events.decode.Rejected`). Every message says what went wrong and what
to do about it; the CLI prints it without a traceback and exits with
:attr:`KubetrailError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "KubetrailError",
    "LegacyFormatError",
    "PolicyError",
    "QueryError",
    "StoreError",
]


class KubetrailError(Exception):
    """Root of every error kubetrail raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(KubetrailError):
    """The configuration (file, environment or flags) is invalid."""


class InputError(KubetrailError):
    """An input as a whole cannot be read."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


class LegacyFormatError(InputError):
    """The input is kube-apiserver's `--audit-log-format=legacy` text, which loses fields."""


class StoreError(KubetrailError):
    """The archive could not be read or written."""


class QueryError(KubetrailError):
    """A query, filter or duration is invalid."""


class PolicyError(KubetrailError):
    """An audit Policy kube-apiserver would refuse: every problem, each with its field path.

    `problems` holds ``(field path, reason)`` pairs such as
    ``("rules[2].nonResourceURLs[0]", 'Invalid value: "logs": ...')``; the path is ``""``
    for problems of the file as a whole (not YAML, empty, another apiVersion)."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None,
                 hint: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{path}: {reason}" if path else reason for path, reason in self.problems]
        head = f"{source}: " if source else ""
        if len(lines) == 1:
            message = f"{head}invalid audit policy: {lines[0]}"
        else:
            message = f"{head}invalid audit policy ({len(lines)} problems):" + "".join(
                f"\n  - {line}" for line in lines)
        super().__init__(message, hint=hint)
