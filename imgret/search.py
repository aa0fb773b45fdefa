"""Ranking a collection for query embeddings: with its FAISS index, exactly, or inside clusters.

Modes:

    index    the collection's FAISS index (its kind chosen by size or by setting; exact for
             small collections). Items the index does not hold yet are searched exactly and
             merged in, items removed since are filtered out, so results are always current.
    exact    every image, by cosine similarity (brute force)
    cluster  the classic design: only the images of the query's KMeans cluster, as an IVF over
             the user's centroids; `nprobe` > 1 searches that many nearest clusters

Re-ranking (`rerank`; index and exact modes, cosine collections) works at query time on a
collection of any size: imgret.rerank.rerank_candidates gives each query's top
max(k, RERANK_CANDIDATES) candidates their DBA embedding from their own nearest neighbours
(searched with the same mode), expands the query (alpha-QE) over them and re-scores them; this
module supplies the search and the embedding lookup. Cluster mode refuses it: its candidates
would be a cluster, not the query's neighbours. `top_k` and RERANK_CANDIDATES live in
imgret.rerank and are re-exported here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .cluster import normalize
from .collection import Collection
from .errors import UserError
from .index import IndexSettings, nearest_centroids, search_cluster_index, search_index
from .rerank import (
    RERANK_CANDIDATES,
    KnnFn,
    Lookup,
    RerankConfig,
    drop_excluded,
    rerank_candidates,
    top_k,
)

__all__ = [
    "Hit", "QueryResult", "DuplicatePair", "search_embeddings", "search_files", "search_folder",
    "search_items", "resolve_items", "results_for", "find_duplicates", "top_k", "query_clusters",
    "MODES", "RERANK_CANDIDATES",
]  # fmt: skip

MODES = ("index", "exact", "cluster")
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class Hit:
    rank: int  # 1 = best
    id: int  # position in the collection
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
        return {
            "query": self.query,
            "cluster": self.cluster,
            "hits": [asdict(h) for h in self.hits],
        }


@dataclass
class DuplicatePair:
    a: int  # position of the first image (a < b)
    b: int
    key_a: str
    key_b: str
    score: float


def _similarity(emb: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """(n_queries, dim) x (n, dim) -> (n_queries, n) similarity, higher is better."""
    if metric == "cosine":
        return normalize(queries) @ emb.T
    sq = (queries**2).sum(1, keepdims=True) - 2 * queries @ emb.T + (emb**2).sum(1)[None, :]
    return -sq


def _exact(
    emb: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in blocks of queries (at most ~256 MB of scores at a time)."""
    block = max(1, (1 << 26) // max(1, len(emb)))
    parts = [top_k(_similarity(emb, queries[s : s + block], metric), k)
             for s in range(0, len(queries), block)]  # fmt: skip
    if not parts:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def query_clusters(collection: Collection, queries: np.ndarray) -> np.ndarray:
    """The nearest KMeans centroid of each query -> (n_queries,) int64."""
    clustering = _require_clustering(collection)
    q = normalize(queries) if collection.metric == "cosine" else queries
    return nearest_centroids(q, clustering.centroids, 1)[:, 0]


def _require_clustering(collection: Collection) -> Any:
    if collection.clustering is None:
        raise UserError(
            f"{collection.path} is not clustered yet: run `imgret cluster {collection.path}` "
            "or search with --mode index or exact"
        )
    return collection.clustering


def _cluster_search(
    coll: Collection, queries: np.ndarray, k: int, nprobe: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .index import cluster_index

    clustering = _require_clustering(coll)
    if "cluster_index" not in coll._cache:
        coll._cache["cluster_index"] = cluster_index(
            clustering.centroids, coll.embeddings, clustering.assignments, coll.metric
        )
    return search_cluster_index(
        coll._cache["cluster_index"], clustering.centroids, queries, k, nprobe, coll.metric
    )


def _index_search(
    coll: Collection, queries: np.ndarray, k: int, settings: IndexSettings, log: Log
) -> tuple[np.ndarray, np.ndarray]:
    """The FAISS index, plus exact search over items it lacks, minus items removed since."""
    loaded = coll.index
    if "delta" not in coll._cache:
        coll._cache["delta"] = coll.index_delta()
    add, drop = coll._cache["delta"]
    n = len(coll)
    if loaded is None or len(add) > max(10_000, n // 10):
        if n > 10_000 and not coll._cache.get("warned"):
            coll._cache["warned"] = True
            log(f"imgret: {coll.path}: the index is behind the collection; searching exactly. "
                "Run `imgret index` to bring it up to date.")  # fmt: skip
        return _exact(coll.embeddings, queries, k, coll.metric)
    scores, rows = search_index(
        loaded, queries, k, fetch=coll.fetch, metric=coll.metric, settings=settings, exclude=drop
    )
    ids = coll.positions_of_rows(rows)
    scores = np.where(ids >= 0, scores, -np.inf)
    if len(add):
        extra_scores, extra = _exact(coll.fetch(add), queries, k, coll.metric)
        extra_ids = np.where(extra >= 0, coll.positions_of_rows(add)[np.maximum(extra, 0)], -1)
        scores = np.concatenate([scores, extra_scores], axis=1)
        ids = np.concatenate([ids, extra_ids], axis=1)
    best, col = top_k(scores, k)
    return best, np.where(col >= 0, np.take_along_axis(ids, np.maximum(col, 0), axis=1), -1)


def _knn(coll: Collection, mode: str, settings: IndexSettings, log: Log) -> tuple[KnnFn, Lookup]:
    """Search by `mode` ("exact" or "index") -> (scores, positions), as imgret.rerank's knn,
    and how to get the embeddings of positions (in memory for exact, from disk for index)."""
    if mode == "exact":
        return (lambda x, k: _exact(coll.embeddings, x, k, coll.metric),
                lambda pos: coll.embeddings[pos])  # fmt: skip
    return (lambda x, k: _index_search(coll, x, k, settings, log),
            lambda pos: coll.fetch(coll.rows[pos]))  # fmt: skip


def search_embeddings(
    collection: Collection,
    queries: np.ndarray,
    k: int = 10,
    mode: str = "exact",
    *,
    nprobe: int | None = None,
    settings: IndexSettings | None = None,
    rerank: RerankConfig | None = None,
    exclude: np.ndarray | None = None,
    log: Log = _stderr,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rank the collection for (n_queries, dim) embeddings.

    Returns (scores, ids, query_clusters): scores and ids are (n_queries, k), ids are positions
    in the collection, -1 where fewer than k images qualify; query_clusters is (n_queries,) in
    cluster mode (the nearest cluster), else None. `nprobe` overrides the lists scanned per
    query of IVF indexes and the clusters searched in cluster mode (default 1). `rerank`
    re-ranks each query's top candidates (see the module docstring; scores are then cosine
    similarities of the expanded query and the augmented images). `exclude` (n_queries,)
    int64 gives a position never returned for each query (-1 = none), nor used to expand it.
    """
    if mode not in MODES:
        raise UserError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != collection.dim:
        raise UserError(
            f"query embeddings of shape {queries.shape} do not match the collection's "
            f"dimension {collection.dim}"
        )
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
    if rerank is not None and mode == "cluster":
        raise UserError(
            "re-ranking works in index or exact mode, not cluster mode (its candidates would be "
            "the query's cluster, not its nearest neighbours)"
        )
    if rerank is not None and collection.metric != "cosine":
        raise UserError(f"{collection.path}: re-ranking needs a cosine collection, not l2")
    if collection.metric == "cosine":
        queries = normalize(queries)
    if len(collection) == 0:
        empty = np.full((len(queries), k), -1, np.int64)
        return np.full(empty.shape, -np.inf, np.float32), empty, None
    settings = settings or collection.index_settings
    if nprobe is not None:
        settings = replace(settings, nprobe=nprobe)
    if rerank is not None:
        knn, lookup = _knn(collection, mode, settings, log)
        scores, ids = rerank_candidates(
            queries, k, knn, lookup, rerank, exclude, candidates=RERANK_CANDIDATES
        )
        return scores, ids, None
    if exclude is not None:
        scores, ids, clusters = search_embeddings(
            collection, queries, k + 1, mode, nprobe=nprobe, settings=settings, log=log
        )
        return (*drop_excluded(scores, ids, exclude, k), clusters)
    if mode == "exact":
        scores, ids = _exact(collection.embeddings, queries, k, collection.metric)
        return scores, ids, None
    if mode == "cluster":
        return _cluster_search(collection, queries, k, nprobe or 1)
    scores, ids = _index_search(collection, queries, k, settings, log)
    return scores, ids, None


def results_for(
    collection: Collection,
    names: list[str],
    scores: np.ndarray,
    ids: np.ndarray,
    clusters: np.ndarray | None,
) -> list[QueryResult]:
    """Attach keys, labels and clusters to (n_queries, k) ids and scores."""
    clustering = collection.clustering
    assign = clustering.assignments if clustering is not None else None
    keys, labels = collection.keys, collection.labels
    out = []
    for qi, name in enumerate(names):
        hits = [
            Hit(
                rank=r + 1,
                id=int(i),
                key=keys[i],
                label=labels[i],
                score=float(s),
                cluster=int(assign[i]) if assign is not None else None,
            )
            for r, (i, s) in enumerate(zip(ids[qi], scores[qi], strict=True))
            if i >= 0
        ]
        cluster = int(clusters[qi]) if clusters is not None else None
        out.append(QueryResult(query=name, cluster=cluster, hits=hits))
    return out


def _embedder_for(collection: Collection, model: str | Path | None, device: str) -> Any:
    from .embed import describe_embedder, load_embedder

    ref = model or collection.model["ref"]
    embedder = load_embedder(ref, device=device)
    collection.check_model(describe_embedder(ref, embedder))
    return embedder


def search_files(
    collection: Collection,
    paths: list[str | Path],
    *,
    k: int = 10,
    mode: str = "exact",
    model: str | Path | None = None,
    device: str = "cpu",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
    embedder: Any = None,
) -> list[QueryResult]:
    """Embed query image files with the collection's model (or `model`, or a loaded
    `embedder`) and rank the collection (re-ranked with `rerank`, see search_embeddings)."""
    from .embed import embed_files

    embedder = embedder or _embedder_for(collection, model, device)
    queries = embed_files(embedder, list(paths))
    scores, ids, clusters = search_embeddings(
        collection, queries, k, mode, nprobe=nprobe, rerank=rerank
    )
    return results_for(collection, [str(p) for p in paths], scores, ids, clusters)


def search_folder(
    collection: Collection,
    folder: str | Path,
    *,
    k: int = 10,
    mode: str = "exact",
    model: str | Path | None = None,
    device: str = "cpu",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
    batch_size: int = 256,
    workers: int = 2,
    embedder: Any = None,
) -> tuple[list[QueryResult], list[tuple[str, str]]]:
    """Every image of a folder as a query, embedded and searched in batches.

    Returns (results, skipped): unreadable query files are skipped and listed as (path, reason).
    """
    from .embed import embed_source
    from .sources import open_source

    embedder = embedder or _embedder_for(collection, model, device)
    source = open_source(folder)
    results: list[QueryResult] = []
    skipped: list[tuple[str, str]] = []
    step = max(batch_size * 8, 1)
    for s in range(0, len(source), step):
        part = source.subset(range(s, min(s + step, len(source))))
        res = embed_source(embedder, part, batch_size=batch_size, workers=workers, progress=False)
        skipped += res.failures
        if len(res.positions) == 0:
            continue
        scores, ids, clusters = search_embeddings(
            collection, res.embeddings, k, mode, nprobe=nprobe, rerank=rerank
        )
        names = [part.keys[i] for i in res.positions]
        results += results_for(collection, names, scores, ids, clusters)
    return results, skipped


def resolve_items(collection: Collection, refs: list[str]) -> list[int]:
    """Positions of items given by key, by file path (made absolute) or by position number."""
    out = []
    for ref in refs:
        pos = collection.position_of_key(ref)
        if pos is None and not ref.startswith("builtin://"):
            pos = collection.position_of_key(str(Path(ref).expanduser().resolve()))
        if pos is None and ref.lstrip("-").isdigit():
            i = int(ref)
            if not 0 <= i < len(collection):
                raise UserError(f"id {i} is not in {collection.path} (0..{len(collection) - 1})")
            pos = i
        if pos is None:
            raise UserError(f"{ref}: not in {collection.path} (give a key, a path or an id)")
        out.append(pos)
    return out


def search_items(
    collection: Collection,
    ids: list[int],
    *,
    k: int = 10,
    mode: str = "exact",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
    exclude_self: bool = True,
) -> list[QueryResult]:
    """Rank the collection for items already in it (their stored embeddings), by position.

    With `exclude_self` a query is left out of its own results (and of its expansion
    neighbours when re-ranking).
    """
    pos = np.asarray(ids, dtype=np.int64)
    queries = collection.fetch(collection.rows[pos])
    scores, found, clusters = search_embeddings(
        collection, queries, k, mode, nprobe=nprobe, rerank=rerank,
        exclude=pos if exclude_self else None,
    )  # fmt: skip
    names = [collection.keys[i] for i in pos]
    return results_for(collection, names, scores, found, clusters)


def find_duplicates(
    collection: Collection,
    threshold: float = 0.95,
    *,
    k: int = 10,
    mode: str = "index",
    batch: int = 4096,
) -> list[DuplicatePair]:
    """Pairs of images with similarity >= `threshold`, most similar first.

    Each image's `k` nearest neighbours are checked (so an image with more than `k` near
    copies lists its `k` closest).
    """
    n = len(collection)
    pairs: dict[tuple[int, int], float] = {}
    for s in range(0, n, batch):
        pos = np.arange(s, min(s + batch, n))
        queries = collection.fetch(collection.rows[pos])
        scores, found, _ = search_embeddings(collection, queries, k + 1, mode)
        qi, col = np.nonzero((scores >= threshold) & (found >= 0) & (found != pos[:, None]))
        for a, b, sc in zip(pos[qi], found[qi, col], scores[qi, col], strict=True):
            key = (int(min(a, b)), int(max(a, b)))
            pairs[key] = max(pairs.get(key, -np.inf), float(sc))
    keys = collection.keys
    out = [DuplicatePair(a, b, keys[a], keys[b], sc) for (a, b), sc in pairs.items()]
    out.sort(key=lambda p: (-p.score, p.a, p.b))
    return out
