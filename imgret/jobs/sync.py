"""The engine of `imgret index` / `add`: compare files with a collection, embed what changed.

Files are compared with the collection by size and mtime first, then by content hash when only
the mtime changed. New and changed files stream through the model and are committed every
`chunk_rows` images (or `chunk_seconds`); a run killed at any point loses at most the chunk in
progress, and running it again resumes. Then the FAISS index is brought in step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.paths import display
from ..core.progress import progress_bar
from ..data.images import scan_folder
from ..data.sources import ImageSource, open_source
from ..models.backend import Calibration, InferenceSettings, default_backend
from ..scaleout.cluster import RayConfig
from ..scaleout.index_shards import index_builder
from ..store.collection import Collection
from ..store.compact import maybe_compact
from ..store.metadata import Item, MetaStore

__all__ = [
    "IndexJobConfig", "SyncReport", "Candidate", "folder_candidates", "sync", "file_stat",
    "calibration_for",
]  # fmt: skip

Log = Callable[[str], None]


@dataclass(frozen=True)
class IndexJobConfig:
    batch_size: int = 64  # images per forward pass
    workers: int = 2  # image-decoding processes (0 = in this process)
    chunk_rows: int = 4096  # embeddings committed together (the most a kill can lose)
    chunk_seconds: float = 30.0  # ... or commit after this many seconds of work
    device: str = "cpu"
    ray: RayConfig | None = None  # embed and build the index on Ray (imgret.scaleout)
    backend: str = field(default_factory=default_backend)  # auto, torch or onnx (models.backend)
    threads: int | None = None  # inference threads (None: every core)
    quantize: bool = False  # run an int8 ONNX graph

    def inference(self) -> InferenceSettings:
        """How the model runs (imgret.models.backend)."""
        return InferenceSettings(
            backend=self.backend, device=self.device, threads=self.threads, quantize=self.quantize
        )


@dataclass
class SyncReport:
    collection_dir: Path
    added: int = 0  # new files embedded
    updated: int = 0  # changed files embedded again
    removed: int = 0  # items dropped (files deleted, or removed on request)
    unchanged: int = 0  # files skipped: same size and mtime, or same content
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) this run
    retry: list[tuple[str, str]] = field(default_factory=list)  # (key, reason): I/O errors,
    # out of memory: not recorded as bad, tried again by the next run
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (key, Pillow's warning)
    known_failures: int = 0  # unreadable files seen before and unchanged: not retried
    compacted: bool = False  # the chunks were rewritten without removed rows
    index: str = "current"  # what happened to the FAISS index: current, updated, rebuilt
    count: int = 0  # images in the collection now
    dim: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """A file (or built-in image) that should be in the collection."""

    key: str
    label: str | None
    size: int | None
    mtime_ns: int | None


def file_stat(key: str) -> tuple[int | None, int | None]:
    """(size, mtime_ns) of a file key; (None, None) for builtin:// keys. OSError if gone."""
    if key.startswith("builtin://"):
        return None, None
    st = os.stat(key)
    return st.st_size, st.st_mtime_ns


def folder_candidates(root: Path, unreadable: list[Path] | None = None) -> list[Candidate]:
    """Every image file under `root` with its label (the name of its sub-folder); folders that
    cannot be listed are appended to `unreadable` (imgret.data.images.scan_folder)."""
    out = []
    for p in scan_folder(root, unreadable):
        parts = p.relative_to(root).parts
        try:
            size, mtime = file_stat(str(p))
        except OSError:
            continue  # vanished while scanning
        out.append(Candidate(str(p), parts[-2] if len(parts) >= 2 else None, size, mtime))
    return out


def _builtin_name(key: str) -> str:
    name, split, _ = key[len("builtin://") :].split("/")
    return name if name == "digits" else f"{name}:{split}"


def calibration_for(candidates: list[Candidate]) -> Calibration:
    """How `--quantize` gets its calibration images: the first ones of these files."""
    from ..data.loader import sample_batches

    return lambda size, channels: sample_batches(_todo_source(candidates), size, channels)


def _todo_source(todo: list[Candidate]) -> ImageSource:
    keys = [c.key for c in todo]
    if keys and keys[0].startswith("builtin://"):
        full = open_source(_builtin_name(keys[0]))
        where = {k: i for i, k in enumerate(full.keys)}
        return full.subset([where[k] for k in keys])
    return ImageSource("todo", keys, [c.label for c in todo])


def _embed_and_commit(
    coll: Collection, embedder: Any, todo: list[Candidate], config: IndexJobConfig,
    progress: bool, report: SyncReport, is_new: set[str],
) -> None:  # fmt: skip
    """Stream `todo` through the model, committing a chunk every chunk_rows or chunk_seconds."""
    from ..data.loader import make_loader
    from ..models.embed import embed_arrays

    source = _todo_source(todo)
    if config.ray is not None:
        from ..scaleout.embed import ray_embedded_batches

        batches = ray_embedded_batches(source, coll.model["ref"], config.ray,
                                       batch_size=config.batch_size,
                                       inference=config.inference())  # fmt: skip
    else:
        loader = make_loader(
            source, size=embedder.image_size, channels=embedder.channels,
            batch_size=config.batch_size, workers=config.workers, hash_files=True,
        )  # fmt: skip
        batches = ((b, embed_arrays(embedder, b.images)) for b in loader)
    bar = progress_bar(total=len(todo), desc="embedding", unit="img", enabled=progress)
    buf_emb: list[np.ndarray] = []
    buf_items: list[Item] = []
    buf_fail: list[tuple[str, int | None, int | None, str]] = []
    started = time.perf_counter()

    def flush(limit: int | None = None) -> None:
        """Commit the first `limit` buffered embeddings (all when None) and the failures."""
        nonlocal started
        if not buf_items and not buf_fail:
            return
        emb = np.concatenate(buf_emb) if buf_emb else np.zeros((0, coll.dim), np.float32)
        n = len(buf_items) if limit is None else min(limit, len(buf_items))
        coll.append(emb[:n], buf_items[:n], list(buf_fail))
        buf_emb[:] = [emb[n:]] if n < len(emb) else []
        del buf_items[:n]
        buf_fail.clear()
        started = time.perf_counter()

    for batch, embeddings in batches:
        retry = set(getattr(batch, "transient", ()))
        for i, err in batch.failures:
            c = todo[i]
            if i in retry:
                report.retry.append((c.key, display(err)))
                continue
            buf_fail.append((c.key, c.size, c.mtime_ns, err))
            report.failed.append((c.key, display(err)))
        report.warnings += [(todo[i].key, w) for i, w in getattr(batch, "warnings", ())]
        if len(batch.indices):
            buf_emb.append(embeddings)
            for i, digest in zip(batch.indices.tolist(), batch.digests, strict=True):
                c = todo[i]
                buf_items.append(Item(c.key, -1, c.size, c.mtime_ns, digest, c.label))
                if c.key in is_new:
                    report.added += 1
                else:
                    report.updated += 1
        bar.update(len(batch.indices) + len(batch.failures))
        while len(buf_items) >= config.chunk_rows:
            flush(config.chunk_rows)
        if time.perf_counter() - started >= config.chunk_seconds:
            flush()
    flush()
    bar.close()


def sync(
    coll: Collection,
    embedder: Any,
    candidates: Iterable[Candidate],
    existing: dict[str, Item],
    deleted: list[str],
    *,
    config: IndexJobConfig,
    rebuild_index: bool,
    progress: bool,
    log: Log,
    t0: float,
) -> SyncReport:
    """Remove `deleted`, embed what is new or changed among `candidates`, refresh the index.

    The caller holds the collection's lock. `embedder` may be None: the collection's model is
    loaded when something needs embedding.
    """
    report = SyncReport(coll.path)
    failures = coll.store.failures()
    todo: list[Candidate] = []
    is_new: set[str] = set()
    touched: list[tuple[str, int, int]] = []
    for c in candidates:
        old = existing.get(c.key)
        if old is not None:
            if c.size is None or (old.size == c.size and old.mtime_ns == c.mtime_ns):
                report.unchanged += 1
                continue
            # By content, whatever the size: a file rewritten while it was being indexed was
            # embedded as read (its hash), not as listed (its size and mtime then).
            if old.sha256 and _same_content(c.key, old.sha256):
                touched.append((c.key, c.size, c.mtime_ns))  # type: ignore[arg-type]
                report.unchanged += 1
                continue
            todo.append(c)
        elif c.key in failures and failures[c.key][:2] == (c.size, c.mtime_ns):
            report.known_failures += 1
        else:
            todo.append(c)
            is_new.add(c.key)
    if deleted or touched:
        with coll.store.transaction() as db:
            MetaStore.delete_keys(db, deleted)
            MetaStore.touch_items(db, touched)
        coll.invalidate()
        report.removed = len(deleted)
    log(
        f"{len(todo):,} to embed ({len(is_new):,} new, {len(todo) - len(is_new):,} changed), "
        f"{report.removed:,} removed, {report.unchanged:,} unchanged"
        + (f", {report.known_failures:,} known unreadable" if report.known_failures else "")
    )
    if todo:
        if embedder is None:
            from ..models import registry
            from ..models.backend import load_for_inference

            ref = coll.model["ref"]
            calibration = calibration_for(todo)
            embedder = load_for_inference(ref, config.inference(), calibration=calibration)
            coll.check_model(registry.describe(ref, embedder))
        _embed_and_commit(coll, embedder, todo, config, progress, report, is_new)
    coll.invalidate()
    report.compacted = maybe_compact(coll, log=log) is not None  # rebuilds the index
    report.index = "rebuilt" if report.compacted else coll.refresh_index(
        rebuild=rebuild_index, log=log, build=index_builder(config.ray)
    )  # fmt: skip
    report.count = len(coll)
    report.dim = coll.dim
    report.seconds = time.perf_counter() - t0
    return report


def _same_content(key: str, sha256: str) -> bool:
    from ..data.loader import sha256_file

    try:
        return sha256_file(key) == sha256
    except OSError:
        return False
