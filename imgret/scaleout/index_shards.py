"""Building a large IVF index on Ray: trained on the driver, filled in shards, merged in order.

The IVF kinds (ivf, ivfsq, ivfpq) are trained once on the driver, on the same seeded sample
as `imgret.store.index_files.build_index`; the trained empty index goes to every Ray task,
each task adds one shard of consecutive rows, and the driver merges the shards (`merge_from`)
in row order, so every inverted list holds the same entries in the same order as one build.
Flat and HNSW indexes are built on the driver (an HNSW graph cannot be merged this way).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.vectors import faiss_module
from ..store.index_files import Fetch, IndexPlan, IndexSettings, build_index, trained_index
from .cluster import RayConfig, connect

__all__ = ["index_builder", "build_index_sharded", "fill_shard"]


def index_builder(config: RayConfig | None) -> Callable[..., Any]:
    """The index build of a job: `build_index`, or on Ray when `config` is given."""
    if config is None:
        return build_index

    def build(plan: IndexPlan, rows: np.ndarray, fetch: Fetch, **kw: Any) -> Any:
        return build_index_sharded(plan, rows, fetch, config=config, **kw)

    return build


def fill_shard(empty: np.ndarray, embeddings: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A Ray task: the serialized trained empty index + (n, dim) embeddings with their (n,)
    ids -> the serialized index holding them. One FAISS thread: the task reserves one CPU."""
    faiss = faiss_module()

    faiss.omp_set_num_threads(1)
    index = faiss.deserialize_index(empty)
    index.add_with_ids(np.ascontiguousarray(embeddings, dtype=np.float32), ids)
    return faiss.serialize_index(index)


def build_index_sharded(
    plan: IndexPlan,
    rows: np.ndarray,
    fetch: Fetch,
    *,
    dim: int,
    metric: str = "cosine",
    settings: IndexSettings | None = None,
    config: RayConfig,
) -> Any:
    """What `build_index(plan, rows, fetch, ...)` returns, with the shards added in Ray tasks.

    rows : (n,) int64 embedding rows, the index's ids; shards of `config.shard_rows`
    fetch : (m,) rows -> (m, dim) float32 embeddings, read on the driver (the collection is
        there) and sent with each task; at most twice the cluster's CPUs shards are in flight
    """
    rows = np.asarray(rows, dtype=np.int64)
    settings = settings or IndexSettings()
    if not plan.nlist or len(rows) <= config.shard_rows:
        return build_index(plan, rows, fetch, dim=dim, metric=metric, settings=settings)
    faiss = faiss_module()
    index = trained_index(plan, rows, fetch, dim=dim, metric=metric, settings=settings)
    ray = connect(config)
    empty = ray.put(faiss.serialize_index(index))
    task = ray.remote(num_cpus=1)(fill_shard)
    in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: deque[Any] = deque()
    for s in range(0, len(rows), config.shard_rows):
        part = rows[s : s + config.shard_rows]
        pending.append(task.remote(empty, fetch(part), part))
        if len(pending) >= in_flight:
            index.merge_from(faiss.deserialize_index(ray.get(pending.popleft())), 0)
    while pending:  # merged first in, first out: in row order
        index.merge_from(faiss.deserialize_index(ray.get(pending.popleft())), 0)
    return index
