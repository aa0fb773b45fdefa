"""Keeping a collection in step with its images: embed only new or changed files, in chunks.

`index_folder` compares a folder with the collection (size and mtime first, then the content
hash when only the mtime changed), drops the items of deleted files, streams new and changed
files through the model and commits their embeddings every `chunk_rows` images (or
`chunk_seconds`), then brings the FAISS index in step. A run killed at any point loses at most
the chunk in progress; running it again resumes. `add_paths` and `remove_paths` do the same for
given files and folders.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from .errors import UserError
from .images import ImageError, scan_folder, to_array
from .index import IndexSettings
from .sources import ImageSource, open_source
from .store import Item

__all__ = [
    "IndexJobConfig",
    "SyncReport",
    "index_folder",
    "add_paths",
    "remove_paths",
    "sha256_file",
]

Log = Callable[[str], None]


@dataclass(frozen=True)
class IndexJobConfig:
    batch_size: int = 64  # images per forward pass
    workers: int = 2  # image-decoding processes (0 = in this process)
    chunk_rows: int = 4096  # embeddings committed together (the most a kill can lose)
    chunk_seconds: float = 30.0  # ... or commit after this many seconds of work
    device: str = "cpu"


@dataclass
class SyncReport:
    collection_dir: Path
    added: int = 0  # new files embedded
    updated: int = 0  # changed files embedded again
    removed: int = 0  # items dropped (files deleted, or removed on request)
    unchanged: int = 0  # files skipped: same size and mtime, or same content
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) this run
    known_failures: int = 0  # unreadable files seen before and unchanged: not retried
    index: str = "current"  # what happened to the FAISS index: current, updated, rebuilt
    count: int = 0  # images in the collection now
    dim: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Candidate:
    key: str
    label: str | None
    size: int | None
    mtime_ns: int | None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(key: str) -> tuple[int | None, int | None]:
    if key.startswith("builtin://"):
        return None, None
    st = os.stat(key)
    return st.st_size, st.st_mtime_ns


def _folder_candidates(root: Path) -> list[_Candidate]:
    """Every image file under `root` with its label (the name of its sub-folder)."""
    out = []
    for p in scan_folder(root):
        parts = p.relative_to(root).parts
        try:
            size, mtime = _stat(str(p))
        except OSError:
            continue  # vanished while scanning
        out.append(_Candidate(str(p), parts[-2] if len(parts) >= 2 else None, size, mtime))
    return out


def _model_ref(ref: str | Path) -> str:
    """The reference a collection records for a model (as `describe_embedder` writes it)."""
    from .embed import PRETRAINED_NAMES

    ref_s = str(ref)
    return ref_s if ref_s.partition("@")[0] in PRETRAINED_NAMES else str(Path(ref_s).resolve())


def _open_collection(
    collection_dir: Path, model: str | Path | None, source_name: str, device: str,
    settings: IndexSettings | None, replace_existing: bool,
) -> tuple[Any, Any]:  # fmt: skip
    """(collection, embedder or None): the existing collection, or a new one for `model`."""
    from .collection import Collection, _remove_collection_files, model_fingerprint

    if replace_existing:
        _remove_collection_files(collection_dir)
    if (collection_dir / "collection.json").exists():
        coll = Collection.load(collection_dir)
        if model is not None:
            mine = coll.model
            ref = _model_ref(model)
            if ref != mine.get("ref"):
                raise UserError(
                    f"{collection_dir} was made with model {mine.get('ref')}, not {ref}. Index "
                    "with the same model, or into a new collection folder."
                )
            fingerprint = model_fingerprint(ref)
            if mine.get("fingerprint") and fingerprint and fingerprint != mine["fingerprint"]:
                raise UserError(
                    f"{collection_dir} was made with other weights of model {ref} (it was "
                    "trained again since). Index into a new collection folder, or rebuild this "
                    "one with `imgret embed`."
                )
        if settings is not None and settings != coll.index_settings:
            coll.set_index_settings(settings)
        return coll, None
    if model is None:
        raise UserError(
            f"{collection_dir}: no collection there yet; give the model to make it with "
            "(--model MODEL_FOLDER or efficientnet-lite0)"
        )
    from .embed import describe_embedder, load_embedder

    embedder = load_embedder(model, device=device)
    info = describe_embedder(model, embedder)
    coll = Collection.new(
        collection_dir, model=info, source=source_name, dim=info["embedding_dim"],
        settings=settings,
    )  # fmt: skip
    return coll, embedder


class _Dataset:
    """Item i as (i, (C, S, S) uint8 or None, error or None, sha256 or None); for DataLoader."""

    def __init__(self, source: ImageSource, size: int, channels: int) -> None:
        self.source, self.size, self.channels = source, size, channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None, str | None]:
        key = self.source.keys[i]
        digest = None
        try:
            if self.source.arrays is None:
                digest = sha256_file(key)
            return i, to_array(self.source.load(i), self.size, self.channels), None, digest
        except ImageError as e:
            return i, None, str(e), digest
        except OSError as e:
            return i, None, f"{key}: cannot read ({e})", digest


def _collate(batch: list) -> list:
    return batch


def _embed_and_commit(
    coll: Any, embedder: Any, todo: list[_Candidate], config: IndexJobConfig, progress: bool,
    report: SyncReport, is_new: set[str],
) -> None:  # fmt: skip
    """Stream `todo` through the model, committing a chunk every chunk_rows or chunk_seconds."""
    import torch
    from torch.utils.data import DataLoader

    from .progress import progress_bar

    keys = [c.key for c in todo]
    builtin = bool(keys) and keys[0].startswith("builtin://")
    if builtin:
        full = open_source(_builtin_name(keys[0]))
        where = {k: i for i, k in enumerate(full.keys)}
        source = full.subset([where[k] for k in keys])
    else:
        source = ImageSource("todo", keys, [c.label for c in todo])
    workers = 0 if source.arrays is not None else config.workers
    dataset = cast(Any, _Dataset(source, embedder.image_size, embedder.channels))
    loader: Any = DataLoader(
        dataset, batch_size=config.batch_size, num_workers=workers, collate_fn=_collate
    )
    params = list(embedder.parameters()) if isinstance(embedder, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
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

    with torch.inference_mode():
        for batch in loader:
            good = [(i, a, d) for i, a, _, d in batch if a is not None]
            for i, _, err, _ in batch:
                if err is not None:
                    c = todo[i]
                    buf_fail.append((c.key, c.size, c.mtime_ns, err))
                    report.failed.append((c.key, err))
            if good:
                x = torch.from_numpy(np.stack([a for _, a, _ in good])).float().div_(255.0)
                emb = embedder.embed_batch(x.to(device)).float().cpu().numpy()
                buf_emb.append(emb)
                for i, _, digest in good:
                    c = todo[i]
                    buf_items.append(Item(c.key, -1, c.size, c.mtime_ns, digest, c.label))
                    if c.key in is_new:
                        report.added += 1
                    else:
                        report.updated += 1
            bar.update(len(batch))
            while len(buf_items) >= config.chunk_rows:
                flush(config.chunk_rows)
            if time.perf_counter() - started >= config.chunk_seconds:
                flush()
    flush()
    bar.close()


def _builtin_name(key: str) -> str:
    name, split, _ = key[len("builtin://") :].split("/")
    return name if name == "digits" else f"{name}:{split}"


def _sync(
    coll: Any,
    embedder: Any,
    candidates: Iterable[_Candidate],
    existing: dict[str, Item],
    deleted: list[str],
    *,
    model: str | Path | None,
    config: IndexJobConfig,
    rebuild_index: bool,
    progress: bool,
    log: Log,
    t0: float,
) -> SyncReport:
    """Remove `deleted`, embed what is new or changed among `candidates`, refresh the index."""
    report = SyncReport(coll.path)
    failures = coll.store.failures()
    todo: list[_Candidate] = []
    is_new: set[str] = set()
    touched: list[tuple[str, int, int]] = []
    for c in candidates:
        old = existing.get(c.key)
        if old is not None:
            if c.size is None or (old.size == c.size and old.mtime_ns == c.mtime_ns):
                report.unchanged += 1
                continue
            if old.size == c.size and old.sha256 and sha256_file(c.key) == old.sha256:
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
        from .store import MetaStore

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
            from .embed import describe_embedder, load_embedder

            ref = model if model is not None else coll.model["ref"]
            embedder = load_embedder(ref, device=config.device)
            coll.check_model(describe_embedder(ref, embedder))
        _embed_and_commit(coll, embedder, todo, config, progress, report, is_new)
    coll.invalidate()
    report.index = coll.refresh_index(rebuild=rebuild_index, log=log)
    report.count = len(coll)
    report.dim = coll.dim
    report.seconds = time.perf_counter() - t0
    return report


def index_folder(
    folder: str | Path,
    collection_dir: str | Path,
    *,
    model: str | Path | None = None,
    index_kind: str | None = None,
    nprobe: int | None = None,
    config: IndexJobConfig = IndexJobConfig(),
    rebuild_index: bool = False,
    replace_existing: bool = False,
    progress: bool = True,
    log: Log = print,
) -> SyncReport:
    """Make or update the collection at `collection_dir` so that it holds the images of `folder`.

    `folder` is a folder of images or a built-in source name. `model` is needed to make a new
    collection; for an existing one it must be the model that made it. `index_kind` and
    `nprobe` change the stored index settings. With `replace_existing`, any collection at
    `collection_dir` is deleted first.
    """
    t0 = time.perf_counter()
    collection_dir = Path(collection_dir)
    spec = str(folder)
    root = Path(spec).expanduser()
    prefix: str | None
    if root.is_dir() and not scan_folder(root) and not _is_idx_folder(root):
        root = root.resolve()
        name, candidates, prefix = str(root), [], str(root) + os.sep
    else:
        source = open_source(spec)
        name = source.name
        if source.arrays is None and source.root is not None:
            root = source.root
            candidates = _folder_candidates(root)
            prefix = str(root) + os.sep
        else:
            candidates = [
                _Candidate(k, lab, None, None)
                for k, lab in zip(source.keys, source.labels, strict=True)
            ]
            prefix = None
    from .collection import Collection

    existed = (collection_dir / "collection.json").exists() and not replace_existing
    if not candidates and not existed:
        raise UserError(f"{root}: no images found to index")
    base = Collection.load(collection_dir).index_settings if existed else IndexSettings()
    settings: IndexSettings | None = base
    if index_kind is not None or nprobe is not None:
        settings = replace(
            base, kind=index_kind or base.kind, nprobe=base.nprobe if nprobe is None else nprobe
        )
    elif existed:
        settings = None  # keep what the collection has
    coll, embedder = _open_collection(
        collection_dir, model, name, config.device, settings, replace_existing
    )
    with coll.writing():
        coll.remove_leftovers()
        existing = (
            coll.store.items_under(prefix) if prefix else coll.store.items_under("builtin://")
        )
        present = {c.key for c in candidates}
        deleted = [k for k in existing if k not in present] if prefix else []
        return _sync(
            coll, embedder, candidates, existing, deleted, model=model, config=config,
            rebuild_index=rebuild_index, progress=progress, log=log, t0=t0,
        )  # fmt: skip


def _is_idx_folder(folder: Path) -> bool:
    return any(folder.glob("train-images-idx3-ubyte*"))


def add_paths(
    collection_dir: str | Path,
    paths: list[str | Path],
    *,
    config: IndexJobConfig = IndexJobConfig(),
    progress: bool = True,
    log: Log = print,
) -> SyncReport:
    """Embed the given image files (and the images in given folders) into a collection.

    Files already in it and unchanged cost nothing; changed files are embedded again.
    """
    from .collection import Collection
    from .images import IMAGE_EXTENSIONS

    t0 = time.perf_counter()
    coll = Collection.load(collection_dir)
    candidates: list[_Candidate] = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if path.is_dir():
            candidates += _folder_candidates(path)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"{p}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            size, mtime = _stat(str(path))
            candidates.append(_Candidate(str(path), path.parent.name, size, mtime))
        else:
            raise UserError(f"{p}: no such file or folder")
    with coll.writing():
        coll.remove_leftovers()
        existing = {k: it for k in {c.key for c in candidates} if (it := coll.store.get(k))}
        return _sync(
            coll, None, candidates, existing, [], model=None, config=config,
            rebuild_index=False, progress=progress, log=log, t0=t0,
        )  # fmt: skip


def remove_paths(
    collection_dir: str | Path, paths: list[str | Path], *, log: Log = print
) -> SyncReport:
    """Drop the items of the given files, of every file under given folders, or given keys."""
    from .collection import Collection

    t0 = time.perf_counter()
    coll = Collection.load(collection_dir)
    keys: list[str] = []
    missing = []
    for p in paths:
        spec = str(p)
        resolved = spec if spec.startswith("builtin://") else str(Path(spec).expanduser().resolve())
        if coll.store.get(resolved) is not None:
            keys.append(resolved)
            continue
        under = coll.store.items_under(resolved.rstrip(os.sep) + os.sep)
        if under:
            keys += list(under)
        else:
            missing.append(spec)
    if missing:
        raise UserError(f"not in {coll.path}: {', '.join(missing[:5])}")
    with coll.writing():
        coll.remove_keys(keys)
        report = SyncReport(coll.path, removed=len(keys))
        report.index = coll.refresh_index(log=log)
        report.count, report.dim = len(coll), coll.dim
    report.seconds = time.perf_counter() - t0
    return report
