"""A collection directory: the embeddings of a set of images, their metadata, index and clustering.

Layout (format version 2): docs/collection-format.md. Positions: `keys[i]`, `labels[i]`,
`embeddings[i]` and search ids all refer to the i-th item in embedding-row order. Positions are
stable until the collection changes; embedding rows are never reused.

Readers see one moment: items, manifest and clustering are read in one SQLite transaction
(`generation` says which), and while a Collection is open no writer deletes a file it may read.
Every change happens under the collection's write lock (`writing`, taken by every method that
writes when the caller does not hold it already).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import make_dir, remove_stale_temps, write_json
from ..core.clustering import Clustering, ElbowCurve
from ..core.crashpoints import crash_point
from ..core.errors import DamagedError, UserError
from ..core.vectors import nearest_centroids, normalize
from .chunks import ChunkReader, chunk_seq, remove_orphans, write_chunk
from .index_files import IndexSettings, LoadedIndex, build_index, load_index, remove_old_generations
from .lock import ReaderMark, collection_lock, no_readers
from .metadata import Item, MetaStore, Snapshot, StoredClustering
from .refresh import index_delta, refresh_index

__all__ = ["Collection", "FORMAT", "FORMAT_VERSION", "index_doc", "settings_from"]

FORMAT = "imgret-collection"
FORMAT_VERSION = 2
Log = Callable[[str], None]


def settings_from(doc: dict[str, Any] | None) -> IndexSettings:
    names = {f.name for f in fields(IndexSettings)}
    return IndexSettings(**{k: v for k, v in (doc or {}).items() if k in names})


def _release(mark: ReaderMark | None) -> None:
    if mark is not None:
        mark.release()


class Collection:
    """An indexed set of images. Open one with imgret.store.opening.open_collection, make one
    with `new_collection` or `create_collection` there (or `imgret index`).

    Close it (`close()`, or use it as a context manager) to let writers delete the files it
    might still read; it is closed when garbage-collected too.
    """

    def __init__(
        self, path: Path, info: dict[str, Any], *, store: MetaStore | None = None,
        reader: bool = True,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.info = info
        self._mark = ReaderMark(self.path) if reader else None  # before anything is read
        self.store = store or MetaStore(self.path / "meta.sqlite")
        self._writing = 0
        self._cache: dict[str, Any] = {}
        # Garbage-collected, it stops holding back writers; its SQLite connection closes when
        # the store is garbage too (`open_collection(p).store` may outlive it).
        self._finalizer = weakref.finalize(self, _release, self._mark)

    def close(self) -> None:
        self._finalizer()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _snapshot(self) -> Snapshot:
        if "snapshot" not in self._cache:
            self._cache["snapshot"] = self.store.snapshot()
        return self._cache["snapshot"]  # type: ignore[no-any-return]

    @property
    def generation(self) -> int:
        """The generation of what this object shows (it increases with every change)."""
        return self._snapshot().generation

    def current_generation(self) -> int:
        """The collection's generation now (one small SQLite read)."""
        return self.store.generation()

    def changed(self) -> bool:
        """Whether the collection changed since this object read it (open it again to see)."""
        return self.current_generation() != self.generation

    @property
    def rows(self) -> np.ndarray:
        """(n_images,) int64 embedding row of each position, increasing."""
        return self._snapshot().rows

    @property
    def keys(self) -> list[str]:
        """File path (or builtin:// key) of each position."""
        return self._snapshot().keys

    @property
    def labels(self) -> list[str | None]:
        """Sub-folder name of each position (None at the top level)."""
        return self._snapshot().labels

    @property
    def reader(self) -> ChunkReader:
        if "reader" not in self._cache:
            self._cache["reader"] = ChunkReader(
                self.path / "embeddings", self._snapshot().chunks, self.dim
            )
        return self._cache["reader"]  # type: ignore[no-any-return]

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
        return self._cache["embeddings"]  # type: ignore[no-any-return]

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
        return self._cache["key_pos"].get(key)  # type: ignore[no-any-return]

    @property
    def clustering(self) -> Clustering | None:
        if "clustering" not in self._cache:
            snap = self._snapshot()
            stored = snap.clustering
            if stored is None or any(c is None for c in snap.clusters):
                self._cache.update(clustering=None, elbow=None)
            else:
                self._cache["clustering"] = Clustering(
                    k=stored.k,
                    centroids=stored.centroids,
                    assignments=np.asarray(snap.clusters, dtype=np.int64),
                    inertia=stored.inertia,
                )
                self._cache["elbow"] = ElbowCurve(**stored.elbow) if stored.elbow else None
        return self._cache["clustering"]  # type: ignore[no-any-return]

    @property
    def elbow(self) -> ElbowCurve | None:
        _ = self.clustering
        return self._cache["elbow"]  # type: ignore[no-any-return]

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
        return settings_from(self.info.get("index"))

    @property
    def index(self) -> LoadedIndex | None:
        """The saved FAISS index (None when there is none yet), loaded on first use."""
        if "index" not in self._cache:
            self._cache["index"] = load_index(self.path)
        return self._cache["index"]  # type: ignore[no-any-return]

    def map_index(self) -> LoadedIndex | None:
        """The saved index as `index`, a flat one memory-mapped read-only: searching never reads
        its vectors (the Searcher ranks the chunks); `refresh_index` reads it anew."""
        self._cache["index"] = load_index(self.path, mmap=True)
        self._cache["mapped"] = True
        return self._cache["index"]  # type: ignore[no-any-return]

    def index_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows of items the index lacks, rows the index holds of items now gone)."""
        return index_delta(self.rows, self.index)

    def refresh_index(
        self,
        settings: IndexSettings | None = None,
        *,
        rebuild: bool = False,
        log: Log | None = None,
        build: Callable[..., Any] = build_index,
    ) -> str:
        """Bring the FAISS index in step with the items -> "current", "updated" or "rebuilt".

        See imgret.store.refresh; a damaged index is rebuilt.
        """
        with self.writing():
            loaded = None
            if not rebuild:
                try:
                    # a mapped index is read-only (FAISS would abort on adding to it): read anew
                    loaded = load_index(self.path) if self._cache.get("mapped") else self.index
                except DamagedError as e:
                    if log:
                        log(f"{e}: rebuilding it")
                    rebuild = True
            try:
                how, saved = refresh_index(
                    self.path, self.rows, self.fetch, dim=self.dim, metric=self.metric,
                    settings=settings or self.index_settings, loaded=loaded, rebuild=rebuild,
                    log=log, build=build,
                )  # fmt: skip
            finally:
                self._cache.pop("index", None)  # an update may have changed it in memory
            if how != "current":
                self._bump()
            self._cache["index"] = saved
            self._cache.pop("mapped", None)
            return how

    # -- writing

    @contextlib.contextmanager
    def writing(self) -> Iterator[Collection]:
        """Hold the collection's write lock (one writer at a time; released if killed).

        Re-entrant for this object; refused at once when another process writes.
        """
        if self._writing:
            yield self
            return
        with collection_lock(self.path):
            if self._mark is not None:
                self._mark.release()  # this object's reads do not hold back its own writes
            self._writing += 1
            try:
                self.store.upgrade()
                yield self
            finally:
                self._writing -= 1
                self.invalidate()
                if self._mark is not None:
                    self._mark.acquire()

    def _bump(self) -> None:
        with self.store.transaction():
            pass  # the transaction increases the generation

    def set_index_settings(self, settings: IndexSettings) -> None:
        with self.writing():
            self.info["index"] = index_doc(settings)
            write_json(self.path / "collection.json", self.info)
            self._bump()

    def remove_leftovers(self) -> list[str]:
        """Delete what interrupted runs left: uncommitted chunks, temporary files, old index
        generations; files open readers may need are kept while they are open."""
        with self.writing():
            removed = remove_stale_temps(self.path) + remove_stale_temps(self.path / "embeddings")
            manifest = self.store.chunks()
            with no_readers(self.path) as free:
                removed += remove_orphans(self.path / "embeddings", manifest, readers_gone=free)
            removed += remove_old_generations(self.path)
            return removed

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
        with self.writing():
            folder = self.path / "embeddings"
            listed = [chunk_seq(c.name) or 0 for c in self.store.chunks()]
            on_disk = [chunk_seq(p.name) or 0 for p in folder.glob("chunk-*")]
            seq = 1 + max([0, *listed, *on_disk])  # never the name of a file a reader may have
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
                make_dir(folder)
                chunk = write_chunk(folder, seq, first, embeddings)
                crash_point("chunk-written")
            with self.store.transaction() as db:
                if chunk is not None:
                    MetaStore.put_chunk(db, chunk)
                MetaStore.put_items(db, placed)
                MetaStore.put_failures(db, failures)
            crash_point("chunk-committed")

    def remove_keys(self, keys: list[str]) -> None:
        """Drop items (and recorded failures) by key, in one transaction."""
        with self.writing(), self.store.transaction() as db:
            MetaStore.delete_keys(db, keys)
        crash_point("items-removed")

    def save_clustering(self, clustering: Clustering, elbow: ElbowCurve | None = None) -> None:
        """Store the KMeans model and the cluster of every item, in one transaction."""
        with self.writing():
            if len(clustering.assignments) != len(self):
                raise ValueError("clustering does not match the collection's size")
            stored = StoredClustering(
                clustering.k, float(clustering.inertia), asdict(elbow) if elbow else None,
                np.asarray(clustering.centroids, dtype=np.float32),
            )  # fmt: skip
            pairs = zip(self.rows.tolist(), np.asarray(clustering.assignments).tolist(),
                        strict=True)  # fmt: skip
            with self.store.transaction() as db:
                MetaStore.put_clustering(db, stored, pairs)

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse a model other than the one that made the collection's embeddings.

        `model` is what imgret.models.registry.describe says of the model (its canonical
        reference, kind, sizes and the fingerprint of its weights).
        """
        mine, fix = self.model, "Use the same model or index into a new collection folder."
        for key in ("embedding_dim", "image_size", "channels", "name", "ref"):
            if mine.get(key) != model.get(key):
                what = "" if key == "ref" else f" ({key}={{}})"
                raise UserError(
                    f"{self.path} was made with model {mine.get('ref')}"
                    f"{what.format(mine.get(key))}, not {model.get('ref')}"
                    f"{what.format(model.get(key))}. {fix}"
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
