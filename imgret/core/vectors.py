"""Vector maths every stage shares: unit rows, top-k, exact k-NN, nearest centroid, PCA.

One boundary, as in FAISS's own wrapper: arrays are made contiguous float32 once, here. Ids are
row numbers of the database given, -1 where fewer than k qualify; scores are "higher is
better": inner products (cosine on unit rows) or negative squared L2 distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_matrix", "normalize", "top_k", "drop_excluded", "knn", "nearest_centroids", "pca",
    "ties_in_order", "faiss_module", "METRICS",
]  # fmt: skip

METRICS = ("cosine", "l2")
EXACT_PCA_MAX_DIMS = 4096  # covariance eigen-decomposition up to here; randomized SVD above
QUERY_BLOCK = 4096  # queries scored together by `knn` (cosine)
SCORE_BLOCK = 1 << 24  # scores `knn` holds at once (64 MiB of float32)


def faiss_module() -> Any:
    """The faiss module, imported on first use (its type stubs are incomplete: typed Any)."""
    import faiss

    return faiss


def as_matrix(x: Any) -> np.ndarray:
    """Any (n, d) array-like -> C-contiguous float32 (n, d)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a matrix of shape (n, d), got shape {x.shape}")
    return x


def normalize(x: np.ndarray) -> np.ndarray:
    """(n, dim) -> rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` of each row of (n_queries, n) scores -> (scores, columns), each (n_queries, k).

    Used to merge candidate lists that are already scored; ties keep column order. Rows with
    fewer than k finite scores are padded with column -1 and score -inf.
    """
    n = scores.shape[1]
    kk = min(k, n)
    out_s = np.full((len(scores), k), -np.inf, np.float32)
    out_i = np.full((len(scores), k), -1, np.int64)
    if kk == 0:
        return out_s, out_i
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        part.sort(axis=1)  # column order first, so that the stable sort keeps it on ties
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part_scores, order, axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    out_s[:, :kk] = best
    out_i[:, :kk] = np.where(np.isfinite(best), cols, -1)
    return out_s, out_i


def drop_excluded(
    scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Results (n_queries, m) without each query's ids in `exclude` -> k columns.

    exclude : (n_queries,) one id per query, or (n_queries, e) several; -1 = none. Ask for
        k + e results, then drop: a filter after the search keeps FAISS on its fast paths.
    """
    exclude = np.asarray(exclude, dtype=np.int64)
    if exclude.ndim == 1:
        exclude = exclude[:, None]
    keep = ~(ids[:, :, None] == exclude[:, None, :]).any(-1) & (ids >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the kept ones first, in order
    s = np.take_along_axis(np.where(keep, scores, -np.inf), order, axis=1)
    i = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
    if i.shape[1] < k:
        pad = ((0, 0), (0, k - i.shape[1]))
        s = np.pad(s, pad, constant_values=-np.inf)
        i = np.pad(i, pad, constant_values=-1)
    return s.astype(np.float32), i.astype(np.int64)


def knn(
    queries: np.ndarray, database: np.ndarray, k: int, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `database` (n, d) for (m, d) queries -> (scores, ids), (m, k).

    Inner product for "cosine" (give unit rows): for several queries a matrix product and
    top-k in PyTorch, block by block (against 10,000 x 1280 rows, one thread: 2 to 20 queries
    2.0-4.8x faster than FAISS's BLAS path; `python scripts/knn_speed.py`); one query, and
    negative squared L2 for "l2": FAISS's brute force. Ties keep database order. `database`
    may be memory-mapped: it is read block by block, never copied whole.
    """
    q, db = as_matrix(queries), as_matrix(database)
    if k <= 0 or len(q) == 0:
        return np.zeros((len(q), max(k, 0)), np.float32), np.zeros((len(q), max(k, 0)), np.int64)
    if len(db) == 0:
        return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    if metric == "cosine" and len(q) > 1:
        scores, i = _inner_product_knn(q, db, min(k, len(db)))
    else:  # FAISS's scan of one query is a little faster (2.1 against 2.5 ms, same script)
        faiss = faiss_module()
        if metric == "cosine":
            scores, i = faiss.knn(q, db, k, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            d, i = faiss.knn(q, db, k, metric=faiss.METRIC_L2)
            scores = -d
    scores, i = ties_in_order(np.where(i >= 0, scores, -np.inf).astype(np.float32),
                              i.astype(np.int64))  # fmt: skip
    if i.shape[1] < k:  # fewer rows than k
        pad = ((0, 0), (0, k - i.shape[1]))
        scores = np.pad(scores, pad, constant_values=-np.inf)
        i = np.pad(i, pad, constant_values=-1)
    return scores, i


def _inner_product_knn(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, d) queries, (n, d) rows, k <= n -> the k largest inner products and their rows,
    (m, k) each, best first; queries QUERY_BLOCK at a time against as many rows as keep the
    scores under SCORE_BLOCK."""
    import torch

    scores = np.empty((len(q), k), np.float32)
    ids = np.empty((len(q), k), np.int64)
    with torch.inference_mode():
        for q0 in range(0, len(q), QUERY_BLOCK):
            queries = torch.from_numpy(q[q0 : q0 + QUERY_BLOCK])
            step = max(k, SCORE_BLOCK // len(queries))
            best_s, best_i = None, None
            for r0 in range(0, len(db), step):
                block = db[r0 : r0 + step]  # a view (copied only if read-only: torch warns)
                rows = torch.from_numpy(block if block.flags.writeable else block.copy())
                s, i = torch.topk(queries @ rows.T, min(k, len(rows)), dim=1)
                i += r0
                if best_s is not None and best_i is not None:
                    s, at = torch.topk(torch.cat([best_s, s], 1), k, dim=1)
                    i = torch.gather(torch.cat([best_i, i], 1), 1, at)
                best_s, best_i = s, i
            assert best_s is not None and best_i is not None  # db is not empty
            scores[q0 : q0 + len(queries)] = best_s.numpy()
            ids[q0 : q0 + len(queries)] = best_i.numpy()
    return scores, ids


def ties_in_order(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_queries, k) results re-sorted so that equal scores keep id order (FAISS's heaps leave
    ties in any order): reproducible rankings. Ids of -1 (score -inf) stay last."""
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=-1)
    return np.take_along_axis(scores, order, -1), np.take_along_axis(ids, order, -1)


def nearest_centroids(queries: np.ndarray, centroids: np.ndarray, n: int = 1) -> np.ndarray:
    """The `n` nearest centroids (squared L2) of each query -> (n_queries, n) int64, best first."""
    _, ids = knn(queries, centroids, min(n, len(centroids)), metric="l2")
    return ids


def pca(
    x: np.ndarray, dim: int, *, max_rows: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of (n, d) rows -> (mean (d,), components (d, dim), variances (dim,)).

    Components are unit columns, largest variance first: the eigen-decomposition of the
    covariance in float64 up to EXACT_PCA_MAX_DIMS dimensions, a seeded randomized SVD above
    (raw pixels of large images). `max_rows` fits on a seeded sample of that many rows.
    """
    x = np.asarray(x)
    if max_rows is not None and len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:max_rows])]
    z = np.asarray(x, dtype=np.float64)
    n, d = z.shape
    mean = z.mean(axis=0)
    if d > EXACT_PCA_MAX_DIMS:
        from sklearn.utils.extmath import randomized_svd

        k = min(dim, n, d)
        _, s, vt = randomized_svd((z - mean).astype(np.float32), k, random_state=seed)
        return mean, vt.T.astype(np.float64), (s.astype(np.float64) ** 2) / n
    cov = np.cov(z - mean, rowvar=False, bias=True).reshape(d, d)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    top = np.argsort(eigvals)[::-1][:dim]
    return mean, eigvecs[:, top], np.maximum(eigvals[top], 0.0)
