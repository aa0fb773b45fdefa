"""Some positions of a collection as a VectorSet, so that the Searcher ranks only those.

The web app's folder and label filters search through it: index mode becomes exact search
over the subset (it has no FAISS index of its own), cluster mode keeps each image's cluster.
Embeddings are read from the collection's chunks block by block, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..core.clustering import Clustering
from ..store.collection import Collection
from ..store.index_files import IndexSettings, LoadedIndex

__all__ = ["SubsetVectors"]

BLOCK = 16384  # rows read per block while ranking a subset


class SubsetVectors:
    """positions : (m,) sorted int64 positions of `collection`; subset position j is
    collection position positions[j]."""

    index: LoadedIndex | None = None

    def __init__(self, collection: Collection, positions: np.ndarray) -> None:
        self.collection = collection
        self.positions = np.asarray(positions, dtype=np.int64)
        self.rows = collection.rows[self.positions]
        self.dim = collection.dim
        self.metric = collection.metric
        self.index_settings: IndexSettings = collection.index_settings
        c = collection.clustering
        self.clustering: Clustering | None = None
        if c is not None:
            self.clustering = Clustering(
                k=c.k, centroids=c.centroids, assignments=c.assignments[self.positions],
                inertia=c.inertia,
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self.positions)

    def index_delta(self) -> tuple[np.ndarray, np.ndarray]:
        return self.rows, np.zeros(0, np.int64)

    def positions_of_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) == 0:
            return np.full(rows.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.rows, rows), 0, len(self.rows) - 1)
        return np.where((self.rows[pos] == rows) & (rows >= 0), pos, -1).astype(np.int64)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.collection.fetch(rows)

    def iter_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in range(0, len(self.rows), BLOCK):
            part = self.rows[s : s + BLOCK]
            yield np.arange(s, s + len(part), dtype=np.int64), self.collection.fetch(part)
