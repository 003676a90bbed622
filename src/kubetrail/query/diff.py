"""Field-level differences between two versions of a Kubernetes object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Change", "object_changes"]

#: Fields that change on every write and say nothing about what a person changed.
_NOISE = frozenset({
    "metadata.resourceVersion", "metadata.managedFields", "metadata.generation",
    "metadata.creationTimestamp", "metadata.uid", "status",
    "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
})


@dataclass(frozen=True)
class Change:
    """One field that was added, removed or changed."""

    path: str
    op: str  # added | removed | changed
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        if self.op == "added":
            return f"+ {self.path}: {_short(self.new)}"
        if self.op == "removed":
            return f"- {self.path}: {_short(self.old)}"
        return f"~ {self.path}: {_short(self.old)} → {_short(self.new)}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if prefix in _NOISE:
        return
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            label = item.get("name") if isinstance(item.get("name"), str) else str(i)
            _flatten(item, f"{prefix}[{label}]", out)
    else:
        out[prefix] = value


def object_changes(before: Any, after: Any) -> list[Change]:
    """Changed leaf fields, keyed by dotted paths (list items of named objects by name)."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    if before is not None:
        _flatten(before, "", old)
    _flatten(after, "", new)
    changes = [Change(p, "removed", old[p]) for p in old.keys() - new.keys()]
    changes += [Change(p, "added", None, new[p]) for p in new.keys() - old.keys()]
    changes += [Change(p, "changed", old[p], new[p]) for p in old.keys() & new.keys()
                if old[p] != new[p]]
    return sorted(changes, key=lambda c: c.path)
