"""Label-free re-ranking: database-side augmentation (DBA) and alpha query expansion (alpha-QE).

Both replace an embedding by a similarity-weighted mean of itself and its nearest neighbours
in the collection, which pulls images of the same kind together:

- DBA, once per collection: each database embedding becomes the weighted mean of its
  `n_neighbors` nearest database embeddings (itself included, weight 1).
- alpha-QE, per query: the query becomes itself plus the weighted mean of its `n_neighbors`
  nearest (augmented) database embeddings; the search then runs again with it.

Weights are max(similarity, 0) ** alpha. All embeddings are unit-norm rows, cosine similarity.
(Radenovic, Tolias and Chum, "Fine-tuning CNN image retrieval with no human annotation", 2018.)

Optionally, diffusion over each query's top DIFFUSION_CANDIDATES then re-orders them
(`diffusion_neighbors` > 0; imgret.retrieval.diffusion): by how they connect to the query
through chains of neighbours among the candidates, not by their own similarity alone.

Offline, over a whole set of embeddings: `database_augmentation` and `query_expansion`
(and `diffuse_ranking` over a ranking made from them).
At query time, on a collection of any size: `rerank_candidates` gives each query's top
max(k, RERANK_CANDIDATES) candidates their DBA embedding from their own nearest neighbours
(found by the caller's `knn`), expands the query (alpha-QE) over them and re-scores them.
imgret.retrieval.searcher calls it with its own search.

By default (`AUTO`, `chosen_rerank`) a search or evaluation re-ranks when its model is built on
a pretrained backbone, or trained on a large collection (RERANK_TRAINED_IMAGES): chosen on
validation queries, where `RerankConfig()` raised the pretrained model's mAP on every set
measured and the trained models' on the large sets (BENCHMARKS.md, "Settings chosen on
validation queries"), while for models trained on small collections it helped some and hurt
others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np

from ..core.vectors import drop_excluded, knn, normalize, top_k
from .diffusion import diffusion_order

__all__ = [
    "RerankConfig", "exact_knn", "database_augmentation", "query_expansion",
    "rerank_candidates", "RERANK_CANDIDATES", "DIFFUSION_CANDIDATES", "diffuse_ranking",
    "AUTO", "RerankChoice", "chosen_rerank", "RERANK_TRAINED_IMAGES",
]  # fmt: skip

RERANK_CANDIDATES = 100  # candidates per query that re-ranking re-scores (at least k)
DIFFUSION_CANDIDATES = 300  # candidates diffusion re-orders (chosen on validation queries)
# A model trained on the collection re-ranks by default from this many training images: on the
# 7,869-, 58,000- and 60,000-image validation sets it raised mAP (README, "Re-ranking"); on
# 1,000- to 1,797-image collections it helped some and hurt others, so small ones stay off.
RERANK_TRAINED_IMAGES = 5_000
RERANK_BLOCK = 256  # queries re-ranked at once: bounds the candidate embeddings in memory

# (queries (m, dim), k) -> (similarities (m, k), ids (m, k)), best first, id -1 = none
KnnFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# (positions (u,)) -> their (u, dim) float32 embeddings
Lookup = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RerankConfig:
    dba_neighbors: int = 10  # neighbours averaged into each database embedding (0 = off)
    qe_neighbors: int = 10  # neighbours averaged into each query (0 = off)
    alpha: float = 3.0  # weight = similarity ** alpha
    diffusion_neighbors: int = 0  # graph neighbours of the diffusion stage (0 = off)


AUTO: Literal["auto"] = "auto"
# A re-ranking asked for: a RerankConfig (on), None (off) or AUTO (the default for the model).
RerankChoice: TypeAlias = RerankConfig | Literal["auto"] | None


def chosen_rerank(
    choice: RerankChoice, model: str | Path, mode: str, metric: str = "cosine"
) -> RerankConfig | None:
    """The re-ranking a search or evaluation runs: `choice` itself, or for AUTO the default,
    `RerankConfig()` in index or exact mode of a cosine set for a model built on a pretrained
    backbone (imgret.models.registry.built_on_pretrained) or trained on at least
    RERANK_TRAINED_IMAGES images (imgret.models.registry.trained_images), and None (off)
    otherwise."""
    if choice != AUTO:
        return choice  # type: ignore[return-value]
    if mode == "cluster" or metric != "cosine":
        return None
    from ..models.registry import built_on_pretrained, trained_images

    on = built_on_pretrained(model) or trained_images(model) >= RERANK_TRAINED_IMAGES
    return RerankConfig() if on else None


def exact_knn(database: np.ndarray) -> KnnFn:
    """Exact cosine k-nearest neighbours in `database` (n, dim) unit rows, as a KnnFn."""
    database = np.ascontiguousarray(database, dtype=np.float32)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return knn(queries, database, min(k, len(database)))

    return search


def _weighted_mean(
    base: np.ndarray, sims: np.ndarray, ids: np.ndarray, database: np.ndarray, alpha: float
) -> np.ndarray:
    """base + sum_j w_j * database[ids_j], w = max(sim, 0) ** alpha -> (m, dim).

    The one DBA / alpha-QE weighting. Ids of -1 (fewer neighbours than asked) weigh 0.
    """
    w = np.where(ids >= 0, np.clip(sims, 0, None) ** alpha, 0)  # (m, k)
    return base + np.einsum("mk,mkd->md", w, database[np.maximum(ids, 0)])


def database_augmentation(
    database: np.ndarray, n_neighbors: int = 10, alpha: float = 3.0, knn: KnnFn | None = None
) -> np.ndarray:
    """DBA of (n, dim) unit-norm embeddings -> (n, dim) unit-norm float32.

    Each row is replaced by the weighted mean of its n_neighbors nearest rows (itself first,
    with similarity 1). `knn` defaults to exact search; pass an ANN index's search for millions.
    """
    database = normalize(database)
    n_neighbors = min(n_neighbors, len(database))  # more would only be empty (memory)
    if n_neighbors <= 1 or len(database) < 2:
        return database
    knn = knn or exact_knn(database)
    out = np.empty_like(database)
    for start in range(0, len(database), 4096):
        block = database[start : start + 4096]
        sims, ids = knn(block, n_neighbors)
        out[start : start + 4096] = _weighted_mean(np.zeros_like(block), sims, ids, database, alpha)
    return normalize(out)


def query_expansion(
    queries: np.ndarray,
    database: np.ndarray,
    n_neighbors: int = 10,
    alpha: float = 3.0,
    knn: KnnFn | None = None,
) -> np.ndarray:
    """alpha-QE of (m, dim) queries against (n, dim) database embeddings -> (m, dim) unit-norm."""
    queries = normalize(queries)
    n_neighbors = min(n_neighbors, len(database))
    if n_neighbors <= 0 or len(database) == 0:
        return queries
    database = np.ascontiguousarray(database, dtype=np.float32)
    sims, ids = (knn or exact_knn(database))(queries, n_neighbors)
    return normalize(_weighted_mean(queries, sims, ids, database, alpha))


def _augment(positions: np.ndarray, knn: KnnFn, lookup: Lookup, config: RerankConfig) -> np.ndarray:
    """DBA embeddings of items (positions (u,)) from their neighbours -> (u, dim) unit-norm.

    As `database_augmentation`: the weighted mean of an item's `dba_neighbors` nearest
    (itself included), found by `knn` and fetched by `lookup`.
    """
    emb = normalize(np.asarray(lookup(positions), np.float32))
    if config.dba_neighbors <= 1:
        return emb
    out = np.empty_like(emb)
    for s in range(0, len(emb), 1024):
        block = emb[s : s + 1024]
        sims, nb = knn(block, config.dba_neighbors)  # (b, n) positions, -1 = none
        have = np.unique(nb[nb >= 0])
        table = normalize(np.asarray(lookup(have), np.float32))  # row j is item have[j]
        rows = np.where(nb >= 0, np.searchsorted(have, np.maximum(nb, 0)), -1)  # (b, n)
        out[s : s + 1024] = _weighted_mean(np.zeros_like(block), sims, rows, table, config.alpha)
    return normalize(out)


def rerank_candidates(
    queries: np.ndarray,
    k: int,
    knn: KnnFn,
    lookup: Lookup,
    config: RerankConfig,
    exclude: np.ndarray | None = None,
    candidates: int = RERANK_CANDIDATES,
) -> tuple[np.ndarray, np.ndarray]:
    """Query-time DBA + alpha-QE over each query's candidates -> (scores, ids), (n_queries, k).

    `queries` (n_queries, dim) unit-norm; `knn` searches the collection (ids are positions,
    -1 = none) and `lookup` gives the embeddings of positions. Each query's top
    max(k, `candidates`) are re-scored; scores are cosine similarities of the expanded query
    and the augmented images, -inf and id -1 where fewer than k qualify. `exclude`
    (n_queries,) int64 gives a position never returned for each query (-1 = none), nor used
    to expand it. With every image a candidate (a collection of at most `candidates`) the
    result is that of `database_augmentation` + `query_expansion` over the whole collection.
    """
    diffusing = config.diffusion_neighbors > 0
    n_cand = max(k, candidates, DIFFUSION_CANDIDATES if diffusing else 0)
    out_scores = np.full((len(queries), k), -np.inf, np.float32)
    out_ids = np.full((len(queries), k), -1, np.int64)
    for s in range(0, len(queries), RERANK_BLOCK):
        block = queries[s : s + RERANK_BLOCK]
        if exclude is None:
            _, cand = knn(block, n_cand)  # (b, n_cand) positions, best first
        else:
            sc, cand = knn(block, n_cand + 1)
            _, cand = drop_excluded(sc, cand, exclude[s : s + RERANK_BLOCK], n_cand)
        have = np.unique(cand[cand >= 0])
        if len(have) == 0:
            continue
        dba = _augment(have, knn, lookup, config)  # (u, dim), row j is item have[j]
        for i, (q, row) in enumerate(zip(block, cand, strict=True)):
            row = row[row >= 0]
            d = dba[np.searchsorted(have, row)]  # (c, dim)
            q2 = query_expansion(q[None], d, config.qe_neighbors, config.alpha)  # (1, dim)
            sims = q2 @ d.T  # (1, c)
            if diffusing:  # diffusion's order; the scores stay the similarities
                order = diffusion_order(sims[0], d, config.diffusion_neighbors)[:k]
                out_scores[s + i, : len(order)] = sims[0, order]
                out_ids[s + i, : len(order)] = row[order]
                continue
            best, col = top_k(sims, k)
            out_scores[s + i] = best[0]
            out_ids[s + i] = np.where(col[0] >= 0, row[np.maximum(col[0], 0)], -1)
    return out_scores, out_ids


def diffuse_ranking(
    queries: np.ndarray, ids: np.ndarray, database: np.ndarray, neighbors: int,
    candidates: int = DIFFUSION_CANDIDATES,
) -> np.ndarray:  # fmt: skip
    """Each query's first `candidates` ids re-ordered by diffusion -> ids, same shape.

    queries (m, dim) and database (n, dim) unit-norm (the expanded queries and augmented
    database of `query_expansion` and `database_augmentation`); ids (m, depth) rankings of the
    database, -1 = none (left at the end)."""
    out = ids.copy()
    for i, (q, row) in enumerate(zip(queries, ids, strict=True)):
        cand = row[:candidates]
        cand = cand[cand >= 0]
        emb = np.asarray(database[cand], np.float32)
        out[i, : len(cand)] = cand[diffusion_order(emb @ q, emb, neighbors)]
    return out
