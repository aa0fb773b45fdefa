"""One Searcher: ranks a set of embeddings for query embeddings, the same way for every caller.

`imgret search`, `imgret evaluate`, `imgret duplicates` and the web app all rank through it.

Modes:

    index    the collection's FAISS index (its kind chosen by size or by setting; exact for
             small collections). Items the index does not hold yet are searched exactly and
             merged in, items removed since are filtered out, so results are always current.
    exact    every image, by cosine similarity (brute force, FAISS)
    cluster  the classic design: only the images of the query's KMeans cluster, as an IVF over
             the user's centroids; `nprobe` > 1 searches that many nearest clusters

Re-ranking (`rerank`; index and exact modes, cosine sets) gives each query's top
max(k, `candidates`) candidates their DBA embedding from their own nearest neighbours (found by
the same search), expands the query (alpha-QE) over them and re-scores them
(imgret.retrieval.rerank). Cluster mode refuses it: its candidates would be a cluster, not the
query's neighbours. Exclusions (a query's own position) are filtered after asking for more
results, which keeps FAISS on its fast paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from ..core.errors import UserError
from ..core.prescan import Prescan, prescan_pays
from ..core.vectors import drop_excluded, knn, nearest_centroids, normalize, top_k
from ..store.index_files import IndexSettings
from .faiss_search import cluster_index, search_cluster_index, search_index
from .rerank import RERANK_CANDIDATES, RerankConfig, rerank_candidates
from .vector_set import VectorSet

__all__ = ["Searcher", "Ranking", "MODES"]

MODES = ("index", "exact", "cluster")
Log = Callable[[str], None]
EXACT_FALLBACK = 10_000  # items the index may lack before index mode searches exactly


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class Ranking(NamedTuple):
    """scores and ids (n_queries, k): positions, best first, -1 (score -inf) where fewer than
    k qualify; clusters (n_queries,) the query's nearest cluster in cluster mode, else None."""

    scores: np.ndarray
    ids: np.ndarray
    clusters: np.ndarray | None


class Searcher:
    """Ranks `vectors` (a Collection or an ArrayVectors) for (n_queries, dim) query embeddings.

    Parameters
    ----------
    vectors : what is searched; read as it is when the Searcher is made (make a new Searcher
        after the collection changes)
    settings : index search settings (nprobe, ef_search, refine); default: the collection's
    log : where a note goes (e.g. that the index lags behind and search is exact)
    prescan : for a Searcher that answers many searches (the web app): exact searches of
        several queries at once pre-scan a bfloat16 copy of the embeddings (imgret.core.prescan;
        same results, 2-3x faster, half the embeddings' size in memory), made on first use,
        where the CPU has AMX and the metric is cosine
    """

    def __init__(
        self, vectors: VectorSet, *, settings: IndexSettings | None = None, log: Log = _stderr,
        prescan: bool = False,
    ) -> None:  # fmt: skip
        self.vectors = vectors
        self.settings = settings or vectors.index_settings
        self.log = log
        self._use_prescan = prescan and vectors.metric == "cosine" and prescan_pays()
        self._prescan: Prescan | None = None
        self._delta: tuple[np.ndarray, np.ndarray] | None = None
        self._cluster_index: Any = None
        self._warned = False

    def __len__(self) -> int:
        return len(self.vectors)

    # -- the public searches --------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        mode: str = "index",
        nprobe: int | None = None,
        rerank: RerankConfig | None = None,
        exclude: np.ndarray | None = None,
        candidates: int = RERANK_CANDIDATES,
    ) -> Ranking:
        """Rank the set for each of (n_queries, dim) query embeddings -> Ranking.

        nprobe : IVF lists scanned per query (index mode), or clusters searched (cluster mode,
            default 1)
        rerank : re-rank each query's top max(k, `candidates`) without labels
        exclude : (n_queries,) a position per query (or (n_queries, e) several; -1 = none)
            never returned, nor used to expand that query
        """
        if mode not in MODES:
            raise UserError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if k < 1:
            raise UserError(f"k must be 1 or more, got {k}")
        vec = self.vectors
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != vec.dim:
            raise UserError(
                f"query embeddings of shape {queries.shape} do not match the collection's "
                f"dimension {vec.dim}"
            )
        if rerank is not None and mode == "cluster":
            raise UserError(
                "re-ranking works in index or exact mode, not cluster mode (its candidates "
                "would be the query's cluster, not its nearest neighbours)"
            )
        if rerank is not None and vec.metric != "cosine":
            raise UserError("re-ranking needs a cosine collection, not l2")
        if vec.metric == "cosine":
            queries = normalize(queries)
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64)
            exclude = exclude[:, None] if exclude.ndim == 1 else exclude
        if len(vec) == 0:
            empty = np.full((len(queries), k), -1, np.int64)
            return Ranking(np.full(empty.shape, -np.inf, np.float32), empty, None)
        if rerank is not None:  # neighbours beyond the collection's size are none: capped
            rerank = replace(rerank, dba_neighbors=min(rerank.dba_neighbors, len(vec)),
                             qe_neighbors=min(rerank.qe_neighbors, len(vec)))  # fmt: skip
            scores, ids = rerank_candidates(
                queries, k, lambda x, kk: self._search(x, kk, mode, nprobe), self._lookup,
                rerank, exclude, candidates=candidates,
            )  # fmt: skip
            return Ranking(scores, ids, None)
        extra = 0 if exclude is None else exclude.shape[1]
        if mode == "cluster":
            scores, ids, clusters = self._cluster_search(queries, k + extra, nprobe or 1)
        else:
            (scores, ids), clusters = self._search(queries, k + extra, mode, nprobe), None
        if exclude is not None:
            scores, ids = drop_excluded(scores, ids, exclude, k)
        return Ranking(scores, ids, clusters)

    def query_clusters(self, queries: np.ndarray) -> np.ndarray:
        """The nearest KMeans centroid of each query -> (n_queries,) int64."""
        clustering = self._clustering()
        q = normalize(queries) if self.vectors.metric == "cosine" else queries
        return nearest_centroids(q, clustering.centroids, 1)[:, 0]

    # -- modes ----------------------------------------------------------------------------

    def _lookup(self, positions: np.ndarray) -> np.ndarray:
        vec = self.vectors
        return vec.fetch(vec.rows[np.asarray(positions, dtype=np.int64)])

    def _search(
        self, queries: np.ndarray, k: int, mode: str, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The base search of index or exact mode -> (scores, positions), (n_queries, k)."""
        if mode == "exact":
            return self._exact(queries, k)
        settings = self.settings if nprobe is None else replace(self.settings, nprobe=nprobe)
        return self._index_search(queries, k, settings)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every position, block by block, merged (or the pre-scan)."""
        if self._use_prescan and len(queries) > 1:
            if self._prescan is None:
                self._prescan = Prescan(self.vectors.iter_blocks())
            return self._prescan.knn(queries, k)
        metric = self.vectors.metric
        best_s: np.ndarray | None = None
        best_i: np.ndarray | None = None
        for positions, emb in self.vectors.iter_blocks():
            s, i = knn(queries, emb, min(k, len(emb)), metric)
            i = np.where(i >= 0, positions[np.maximum(i, 0)], -1)
            if best_s is None or best_i is None:
                best_s, best_i = s, i
                continue
            merged_s = np.concatenate([best_s, s], axis=1)
            merged_i = np.concatenate([best_i, i], axis=1)
            best_s, cols = top_k(merged_s, k)
            best_i = np.where(cols >= 0, np.take_along_axis(merged_i, np.maximum(cols, 0), 1), -1)
        assert best_s is not None and best_i is not None  # the set is not empty
        if best_s.shape[1] < k:  # fewer items than k
            pad = ((0, 0), (0, k - best_s.shape[1]))
            best_s = np.pad(best_s, pad, constant_values=-np.inf)
            best_i = np.pad(best_i, pad, constant_values=-1)
        return best_s, best_i

    def _index_search(
        self, queries: np.ndarray, k: int, settings: IndexSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """The FAISS index, plus exact search over items it lacks, minus items removed since.

        A flat index is exact search: the embeddings are ranked where they lie (memory-mapped
        chunks, in PyTorch: `knn`), which is faster than FAISS's flat scan for a few queries
        at once, and the index's own copy of them is never read."""
        vec = self.vectors
        loaded = vec.index
        if loaded is not None and loaded.plan.kind == "flat":
            return self._exact(queries, k)
        if self._delta is None:
            self._delta = vec.index_delta()
        add, drop = self._delta
        n = len(vec)
        if loaded is None or len(add) > max(EXACT_FALLBACK, n // 10):
            if loaded is not None and n > EXACT_FALLBACK and not self._warned:
                self._warned = True
                self.log("imgret: the index is behind the collection; searching exactly. Run "
                         "`imgret index` to bring it up to date.")  # fmt: skip
            return self._exact(queries, k)
        scores, rows = search_index(
            loaded, queries, k, fetch=vec.fetch, metric=vec.metric, settings=settings,
            tombstones=drop,
        )  # fmt: skip
        ids = vec.positions_of_rows(rows)
        scores = np.where(ids >= 0, scores, -np.inf)
        if len(add):
            extra_s, extra = knn(queries, vec.fetch(add), min(k, len(add)), vec.metric)
            extra_ids = np.where(extra >= 0, vec.positions_of_rows(add)[np.maximum(extra, 0)], -1)
            scores = np.concatenate([scores, extra_s], axis=1)
            ids = np.concatenate([ids, extra_ids], axis=1)
        best, col = top_k(scores, k)
        return best, np.where(col >= 0, np.take_along_axis(ids, np.maximum(col, 0), axis=1), -1)

    def _clustering(self) -> Any:
        clustering = self.vectors.clustering
        if clustering is None:
            raise UserError(
                "the collection is not clustered yet: run `imgret cluster COLLECTION` or "
                "search with --mode index or exact"
            )
        return clustering

    def _cluster_search(
        self, queries: np.ndarray, k: int, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clustering = self._clustering()
        if self._cluster_index is None:
            emb = np.concatenate([e for _, e in self.vectors.iter_blocks()])
            self._cluster_index = cluster_index(
                clustering.centroids, emb, clustering.assignments, self.vectors.metric
            )
        return search_cluster_index(
            self._cluster_index, clustering.centroids, queries, k, nprobe, self.vectors.metric
        )
