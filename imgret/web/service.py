"""What the web app does with a collection, without HTTP: search, list, describe, follow changes.

`CollectionService` loads the collection's model once and serves from a `Snapshot` of the
collection (imgret/web/snapshot.py). Before each request it compares the collection's stamp
(a few `stat` calls) with the snapshot's: when a writer (`imgret index`, `add`, `remove`,
`cluster`, or a job started from the pages) has committed since, one request opens a new
snapshot while the others go on with the old one, so no request waits or fails for a reload.

Searches go through the Searcher of the snapshot (the collection's FAISS index by default);
concurrent searches of the same kind are ranked together in one batch (imgret/web/batching.py).
Methods return plain JSON-ready dicts (the shapes are the pydantic models of schemas.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..retrieval.searcher import Ranking, Searcher
from .batching import SearchQueue
from .config import WebConfig
from .errors import WebError
from .files import ItemFiles, key_version
from .snapshot import Snapshot, stamp

__all__ = ["CollectionService", "PLOTS", "MODES"]

# Pictures drawn by `imgret train` (model folder) and `imgret cluster` (collection folder).
PLOTS = ("elbow", "clusters", "loss", "reconstructions")
MODES = ("index", "exact", "cluster")
RETRY_S = 1.0  # after a failed reload, serve the old snapshot this long before trying again
log = logging.getLogger("imgret.web")


class CollectionService:
    """One collection, followed as it changes, and the model that embeds its queries."""

    def __init__(self, collection_path: str | Path, config: WebConfig) -> None:
        import torch

        from ..core.vectors import faiss_module
        from ..models.embed import embed_images
        from ..store.index_files import set_threads

        faiss_module()  # loaded before the thread limits are set
        threads = config.threads
        if threads:
            # Concurrent requests are the parallelism: few threads each (BLAS and OpenMP spin
            # their own otherwise); OpenMP's setting is per thread: search threads set it too.
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(threads)
            threadpool_limits(threads, user_api="blas")  # after FAISS's BLAS is loaded
            set_threads(threads)
        self.config = config
        self.path = Path(collection_path)
        self._reload_lock = threading.Lock()
        self._next_try = 0.0
        self.snapshot = Snapshot(self.path)
        self._load_model(self.snapshot)
        self.slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        self._compute = threading.BoundedSemaphore(self.slots)
        start = (lambda: set_threads(threads)) if threads else None
        # One thread ranks the waiting queries as one batch: on a busy machine, fewer and
        # bigger batches read the embeddings fewer times (uploads embed in `slots` at once).
        self.queue = SearchQueue(1, start=start)
        embed_images(self.embedder, [Image.new("RGB", (8, 8))])  # the first query: no slower

    def _load_model(self, snap: Snapshot) -> None:
        from ..models import registry
        from ..retrieval.rerank import AUTO, chosen_rerank

        coll = snap.collection
        ref = coll.model["ref"]
        self.embedder = registry.load(ref)
        coll.check_model(registry.describe(ref, self.embedder))
        self.model = dict(coll.model)
        self.model_dir = Path(ref) if Path(ref).is_dir() else None
        # whether a search of each mode re-ranks when the request does not say
        self._rerank_by_mode = {m: chosen_rerank(AUTO, ref, m, coll.metric) is not None
                                for m in MODES}  # fmt: skip
        self.files = self._files(coll)

    def _files(self, coll: Any) -> ItemFiles:
        roots = [Path(coll.info.get("source", "")), coll.path / "uploads"]
        if self.config.allow_add is not None:
            roots.append(self.config.allow_add)
        cache = self.config.cache_dir or coll.path / "thumbs"
        return ItemFiles([r for r in roots if str(r)], Path(cache), self.config.thumb_size,
                         names_under=(coll.path,))  # fmt: skip

    # -- following the collection ----------------------------------------------------------

    def current(self) -> Snapshot:
        """The snapshot to answer with: reopened first when the collection changed since.

        One thread reloads; the others go on with the snapshot they have. A reload that fails
        (a writer in the middle of a change) is tried again a moment later.
        """
        snap = self.snapshot
        if stamp(self.path) == snap.stamp or time.monotonic() < self._next_try:
            return snap
        if self._reload_lock.acquire(blocking=False):
            try:
                self._reload()
            finally:
                self._reload_lock.release()
        return self.snapshot

    def refresh(self) -> Snapshot:
        """The newest state, waiting for a reload in progress (a job's own change is then
        seen by the requests that follow it)."""
        with self._reload_lock:
            self._reload()
        return self.snapshot

    def _reload(self) -> None:
        try:
            if stamp(self.path) != self.snapshot.stamp:
                fresh = Snapshot(self.path)
                if fresh.collection.model != self.model:
                    self._load_model(fresh)
                self.files = self._files(fresh.collection)
                self.snapshot = fresh
        except Exception as e:  # noqa: BLE001 - keep serving the last good snapshot
            log.warning("imgret: the collection could not be reopened (%s); retrying", e)
            self._next_try = time.monotonic() + RETRY_S

    # -- describing -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.current().count

    def plot_path(self, name: str) -> Path | None:
        """The file of a plot named in PLOTS, or None when it was not drawn."""
        folder = self.model_dir if name in ("loss", "reconstructions") else self.path
        path = folder / f"{name}.png" if folder is not None and name in PLOTS else None
        return path if path is not None and path.is_file() else None

    def info(self) -> dict[str, Any]:
        snap = self.current()
        coll = snap.collection
        model = {
            k: coll.model.get(k) for k in ("ref", "name", "embedding_dim", "image_size", "channels")
        }
        c = snap.clustering
        elbow = coll.elbow
        return {
            "name": coll.path.resolve().name,
            "count": snap.count,
            "dim": coll.dim,
            "metric": coll.metric,
            "index": snap.describe_index(),
            "model": model,
            "source": str(coll.info.get("source", "")),
            "skipped": snap.skipped,
            "clustered": c is not None,
            "k": c.k if c is not None else None,
            "elbow_k": elbow.chosen_k if elbow is not None else None,
            "modes": list(MODES) if c is not None else ["index", "exact"],
            "plots": {n: f"/api/plots/{n}" for n in PLOTS if self.plot_path(n) is not None},
            "can_add": self.config.allow_add is not None,
            "rerank_default": self.rerank_for(None, "index"),
            "limits": {name: getattr(self.config, name)
                       for name in ("max_k", "max_page", "max_upload_bytes")},  # fmt: skip
        }

    def item(self, i: int, snap: Snapshot | None = None) -> dict[str, Any]:
        """One image of the collection as shown in pages (no absolute paths)."""
        snap = snap or self.current()
        i = self._check_id(snap, i)
        coll = snap.collection
        c = snap.clustering
        return {
            "id": i,
            "name": self.files.display_name(coll.keys[i]),
            "label": coll.labels[i],
            "cluster": int(c.assignments[i]) if c is not None else None,
            "thumb": f"/api/thumbs/{i}?v={key_version(coll.keys[i])}",
            "image": f"/api/images/{i}?v={key_version(coll.keys[i])}",
        }

    def items(
        self, offset: int, limit: int, label: str | None = None, folder: str | None = None
    ) -> dict[str, Any]:
        """A page of the collection in its stored order (of the filter's images only)."""
        snap = self.current()
        if label is None and folder is None:
            stop = min(snap.count, offset + self._limit(limit))
            ids = range(min(offset, stop), stop)
            total = snap.count
        else:
            chosen = snap.matching(self.files.display_name, label, folder)
            total = len(chosen)
            ids = chosen[offset : offset + self._limit(limit)].tolist()
        return {"total": total, "offset": offset, "items": [self.item(i, snap) for i in ids]}

    def facets(self) -> dict[str, Any]:
        return self.current().facets(self.files.display_name)

    def clusters(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of clusters, each with its size and its most central images."""
        snap = self.current()
        c = self._clustering(snap)
        stop = min(c.k, offset + self._limit(limit))
        out = []
        for ci in range(min(offset, stop), stop):
            lo, hi = int(snap.bounds[ci]), int(snap.bounds[ci + 1])
            samples = snap.members[lo : min(hi, lo + self.config.cluster_samples)]
            out.append({
                "cluster": ci, "size": hi - lo,
                "samples": [self.item(int(i), snap) for i in samples],
            })  # fmt: skip
        return {"total": c.k, "offset": offset, "clusters": out}

    def cluster(self, ci: int, offset: int, limit: int) -> dict[str, Any]:
        """A page of one cluster's images, most central first."""
        snap = self.current()
        c = self._clustering(snap)
        if not 0 <= ci < c.k:
            raise WebError(404, f"no cluster {ci}: the collection has clusters 0 to {c.k - 1}")
        lo, hi = int(snap.bounds[ci]), int(snap.bounds[ci + 1])
        start = min(lo + offset, hi)
        members = snap.members[start : min(hi, start + self._limit(limit))]
        items = [self.item(int(i), snap) for i in members]
        return {"cluster": ci, "total": hi - lo, "offset": offset, "items": items}

    def duplicates(self, threshold: float, offset: int, limit: int) -> dict[str, Any]:
        """Groups of near-duplicate images (as `imgret duplicates` finds them), biggest first."""
        snap = self.current()
        with self._compute:
            groups, best, n_pairs = snap.duplicates(threshold)
        page = groups[offset : offset + self._limit(limit)]
        return {
            "threshold": threshold,
            "total": len(groups),
            "pairs": n_pairs,
            "offset": offset,
            "groups": [
                [{**self.item(i, snap), "score": round(best[i], 6)} for i in g] for g in page
            ],
        }

    # -- searching --------------------------------------------------------------------------

    def search_image(
        self, decode: Any, name: str, k: int, mode: str, *, rerank: bool = False,
        label: str | None = None, folder: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Rank the collection for an uploaded image; `decode()` gives the image."""
        from ..models.embed import embed_images

        t0 = time.perf_counter()
        with self._compute:  # decoding and embedding: at most `slots` uploads at once
            query = embed_images(self.embedder, [decode()])
        about = {"kind": "upload", "name": name, "item": None}
        return self._search(self.current(), query, about, k, mode, t0, rerank, label, folder)

    def search_item(
        self, i: int, k: int, mode: str, *, rerank: bool = False, label: str | None = None,
        folder: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """ "More like this": rank the collection for one of its images (itself left out)."""
        t0 = time.perf_counter()
        snap = self.current()
        query, about = self._item_query(snap, i)
        return self._search(snap, query, about, k, mode, t0, rerank, label, folder, exclude=i)

    def rerank_for(self, rerank: bool | None, mode: str) -> bool:
        """Whether a search re-ranks: as asked, or (None) the collection's default for the mode
        (imgret.retrieval.rerank.chosen_rerank)."""
        return self._rerank_by_mode.get(mode, False) if rerank is None else rerank

    def in_thread(self, rerank: bool, label: str | None, folder: str | None) -> bool:
        """Whether a search by id needs a thread of the pool (re-ranking, a filter, a reload
        due) rather than `search_item_async`."""
        return rerank or label is not None or folder is not None or self.stale()

    async def search_item_async(self, i: int, k: int, mode: str) -> dict[str, Any]:
        """search_item without re-ranking or filter, when no reload is due: the request waits
        for its batch in the event loop instead of holding a thread of the pool."""
        t0 = time.perf_counter()
        snap = self.snapshot
        query, about = self._item_query(snap, i)
        searcher, positions, exclude = self._scope(snap, mode, False, None, None, i)
        job = self.queue.submit(searcher, query, k, mode, exclude)
        ranking = await asyncio.wrap_future(job)
        return self._answer(snap, ranking, positions, about, k, mode, False, None, None, t0)

    def stale(self) -> bool:
        return stamp(self.path) != self.snapshot.stamp

    def _item_query(self, snap: Snapshot, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        item = self.item(i, snap)
        coll = snap.collection
        query = coll.fetch(coll.rows[i : i + 1])  # (1, dim), from the memory-mapped chunk
        return query, {"kind": "item", "name": item["name"], "item": item}

    def _search(
        self, snap: Snapshot, query: np.ndarray, about: dict[str, Any], k: int, mode: str,
        t0: float, rerank: bool, label: str | None, folder: str | None, exclude: int = -1,
    ) -> dict[str, Any]:  # fmt: skip
        from ..core.errors import UserError
        from ..retrieval.rerank import RerankConfig

        searcher, positions, exclude = self._scope(snap, mode, rerank, label, folder, exclude)
        try:
            if rerank:
                with self._compute:
                    excl = None if exclude < 0 else np.array([exclude])
                    ranking = searcher.search(
                        query, k, mode=mode, rerank=RerankConfig(), exclude=excl
                    )
            else:
                ranking = self.queue.search(searcher, query, k, mode, exclude)
        except UserError as e:
            raise WebError(400, str(e)) from None
        return self._answer(snap, ranking, positions, about, k, mode, rerank, label, folder, t0)

    def _scope(
        self, snap: Snapshot, mode: str, rerank: bool, label: str | None, folder: str | None,
        exclude: int,
    ) -> tuple[Searcher, np.ndarray | None, int]:  # fmt: skip
        """(the Searcher, the filter's positions or None, the position to leave out in it)."""
        if mode == "cluster" and snap.clustering is None:
            raise WebError(
                400,
                "the collection is not clustered: use mode=index or exact, or run "
                "`imgret cluster` on it first",
            )
        if rerank and mode == "cluster":
            raise WebError(400, "re-ranking works in index or exact mode, not in cluster mode")
        if label is None and folder is None:
            return snap.searcher, None, exclude
        positions = snap.matching(self.files.display_name, label, folder)
        searcher = snap.subset_searcher((label or "", folder or ""), positions)
        if exclude >= 0:
            j = int(np.searchsorted(positions, exclude))
            exclude = j if j < len(positions) and positions[j] == exclude else -1
        return searcher, positions, exclude

    def _answer(
        self, snap: Snapshot, ranking: Ranking, positions: np.ndarray | None,
        about: dict[str, Any], k: int, mode: str, rerank: bool, label: str | None,
        folder: str | None, t0: float,
    ) -> dict[str, Any]:  # fmt: skip
        scores, ids, clusters = ranking
        if positions is not None:  # subset positions -> collection positions
            ids = np.where(ids >= 0, positions[np.maximum(ids, 0)], -1) if len(positions) else ids
        hits = [
            {"rank": r + 1, "score": float(s), **self.item(int(i), snap)}
            for r, (i, s) in enumerate(zip(ids[0], scores[0], strict=True))
            if i >= 0
        ]
        return {
            "query": about,
            "mode": mode,
            "rerank": rerank,
            "k": k,
            "filter": {"label": label, "folder": folder},
            "cluster": int(clusters[0]) if clusters is not None else None,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "hits": hits,
        }

    # -- checks -----------------------------------------------------------------------------

    def key(self, i: int, v: str | None = None) -> str:
        """The key of image `i`; `v`: the version its URL was made with (404 if it differs:
        the collection changed since the page was made, and id `i` is another image now)."""
        snap = self.current()
        key = snap.collection.keys[self._check_id(snap, i)]
        if v is not None and v != key_version(key):
            raise WebError(404, f"image {i} changed since this page was made; reload the page")
        return key

    @staticmethod
    def _check_id(snap: Snapshot, i: int) -> int:
        if not 0 <= i < snap.count:
            if snap.count == 0:
                raise WebError(404, f"no image {i}: the collection has no images")
            raise WebError(404, f"no image {i}: ids run from 0 to {snap.count - 1}")
        return int(i)

    def _limit(self, limit: int) -> int:
        return max(0, min(limit, self.config.max_page))

    @staticmethod
    def _clustering(snap: Snapshot) -> Any:
        if snap.clustering is None:
            raise WebError(404, "the collection is not clustered yet (run `imgret cluster`)")
        return snap.clustering
