"""The metadata of a collection in SQLite: items, the embedding-chunk manifest, the clustering.

One transaction per change, so a process killed at any point leaves the database as it was
before the change or after it. Tables (see docs/collection-format.md)::

    items       row (embedding row, never reused), key, size, mtime_ns, sha256, label, cluster
    chunks      the manifest of embedding files: name, first_row, n_rows
    failures    files that could not be decoded, with the size and mtime they had then
    clustering  the KMeans model (one row): k, inertia, elbow (JSON), centroids (float32 blob)
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

__all__ = ["MetaStore", "Item", "ChunkRecord", "StoredClustering", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    row INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    label TEXT,
    cluster INTEGER
);
CREATE TABLE IF NOT EXISTS chunks (
    name TEXT PRIMARY KEY,
    first_row INTEGER NOT NULL,
    n_rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clustering (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    k INTEGER NOT NULL,
    inertia REAL NOT NULL,
    elbow TEXT,
    centroids BLOB NOT NULL
);
"""


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


@dataclass(frozen=True)
class ChunkRecord:
    name: str  # file name under embeddings/
    first_row: int
    n_rows: int


@dataclass(frozen=True)
class StoredClustering:
    k: int
    inertia: float
    elbow: dict[str, Any] | None
    centroids: np.ndarray  # (k, dim) float32


class MetaStore:
    """meta.sqlite of a collection. Readers and one writer may use it at the same time."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and self.path.exists():
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            if self.db.execute("PRAGMA user_version").fetchone()[0] == 0:  # a new database
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
        self.db.execute("PRAGMA synchronous=FULL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.db.close()
            raise ValueError(f"{self.path}: metadata schema {version} is newer than this imgret")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together, or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- items

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def columns(self) -> tuple[np.ndarray, list[str], list[str | None], list[int | None]]:
        """(rows (n,) int64, keys, labels, clusters) of every item, in row order."""
        cur = self.db.execute("SELECT row, key, label, cluster FROM items ORDER BY row")
        rows, keys, labels, clusters = [], [], [], []
        for row, key, label, cluster in cur:
            rows.append(row)
            keys.append(key)
            labels.append(label)
            clusters.append(cluster)
        return np.asarray(rows, dtype=np.int64), keys, labels, clusters

    def rows(self) -> np.ndarray:
        """(n,) int64 embedding rows of every item, sorted."""
        cur = self.db.execute("SELECT row FROM items ORDER BY row")
        return np.fromiter((r for (r,) in cur), dtype=np.int64)

    def items_under(self, prefix: str | None = None) -> dict[str, Item]:
        """Every item (or those whose key starts with `prefix`) by key."""
        sql = "SELECT key, row, size, mtime_ns, sha256, label, cluster FROM items"
        if prefix is None:
            cur = self.db.execute(sql)
        else:
            cur = self.db.execute(sql + " WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {r[0]: Item(*r) for r in cur}

    def get(self, key: str) -> Item | None:
        r = self.db.execute(
            "SELECT key, row, size, mtime_ns, sha256, label, cluster FROM items WHERE key = ?",
            (key,),
        ).fetchone()
        return Item(*r) if r else None

    @staticmethod
    def put_items(db: sqlite3.Connection, items: Iterable[Item]) -> None:
        """Insert or replace items (inside a transaction); a key's old row is dropped."""
        db.executemany(
            "INSERT OR REPLACE INTO items (key, row, size, mtime_ns, sha256, label, cluster) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i.key, i.row, i.size, i.mtime_ns, i.sha256, i.label, i.cluster) for i in items],
        )
        db.executemany("DELETE FROM failures WHERE key = ?", [(i.key,) for i in items])

    @staticmethod
    def touch_items(db: sqlite3.Connection, stats: Iterable[tuple[str, int, int]]) -> None:
        """Record a new (size, mtime_ns) for unchanged content: (key, size, mtime_ns) tuples."""
        db.executemany(
            "UPDATE items SET size = ?, mtime_ns = ? WHERE key = ?",
            [(size, mtime, key) for key, size, mtime in stats],
        )

    @staticmethod
    def delete_keys(db: sqlite3.Connection, keys: Iterable[str]) -> None:
        pairs = [(k,) for k in keys]
        db.executemany("DELETE FROM items WHERE key = ?", pairs)
        db.executemany("DELETE FROM failures WHERE key = ?", pairs)

    # -- failures

    def failures(self) -> dict[str, tuple[int | None, int | None, str]]:
        cur = self.db.execute("SELECT key, size, mtime_ns, reason FROM failures")
        return {k: (s, m, r) for k, s, m, r in cur}

    @staticmethod
    def put_failures(
        db: sqlite3.Connection, failures: Iterable[tuple[str, int | None, int | None, str]]
    ) -> None:
        """(key, size, mtime_ns, reason) of files that could not be decoded."""
        failures = list(failures)
        db.executemany(
            "INSERT OR REPLACE INTO failures (key, size, mtime_ns, reason) VALUES (?, ?, ?, ?)",
            failures,
        )
        db.executemany("DELETE FROM items WHERE key = ?", [(f[0],) for f in failures])

    # -- chunk manifest

    def chunks(self) -> list[ChunkRecord]:
        cur = self.db.execute("SELECT name, first_row, n_rows FROM chunks ORDER BY first_row")
        return [ChunkRecord(*r) for r in cur]

    def next_row(self) -> int:
        r = self.db.execute("SELECT MAX(first_row + n_rows) FROM chunks").fetchone()[0]
        return int(r or 0)

    @staticmethod
    def put_chunk(db: sqlite3.Connection, chunk: ChunkRecord) -> None:
        db.execute(
            "INSERT INTO chunks (name, first_row, n_rows) VALUES (?, ?, ?)",
            (chunk.name, chunk.first_row, chunk.n_rows),
        )

    @staticmethod
    def replace_chunks(db: sqlite3.Connection, chunks: Iterable[ChunkRecord]) -> None:
        db.execute("DELETE FROM chunks")
        for c in chunks:
            MetaStore.put_chunk(db, c)

    # -- clustering

    def clustering(self) -> StoredClustering | None:
        r = self.db.execute("SELECT k, inertia, elbow, centroids FROM clustering").fetchone()
        if r is None:
            return None
        k, inertia, elbow, blob = r
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
