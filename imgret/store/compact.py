"""Compaction: rewrite the embedding chunks without the rows of removed images.

Removing an image only deletes its item; its embedding stays in its chunk. `compact` copies
the embeddings of the current items into new chunks (under new rows: rows are never reused, so
an older index never names the wrong image), lists them and moves the items to them in one
transaction, rebuilds the index, and deletes the old chunk files once no reader has the
collection open. A kill at any point leaves the old chunks or the new ones listed, never a mix;
uncommitted new chunks are deleted by the next write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.crashpoints import crash_point
from .chunks import chunk_seq, write_chunk
from .collection import Collection
from .metadata import ChunkRecord, MetaStore

__all__ = ["CompactReport", "compact", "maybe_compact", "dead_rows", "AUTO_COMPACT_FRACTION"]

AUTO_COMPACT_FRACTION = 0.25  # compact automatically when more than this share of rows is dead
ROWS_PER_CHUNK = 16384  # of the rewritten chunks (64 MB at 1024 dims)
Log = Callable[[str], None]


@dataclass
class CompactReport:
    rows_before: int  # rows in the chunk files, removed images' included
    rows_after: int  # = the images in the collection
    chunks_before: int
    chunks_after: int
    bytes_freed: int  # by the chunk files deleted now (old ones a reader holds go later)
    index: str = "current"


def dead_rows(coll: Collection) -> tuple[int, int]:
    """(rows in the chunk files, rows of current items)."""
    return sum(c.n_rows for c in coll.store.chunks()), coll.store.count()


def compact(coll: Collection, *, log: Log | None = None) -> CompactReport:
    """Rewrite the chunks of `coll` without dead rows (nothing to do when there are none)."""
    with coll.writing():
        manifest = coll.store.chunks()
        rows = coll.store.rows()
        total = sum(c.n_rows for c in manifest)
        report = CompactReport(total, len(rows), len(manifest), len(manifest), 0)
        if total == len(rows):
            return report
        folder = coll.path / "embeddings"
        sizes = {p.name: p.stat().st_size for p in folder.glob("chunk-*")}
        first = coll.store.next_row()
        seq = 1 + max([0, *(chunk_seq(name) or 0 for name in sizes)])
        written: list[ChunkRecord] = []
        for s in range(0, len(rows), ROWS_PER_CHUNK):
            part = rows[s : s + ROWS_PER_CHUNK]
            written.append(write_chunk(folder, seq + len(written), first + s, coll.fetch(part)))
        crash_point("compact-written")
        moves = zip(rows.tolist(), (first + np.arange(len(rows))).tolist(), strict=True)
        with coll.store.transaction() as db:
            MetaStore.delete_chunks(db, [c.name for c in manifest])
            for chunk in written:
                MetaStore.put_chunk(db, chunk)
            MetaStore.move_rows(db, moves)
        crash_point("compact-committed")
        coll.invalidate()
        if log:
            log(f"compacted {total:,} rows into {len(rows):,} ({len(written)} chunk file(s))")
        report.index = coll.refresh_index(rebuild=True, log=log) if len(rows) else "current"
        removed = set(coll.remove_leftovers())
        report.bytes_freed = sum(size for name, size in sizes.items() if name in removed)
        report.chunks_after = len(written)
        return report


def maybe_compact(coll: Collection, *, log: Log | None = None) -> CompactReport | None:
    """Compact when more than AUTO_COMPACT_FRACTION of the rows are dead (else None)."""
    with coll.writing():
        total, live = dead_rows(coll)
        if total == 0 or total - live <= AUTO_COMPACT_FRACTION * total:
            return None
        return compact(coll, log=log)
