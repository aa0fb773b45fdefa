"""Searching FAISS indexes: a collection's index, candidates re-ranked exactly, user clusters.

Scores are "higher is better" (inner products, or negative squared L2 distances); missing
results have row -1 and score -inf. Exclusions are not given to FAISS as an IDSelector (that
sends flat scans to a slow sequential path): the caller asks for more results and filters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.vectors import faiss_module, nearest_centroids, ties_in_order, top_k
from ..store.index_files import RERANKED, IndexPlan, IndexSettings, LoadedIndex, faiss_metric

__all__ = ["search_index", "rerank", "cluster_index", "search_cluster_index"]

Fetch = Callable[[np.ndarray], np.ndarray]  # (n,) int64 rows -> (n, dim) float32 embeddings
OVERFETCH_MAX = 1024  # removed rows skipped by asking for more results; beyond, by a selector


def _params(plan: IndexPlan, settings: IndexSettings, tombstones: np.ndarray | None) -> Any:
    """FAISS search parameters of the index kind (nprobe of IVF kinds, efSearch of HNSW).

    `tombstones` (rows to skip) become an IDSelector: a cheap test while HNSW walks its graph,
    but a slow sequential path for flat scans, so callers over-fetch instead where they can.
    """
    faiss = faiss_module()

    if plan.kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=settings.ef_search)
    elif plan.nlist:
        params = faiss.SearchParametersIVF(nprobe=min(plan.nlist, settings.nprobe or plan.nprobe))
    elif tombstones is not None and len(tombstones):
        params = faiss.SearchParameters()
    else:
        return None
    if tombstones is not None and len(tombstones):
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(tombstones, dtype=np.int64))
        params.sel = faiss.IDSelectorNot(batch)
        params._keep = batch  # the selectors must outlive the search
    return params


def search_index(
    loaded: LoadedIndex,
    queries: np.ndarray,
    k: int,
    *,
    fetch: Fetch,
    metric: str = "cosine",
    settings: IndexSettings | None = None,
    tombstones: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search (n_queries, dim) float32 queries -> (scores, rows), each (n_queries, >= k).

    ivfsq/ivfpq candidates (`refine` * k of them) are re-ranked with the exact embeddings from
    `fetch`. `tombstones`: rows the index holds of removed items. Up to OVERFETCH_MAX of them
    are over-fetched (the result then has k + len(tombstones) columns, and the caller drops
    them); more of them, or any on HNSW, are skipped by a selector.
    """
    settings = settings or IndexSettings()
    plan = loaded.plan
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_dead = 0 if tombstones is None else len(tombstones)
    if n_dead and plan.kind != "hnsw" and n_dead <= OVERFETCH_MAX:
        k, tombstones = k + n_dead, None
    kk = k * max(1, settings.refine) if plan.kind in RERANKED else k
    kk = max(1, min(kk, max(1, loaded.index.ntotal)))
    params = _params(plan, settings, tombstones)
    if params is None:
        dist, rows = loaded.index.search(queries, kk)
    else:
        dist, rows = loaded.index.search(queries, kk, params=params)
    if plan.kind in RERANKED:
        return rerank(queries, rows, fetch, k, metric)
    scores = dist if metric == "cosine" else -dist
    return _pad(scores, rows, k)


def rerank(
    queries: np.ndarray, rows: np.ndarray, fetch: Fetch, k: int, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate rows ((n_queries, c), -1 = none) -> the best k of each."""
    valid = rows >= 0
    fill = rows[valid][0] if valid.any() else 0
    safe = np.where(valid, rows, fill)
    cand = fetch(safe.ravel()).reshape(*rows.shape, -1)  # (n_queries, c, dim)
    scores = np.matmul(cand, queries[:, :, None])[:, :, 0]  # (n_queries, c)
    if metric != "cosine":  # -|q - x|^2 = 2 q.x - |x|^2 - |q|^2
        scores = 2 * scores - (cand**2).sum(-1) - (queries**2).sum(-1, keepdims=True)
    best, cols = top_k(np.where(valid, scores, -np.inf).astype(np.float32), k)
    return best, np.where(cols >= 0, np.take_along_axis(rows, np.maximum(cols, 0), axis=1), -1)


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = ties_in_order(np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows)
    if rows.shape[1] < k:
        pad = ((0, 0), (0, k - rows.shape[1]))
        rows = np.pad(rows, pad, constant_values=-1)
        scores = np.pad(scores, pad, constant_values=-np.inf)
    return scores[:, :k], rows[:, :k].astype(np.int64)


def cluster_index(
    centroids: np.ndarray, embeddings: np.ndarray, assignments: np.ndarray, metric: str = "cosine"
) -> Any:
    """IVF-Flat whose lists are the user's KMeans clusters; ids are positions in `embeddings`.

    centroids : (K, dim) float32; embeddings : (n, dim) float32; assignments : (n,) int64
    cluster of each embedding (kept as given, not recomputed).
    """
    faiss = faiss_module()

    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    k, dim = centroids.shape
    quantizer = faiss.IndexFlatL2(dim)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, dim, k, faiss_metric(metric))
    index.is_trained = True
    ids = np.arange(len(x), dtype=np.int64)
    assign = np.ascontiguousarray(assignments, dtype=np.int64)
    index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    # The FAISS wrapper keeps `quantizer` alive in index.referenced_objects.
    return index


def search_cluster_index(
    index: Any, centroids: np.ndarray, queries: np.ndarray, k: int, nprobe: int = 1,
    metric: str = "cosine",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Rank inside the `nprobe` nearest clusters -> (scores, positions, nearest cluster)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    probe = nearest_centroids(queries, centroids, nprobe)
    coarse = np.zeros(probe.shape, dtype=np.float32)
    index.nprobe = probe.shape[1]  # search_preassigned reads nprobe from the index
    dist, ids = index.search_preassigned(queries, k, probe, coarse)
    scores = dist if metric == "cosine" else -dist
    scores, ids = _pad(scores, ids, k)
    return scores, ids, probe[:, 0]


