"""Retrieval quality of a model on a labelled query/database split (a benchmark or a folder).

Every query ranks the database by cosine similarity of unit-norm embeddings: over the whole
database (mode "exact") or only inside the query's KMeans cluster (mode "cluster", the classic
design; items outside the cluster are never returned). Relevant = same label. Reported:
mAP@k, mAP@all, P@k and R@k (imgret.evaluation.metrics), overall and per class, plus the points of a
precision-recall curve.

Besides trained models, two baselines are evaluated the same way: ``pixels`` (the resized
image as a vector) and ``pca-N`` (the pixels projected on their first N principal components,
fitted on the database images only).

With a `RerankConfig` (imgret.retrieval.rerank), the embeddings are re-ranked without labels before
scoring: database-side augmentation (DBA) of the whole database, exact, then alpha query
expansion (alpha-QE) of every query against the augmented database; a query's own database
entry (`exclude`) is never one of its expansion neighbours. In cluster mode KMeans is then
fitted on the augmented database, so the same re-ranking applies inside the clusters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.clustering import Clustering, elbow_curve, fit_kmeans
from ..core.errors import UserError
from ..core.vectors import drop_excluded, normalize, pca
from ..data.benchmarks import Benchmark, is_benchmark_name, labelled_split, load_benchmark
from ..data.loader import sample_batches
from ..models.backend import InferenceSettings, load_for_inference
from ..models.embed import embed_source
from ..models.pixels import PixelEmbedder
from ..retrieval.rerank import (
    AUTO,
    DIFFUSION_CANDIDATES,
    KnnFn,
    RerankChoice,
    RerankConfig,
    chosen_rerank,
    database_augmentation,
    diffuse_ranking,
    exact_knn,
    query_expansion,
)
from ..retrieval.searcher import Searcher
from ..retrieval.vector_set import ArrayVectors
from .metrics import (
    average_precision_all,
    average_precision_at_k,
    pr_curve,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
)

__all__ = [
    "Evaluation", "EmbeddedSplit", "rank", "evaluate_embeddings", "evaluate", "open_benchmark",
    "embed_split", "MODES", "rerank_split", "protocol_scores",
]  # fmt: skip

MODES = ("exact", "cluster")
CHUNK = 100  # queries ranked at once: (CHUNK, n_database) float32 scores and int64 ids
PCA_ROWS = 20_000  # pca-N baselines fit on a seeded sample of at most this many database rows


@dataclass
class Evaluation:
    """What `imgret evaluate` reports for one model on one split."""

    benchmark: str
    model: str
    mode: str
    n_queries: int
    n_database: int
    metrics: list[str]  # the columns, e.g. ["mAP@1000", "mAP@all", "P@10", "R@10", ...]
    overall: dict[str, float]
    per_class: dict[str, dict[str, float]]  # label -> metric -> value (mean over its queries)
    curve: dict[str, list[float]]  # "ranks", "precision", "recall" (means over queries)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds and images/s
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank(
    queries: np.ndarray,
    database: np.ndarray,
    depth: int,
    *,
    exclude: np.ndarray | None = None,
    assignments: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
) -> np.ndarray:
    """Database ids of each query's top `depth`, best first -> (n_queries, depth) int64.

    queries (n_queries, dim) and database (n_database, dim) are unit-norm float32 rows.
    `exclude` (n_queries,) gives a database id never returned for that query (-1 = none).
    With `assignments` (n_database,) and `centroids` (K, dim), only the query's nearest
    cluster is ranked; missing ranks are -1. The ranking is the Searcher's (exact or cluster
    mode over the database as an ArrayVectors).
    """
    clustering = None
    if centroids is not None and assignments is not None:
        clustering = Clustering(len(centroids), centroids, np.asarray(assignments), 0.0)
    searcher = Searcher(ArrayVectors(database, clustering=clustering))
    depth = min(depth, len(database))
    mode = "cluster" if clustering is not None else "exact"
    out = np.empty((len(queries), depth), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        sl = slice(start, min(start + CHUNK, len(queries)))
        ranking = searcher.search(
            queries[sl], depth, mode=mode, exclude=None if exclude is None else exclude[sl]
        )
        out[sl] = ranking.ids
    return out


def _metric_names(map_ks: list[int], ks: list[int], with_all: bool) -> list[str]:
    names = [f"mAP@{k}" for k in map_ks] + (["mAP@all"] if with_all else [])
    return names + [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks]


def protocol_scores(
    bench: Benchmark, queries: np.ndarray, query_labels: list, database: np.ndarray,
    database_labels: list, **rank_args: Any,
) -> dict[str, float]:  # fmt: skip
    """The figures a benchmark's protocol reports (`bench.metrics`, e.g. mAP@1000 and P@10)
    of cosine rankings; `rank_args` (exclude, diffusion, ...) as for evaluate_embeddings."""
    overall, _, _ = evaluate_embeddings(
        queries, list(query_labels), database, list(database_labels),
        map_ks=(bench.k_map,) if bench.k_map else (), ks=(10,),
        with_all="mAP@all" in bench.metrics, **rank_args,
    )  # fmt: skip
    return {m: overall[m] for m in bench.metrics}


def evaluate_embeddings(
    queries: np.ndarray,
    query_labels: list[str | None],
    database: np.ndarray,
    database_labels: list[str | None],
    *,
    map_ks: tuple[int, ...] | list[int] = (1000,),
    ks: tuple[int, ...] | list[int] = (10, 100),
    with_all: bool = True,
    exclude: np.ndarray | None = None,
    assignments: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    diffusion: int = 0,
    diffusion_candidates: int = DIFFUSION_CANDIDATES,
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, list[float]]]:
    """Score cosine rankings -> (overall, per_class, curve).

    queries (n_queries, dim), database (n_database, dim): any float rows (normalised here).
    Pass `assignments` and `centroids` (in the normalised space) for cluster-mode search.
    `diffusion` > 0: each ranking's top `diffusion_candidates` are re-ordered by diffusion
    with that many graph neighbours (`diffuse_ranking`: the last stage of
    `RerankConfig.diffusion_neighbors`).
    """
    q = normalize(queries)
    db = normalize(database)
    q_labels = np.asarray([str(x) for x in query_labels])
    db_labels = np.asarray([str(x) for x in database_labels])
    classes, db_counts = np.unique(db_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), db_counts.tolist(), strict=True))
    n_relevant = np.asarray([count_of.get(label, 0) for label in q_labels], dtype=np.int64)
    if exclude is not None:
        own = exclude >= 0
        n_relevant = n_relevant - (own & (db_labels[np.where(own, exclude, 0)] == q_labels))
    depth = len(db) if with_all else max([*map_ks, *ks])
    names = _metric_names(list(map_ks), list(ks), with_all)
    ranks = sorted({r for r in np.unique(np.geomspace(1, depth, 40).astype(int)) if r <= depth})
    per_query = {name: np.zeros(len(q)) for name in names}
    prec, rec = np.zeros(len(ranks)), np.zeros(len(ranks))
    for start in range(0, len(q), CHUNK):
        sl = slice(start, min(start + CHUNK, len(q)))
        ids = rank(
            q[sl], db, depth, exclude=None if exclude is None else exclude[sl],
            assignments=assignments, centroids=centroids,
        )  # fmt: skip
        if diffusion > 0:
            ids = diffuse_ranking(q[sl], ids, db, diffusion, diffusion_candidates)
        rel = relevance_matrix(ids, q_labels[sl], db_labels)
        for k in map_ks:
            per_query[f"mAP@{k}"][sl] = average_precision_at_k(rel, k)
        if with_all:
            per_query["mAP@all"][sl] = average_precision_all(rel, n_relevant[sl])
        for k in ks:
            per_query[f"P@{k}"][sl] = precision_at_k(rel, k)
            per_query[f"R@{k}"][sl] = recall_at_k(rel, k, n_relevant[sl])
        p, r = pr_curve(rel, n_relevant[sl], ranks)
        prec += p * (sl.stop - sl.start)
        rec += r * (sl.stop - sl.start)
    overall = {name: float(v.mean()) for name, v in per_query.items()}
    per_class = {
        label: {name: float(v[q_labels == label].mean()) for name, v in per_query.items()}
        for label in sorted(set(q_labels.tolist()))
    }
    curve = {
        "ranks": [float(r) for r in ranks],
        "precision": (prec / len(q)).tolist(),
        "recall": (rec / len(q)).tolist(),
    }
    return overall, per_class, curve


def rerank_split(
    queries: np.ndarray,
    database: np.ndarray,
    config: RerankConfig,
    *,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """DBA of the database, then alpha-QE of the queries against it -> (queries, database).

    queries (n_queries, dim) and database (n_database, dim): any float rows; both come back
    unit-norm float32, same shapes. `exclude` (n_queries,) gives each query's own database
    row (-1 = none): it is never one of that query's expansion neighbours, as in `rank`.
    """
    db = database_augmentation(normalize(database), config.dba_neighbors, config.alpha)
    exact = exact_knn(db)
    knn: KnnFn = exact
    if exclude is not None:
        own = np.asarray(exclude, dtype=np.int64)  # (n_queries,)

        def knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            sims, ids = exact(x, k + 1)
            return drop_excluded(sims, ids, own, k)

    q = query_expansion(queries, db, config.qe_neighbors, config.alpha, knn=knn)
    return q, db


def open_benchmark(spec: str | Path, queries_per_class: int | None = None) -> Benchmark:
    """A named benchmark (``NAME[:VARIANT]``) or a labelled folder / built-in source."""
    if is_benchmark_name(str(spec)):
        if queries_per_class is not None:
            raise UserError(
                f"{spec}: a named benchmark fixes its queries; drop --queries-per-class"
            )
        return load_benchmark(str(spec))
    return labelled_split(spec, queries_per_class)


@dataclass
class EmbeddedSplit:
    """A benchmark's embeddings; images that could not be decoded are left out and listed."""

    queries: np.ndarray  # (n_queries, dim) float32
    query_labels: list[str | None]
    database: np.ndarray  # (n_database, dim) float32
    database_labels: list[str | None]
    exclude: np.ndarray | None  # (n_queries,) database row of each query itself, or -1
    timings: dict[str, float]  # seconds and images/s of each side
    skipped: list[tuple[str, str]]
    pca: tuple[np.ndarray, np.ndarray] | None = None  # pca-N: (mean (d,), components (d, N))


def embed_split(
    model: str,
    bench: Benchmark,
    *,
    batch_size: int = 128,
    workers: int = 2,
    inference: InferenceSettings | None = None,
    progress: bool = True,
) -> EmbeddedSplit:
    """Embed a benchmark's database and queries with a model reference or a baseline name.

    `inference`: how the model runs (imgret.models.backend; default: auto).
    """
    pca_dim = 0
    if model == "pixels" or model.startswith("pca-"):
        embedder: Any = PixelEmbedder(bench.image_size, bench.channels)
        pca_dim = int(model[4:]) if model.startswith("pca-") else 0
    else:
        # --quantize calibrates the int8 graph on the first database images
        embedder = load_for_inference(model, inference, calibration=lambda size, channels: (
            sample_batches(bench.database, size, channels)))  # fmt: skip
    timings: dict[str, float] = {}
    out: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    same = bench.queries is bench.database
    for side, source in (("database", bench.database), ("queries", bench.queries)):
        if same and side == "queries":
            out["queries"] = out["database"]
            continue
        t0 = time.perf_counter()
        res = embed_source(
            embedder, source, batch_size=batch_size, workers=workers, progress=progress
        )
        seconds = time.perf_counter() - t0
        timings[f"embed_{side}_s"] = seconds
        timings[f"embed_{side}_images_per_s"] = len(source) / seconds if seconds else 0.0
        out[side] = (res.embeddings, [source.labels[i] for i in res.positions], res.positions)
        skipped += res.failures
    q_emb, q_labels, q_pos = out["queries"]
    db_emb, db_labels, db_pos = out["database"]
    pca_fit = None
    if pca_dim:
        t0 = time.perf_counter()
        mean, components, _ = pca(db_emb, pca_dim, max_rows=PCA_ROWS)
        mean, components = mean.astype(np.float32), components.astype(np.float32)
        pca_fit = mean, components
        q_emb, db_emb = (q_emb - mean) @ components, (db_emb - mean) @ components
        timings["fit_pca_s"] = time.perf_counter() - t0
    exclude = None
    if bench.exclude is not None:
        where = np.full(len(bench.database), -1, dtype=np.int64)
        where[db_pos] = np.arange(len(db_pos))
        exclude = where[bench.exclude[q_pos]]
    return EmbeddedSplit(q_emb, q_labels, db_emb, db_labels, exclude, timings, skipped, pca_fit)


def evaluate(
    model: str | Path,
    benchmark: str | Path,
    *,
    mode: str = "exact",
    clusters: int | None = None,
    queries_per_class: int | None = None,
    batch_size: int = 128,
    workers: int = 2,
    inference: InferenceSettings | None = None,
    seed: int = 0,
    rerank: RerankChoice = AUTO,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Embed a benchmark's queries and database with `model` and score the rankings.

    `model`: a model folder (`imgret train`), a pretrained name, ``pixels`` or ``pca-N``.
    `mode` "cluster" fits KMeans on the database embeddings (K = `clusters`, or the elbow of
    K = 2..20) and searches only inside each query's cluster. `rerank` re-ranks the
    embeddings first (`rerank_split`; in cluster mode, KMeans then runs on the augmented
    database); None: not; AUTO: as a search would by default (imgret.retrieval.rerank.
    chosen_rerank: on in exact mode for a model built on a pretrained backbone or trained on a
    large collection).
    """
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    bench = open_benchmark(benchmark, queries_per_class)
    model_s = str(model)
    split = embed_split(
        model_s, bench, batch_size=batch_size, workers=workers, inference=inference,
        progress=progress,
    )  # fmt: skip
    q_emb, db_emb, timings = split.queries, split.database, split.timings
    settings: dict[str, Any] = {"protocol_metrics": list(bench.metrics)}
    by_default = rerank == AUTO
    rerank = chosen_rerank(rerank, model_s, mode)
    if rerank is not None:
        t0 = time.perf_counter()
        q_emb, db_emb = rerank_split(q_emb, db_emb, rerank, exclude=split.exclude)
        settings["rerank"] = {**asdict(rerank), "by_default": by_default}
        timings["rerank_s"] = time.perf_counter() - t0
    assignments = centroids = None
    if mode == "cluster":
        t0 = time.perf_counter()
        unit = normalize(db_emb)
        if clusters is None:
            clusters = elbow_curve(unit, range(2, 21), seed=seed, progress=progress).chosen_k
        clustering = fit_kmeans(unit, clusters, seed=seed)
        assignments, centroids = clustering.assignments, clustering.centroids
        settings["clusters"] = clustering.k
        timings["kmeans_s"] = time.perf_counter() - t0
    map_k = bench.k_map or 100
    t0 = time.perf_counter()
    overall, per_class, curve = evaluate_embeddings(
        q_emb, split.query_labels, db_emb, split.database_labels, map_ks=(map_k,),
        ks=(10, 100, map_k), exclude=split.exclude, assignments=assignments, centroids=centroids,
        diffusion=rerank.diffusion_neighbors if rerank is not None else 0,
    )  # fmt: skip
    timings["score_s"] = time.perf_counter() - t0
    if split.skipped:
        log(f"skipped {len(split.skipped)} image(s) that could not be decoded")
    return Evaluation(
        benchmark=bench.name, model=model_s, mode=mode, n_queries=len(q_emb),
        n_database=len(db_emb), metrics=list(overall), overall=overall, per_class=per_class,
        curve=curve, settings=settings, timings=timings, skipped=split.skipped,
    )  # fmt: skip
