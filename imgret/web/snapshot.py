"""One generation of a collection as the web app serves it, and how to tell a newer one exists.

A `Snapshot` opens the collection, reads everything requests need (item columns, chunk
manifest, clustering, failures: one read transaction of the store), memory-maps every chunk
and loads the FAISS index, then closes the collection: requests run in many threads and never
touch its SQLite file, and a writer may delete files this snapshot no longer needs by name
(the maps stay valid). Embeddings stay on disk: searches go through the FAISS index (mode
"index") or the memory-mapped chunks (mode "exact"); no float32 copy is held here (on AMX
CPUs the Searcher holds a bfloat16 one, half the size, for its pre-scan: imgret.core.prescan).

`stamp(path)` is cheap (a few `stat` calls): it changes whenever collection.json, index.json
or the SQLite database (its write-ahead log included) is written, i.e. at every commit of a
writer. The service compares it between requests and opens a new Snapshot when it changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.clustering import Clustering
from ..retrieval.searcher import Searcher
from ..store.collection import Collection
from ..store.opening import open_collection
from .subset import SubsetVectors

__all__ = ["Snapshot", "stamp"]

_WATCHED = ("collection.json", "index.json", "meta.sqlite", "meta.sqlite-wal")


def stamp(path: Path) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) of the files a writer changes; (0, 0) for a missing one, and for an
    empty write-ahead log (readers make and remove that one; a commit writes into it)."""
    out = []
    for name in _WATCHED:
        try:
            st = os.stat(path / name)
            out.append((st.st_mtime_ns, st.st_size) if st.st_size else (0, 0))
        except OSError:
            out.append((0, 0))
    return tuple(out)


class Snapshot:
    """A collection read at one moment, with its Searcher. Read-only and shared by threads."""

    def __init__(self, path: Path, quiet: bool = True) -> None:
        self.stamp = stamp(path)  # taken first: a commit during the reads shows up next time
        coll = open_collection(path)
        try:
            _ = (coll.rows, coll.reader, coll.clustering, coll.elbow)  # one read transaction
            self.skipped = len(coll.store.failures())
            self.loaded_index = coll.map_index()  # None when there is none yet
            self.count = len(coll)
            self.members, self.bounds = self._order_clusters(coll)  # maps every chunk
        finally:
            close = getattr(coll, "close", None)
            (close or coll.store.close)()
        self.collection: Collection = coll
        self.searcher = Searcher(coll, log=(lambda _: None) if quiet else print, prescan=True)
        if self.count:
            probe = np.ones((2, coll.dim), np.float32)  # 2: makes the pre-scan's copy too
            self.searcher.search(probe, 1, mode="index")  # computes what the index lacks
        self._names: list[str] | None = None
        self._subsets: dict[tuple[str, str], Searcher] = {}
        self._duplicates: dict[float, tuple[list[list[int]], dict[int, float], int]] = {}

    # -- clusters ---------------------------------------------------------------------------

    @staticmethod
    def _order_clusters(coll: Collection) -> tuple[np.ndarray, np.ndarray]:
        """Members of every cluster, most central first -> (order (n,), bounds (K + 1,)).

        Reads every chunk once (block by block, memory-mapped), clustered or not."""
        c = coll.clustering
        closeness = np.zeros(len(coll), np.float32)
        for positions, emb in coll.iter_blocks():
            if c is not None:
                nearest = c.centroids[c.assignments[positions]]  # (m, dim) own centroids
                closeness[positions] = -((emb - nearest) ** 2).sum(1)
        if c is None:
            return np.zeros(0, np.int64), np.zeros(1, np.int64)
        order = np.lexsort((-closeness, c.assignments))  # by cluster, then closest first
        bounds = np.searchsorted(c.assignments[order], np.arange(c.k + 1))
        return order.astype(np.int64), bounds.astype(np.int64)

    # -- index ------------------------------------------------------------------------------

    def describe_index(self) -> str:
        """What index mode searches, in words, for what the collection holds now."""
        if self.count == 0:
            return "none (the collection has no images)"
        loaded = self.loaded_index
        if loaded is None:
            return f"none yet: exact search over {self.count:,} images"
        lacks, gone = self.collection.index_delta()
        held = len(loaded.rows) - len(gone)
        text = f"{loaded.meta['kind']} ({loaded.meta['factory']}, {held:,} images)"
        if len(lacks):
            text += f" + {len(lacks):,} newer images searched exactly"
        return text

    # -- filters ----------------------------------------------------------------------------

    def names(self, display: Any) -> list[str]:
        """Display name of every position (made once per snapshot, on first use)."""
        if self._names is None:
            self._names = [display(k) for k in self.collection.keys]
        return self._names

    def matching(self, display: Any, label: str | None, folder: str | None) -> np.ndarray:
        """(m,) sorted positions whose label is `label` and whose name lies under `folder`."""
        keep = np.ones(self.count, bool)
        if label is not None:
            labels = self.collection.labels
            keep &= np.fromiter((lab == label for lab in labels), bool, self.count)
        if folder is not None:
            prefix = folder.strip("/") + "/"
            names = self.names(display)
            keep &= np.fromiter((n.startswith(prefix) for n in names), bool, self.count)
        return np.flatnonzero(keep).astype(np.int64)

    def subset_searcher(self, key: tuple[str, str], positions: np.ndarray) -> Searcher:
        """A Searcher over some positions only (kept for the few latest filters)."""
        searcher = self._subsets.get(key)
        if searcher is None:
            if len(self._subsets) >= 8:
                self._subsets.pop(next(iter(self._subsets)))
            searcher = Searcher(SubsetVectors(self.collection, positions), log=lambda _: None)
            self._subsets[key] = searcher
        return searcher

    def facets(self, display: Any, limit: int = 500) -> dict[str, list[dict[str, Any]]]:
        """Labels and folders with their image counts, most images first."""
        labels: dict[str, int] = {}
        for lab in self.collection.labels:
            if lab is not None:
                labels[lab] = labels.get(lab, 0) + 1
        folders: dict[str, int] = {}
        for name in self.names(display):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                f = "/".join(parts[:depth])
                folders[f] = folders.get(f, 0) + 1

        def ranked(counts: dict[str, int]) -> list[dict[str, Any]]:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
            return [{"name": n, "count": c} for n, c in sorted(top)]

        return {"labels": ranked(labels), "folders": ranked(folders)}

    def duplicates(self, threshold: float) -> tuple[list[list[int]], dict[int, float], int]:
        """(groups of positions, each one's best similarity in its group, number of pairs) of
        the images at least `threshold` similar, found as `imgret duplicates` finds them."""
        from ..retrieval.duplicates import duplicate_groups, find_duplicates

        key = round(threshold, 4)
        if key not in self._duplicates:
            pairs = find_duplicates(self.searcher, threshold) if self.count > 1 else []
            best: dict[int, float] = {}
            for p in pairs:
                best[p.a] = max(best.get(p.a, -1.0), p.score)
                best[p.b] = max(best.get(p.b, -1.0), p.score)
            if len(self._duplicates) >= 4:
                self._duplicates.pop(next(iter(self._duplicates)))
            self._duplicates[key] = (duplicate_groups(pairs), best, len(pairs))
        return self._duplicates[key]

    @property
    def clustering(self) -> Clustering | None:
        return self.collection.clustering
