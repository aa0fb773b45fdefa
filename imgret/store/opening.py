"""Making and opening collection folders: new, create from embeddings, open, upgrade, delete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import read_json, write_json
from ..core.clustering import Clustering, ElbowCurve
from ..core.errors import UserError
from .collection import FORMAT, FORMAT_VERSION, Collection, index_doc
from .index_files import IndexSettings
from .lock import collection_lock
from .metadata import Item, MetaStore

__all__ = [
    "open_collection", "new_collection", "create_collection", "remove_collection_files",
    "upgrade_collection", "is_collection", "CHUNK_ROWS",
]  # fmt: skip

CHUNK_ROWS = 65536  # rows per chunk written by `create_collection`
_V1_FILES = ("embeddings.npy", "items.json", "clusters.json", "centroids.npy", "assignments.npy")


def is_collection(path: str | Path) -> bool:
    return (Path(path) / "collection.json").exists()


def _read_info(path: Path) -> dict[str, Any]:
    if not (path / "collection.json").exists():
        raise UserError(
            f"{path}: not an imgret collection (no collection.json). "
            "Make one with `imgret index FOLDER --out COLLECTION --model MODEL`."
        )
    try:
        info = read_json(path / "collection.json")
    except ValueError as e:
        raise UserError(f"{path}/collection.json is damaged ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path}: not an imgret collection")
    version = info.get("version", 0)
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: made by a newer imgret (collection format {version}, this imgret "
            f"reads up to {FORMAT_VERSION}); upgrade imgret"
        )
    return info


def open_collection(path: str | Path) -> Collection:
    """The collection at `path`; read-only use never changes its files.

    A format-1 collection is refused with a pointer to `upgrade_collection` (which `imgret
    index` and `imgret add` run, under the collection's lock).
    """
    path = Path(path)
    info = _read_info(path)
    if info.get("version", 0) < 2:
        raise UserError(
            f"{path}: an old (format 1) collection; run `imgret index` on its folder to upgrade it"
        )
    try:
        return Collection(path, info)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def new_collection(
    path: str | Path, *, model: dict[str, Any], source: str, dim: int,
    metric: str = "cosine", settings: IndexSettings | None = None,
) -> Collection:  # fmt: skip
    """An empty collection at `path` (which must not hold one). `model`: registry.describe."""
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": dict(model),
        "source": source,
        "metric": metric,
        "dim": int(dim),
        "index": index_doc(settings or IndexSettings()),
    }
    MetaStore(path / "meta.sqlite").close()
    write_json(path / "collection.json", info)
    return Collection(path, info)


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
    """Delete a collection's files; collection.json first, so a half-deleted one is none."""
    (path / "collection.json").unlink(missing_ok=True)
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
    info = _read_info(path)
    if info.get("version", 0) >= 2:
        return open_collection(path)
    items = read_json(path / "items.json")
    emb = np.load(path / "embeddings.npy")
    clustering = None
    if (path / "clusters.json").exists():
        doc = read_json(path / "clusters.json")
        clustering = (doc, np.load(path / "centroids.npy"), np.load(path / "assignments.npy"))
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "index.json"):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / "embeddings", ignore_errors=True)
    new_info = {
        "format": FORMAT, "version": FORMAT_VERSION, "model": info["model"],
        "source": info.get("source", ""), "metric": info.get("metric", "cosine"),
        "dim": int(emb.shape[1]), "index": index_doc(IndexSettings()),
    }  # fmt: skip
    MetaStore(path / "meta.sqlite").close()
    coll = Collection(path, new_info)
    keys, labels = items["keys"], items["labels"]
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
