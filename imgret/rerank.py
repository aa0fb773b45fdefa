"""Label-free re-ranking: database-side augmentation (DBA) and alpha query expansion (alpha-QE).

Both replace an embedding by a similarity-weighted mean of itself and its nearest neighbours
in the collection, which pulls images of the same kind together:

- DBA, once per collection: each database embedding becomes the weighted mean of its
  `n_neighbors` nearest database embeddings (itself included, weight 1).
- alpha-QE, per query: the query becomes itself plus the weighted mean of its `n_neighbors`
  nearest (augmented) database embeddings; the search then runs again with it.

Weights are max(similarity, 0) ** alpha. All embeddings are unit-norm rows, cosine similarity.
(Radenovic, Tolias and Chum, "Fine-tuning CNN image retrieval with no human annotation", 2018.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["RerankConfig", "exact_knn", "database_augmentation", "query_expansion"]

# (queries (m, dim), k) -> (similarities (m, k), ids (m, k)), best first
KnnFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RerankConfig:
    dba_neighbors: int = 10  # neighbours averaged into each database embedding (0 = off)
    qe_neighbors: int = 10  # neighbours averaged into each query (0 = off)
    alpha: float = 3.0  # weight = similarity ** alpha


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def exact_knn(database: np.ndarray, chunk: int = 2048) -> KnnFn:
    """Exact cosine k-nearest neighbours in `database` (n, dim), in chunks of queries."""
    database = np.ascontiguousarray(database, dtype=np.float32)

    def knn(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(database))
        sims_out = np.empty((len(queries), k), np.float32)
        ids_out = np.empty((len(queries), k), np.int64)
        for start in range(0, len(queries), chunk):
            s = queries[start : start + chunk] @ database.T  # (c, n)
            part = (
                np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.argsort(-s, 1)
            )
            ps = np.take_along_axis(s, part, 1)
            order = np.argsort(-ps, axis=1, kind="stable")
            sims_out[start : start + chunk] = np.take_along_axis(ps, order, 1)
            ids_out[start : start + chunk] = np.take_along_axis(part, order, 1)
        return sims_out, ids_out

    return knn


def _weighted_mean(
    base: np.ndarray, sims: np.ndarray, ids: np.ndarray, database: np.ndarray, alpha: float
) -> np.ndarray:
    """base + sum_j w_j * database[ids_j], w = max(sim, 0) ** alpha -> (m, dim)."""
    w = np.clip(sims, 0, None) ** alpha  # (m, k)
    return base + np.einsum("mk,mkd->md", w, database[ids])


def database_augmentation(
    database: np.ndarray, n_neighbors: int = 10, alpha: float = 3.0, knn: KnnFn | None = None
) -> np.ndarray:
    """DBA of (n, dim) unit-norm embeddings -> (n, dim) unit-norm float32.

    Each row is replaced by the weighted mean of its n_neighbors nearest rows (itself first,
    with similarity 1). `knn` defaults to exact search; pass an ANN index's search for millions.
    """
    database = _normalize(database)
    if n_neighbors <= 1 or len(database) < 2:
        return database
    knn = knn or exact_knn(database)
    out = np.empty_like(database)
    for start in range(0, len(database), 4096):
        block = database[start : start + 4096]
        sims, ids = knn(block, n_neighbors)
        out[start : start + 4096] = _weighted_mean(np.zeros_like(block), sims, ids, database, alpha)
    return _normalize(out)


def query_expansion(
    queries: np.ndarray,
    database: np.ndarray,
    n_neighbors: int = 10,
    alpha: float = 3.0,
    knn: KnnFn | None = None,
) -> np.ndarray:
    """alpha-QE of (m, dim) queries against (n, dim) database embeddings -> (m, dim) unit-norm."""
    queries = _normalize(queries)
    if n_neighbors <= 0 or len(database) == 0:
        return queries
    database = np.ascontiguousarray(database, dtype=np.float32)
    sims, ids = (knn or exact_knn(database))(queries, n_neighbors)
    return _normalize(_weighted_mean(queries, sims, ids, database, alpha))
