"""Ranking a collection for query embeddings: exact (all images) or inside the query's cluster."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .cluster import normalize
from .collection import Collection
from .errors import UserError

__all__ = ["Hit", "QueryResult", "search_embeddings", "search_files", "top_k", "MODES"]

MODES = ("exact", "cluster")


@dataclass
class Hit:
    rank: int  # 1 = best
    id: int  # row of the collection
    key: str  # file path or builtin:// key
    label: str | None
    score: float  # cosine similarity (or negative squared L2 distance)
    cluster: int | None


@dataclass
class QueryResult:
    query: str
    cluster: int | None  # the query's cluster in cluster mode
    hits: list[Hit]

    def to_dict(self) -> dict:
        return {"query": self.query, "cluster": self.cluster, "hits": [asdict(h) for h in self.hits]}


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` of each row of (n_queries, n) scores -> (scores, ids), each (n_queries, k).

    Rows with fewer than k candidates (-inf scores) are padded with id -1 and score -inf.
    """
    n = scores.shape[1]
    kk = min(k, n)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    ids = np.where(np.isfinite(best), ids, -1)
    if kk < k:
        pad = k - kk
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best.astype(np.float32), ids.astype(np.int64)


def _similarity(collection: Collection, queries: np.ndarray) -> np.ndarray:
    """(n_queries, dim) -> (n_queries, n_images) similarity, higher is better."""
    emb = collection.embeddings
    if collection.metric == "cosine":
        return normalize(queries) @ emb.T
    sq = (queries**2).sum(1, keepdims=True) - 2 * queries @ emb.T + (emb**2).sum(1)[None, :]
    return -sq


def query_clusters(collection: Collection, queries: np.ndarray) -> np.ndarray:
    """The nearest KMeans centroid of each query -> (n_queries,) int64."""
    if collection.clustering is None:
        raise UserError(
            f"{collection.path} is not clustered yet: run `imgret cluster {collection.path}` "
            "or search with --mode exact"
        )
    q = normalize(queries) if collection.metric == "cosine" else queries
    c = collection.clustering.centroids
    d = (q**2).sum(1, keepdims=True) - 2 * q @ c.T + (c**2).sum(1)[None, :]
    return np.argmin(d, axis=1).astype(np.int64)


def search_embeddings(
    collection: Collection, queries: np.ndarray, k: int = 10, mode: str = "exact"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rank the collection for (n_queries, dim) embeddings.

    Returns (scores, ids, query_clusters): scores and ids are (n_queries, k), ids -1 where
    fewer than k images qualify; query_clusters is (n_queries,) in cluster mode, else None.
    """
    if mode not in MODES:
        raise UserError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != collection.dim:
        raise UserError(
            f"query embeddings of shape {queries.shape} do not match the collection's "
            f"dimension {collection.dim}"
        )
    sims = _similarity(collection, queries)
    clusters = None
    if mode == "cluster":
        clusters = query_clusters(collection, queries)
        assert collection.clustering is not None
        outside = collection.clustering.assignments[None, :] != clusters[:, None]
        sims = np.where(outside, -np.inf, sims)
    scores, ids = top_k(sims, k)
    return scores, ids, clusters


def results_for(
    collection: Collection,
    names: list[str],
    scores: np.ndarray,
    ids: np.ndarray,
    clusters: np.ndarray | None,
) -> list[QueryResult]:
    """Attach keys, labels and clusters to (n_queries, k) ids and scores."""
    assign = collection.clustering.assignments if collection.clustering is not None else None
    out = []
    for qi, name in enumerate(names):
        hits = [
            Hit(
                rank=r + 1,
                id=int(i),
                key=collection.keys[i],
                label=collection.labels[i],
                score=float(s),
                cluster=int(assign[i]) if assign is not None else None,
            )
            for r, (i, s) in enumerate(zip(ids[qi], scores[qi], strict=True))
            if i >= 0
        ]
        cluster = int(clusters[qi]) if clusters is not None else None
        out.append(QueryResult(query=name, cluster=cluster, hits=hits))
    return out


def search_files(
    collection: Collection,
    paths: list[str | Path],
    *,
    k: int = 10,
    mode: str = "exact",
    model: str | Path | None = None,
    device: str = "cpu",
) -> list[QueryResult]:
    """Embed query image files with the collection's model (or `model`) and rank the collection."""
    from .embed import describe_embedder, embed_files, load_embedder

    ref = model or collection.model["ref"]
    embedder = load_embedder(ref, device=device)
    collection.check_model(describe_embedder(ref, embedder))
    queries = embed_files(embedder, list(paths))
    scores, ids, clusters = search_embeddings(collection, queries, k, mode)
    return results_for(collection, [str(p) for p in paths], scores, ids, clusters)
