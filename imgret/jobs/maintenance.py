"""Looking after a collection: `imgret check [--repair]`, `imgret compact`, `imgret failures`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..store.check import CheckReport, check_collection
from ..store.compact import CompactReport
from ..store.compact import compact as compact_chunks
from ..store.lock import collection_lock
from ..store.opening import open_collection, upgrade_collection

__all__ = ["check", "compact", "failures", "CheckReport", "CompactReport"]

Log = Callable[[str], None]


def check(collection_dir: str | Path, *, repair: bool = False, log: Log = print) -> CheckReport:
    """Verify every part of a collection; with `repair`, rebuild what can be rebuilt (the index
    from the chunks, the manifest from the chunk files; items whose embeddings are lost are
    dropped, to be embedded again by the next `imgret index`). Image files are never touched."""
    return check_collection(collection_dir, repair=repair, log=log)


def compact(collection_dir: str | Path, *, log: Log = print) -> CompactReport:
    """Rewrite the collection's chunks without the rows of removed images; rebuild the index."""
    with collection_lock(Path(collection_dir)):
        with upgrade_collection(collection_dir) as coll:
            coll.remove_leftovers()
            return compact_chunks(coll, log=log)


def failures(collection_dir: str | Path) -> list[tuple[str, str]]:
    """(key, reason) of every file the collection skipped because it could not be decoded."""
    with open_collection(collection_dir) as coll:
        return coll.skipped
