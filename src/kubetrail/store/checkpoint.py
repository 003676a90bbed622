"""Where each input was read up to, so an interrupted ingest resumes with no loss.

A checkpoint is saved only after the rows before it are durable in segments; on restart
reading continues from there, and anything read twice around the cut is removed by the
archive's deduplication. Inputs are identified by a fingerprint of their first bytes (plus
cluster and format), so a rotated file that was renamed is still recognised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from .archive import write_atomic

__all__ = ["Checkpoint", "CheckpointStore"]


@dataclass
class Checkpoint:
    """Progress through one input: bytes of decompressed content handled, and whether done."""

    label: str
    offset: int = 0
    size: int = 0
    done: bool = False
    updated: str = ""
    line: int = 0  # lines before `offset`, so resumed line numbers stay true


class CheckpointStore:
    """The checkpoints of one data dir, in ``state/checkpoints.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "checkpoints.json"
        self._data: dict[str, Checkpoint] = {}
        if self.path.exists():
            try:
                raw = orjson.loads(self.path.read_bytes())
                self._data = {k: Checkpoint(**v) for k, v in raw.items()}
            except (orjson.JSONDecodeError, TypeError):
                self._data = {}  # unreadable state only costs a re-read; dedupe keeps it exact

    @staticmethod
    def key(fingerprint: str, cluster: str, fmt: str) -> str:
        return f"{fingerprint}|{cluster}|{fmt}"

    def get(self, key: str) -> Checkpoint | None:
        return self._data.get(key)

    def save(self, key: str, checkpoint: Checkpoint) -> None:
        checkpoint.updated = datetime.now(UTC).isoformat(timespec="seconds")
        self._data[key] = checkpoint
        body = {k: asdict(v) for k, v in self._data.items()}
        write_atomic(self.path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
