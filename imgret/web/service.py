"""What the web app does with a collection, without HTTP: search, list, describe.

`CollectionService` loads the collection and its model once; its methods return plain
JSON-ready dicts (the shapes are the pydantic models of imgret/web/schemas.py). Searching is
CPU-bound and runs in the server's thread pool; a semaphore keeps at most `slots` searches
computing at once so that concurrent requests do not oversubscribe the cores.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import WebConfig
from .errors import WebError
from .files import ItemFiles

__all__ = ["CollectionService", "PLOTS"]

# Pictures drawn by `imgret train` (model folder) and `imgret cluster` (collection folder).
PLOTS = ("elbow", "clusters", "loss", "reconstructions")


class CollectionService:
    """One loaded collection and the model that embeds its queries."""

    def __init__(self, collection_path: str | Path, config: WebConfig) -> None:
        import torch

        from ..models import registry
        from ..retrieval.searcher import Searcher
        from ..store.opening import open_collection

        if config.threads:
            # Concurrent requests are the parallelism: each search gets few threads, so that
            # threads do not fight over the cores (numpy's BLAS spins its own otherwise).
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(config.threads)
            threadpool_limits(config.threads, user_api="blas")
        self.config = config
        self.collection = coll = open_collection(collection_path)
        ref = coll.model["ref"]
        self.embedder = registry.load(ref)
        coll.check_model(registry.describe(ref, self.embedder))
        self.searcher = Searcher(coll)
        self.model_dir = Path(ref) if Path(ref).is_dir() else None
        sources = coll.info.get("sources") or [coll.info.get("source", "")]
        self.files = ItemFiles(
            [Path(s) for s in sources if s],
            Path(config.cache_dir) if config.cache_dir else coll.path / "thumbs",
            config.thumb_size,
        )
        self.slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        self._compute = threading.BoundedSemaphore(self.slots)
        # Read everything the requests use here, on this thread: the collection's metadata
        # store (SQLite) may only be used by the thread that opened it, and requests run in
        # a thread pool. The warm-up searches also make the first real query no slower.
        _ = (coll.keys, coll.labels, coll.embeddings, coll.clustering, coll.elbow)
        self._skipped = len(getattr(coll, "skipped", None) or coll.info.get("skipped", []))
        self._index = _describe_index(coll)
        self._members, self._bounds = self._order_clusters()
        query = self.embed_image(Image.new("RGB", (8, 8)))
        for mode in ("exact", "cluster") if coll.clustering is not None else ("exact",):
            self._search(query, {}, 1, mode, time.perf_counter())

    def _order_clusters(self) -> tuple[np.ndarray, np.ndarray]:
        """Members of every cluster, most central first -> (order (n,), bounds (K + 1,))."""
        c = self.collection.clustering
        if c is None:
            return np.zeros(0, np.int64), np.zeros(1, np.int64)
        emb = self.collection.embeddings  # (n_images, dim)
        nearest = c.centroids[c.assignments]  # (n_images, dim): each image's own centroid
        closeness = -((emb - nearest) ** 2).sum(1)  # (n_images,)
        order = np.lexsort((-closeness, c.assignments))  # by cluster, then closest first
        bounds = np.searchsorted(c.assignments[order], np.arange(c.k + 1))
        return order.astype(np.int64), bounds.astype(np.int64)

    # -- describing -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.collection)

    def plot_path(self, name: str) -> Path | None:
        """The file of a plot named in PLOTS, or None when it was not drawn."""
        folder = self.model_dir if name in ("loss", "reconstructions") else self.collection.path
        path = folder / f"{name}.png" if folder is not None and name in PLOTS else None
        return path if path is not None and path.is_file() else None

    def info(self) -> dict[str, Any]:
        coll = self.collection
        model = {
            k: coll.model.get(k) for k in ("ref", "name", "embedding_dim", "image_size", "channels")
        }
        c = coll.clustering
        return {
            "name": coll.path.resolve().name,
            "count": len(coll),
            "dim": coll.dim,
            "metric": coll.metric,
            "index": self._index,
            "model": model,
            "source": str(coll.info.get("source", "")),
            "skipped": self._skipped,
            "clustered": c is not None,
            "k": c.k if c is not None else None,
            "elbow_k": coll.elbow.chosen_k if coll.elbow is not None else None,
            "modes": ["exact", "cluster"] if c is not None else ["exact"],
            "plots": {n: f"/api/plots/{n}" for n in PLOTS if self.plot_path(n) is not None},
            "limits": {
                "max_k": self.config.max_k,
                "max_page": self.config.max_page,
                "max_upload_bytes": self.config.max_upload_bytes,
            },
        }

    def item(self, i: int) -> dict[str, Any]:
        """One image of the collection as shown in pages (no absolute paths)."""
        i = self._check_id(i)
        coll = self.collection
        c = coll.clustering
        return {
            "id": i,
            "name": self.files.display_name(coll.keys[i]),
            "label": coll.labels[i],
            "cluster": int(c.assignments[i]) if c is not None else None,
            "thumb": f"/api/thumbs/{i}",
            "image": f"/api/images/{i}",
        }

    def items(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of the collection in its stored order."""
        stop = min(len(self), offset + self._limit(limit))
        return {
            "total": len(self),
            "offset": offset,
            "items": [self.item(i) for i in range(min(offset, stop), stop)],
        }

    def clusters(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of clusters, each with its size and its most central images."""
        c = self._clustering()
        stop = min(c.k, offset + self._limit(limit))
        out = []
        for ci in range(min(offset, stop), stop):
            lo, hi = int(self._bounds[ci]), int(self._bounds[ci + 1])
            samples = self._members[lo : min(hi, lo + self.config.cluster_samples)]
            out.append(
                {"cluster": ci, "size": hi - lo, "samples": [self.item(int(i)) for i in samples]}
            )
        return {"total": c.k, "offset": offset, "clusters": out}

    def cluster(self, ci: int, offset: int, limit: int) -> dict[str, Any]:
        """A page of one cluster's images, most central first."""
        c = self._clustering()
        if not 0 <= ci < c.k:
            raise WebError(404, f"no cluster {ci}: the collection has clusters 0 to {c.k - 1}")
        lo, hi = int(self._bounds[ci]), int(self._bounds[ci + 1])
        start = min(lo + offset, hi)
        stop = min(hi, start + self._limit(limit))
        members = self._members[start:stop]
        return {
            "cluster": ci,
            "total": hi - lo,
            "offset": offset,
            "items": [self.item(int(i)) for i in members],
        }

    # -- searching --------------------------------------------------------------------------

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """A decoded image -> (1, dim) float32 query embedding."""
        from ..models.embed import embed_images

        with self._compute:
            return embed_images(self.embedder, [image])

    def search_image(
        self, image: Image.Image, name: str, k: int, mode: str, rerank: bool = False
    ) -> dict[str, Any]:
        """Rank the collection for an uploaded image."""
        t0 = time.perf_counter()
        query = self.embed_image(image)
        about = {"kind": "upload", "name": name, "item": None}
        return self._search(query, about, k, mode, t0, rerank=rerank)

    def search_item(self, i: int, k: int, mode: str, rerank: bool = False) -> dict[str, Any]:
        """ "More like this": rank the collection for one of its images (itself left out)."""
        t0 = time.perf_counter()
        item = self.item(i)
        query = self.collection.embeddings[i : i + 1]  # (1, dim)
        about = {"kind": "item", "name": item["name"], "item": item}
        return self._search(query, about, k, mode, t0, rerank=rerank, exclude=i)

    def _search(
        self, query: np.ndarray, about: dict[str, Any], k: int, mode: str, t0: float,
        *, rerank: bool = False, exclude: int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        from ..core.errors import UserError
        from ..retrieval.rerank import RerankConfig

        if mode == "cluster" and self.collection.clustering is None:
            raise WebError(
                400,
                "the collection is not clustered: use mode=exact, or run "
                "`imgret cluster` on it first",
            )
        try:
            with self._compute:
                scores, ids, clusters = self.searcher.search(
                    query, k, mode=mode, rerank=RerankConfig() if rerank else None,
                    exclude=None if exclude is None else np.array([exclude]),
                )  # fmt: skip
        except UserError as e:
            raise WebError(400, str(e)) from None
        hits = [
            {"rank": r + 1, "score": float(s), **self.item(int(i))}
            for r, (i, s) in enumerate(zip(ids[0], scores[0], strict=True))
            if i >= 0
        ]
        return {
            "query": about,
            "mode": mode,
            "rerank": rerank,
            "k": k,
            "cluster": int(clusters[0]) if clusters is not None else None,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "hits": hits,
        }

    # -- checks -----------------------------------------------------------------------------

    def key(self, i: int) -> str:
        return self.collection.keys[self._check_id(i)]

    def _check_id(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise WebError(404, f"no image {i}: ids run from 0 to {len(self) - 1}")
        return int(i)

    def _limit(self, limit: int) -> int:
        return max(0, min(limit, self.config.max_page))

    def _clustering(self) -> Any:
        if self.collection.clustering is None:
            raise WebError(404, "the collection is not clustered yet (run `imgret cluster`)")
        return self.collection.clustering


def _describe_index(coll: Any) -> str:
    """The index kind from index.json (format 2 collections), else exact in-memory search."""
    try:
        meta = json.loads((coll.path / "index.json").read_text(encoding="utf-8"))
        return f"{meta['kind']} ({meta['factory']}, {meta.get('ntotal', len(coll)):,} vectors)"
    except (OSError, ValueError, KeyError, TypeError):
        return "flat (exact search in memory)"
