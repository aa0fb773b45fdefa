"""FAISS indexes over a collection's embeddings: which kind for which size, build, save, search.

Kinds (ids in every index are embedding rows of the chunk store, so an index can be updated):

    flat    exact inner product (cosine) or L2 over all embeddings
    ivf     inverted lists over KMeans cells (IVF-Flat); `nprobe` cells are scanned per query
    hnsw    a navigable small-world graph (HNSW-Flat); `ef_search` sets the search breadth
    ivfsq   PCA to dim/8, IVF with 8-bit scalar-quantized codes; the best `refine * k`
            candidates re-ranked exactly with the stored embeddings
    ivfpq   PCA to dim/8, IVF with 4-bit product-quantized codes (fast scan, 1/4 of the
            memory of ivfsq); re-ranked the same way

"auto" picks by the number of embeddings (see `choose_kind`). The cluster mode of search is
an IVF-Flat over the user's KMeans centroids (`cluster_index`), so with nprobe=1 it ranks
exactly the images of the query's cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, read_json, write_json, write_npy
from .crashpoints import crash_point

__all__ = [
    "KINDS", "RERANKED", "IndexSettings", "IndexPlan", "LoadedIndex", "choose_kind",
    "ivf_lists", "default_nprobe", "plan_index", "plan_to_meta", "build_index", "update_index",
    "save_index", "load_index", "search_index", "rerank", "cluster_index", "nearest_centroids",
    "search_cluster_index", "set_threads", "index_memory_bytes",
]  # fmt: skip

KINDS = ("auto", "flat", "ivf", "hnsw", "ivfsq", "ivfpq")
RERANKED = ("ivfsq", "ivfpq")  # kinds whose candidates are re-ranked with exact embeddings
# Sizes where "auto" switches kind (measured in bench/scale.py, see BENCHMARKS.md).
AUTO_FLAT_MAX = 20_000  # exact search up to here: a single query scans <= 40 MB at 512-d
AUTO_IVF_MAX = 300_000  # IVF-Flat up to here; PCA + IVF-SQ8 + exact re-ranking above
INDEX_FORMAT_VERSION = 1

Fetch = Callable[[np.ndarray], np.ndarray]  # (n,) int64 rows -> (n, dim) float32 embeddings


@dataclass(frozen=True)
class IndexSettings:
    kind: str = "auto"  # auto, flat, ivf, hnsw, ivfsq or ivfpq
    nprobe: int | None = None  # IVF cells scanned per query (None: the default for the size)
    ef_search: int = 128  # HNSW: candidates kept while searching the graph
    hnsw_m: int = 32  # HNSW: links per node
    ef_construction: int = 80  # HNSW: candidates kept while building the graph
    refine: int = 10  # ivfsq, ivfpq: re-rank refine * k candidates with the exact embeddings
    train_per_list: int = 16  # IVF: KMeans training points per list (at least 10,000 in all)
    seed: int = 0  # feeds the training sample and FAISS's KMeans
    threads: int | None = None  # FAISS OpenMP threads (None: all cores)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.nprobe is not None and self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")


@dataclass(frozen=True)
class IndexPlan:
    """What to build: the FAISS factory string and the size-dependent parameters."""

    kind: str
    factory: str
    nlist: int = 0  # IVF kinds: number of inverted lists
    nprobe: int = 0  # IVF kinds: default lists scanned per query


def _faiss() -> Any:
    """The faiss module, imported on first use (its type stubs are incomplete: typed Any)."""
    import faiss

    return faiss


def set_threads(threads: int | None = None) -> None:
    faiss = _faiss()

    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)


def choose_kind(n: int, settings: IndexSettings = IndexSettings()) -> str:
    """The index kind for `n` embeddings: the setting, or by size when it is "auto"."""
    if settings.kind != "auto":
        return settings.kind
    if n <= AUTO_FLAT_MAX:
        return "flat"
    return "ivf" if n <= AUTO_IVF_MAX else "ivfsq"


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` embeddings: the power of two nearest 4 sqrt(n), >= 39 points each."""
    target = 4.0 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(1, nlist)


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default, about sqrt(nlist): recall@10 ~0.95 in bench/scale.py."""
    return max(1, min(nlist, max(8, round(math.sqrt(nlist)))))


def _reduced_dims(dim: int) -> int:
    """Dims the ivfsq and ivfpq kinds keep (by PCA): dim/8 but at least 64, and even.

    The codes only choose candidates; exact re-ranking orders them. At 512 dims, 64 found the
    same candidates as 128 with half the scanning (bench/scale.py).
    """
    reduced = dim if dim <= 64 else max(64, dim // 8)
    return reduced - reduced % 2


def plan_index(kind: str, n: int, dim: int, settings: IndexSettings = IndexSettings()) -> IndexPlan:
    """The factory string and parameters of a `kind` index for `n` embeddings of `dim`."""
    if kind == "flat":
        return IndexPlan("flat", "IDMap2,Flat")
    if kind == "hnsw":
        return IndexPlan("hnsw", f"IDMap2,HNSW{settings.hnsw_m},Flat")
    nlist = ivf_lists(n)
    nprobe = default_nprobe(nlist)
    if kind == "ivf":
        return IndexPlan("ivf", f"IVF{nlist},Flat", nlist, nprobe)
    if kind in RERANKED:
        reduced = _reduced_dims(dim)
        if reduced < 2:
            raise ValueError(f"{kind} needs embeddings of at least 2 dimensions, got {dim}")
        pca = f"PCA{reduced}," if reduced != dim else ""
        # 4-bit PQ fast scan: one sub-quantizer for each pair of dimensions.
        codes = "SQ8" if kind == "ivfsq" else f"PQ{reduced // 2}x4fs"
        return IndexPlan(kind, f"{pca}IVF{nlist},{codes}", nlist, nprobe)
    raise ValueError(f"unknown index kind {kind!r}")


def _metric(metric: str) -> int:
    faiss = _faiss()

    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def build_index(
    plan: IndexPlan,
    rows: np.ndarray,
    fetch: Fetch,
    *,
    dim: int,
    metric: str = "cosine",
    settings: IndexSettings = IndexSettings(),
    batch: int = 65536,
) -> Any:
    """Train (on a seeded sample) and fill a FAISS index with the embeddings of `rows`.

    rows : (n,) int64 embedding rows, used as the index's ids
    fetch : returns the (len(rows), dim) float32 embeddings of the rows it is given; called in
        batches of at most `batch` rows, so memory holds one batch besides the index
    """
    faiss = _faiss()

    set_threads(settings.threads)
    rows = np.asarray(rows, dtype=np.int64)
    index = faiss.index_factory(dim, plan.factory, _metric(metric))
    if plan.kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = settings.ef_construction
    if plan.nlist:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = settings.seed
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = settings.train_per_list
        ivf.cp.min_points_per_centroid = 1  # small collections: no warning, lists are small
        if plan.kind == "ivfpq":
            faiss.downcast_index(ivf).pq.cp.seed = settings.seed
        n_train = min(len(rows), max(plan.nlist * settings.train_per_list, 10_000))
        rng = np.random.default_rng(settings.seed)
        sample = np.sort(rng.choice(rows, n_train, replace=False)) if n_train else rows
        index.train(fetch(sample))
    for s in range(0, len(rows), batch):
        part = rows[s : s + batch]
        index.add_with_ids(fetch(part), part)
    return index


def _remove(index: Any, rows: np.ndarray) -> bool:
    """Remove ids from an index that supports it; False where it does not (HNSW)."""
    faiss = _faiss()

    try:
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(rows, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


@dataclass
class LoadedIndex:
    """A FAISS index with the facts stored beside it."""

    index: Any  # faiss.Index whose ids are embedding rows
    rows: np.ndarray  # (ntotal,) int64 sorted ids held by the index (removed ones included)
    meta: dict[str, Any]  # index.json: kind, factory, nlist, nprobe, trained_on, ...

    @property
    def plan(self) -> IndexPlan:
        m = self.meta
        return IndexPlan(m["kind"], m["factory"], m.get("nlist", 0), m.get("nprobe", 0))


def update_index(
    loaded: LoadedIndex, add_rows: np.ndarray, drop_rows: np.ndarray, fetch: Fetch, *,
    batch: int = 65536,
) -> LoadedIndex:  # fmt: skip
    """Add and remove rows in place. Rows an index cannot remove stay (filtered at search)."""
    index = loaded.index
    rows = loaded.rows
    if len(drop_rows) and _remove(index, drop_rows):
        rows = np.setdiff1d(rows, drop_rows, assume_unique=True)
    add_rows = np.asarray(add_rows, dtype=np.int64)
    for s in range(0, len(add_rows), batch):
        part = add_rows[s : s + batch]
        index.add_with_ids(fetch(part), part)
    rows = np.union1d(rows, add_rows)
    return LoadedIndex(index, rows, dict(loaded.meta))


def save_index(folder: Path, loaded: LoadedIndex) -> None:
    """Write the index under a new generation, then point index.json at it, then tidy up.

    Each file is written to a temporary name and renamed, and index.json is replaced last:
    a process killed at any point leaves the previous index in use.
    """
    faiss = _faiss()

    old = _read_pointer(folder)
    gen = int(old.get("generation", 0)) + 1 if old else 1
    name = f"index-{gen:06d}"
    with atomic_path(folder / f"{name}.faiss") as tmp:
        faiss.write_index(loaded.index, str(tmp))
    write_npy(folder / f"{name}.rows.npy", np.asarray(loaded.rows, dtype=np.int64))
    crash_point("index-written")
    meta = {
        **loaded.meta,
        "version": INDEX_FORMAT_VERSION,
        "generation": gen,
        "file": f"{name}.faiss",
        "rows_file": f"{name}.rows.npy",
        "ntotal": int(loaded.index.ntotal),
    }
    write_json(folder / "index.json", meta)
    loaded.meta = meta
    for p in folder.glob("index-*"):
        if p.name not in (meta["file"], meta["rows_file"]):
            p.unlink(missing_ok=True)


def _read_pointer(folder: Path) -> dict[str, Any] | None:
    path = folder / "index.json"
    if not path.exists():
        return None
    try:
        doc = read_json(path)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def load_index(folder: Path, *, mmap: bool = False) -> LoadedIndex | None:
    """The index index.json points to, or None when there is none (or a newer one)."""
    faiss = _faiss()

    meta = _read_pointer(folder)
    if not meta or meta.get("version", 0) > INDEX_FORMAT_VERSION:
        return None
    path = folder / meta["file"]
    rows_path = folder / meta["rows_file"]
    if not path.exists() or not rows_path.exists():
        return None
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    rows = np.load(rows_path)
    if index.ntotal != len(rows):
        return None
    return LoadedIndex(index, rows, meta)


def _params(plan: IndexPlan, settings: IndexSettings, exclude: np.ndarray | None) -> Any:
    """Search parameters; `exclude` (ids to leave out) becomes an IDSelector."""
    faiss = _faiss()

    if plan.kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=settings.ef_search)
    elif plan.nlist:
        params = faiss.SearchParametersIVF(nprobe=min(plan.nlist, settings.nprobe or plan.nprobe))
    else:
        params = faiss.SearchParameters()
    if exclude is not None and len(exclude):
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
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
    settings: IndexSettings = IndexSettings(),
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search (n_queries, dim) float32 queries -> (scores, rows), each (n_queries, k).

    Scores are inner products (cosine for unit vectors) or negative squared L2 distances,
    higher is better; missing results have row -1 and score -inf. ivfsq/ivfpq candidates are
    re-ranked with the exact embeddings from `fetch`. Rows in `exclude` are never returned.
    """
    set_threads(settings.threads)
    plan = loaded.plan
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    kk = k * max(1, settings.refine) if plan.kind in RERANKED else k
    kk = max(1, min(kk, max(1, loaded.index.ntotal)))
    dist, rows = loaded.index.search(queries, kk, params=_params(plan, settings, exclude))
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
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part_scores, order, axis=1)
    ids = np.take_along_axis(np.take_along_axis(rows, part, axis=1), order, axis=1)
    return _pad(best, np.where(np.isfinite(best), ids, -1), k)


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
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
    faiss = _faiss()

    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    k, dim = centroids.shape
    quantizer = faiss.IndexFlatL2(dim)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, dim, k, _metric(metric))
    index.is_trained = True
    ids = np.arange(len(x), dtype=np.int64)
    assign = np.ascontiguousarray(assignments, dtype=np.int64)
    index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    # The FAISS wrapper keeps `quantizer` alive in index.referenced_objects.
    return index


def nearest_centroids(queries: np.ndarray, centroids: np.ndarray, n: int) -> np.ndarray:
    """The `n` nearest centroids (squared L2) of each query -> (n_queries, n) int64, nearest first.

    The same arithmetic as the brute-force cluster search, so nprobe=1 picks the same cluster.
    """
    d = (
        (queries**2).sum(1, keepdims=True)
        - 2 * queries @ centroids.T
        + (centroids**2).sum(1)[None, :]
    )
    n = min(n, centroids.shape[0])
    if n == 1:
        return np.argmin(d, axis=1)[:, None].astype(np.int64)
    part = np.argpartition(d, n - 1, axis=1)[:, :n]
    order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


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


def index_memory_bytes(index: Any) -> int:
    """Bytes of a FAISS index as serialized (about its size in memory)."""
    faiss = _faiss()

    return int(faiss.serialize_index(index).nbytes)


def plan_to_meta(plan: IndexPlan, *, metric: str, dim: int, trained_on: int) -> dict[str, Any]:
    return {**asdict(plan), "metric": metric, "dim": dim, "trained_on": trained_on}
