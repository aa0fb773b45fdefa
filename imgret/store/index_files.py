"""FAISS index files of a collection: which kind for which size, build, update, save, load.

Kinds (ids in every index are embedding rows of the chunk store, so an index can be updated):

    flat    exact inner product (cosine) or L2 over all embeddings
    ivf     inverted lists over KMeans cells (IVF-Flat); `nprobe` cells are scanned per query
    hnsw    a navigable small-world graph (HNSW-Flat); `ef_search` sets the search breadth
    ivfsq   PCA to dim/8, IVF with 8-bit scalar-quantized codes; the best `refine * k`
            candidates re-ranked exactly with the stored embeddings
    ivfpq   PCA to dim/8, IVF with 4-bit product-quantized codes (fast scan, 1/4 of the
            memory of ivfsq); re-ranked the same way

"auto" picks by the number of embeddings (see `choose_kind`). Searching them is
imgret.retrieval.faiss_search.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_path, read_json, read_npy, write_json, write_npy
from ..core.crashpoints import crash_point
from ..core.errors import DamagedError
from ..core.vectors import faiss_module
from .lock import no_readers

__all__ = [
    "KINDS", "RERANKED", "IndexSettings", "IndexPlan", "LoadedIndex", "choose_kind",
    "ivf_lists", "default_nprobe", "plan_index", "plan_to_meta", "build_index", "trained_index",
    "update_index", "save_index", "load_index", "read_pointer", "remove_old_generations",
    "set_threads", "index_memory_bytes", "faiss_metric", "generation_files",
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


def set_threads(threads: int | None = None) -> None:
    faiss = faiss_module()

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


def faiss_metric(metric: str) -> int:
    """FAISS's metric of a collection metric: inner product for "cosine", else L2."""
    faiss = faiss_module()

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
    rows = np.asarray(rows, dtype=np.int64)
    index = trained_index(plan, rows, fetch, dim=dim, metric=metric, settings=settings)
    for s in range(0, len(rows), batch):
        part = rows[s : s + batch]
        index.add_with_ids(fetch(part), part)
    return index


def trained_index(
    plan: IndexPlan, rows: np.ndarray, fetch: Fetch, *, dim: int, metric: str = "cosine",
    settings: IndexSettings = IndexSettings(),
) -> Any:  # fmt: skip
    """The empty FAISS index of `plan`, trained on a seeded sample of `rows` (IVF kinds)."""
    faiss = faiss_module()

    set_threads(settings.threads)
    rows = np.asarray(rows, dtype=np.int64)
    index = faiss.index_factory(dim, plan.factory, faiss_metric(metric))
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
    return index


def _remove(index: Any, rows: np.ndarray) -> bool:
    """Remove ids from an index that supports it; False where it does not (HNSW)."""
    faiss = faiss_module()

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


def _write_index(index: Any, path: Path) -> None:
    """faiss.write_index through Python file writes: a full disk raises (a plain
    faiss.write_index only prints the error and leaves a short file)."""
    faiss = faiss_module()

    with atomic_path(path, needed=int(index.ntotal) * int(index.d) * 4 or None) as tmp:
        with open(tmp, "wb") as f:
            writer = faiss.PyCallbackIOWriter(f.write)
            faiss.write_index(index, writer)
            del writer


def generation_files(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta["file"]), str(meta["rows_file"])


def save_index(folder: Path, loaded: LoadedIndex) -> None:
    """Write the index under a new generation, then point index.json at it, then tidy up.

    Each file is written to a temporary name and renamed, and index.json is replaced last:
    a process killed at any point leaves the previous index in use. Older generations are
    deleted only while no reader has the collection open (`remove_old_generations`).
    """
    old = read_pointer(folder, strict=False)
    gen = int(old.get("generation", 0)) + 1 if old else 1
    gen = max([gen, *(g + 1 for g in _generations_on_disk(folder))])
    name = f"index-{gen:06d}"
    _write_index(loaded.index, folder / f"{name}.faiss")
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
    crash_point("index-current")
    remove_old_generations(folder)


_GEN = re.compile(r"^index-(\d{6,})\.")


def _generations_on_disk(folder: Path) -> list[int]:
    return [int(m.group(1)) for p in folder.glob("index-*") if (m := _GEN.match(p.name))]


def remove_old_generations(folder: Path) -> list[str]:
    """Delete index files other than the current generation's -> their names.

    Files of a generation newer than the current one were never current (a write was
    interrupted) and always go; older generations go only when no reader has the collection
    open (a reader that read index.json just before it changed may still open them).
    """
    meta = read_pointer(folder, strict=False)
    keep = set(generation_files(meta)) if meta else set()
    current = int(meta.get("generation", 0)) if meta else 0
    removed = []
    with no_readers(folder) as free:
        for p in folder.glob("index-*"):
            m = _GEN.match(p.name)
            if p.name in keep or m is None:
                continue
            if free or int(m.group(1)) > current:
                p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


def read_pointer(folder: Path, *, strict: bool = True) -> dict[str, Any] | None:
    """index.json (None when there is none). A damaged one: DamagedError, or None if not strict."""
    path = folder / "index.json"
    try:
        doc = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if not strict:
            return None
        raise DamagedError(path, f"unreadable ({e})", _index_hint(folder)) from None
    ok = isinstance(doc, dict) and all(k in doc for k in ("file", "rows_file", "kind", "factory"))
    if not ok:
        if not strict:
            return None
        raise DamagedError(path, "not an index description", _index_hint(folder))
    return doc  # type: ignore[no-any-return]


def _index_hint(folder: Path) -> str:
    return (f"run `imgret check --repair {folder}` (or `imgret index --rebuild-index`) to "
            "rebuild the index")  # fmt: skip


def _load_generation(folder: Path, meta: dict[str, Any], mmap: bool) -> LoadedIndex:
    faiss = faiss_module()

    name, rows_name = generation_files(meta)
    path, rows_path = folder / name, folder / rows_name
    for p in (path, rows_path):
        if not p.is_file():
            raise DamagedError(p, "missing (index.json points to it)", _index_hint(folder))
    mapped = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)  # FAISS >= 1.8: flat vectors left in the file
    flags = mapped | faiss.IO_FLAG_READ_ONLY if mmap and mapped and meta["kind"] == "flat" else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[-1][:200] if str(e).strip() else "unreadable"
        raise DamagedError(path, f"unreadable FAISS index ({detail})", _index_hint(folder)
                           ) from None  # fmt: skip
    try:
        rows = read_npy(rows_path)
    except (OSError, ValueError, EOFError) as e:
        raise DamagedError(rows_path, f"unreadable ({e})", _index_hint(folder)) from None
    if rows.ndim != 1 or index.ntotal != len(rows) or index.d != meta.get("dim", index.d):
        raise DamagedError(path, f"holds {index.ntotal} embeddings of {index.d} dims, "
                           f"{rows_path.name} lists {len(rows)}", _index_hint(folder))  # fmt: skip
    return LoadedIndex(index, rows.astype(np.int64, copy=False), meta)


def load_index(folder: Path, *, mmap: bool = False) -> LoadedIndex | None:
    """The index index.json points to, or None when there is none (or a newer format).

    mmap : a flat index's vectors are memory-mapped from its file, read-only (for searching
        only: it cannot be updated); other kinds are read as usual
    A reader that finds the files gone because a writer moved on reads index.json again; an
    index that is damaged is a DamagedError naming the file.
    """
    for _ in range(5):
        meta = read_pointer(folder)
        if not meta or meta.get("version", 0) > INDEX_FORMAT_VERSION:
            return None
        try:
            return _load_generation(folder, meta, mmap)
        except DamagedError:
            if read_pointer(folder, strict=False) == meta:
                raise
    return None


def index_memory_bytes(index: Any) -> int:
    """Bytes of a FAISS index as serialized (about its size in memory)."""
    faiss = faiss_module()

    return int(faiss.serialize_index(index).nbytes)


def plan_to_meta(plan: IndexPlan, *, metric: str, dim: int, trained_on: int) -> dict[str, Any]:
    return {**asdict(plan), "metric": metric, "dim": dim, "trained_on": trained_on}
