"""What a Searcher ranks: a set of embeddings by position, with its index and clustering.

A Collection (imgret.store) is one; `ArrayVectors` makes one of in-memory embeddings (for
evaluation on a benchmark, or tests). Positions run 0..n-1; rows are the ids of the FAISS
index (for a collection, its embedding rows; for arrays, the positions themselves).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from ..core.clustering import Clustering
from ..core.vectors import as_matrix, normalize
from ..store.index_files import IndexSettings, LoadedIndex

__all__ = ["VectorSet", "ArrayVectors"]


class VectorSet(Protocol):
    """The embeddings a Searcher ranks. `embeddings` (n, dim) float32 are unit rows for cosine."""

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    def __len__(self) -> int: ...

    @property
    def rows(self) -> np.ndarray:
        """(n,) int64 index id of each position, increasing."""
        ...

    @property
    def index(self) -> LoadedIndex | None: ...

    @property
    def index_settings(self) -> IndexSettings: ...

    @property
    def clustering(self) -> Clustering | None: ...

    def index_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows the index lacks, rows the index holds of items now gone)."""
        ...

    def positions_of_rows(self, rows: np.ndarray) -> np.ndarray: ...

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        """(m,) rows -> (m, dim) float32 embeddings."""
        ...

    def iter_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions (m,), embeddings (m, dim)) blocks covering every position, in order."""
        ...


class ArrayVectors:
    """In-memory (n, dim) embeddings as a VectorSet: no index (index mode searches exactly).

    embeddings : (n, dim) floats, normalised here when `metric` is "cosine"
    clustering : KMeans of these embeddings, for cluster mode (None: not clustered)
    """

    def __init__(
        self, embeddings: np.ndarray, *, metric: str = "cosine",
        clustering: Clustering | None = None,
    ) -> None:  # fmt: skip
        x = as_matrix(embeddings)
        self.embeddings = normalize(x) if metric == "cosine" else x
        self.metric = metric
        self.clustering = clustering
        self.rows = np.arange(len(x), dtype=np.int64)
        self.index: LoadedIndex | None = None
        self.index_settings = IndexSettings(kind="flat")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.embeddings)

    def index_delta(self) -> tuple[np.ndarray, np.ndarray]:
        return self.rows, np.zeros(0, np.int64)

    def positions_of_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.where((rows >= 0) & (rows < len(self)), rows, -1)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.embeddings[np.asarray(rows, dtype=np.int64)]

    def iter_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield self.rows, self.embeddings

    def __repr__(self) -> str:
        return f"ArrayVectors({len(self)} x {self.dim}, {self.metric})"



