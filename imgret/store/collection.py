"""A collection directory: the embeddings of a set of images, their metadata, index and clustering.

Layout (format version 2, described in docs/collection-format.md)::

    collection.json        format, version, model facts, source, metric, dim, index settings
    meta.sqlite            items (key, size, mtime, sha256, label, cluster, embedding row),
                           the manifest of embedding chunks, unreadable files, the clustering
    embeddings/chunk-*.npy (n_rows, dim) float32 each, unit-norm rows when metric is cosine
    index.json             the current FAISS index: kind, parameters, files
    index-NNNNNN.faiss     the FAISS index (ids = embedding rows) and
    index-NNNNNN.rows.npy  the rows it holds

Positions: `keys[i]`, `labels[i]`, `embeddings[i]` and search ids all refer to the i-th item in
embedding-row order. Positions are stable until the collection changes; embedding rows are
never reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import write_json
from ..core.clustering import Clustering, ElbowCurve
from ..core.crashpoints import crash_point
from ..core.errors import UserError
from ..core.vectors import nearest_centroids, normalize
from .chunks import ChunkReader, remove_orphans, write_chunk
from .index_files import (
    IndexSettings,
    LoadedIndex,
    build_index,
    choose_kind,
    load_index,
    plan_index,
    plan_to_meta,
    save_index,
    update_index,
)  # fmt: skip
from .lock import collection_lock
from .metadata import Item, MetaStore, StoredClustering

__all__ = ["Collection", "FORMAT", "FORMAT_VERSION", "index_doc"]

FORMAT = "imgret-collection"
FORMAT_VERSION = 2
Log = Callable[[str], None]


def _settings_from(doc: dict[str, Any] | None) -> IndexSettings:
    names = {f.name for f in fields(IndexSettings)}
    return IndexSettings(**{k: v for k, v in (doc or {}).items() if k in names})


class Collection:
    """An indexed set of images. Open one with imgret.store.opening.open_collection, make one
    with `new_collection` or `create_collection` there (or `imgret index`)."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = path
        self.info = info
        self.store = MetaStore(path / "meta.sqlite")
        self._cache: dict[str, Any] = {}

    # -- reading

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, {len(self)} images, dim {self.dim})"

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def model(self) -> dict[str, Any]:
        return self.info["model"]

    @property
    def metric(self) -> str:
        return self.info["metric"]

    def _columns(self) -> dict[str, Any]:
        if "rows" not in self._cache:
            rows, keys, labels, clusters = self.store.columns()
            self._cache.update(rows=rows, keys=keys, labels=labels, clusters=clusters)
        return self._cache

    @property
    def rows(self) -> np.ndarray:
        """(n_images,) int64 embedding row of each position, increasing."""
        return self._columns()["rows"]

    @property
    def keys(self) -> list[str]:
        """File path (or builtin:// key) of each position."""
        return self._columns()["keys"]

    @property
    def labels(self) -> list[str | None]:
        """Sub-folder name of each position (None at the top level)."""
        return self._columns()["labels"]

    @property
    def reader(self) -> ChunkReader:
        if "reader" not in self._cache:
            self._cache["reader"] = ChunkReader(
                self.path / "embeddings", self.store.chunks(), self.dim
            )
        return self._cache["reader"]

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of embedding rows ((n,) int64) -> (n, dim) float32, read from disk."""
        return self.reader.gather(rows)

    def iter_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions (m,), embeddings (m, dim)) chunk by chunk, memory-mapped where whole."""
        yield from self.reader.blocks(self.rows)

    @property
    def embeddings(self) -> np.ndarray:
        """(n_images, dim) float32 embeddings by position, read from the chunks on first use."""
        if "embeddings" not in self._cache:
            self._cache["embeddings"] = self.fetch(self.rows)
        return self._cache["embeddings"]

    def positions_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Positions of embedding rows (any shape); -1 for rows of no current item (or -1)."""
        rows = np.asarray(rows, dtype=np.int64)
        mine = self.rows
        if len(mine) == 0:
            return np.full(rows.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(mine, rows), 0, len(mine) - 1)
        return np.where((mine[pos] == rows) & (rows >= 0), pos, -1).astype(np.int64)

    def position_of_key(self, key: str) -> int | None:
        if "key_pos" not in self._cache:
            self._cache["key_pos"] = {k: i for i, k in enumerate(self.keys)}
        return self._cache["key_pos"].get(key)

    @property
    def clustering(self) -> Clustering | None:
        if "clustering" not in self._cache:
            stored = self.store.clustering()
            clusters = self._columns()["clusters"]
            if stored is None or any(c is None for c in clusters):
                self._cache.update(clustering=None, elbow=None)
            else:
                self._cache["clustering"] = Clustering(
                    k=stored.k,
                    centroids=stored.centroids,
                    assignments=np.asarray(clusters, dtype=np.int64),
                    inertia=stored.inertia,
                )
                self._cache["elbow"] = ElbowCurve(**stored.elbow) if stored.elbow else None
        return self._cache["clustering"]

    @property
    def elbow(self) -> ElbowCurve | None:
        _ = self.clustering
        return self._cache["elbow"]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(key, reason) of the files that could not be decoded."""
        return [(k, reason) for k, (_, _, reason) in sorted(self.store.failures().items())]

    def invalidate(self) -> None:
        """Forget what was read: the next access reads the current state from disk."""
        self._cache.clear()

    # -- the index

    @property
    def index_settings(self) -> IndexSettings:
        return _settings_from(self.info.get("index"))

    def set_index_settings(self, settings: IndexSettings) -> None:
        self.info["index"] = index_doc(settings)
        write_json(self.path / "collection.json", self.info)

    @property
    def index(self) -> LoadedIndex | None:
        """The saved FAISS index (None when there is none yet), loaded on first use."""
        if "index" not in self._cache:
            self._cache["index"] = load_index(self.path)
        return self._cache["index"]

    def index_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows of items the index lacks, rows the index holds of items now gone)."""
        loaded = self.index
        if loaded is None:
            return self.rows, np.zeros(0, np.int64)
        return (
            np.setdiff1d(self.rows, loaded.rows, assume_unique=True),
            np.setdiff1d(loaded.rows, self.rows, assume_unique=True),
        )

    def refresh_index(
        self,
        settings: IndexSettings | None = None,
        *,
        rebuild: bool = False,
        log: Log | None = None,
    ) -> str:
        """Bring the FAISS index in step with the items -> "current", "updated" or "rebuilt".

        Rebuilds when there is none, when the kind for the size (or the setting) changed, when
        the number of IVF lists for the size is 4 times off, or when more than 10 % of the
        index is removed items it cannot drop (HNSW); otherwise adds and removes rows.
        """
        settings = settings or self.index_settings
        n = len(self)
        if n == 0:
            return "current"
        plan = plan_index(choose_kind(n, settings), n, self.dim, settings)
        loaded = self.index
        if loaded is not None and not rebuild:
            old = loaded.plan
            stale_ivf = bool(plan.nlist) and not (old.nlist / 4 < plan.nlist < old.nlist * 4)
            same_kind = old.kind == plan.kind and (
                old.kind != "hnsw" or old.factory == plan.factory
            )
            if loaded.meta.get("metric") != self.metric or loaded.meta.get("dim") != self.dim:
                rebuild = True
            elif not same_kind or stale_ivf:
                rebuild = True
        if loaded is None or rebuild:
            if log:
                log(f"building a {plan.kind} index ({plan.factory}) of {n:,} embeddings")
            index = build_index(
                plan, self.rows, self.fetch, dim=self.dim, metric=self.metric, settings=settings
            )
            meta = plan_to_meta(plan, metric=self.metric, dim=self.dim, trained_on=n)
            fresh = LoadedIndex(index, self.rows.copy(), meta)
            save_index(self.path, fresh)
            self._cache["index"] = fresh
            self._cache.pop("delta", None)
            return "rebuilt"
        add, drop = self.index_delta()
        if len(add) == 0 and len(drop) == 0:
            return "current"
        updated = update_index(loaded, add, drop, self.fetch)
        tombstones = len(updated.rows) - n
        if tombstones > 0.1 * len(updated.rows):
            return self.refresh_index(settings, rebuild=True, log=log)
        if log:
            log(f"index: added {len(add):,}, removed {len(drop):,}")
        save_index(self.path, updated)
        self._cache["index"] = updated
        self._cache.pop("delta", None)
        return "updated"

    # -- writing

    @contextlib.contextmanager
    def writing(self) -> Iterator[Collection]:
        """Hold the collection's write lock (one writer at a time; released if killed)."""
        with collection_lock(self.path):
            yield self

    def remove_leftovers(self) -> list[str]:
        """Delete chunk files an interrupted run wrote but never committed."""
        return remove_orphans(self.path / "embeddings", self.store.chunks())

    def append(
        self,
        embeddings: np.ndarray,
        items: list[Item],
        failures: Sequence[tuple[str, int | None, int | None, str]] = (),
    ) -> None:
        """Commit (n, dim) embeddings of `items` (their `row` is assigned here) as one chunk.

        The chunk file is complete on disk before the transaction that lists it and the items
        commits, so a process killed at any point loses at most this chunk.
        """
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if len(embeddings) != len(items) or (len(items) and embeddings.shape[1] != self.dim):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(items)} items")
        if self.metric == "cosine":
            embeddings = normalize(embeddings)
        manifest = self.store.chunks()
        seq = 1 + max((int(c.name[6:12]) for c in manifest), default=0)
        first = self.store.next_row()
        stored = self.store.clustering()
        clusters: list[int | None] = [None] * len(items)
        if stored is not None and len(items):
            clusters = nearest_centroids(embeddings, stored.centroids, 1)[:, 0].tolist()
        placed = [
            Item(it.key, first + i, it.size, it.mtime_ns, it.sha256, it.label, clusters[i])
            for i, it in enumerate(items)
        ]
        chunk = None
        if len(items):
            (self.path / "embeddings").mkdir(exist_ok=True)
            chunk = write_chunk(self.path / "embeddings", seq, first, embeddings)
            crash_point("chunk-written")
        with self.store.transaction() as db:
            if chunk is not None:
                MetaStore.put_chunk(db, chunk)
            MetaStore.put_items(db, placed)
            MetaStore.put_failures(db, failures)
        crash_point("chunk-committed")
        self.invalidate()

    def remove_keys(self, keys: list[str]) -> None:
        """Drop items (and recorded failures) by key, in one transaction."""
        with self.store.transaction() as db:
            MetaStore.delete_keys(db, keys)
        self.invalidate()

    def save_clustering(self, clustering: Clustering, elbow: ElbowCurve | None = None) -> None:
        """Store the KMeans model and the cluster of every item, in one transaction."""
        if len(clustering.assignments) != len(self):
            raise ValueError("clustering does not match the collection's size")
        stored = StoredClustering(
            clustering.k, float(clustering.inertia), asdict(elbow) if elbow else None,
            np.asarray(clustering.centroids, dtype=np.float32),
        )  # fmt: skip
        pairs = zip(self.rows.tolist(), np.asarray(clustering.assignments).tolist(), strict=True)
        with self.store.transaction() as db:
            MetaStore.put_clustering(db, stored, pairs)
        self.invalidate()

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse a model other than the one that made the collection's embeddings.

        `model` is what imgret.models.registry.describe says of the model (its canonical
        reference, kind, sizes and the fingerprint of its weights).
        """
        mine = self.model
        for key in ("embedding_dim", "image_size", "channels", "name"):
            if mine.get(key) != model.get(key):
                raise UserError(
                    f"{self.path} was made with model {mine.get('ref')} ({key}={mine.get(key)}), "
                    f"not {model.get('ref')} ({key}={model.get(key)}). Use the same model or "
                    "index into a new collection folder."
                )
        if mine.get("ref") != model.get("ref"):
            raise UserError(
                f"{self.path} was made with model {mine.get('ref')}, not {model.get('ref')}. "
                "Use the same model or index into a new collection folder."
            )
        theirs = model.get("fingerprint")
        if mine.get("fingerprint") and theirs and mine["fingerprint"] != theirs:
            raise UserError(
                f"{self.path} was made with other weights of model {mine.get('ref')} (the "
                "model was trained again since). Index into a new collection folder, or "
                "rebuild this one with `imgret embed`."
            )


def index_doc(settings: IndexSettings) -> dict[str, Any]:
    """The index settings as collection.json stores them (threads are not a stored setting)."""
    doc = asdict(settings)
    doc.pop("threads")
    return doc
