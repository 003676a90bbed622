"""Reading inputs into batches of event texts without storing them (detect, policy replay).

Ingestion has its own loop (checkpoints, resumption); commands that only look at events
share this one: every input shape, rotated sets and stdin, with each unusable record
reported (file, line, reason) instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from ..errors import InputError
from .compression import open_stream, stream_error
from .decode import Decoded, Decoder
from .normalize import RawBatch
from .reader import FastLines, iter_items

__all__ = ["Rejects", "read_batches"]


@dataclass
class Rejects:
    """What could not be read: (file, line, reason) of each record, and unreadable files."""

    records: list[tuple[str, int, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def read_batches(paths: Sequence[str], *, cluster: str = "default", fmt: str = "auto",
                 batch_events: int = 50_000, rejects: Rejects | None = None,
                 keep_going: bool = False) -> Iterator[pa.Table]:
    """Tables of RAW_SCHEMA (event texts and where they came from), `batch_events` at a time.

    With `keep_going`, an input that cannot be read at all is noted in `rejects.files` and
    the others are still read; otherwise its InputError is raised."""
    from ..sources.files import expand_paths

    rejects = rejects if rejects is not None else Rejects()
    raw = RawBatch()
    for inp in expand_paths(list(paths)):
        decoder = Decoder(cluster=cluster, fmt=fmt)
        try:
            handle = inp.open()
        except InputError as exc:
            if not keep_going:
                raise
            rejects.files.append(exc.message)
            continue
        try:
            stream = open_stream(handle, inp.label)
            last_line = 0
            for entry in iter_items(stream, inp.label, decoder):
                if isinstance(entry, FastLines):
                    raw.add_fast(entry, cluster, inp.label)
                    last_line = entry.end_line
                else:
                    pos, item = entry
                    last_line = pos.line
                    if isinstance(item, Decoded):
                        raw.add(item, pos.line, item.cluster or cluster, inp.label)
                    elif not item.skipped and not item.pending:
                        rejects.records.append((inp.label, pos.line, item.reason))
                if len(raw) >= batch_events:
                    yield raw.take()
            damage = stream_error(stream)
            if damage:
                rejects.records.append((inp.label, last_line, damage))
        except InputError as exc:
            if not keep_going:
                raise
            rejects.files.append(exc.message)
        except OSError as exc:
            error = InputError(f"read error: {exc.strerror or exc}", path=inp.label)
            if not keep_going:
                raise error from exc
            rejects.files.append(error.message)
        finally:
            if inp.path is not None:
                handle.close()
    if len(raw):
        yield raw.take()
