"""The metadata of a collection in SQLite: items, the embedding-chunk manifest, the clustering.

One transaction per change, so a process killed at any point leaves the database as it was
before the change or after it; every transaction also increases the collection's
`generation`, a counter readers compare to see that it changed. Tables (see
docs/collection-format.md)::

    items       row (embedding row, never reused), key, size, mtime_ns, sha256, label, cluster
    chunks      the manifest of embedding files: name, first_row, n_rows, sha256 of the data
    failures    files that could not be decoded, with the size and mtime they had then
    clustering  the KMeans model (one row): k, inertia, elbow (JSON), centroids (float32 blob)
    state       named counters: generation

Keys and labels are file names, which may be any bytes: a name that is valid UTF-8 is stored as
TEXT, any other as a BLOB of its bytes; Python sees both as str (imgret.core.paths).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.paths import display, from_name_bytes, name_bytes
from .database import SCHEMA_VERSION, connect, translated, upgrade_schema

__all__ = [
    "MetaStore", "Item", "ChunkRecord", "StoredClustering", "Snapshot", "SCHEMA_VERSION",
    "to_db", "from_db",
]  # fmt: skip

_ITEM_COLS = "key, row, size, mtime_ns, sha256, label, cluster"


def to_db(name: str | None) -> str | bytes | None:
    """A key or label as stored: TEXT when it is valid UTF-8, else a BLOB of its bytes."""
    if name is None:
        return None
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name_bytes(name)


def from_db(value: str | bytes | None) -> str | None:
    return from_name_bytes(value) if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Item:
    """One embedded image: its embedding row and what the file was like when embedded."""

    key: str  # absolute file path, or a builtin:// key
    row: int  # row of its embedding in the chunk store
    size: int | None  # bytes (None for builtin images)
    mtime_ns: int | None
    sha256: str | None  # content hash (None when not computed)
    label: str | None
    cluster: int | None = None


def _item(r: tuple[Any, ...]) -> Item:
    key, row, size, mtime, sha, label, cluster = r
    return Item(from_db(key) or "", row, size, mtime, sha, from_db(label), cluster)


@dataclass(frozen=True)
class ChunkRecord:
    name: str  # file name under embeddings/
    first_row: int
    n_rows: int
    sha256: str | None = None  # of the (n_rows, dim) float32 data (None: not recorded)


@dataclass(frozen=True)
class StoredClustering:
    k: int
    inertia: float
    elbow: dict[str, Any] | None
    centroids: np.ndarray  # (k, dim) float32


@dataclass(frozen=True)
class Snapshot:
    """What a reader sees, read in one transaction: never half of a change."""

    generation: int
    rows: np.ndarray  # (n,) int64, increasing
    keys: list[str]
    labels: list[str | None]
    clusters: list[int | None]
    chunks: list[ChunkRecord]
    clustering: StoredClustering | None


class MetaStore:
    """meta.sqlite of a collection. Readers and one writer may use it at the same time.

    `create` makes a new database (`path` must not hold one); otherwise it must exist.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        self.db, self.version = connect(self.path, create=create)

    def close(self) -> None:
        self.db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with translated(self.path):
            return self.db.execute(sql, args).fetchall()

    def upgrade(self) -> None:
        """Bring an older schema up to date (the caller holds the write lock)."""
        self.version = upgrade_schema(self.db, self.path, self.version)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together, or not at all; the generation goes up."""
        with translated(self.path):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                if self.version >= 2:
                    self.db.execute(
                        "INSERT INTO state (name, value) VALUES ('generation', 1) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + 1"
                    )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def generation(self) -> int:
        """A number that increases with every committed change (0 for an old schema)."""
        if self.version < 2:
            return 0
        r = self._all("SELECT value FROM state WHERE name = 'generation'")
        return int(r[0][0]) if r else 0

    def snapshot(self) -> Snapshot:
        """Items, manifest, clustering and generation as of one moment."""
        own = not self.db.in_transaction  # else the caller's transaction is the moment
        with translated(self.path):
            if own:
                self.db.execute("BEGIN")
            try:
                generation = self.generation()
                cur = self.db.execute("SELECT row, key, label, cluster FROM items ORDER BY row")
                items = cur.fetchall()
                chunks = self.chunks()
                clustering = self.clustering()
            finally:
                if own:
                    self.db.execute("COMMIT")
        return Snapshot(
            generation,
            np.asarray([r[0] for r in items], dtype=np.int64),
            [from_db(r[1]) or "" for r in items],
            [from_db(r[2]) for r in items],
            [r[3] for r in items],
            chunks,
            clustering,
        )

    # -- items

    def count(self) -> int:
        return int(self._all("SELECT COUNT(*) FROM items")[0][0])

    def rows(self) -> np.ndarray:
        """(n,) int64 embedding rows of every item, sorted."""
        return np.asarray([r for (r,) in self._all("SELECT row FROM items ORDER BY row")],
                          dtype=np.int64)  # fmt: skip

    def items_under(self, prefix: str | None = None) -> dict[str, Item]:
        """Every item (or those whose key starts with `prefix`) by key."""
        sql = f"SELECT {_ITEM_COLS} FROM items"
        if prefix is None:
            return {it.key: it for it in map(_item, self._all(sql))}
        # Non-UTF-8 keys are BLOBs, compared in Python.
        rows = self._all(sql + " WHERE substr(key, 1, ?) = ? OR typeof(key) = 'blob'",
                         (len(prefix), prefix))  # fmt: skip
        return {it.key: it for it in map(_item, rows) if it.key.startswith(prefix)}

    def get(self, key: str) -> Item | None:
        r = self._all(f"SELECT {_ITEM_COLS} FROM items WHERE key = ?", (to_db(key),))
        return _item(r[0]) if r else None

    @staticmethod
    def put_items(db: sqlite3.Connection, items: Iterable[Item]) -> None:
        """Insert or replace items (inside a transaction); a key's old row is dropped."""
        items = list(items)
        db.executemany(
            "INSERT OR REPLACE INTO items (key, row, size, mtime_ns, sha256, label, cluster) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(to_db(i.key), i.row, i.size, i.mtime_ns, i.sha256, to_db(i.label), i.cluster)
             for i in items],
        )  # fmt: skip
        db.executemany("DELETE FROM failures WHERE key = ?", [(to_db(i.key),) for i in items])

    @staticmethod
    def touch_items(db: sqlite3.Connection, stats: Iterable[tuple[str, int, int]]) -> None:
        """Record a new (size, mtime_ns) for unchanged content: (key, size, mtime_ns) tuples."""
        db.executemany(
            "UPDATE items SET size = ?, mtime_ns = ? WHERE key = ?",
            [(size, mtime, to_db(key)) for key, size, mtime in stats],
        )

    @staticmethod
    def delete_keys(db: sqlite3.Connection, keys: Iterable[str]) -> None:
        pairs = [(to_db(k),) for k in keys]
        db.executemany("DELETE FROM items WHERE key = ?", pairs)
        db.executemany("DELETE FROM failures WHERE key = ?", pairs)

    @staticmethod
    def move_rows(db: sqlite3.Connection, moves: Iterable[tuple[int, int]]) -> None:
        """Give items new embedding rows: (old row, new row) pairs (compaction)."""
        db.executemany("UPDATE items SET row = ? WHERE row = ?", [(n, o) for o, n in moves])

    @staticmethod
    def delete_rows(db: sqlite3.Connection, rows: Iterable[int]) -> None:
        db.executemany("DELETE FROM items WHERE row = ?", [(int(r),) for r in rows])

    # -- failures

    def failures(self) -> dict[str, tuple[int | None, int | None, str]]:
        rows = self._all("SELECT key, size, mtime_ns, reason FROM failures")
        return {from_db(k) or "": (s, m, r) for k, s, m, r in rows}

    @staticmethod
    def put_failures(
        db: sqlite3.Connection, failures: Iterable[tuple[str, int | None, int | None, str]]
    ) -> None:
        """(key, size, mtime_ns, reason) of files that could not be decoded."""
        rows = [(to_db(k), s, m, display(r)) for k, s, m, r in failures]
        db.executemany(
            "INSERT OR REPLACE INTO failures (key, size, mtime_ns, reason) VALUES (?, ?, ?, ?)",
            rows,
        )
        db.executemany("DELETE FROM items WHERE key = ?", [(f[0],) for f in rows])

    # -- chunk manifest

    def chunks(self) -> list[ChunkRecord]:
        sha = "sha256" if self.version >= 2 else "NULL"
        rows = self._all(f"SELECT name, first_row, n_rows, {sha} FROM chunks ORDER BY first_row")
        return [ChunkRecord(*r) for r in rows]

    def next_row(self) -> int:
        """The first embedding row never used (rows are never reused, even after compaction)."""
        r = self._all("SELECT MAX(first_row + n_rows) FROM chunks")[0][0]
        used = int(r or 0)
        if self.version >= 2:
            got = self._all("SELECT value FROM state WHERE name = 'next_row'")
            used = max(used, int(got[0][0]) if got else 0)
        return used

    @staticmethod
    def put_chunk(db: sqlite3.Connection, chunk: ChunkRecord) -> None:
        db.execute(
            "INSERT INTO chunks (name, first_row, n_rows, sha256) VALUES (?, ?, ?, ?)",
            (chunk.name, chunk.first_row, chunk.n_rows, chunk.sha256),
        )
        db.execute(
            "INSERT INTO state (name, value) VALUES ('next_row', ?) ON CONFLICT(name) "
            "DO UPDATE SET value = MAX(value, excluded.value)", (chunk.first_row + chunk.n_rows,)
        )  # fmt: skip

    @staticmethod
    def delete_chunks(db: sqlite3.Connection, names: Iterable[str]) -> None:
        db.executemany("DELETE FROM chunks WHERE name = ?", [(n,) for n in names])

    # -- clustering

    def clustering(self) -> StoredClustering | None:
        r = self._all("SELECT k, inertia, elbow, centroids FROM clustering")
        if not r:
            return None
        k, inertia, elbow, blob = r[0]
        centroids = np.frombuffer(blob, dtype=np.float32).reshape(k, -1).copy()
        return StoredClustering(k, inertia, json.loads(elbow) if elbow else None, centroids)

    @staticmethod
    def put_clustering(
        db: sqlite3.Connection,
        clustering: StoredClustering,
        assignments: Iterable[tuple[int, int]],
    ) -> None:
        """Store the KMeans model and each item's cluster, (row, cluster) pairs."""
        centroids = np.ascontiguousarray(clustering.centroids, dtype=np.float32)
        db.execute(
            "INSERT OR REPLACE INTO clustering (id, k, inertia, elbow, centroids) "
            "VALUES (1, ?, ?, ?, ?)",
            (
                clustering.k,
                clustering.inertia,
                json.dumps(clustering.elbow) if clustering.elbow else None,
                centroids.tobytes(),
            ),
        )
        db.execute("UPDATE items SET cluster = NULL")
        db.executemany(
            "UPDATE items SET cluster = ? WHERE row = ?", [(c, r) for r, c in assignments]
        )

    @staticmethod
    def drop_clustering(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM clustering")
        db.execute("UPDATE items SET cluster = NULL")

    # -- checking

    def integrity_problems(self) -> list[str]:
        """What SQLite's own integrity check finds (empty when the file is sound)."""
        return [r[0] for r in self._all("PRAGMA integrity_check") if r[0] != "ok"]
