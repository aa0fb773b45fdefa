"""Making and opening collection folders: new, create from embeddings, open, upgrade, delete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import fsync_dir, make_dir, read_json, read_npy, write_json
from ..core.clustering import Clustering, ElbowCurve
from ..core.errors import DamagedError, UserError
from .collection import FORMAT, FORMAT_VERSION, Collection, index_doc, settings_from
from .index_files import IndexSettings
from .lock import collection_lock
from .metadata import Item, MetaStore

__all__ = [
    "open_collection", "new_collection", "create_collection", "remove_collection_files",
    "upgrade_collection", "is_collection", "read_info", "collection_generation", "CHUNK_ROWS",
]  # fmt: skip

CHUNK_ROWS = 65536  # rows per chunk written by `create_collection`
_V1_FILES = ("embeddings.npy", "items.json", "clusters.json", "centroids.npy", "assignments.npy")


def is_collection(path: str | Path) -> bool:
    return (Path(path) / "collection.json").exists()


def read_info(path: Path) -> dict[str, Any]:
    """collection.json, checked: UserError when it is none, DamagedError when it is broken."""
    file = path / "collection.json"
    if not file.exists():
        raise UserError(
            f"{path}: not an imgret collection (no collection.json). "
            "Make one with `imgret index FOLDER --out COLLECTION --model MODEL`."
        )
    try:
        info = read_json(file)
    except (OSError, ValueError) as e:
        raise DamagedError(file, f"unreadable ({e})", _rewrite_hint(path)) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path}: not an imgret collection ({file} is not one's description)")
    version = info.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise DamagedError(file, f'"version" is {version!r}, not a number', _rewrite_hint(path))
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: made by a newer imgret (collection format {version}, this imgret "
            f"reads up to {FORMAT_VERSION}); upgrade imgret"
        )
    if version >= 2:
        _check_info(file, info)
    return info


def _rewrite_hint(path: Path) -> str:
    return (f"the collection's description is lost; make the collection again with `imgret "
            f"index FOLDER --out {path} --model MODEL` (into an empty folder)")  # fmt: skip


def _check_info(file: Path, info: dict[str, Any]) -> None:
    """The fields every reader relies on, with their types."""
    model = info.get("model")
    problems = []
    if not isinstance(info.get("dim"), int) or info["dim"] < 1:
        problems.append(f'"dim" is {info.get("dim")!r}, not a positive number')
    if info.get("metric") not in ("cosine", "l2"):
        problems.append(f'"metric" is {info.get("metric")!r}, not "cosine" or "l2"')
    if not isinstance(model, dict) or not isinstance(model.get("ref"), str):
        problems.append('"model" does not name the model ("ref")')
    if not isinstance(info.get("index", {}), dict):
        problems.append('"index" is not a table of settings')
    else:
        try:
            settings_from(info.get("index"))
        except (TypeError, ValueError) as e:
            problems.append(f'"index" settings are invalid ({e})')
    if problems:
        raise DamagedError(file, "; ".join(problems), _rewrite_hint(file.parent))


def open_collection(path: str | Path) -> Collection:
    """The collection at `path`; read-only use never changes its files.

    A format-1 collection is refused with a pointer to `upgrade_collection` (which `imgret
    index` and `imgret add` run, under the collection's lock).
    """
    path = Path(path)
    info = read_info(path)
    if info.get("version", 0) < 2:
        raise UserError(
            f"{path}: an old (format 1) collection; run `imgret index` on its folder to upgrade it"
        )
    return Collection(path, info)


def new_collection(
    path: str | Path, *, model: dict[str, Any], source: str, dim: int,
    metric: str = "cosine", settings: IndexSettings | None = None,
) -> Collection:  # fmt: skip
    """An empty collection at `path` (which must not hold one). `model`: registry.describe."""
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    path = Path(path)
    make_dir(path)
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": dict(model),
        "source": source,
        "metric": metric,
        "dim": int(dim),
        "index": index_doc(settings or IndexSettings()),
    }
    with collection_lock(path):
        for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"):
            (path / name).unlink(missing_ok=True)  # left by a run killed while making it
        store = MetaStore(path / "meta.sqlite", create=True)
        write_json(path / "collection.json", info)  # last: until then it is no collection
        return Collection(path, info, store=store)


def _stat(key: str) -> tuple[int | None, int | None]:
    if key.startswith("builtin://"):
        return None, None
    try:
        st = os.stat(key)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def create_collection(
    path: str | Path,
    *,
    model: dict[str, Any],
    source: str,
    keys: list[str],
    labels: list[str | None],
    embeddings: np.ndarray,
    failures: list[tuple[str, str]] | None = None,
    metric: str = "cosine",
    settings: IndexSettings | None = None,
    build_index: bool = True,
) -> Collection:
    """Write a new collection (replacing any at `path`) from (n_images, dim) embeddings.

    Keys that are existing files get their size and mtime recorded, so a later
    `imgret index` of their folder sees them as unchanged.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(keys) or len(keys) != len(labels):
        raise ValueError(
            f"embeddings {embeddings.shape} must be (n_images, dim) with n_images == "
            f"len(keys) == len(labels) ({len(keys)}, {len(labels)})"
        )
    path = Path(path)
    with collection_lock(path):
        remove_collection_files(path)
        coll = new_collection(
            path, model=model, source=source, dim=embeddings.shape[1], metric=metric,
            settings=settings,
        )  # fmt: skip
        for s in range(0, max(len(keys), 1), CHUNK_ROWS):
            part = range(s, min(s + CHUNK_ROWS, len(keys)))
            items = [Item(keys[i], -1, *_stat(keys[i]), None, labels[i]) for i in part]
            fails = [(k, *_stat(k), r) for k, r in (failures or [])] if s == 0 else []
            coll.append(embeddings[s : s + CHUNK_ROWS], items, fails)
        if build_index and len(coll):
            coll.refresh_index()
    return coll


def remove_collection_files(path: Path) -> None:
    """Delete a collection's files; collection.json first, so a half-deleted one is none.

    The caller holds the collection's lock.
    """
    (path / "collection.json").unlink(missing_ok=True)
    if path.is_dir():
        fsync_dir(path)
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "index.json", *_V1_FILES):
        (path / name).unlink(missing_ok=True)
    for p in path.glob("index-*"):
        p.unlink()
    shutil.rmtree(path / "embeddings", ignore_errors=True)


def upgrade_collection(path: str | Path) -> Collection:
    """Open a collection for writing, rewriting a format-1 one as format 2 first, in place.

    The caller holds the collection's lock. collection.json is replaced last, so an
    interrupted upgrade leaves the format-1 collection.
    """
    path = Path(path)
    info = read_info(path)
    if info.get("version", 0) >= 2:
        coll = open_collection(path)
        coll.store.upgrade()
        return coll
    try:
        model = dict(info["model"])
        items = read_json(path / "items.json")
        emb = read_npy(path / "embeddings.npy")
        keys, labels = items["keys"], items["labels"]
        if emb.ndim != 2 or len(emb) != len(keys) or len(keys) != len(labels):
            raise ValueError(f"{emb.shape} embeddings for {len(keys)} keys, {len(labels)} labels")
        clustering = None
        if (path / "clusters.json").exists():
            doc = read_json(path / "clusters.json")
            clustering = (doc, read_npy(path / "centroids.npy"), read_npy(path / "assignments.npy"))
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        raise DamagedError(path, f"an old (format 1) collection that cannot be read ({e})",
                           "make it again: `imgret embed MODEL FOLDER --out COLLECTION`"
                           ) from None  # fmt: skip
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "index.json"):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / "embeddings", ignore_errors=True)
    new_info = {
        "format": FORMAT, "version": FORMAT_VERSION, "model": model,
        "source": info.get("source", ""), "metric": info.get("metric", "cosine"),
        "dim": int(emb.shape[1]), "index": index_doc(IndexSettings()),
    }  # fmt: skip
    coll = Collection(path, new_info, store=MetaStore(path / "meta.sqlite", create=True))
    fails = [(f["key"], None, None, f["reason"]) for f in info.get("skipped", [])]
    coll.append(
        emb, [Item(k, -1, *_stat(k), None, lab) for k, lab in zip(keys, labels, strict=True)], fails
    )
    if clustering is not None:
        doc, centroids, assignments = clustering
        elbow = ElbowCurve(**doc["elbow"]) if doc.get("elbow") else None
        coll.save_clustering(Clustering(doc["k"], centroids, assignments, doc["inertia"]), elbow)
    write_json(path / "collection.json", new_info)
    for name in _V1_FILES:
        (path / name).unlink(missing_ok=True)
    return coll


def collection_generation(path: str | Path) -> int:
    """The collection's generation: a number that increases with every committed change (items,
    chunks, clustering, index, settings). Cheap (one small SQLite read); 0 for a collection
    made before generations were counted."""
    store = MetaStore(Path(path) / "meta.sqlite")
    try:
        return store.generation()
    finally:
        store.close()
