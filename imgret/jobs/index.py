"""Keeping a collection in step with its images: `imgret index`, `add`, `remove` and `embed`.

`index_folder` makes or updates the collection of a folder: the items of deleted files are
dropped, new and changed files embedded (imgret.jobs.sync), the FAISS index updated.
`add_paths` and `remove_paths` do the same for given files and folders. Every change happens
under the collection's lock, taken before anything is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.errors import UserError
from ..core.paths import display
from ..data.images import IMAGE_EXTENSIONS, scan_folder
from ..data.sources import open_source
from ..store.chunks import check_files
from ..store.collection import Collection
from ..store.compact import maybe_compact
from ..store.index_files import IndexSettings
from ..store.lock import collection_lock
from ..store.opening import (
    is_collection,
    new_collection,
    open_collection,
    remove_collection_files,
    upgrade_collection,
)
from .sync import (
    Candidate,
    IndexJobConfig,
    SyncReport,
    calibration_for,
    file_stat,
    folder_candidates,
    sync,
)

__all__ = [
    "index_folder", "add_paths", "remove_paths", "embed", "EmbedOutput", "IndexJobConfig",
    "SyncReport",
]  # fmt: skip

Log = Callable[[str], None]


def _scan(spec: str, unreadable: list[Path]) -> tuple[str, list[Candidate], str | None]:
    """(source name, candidates, key prefix of a folder or None for built-in sources); folders
    that cannot be listed are appended to `unreadable`."""
    root = Path(spec).expanduser()
    if root.is_dir() and not scan_folder(root, unreadable) and not any(
        root.glob("train-images-idx3-ubyte*")
    ):
        root = root.resolve()
        return str(root), [], str(root) + os.sep  # an emptied folder: its items go
    unreadable.clear()
    source = open_source(spec)
    if source.arrays is None and source.root is not None:
        found = folder_candidates(source.root, unreadable)
        return source.name, found, str(source.root) + os.sep
    candidates = [
        Candidate(k, lab, None, None) for k, lab in zip(source.keys, source.labels, strict=True)
    ]
    return source.name, candidates, None


def _check_same_model(coll: Collection, model: str | Path) -> None:
    """Refuse to index with a model other than the collection's (by reference and weights)."""
    from ..models import registry

    mine = coll.model
    ref = registry.canonical_ref(model)
    if ref != mine.get("ref"):
        raise UserError(
            f"{coll.path} was made with model {mine.get('ref')}, not {ref}. Index "
            "with the same model, or into a new collection folder."
        )
    fingerprint = registry.fingerprint(ref)
    if mine.get("fingerprint") and fingerprint and fingerprint != mine["fingerprint"]:
        raise UserError(
            f"{coll.path} was made with other weights of model {ref} (it was trained again "
            "since). Index into a new collection folder, or rebuild this one with `imgret embed`."
        )


def index_folder(
    folder: str | Path,
    collection_dir: str | Path,
    *,
    model: str | Path | None = None,
    index_kind: str | None = None,
    nprobe: int | None = None,
    config: IndexJobConfig | None = None,
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
    config = config or IndexJobConfig()
    collection_dir = Path(collection_dir)
    unreadable: list[Path] = []
    name, candidates, prefix = _scan(str(folder), unreadable)
    existed = is_collection(collection_dir) and not replace_existing
    if not candidates and not existed:
        raise UserError(f"{folder}: no images found to index")
    if not existed and model is None:
        raise UserError(
            f"{collection_dir}: no collection there yet; give the model to make it with "
            "(--model MODEL_FOLDER or efficientnet-lite0)"
        )
    with collection_lock(collection_dir):
        embedder = None
        if replace_existing:
            remove_collection_files(collection_dir)
        if existed:
            coll = upgrade_collection(collection_dir)
            if model is not None:
                _check_same_model(coll, model)
            settings = coll.index_settings
        else:
            from ..models import registry
            from ..models.backend import load_for_inference

            assert model is not None
            embedder = load_for_inference(
                model, config.inference(), calibration=calibration_for(candidates)
            )
            info = registry.describe(model, embedder)
            settings = IndexSettings()
        if index_kind is not None or nprobe is not None:
            settings = replace(
                settings, kind=index_kind or settings.kind,
                nprobe=settings.nprobe if nprobe is None else nprobe,
            )  # fmt: skip
        if existed:
            if settings != coll.index_settings:
                coll.set_index_settings(settings)
        else:
            coll = new_collection(
                collection_dir, model=info, source=name, dim=info["embedding_dim"],
                settings=settings,
            )  # fmt: skip
        coll.remove_leftovers()
        check_files(coll.path / "embeddings", coll.store.chunks(), coll.dim)
        existing = coll.store.items_under(prefix or "builtin://")
        present = {c.key for c in candidates}
        kept = tuple(str(u.resolve()) + os.sep for u in unreadable)  # not taken for deleted
        deleted = [k for k in existing if k not in present and not k.startswith(kept)]
        deleted = deleted if prefix else []
        for u in unreadable:
            log(f"cannot list the folder {display(str(u))}; its images stay as they were")
        return sync(
            coll, embedder, candidates, existing, deleted, config=config,
            rebuild_index=rebuild_index, progress=progress, log=log, t0=t0,
        )  # fmt: skip


def add_paths(
    collection_dir: str | Path,
    paths: list[str | Path],
    *,
    config: IndexJobConfig | None = None,
    progress: bool = True,
    log: Log = print,
) -> SyncReport:
    """Embed the given image files (and the images in given folders) into a collection.

    Files already in it and unchanged cost nothing; changed files are embedded again.
    """
    t0 = time.perf_counter()
    config = config or IndexJobConfig()
    open_collection(collection_dir)  # a clear error before anything else when it is none
    candidates: list[Candidate] = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if path.is_dir():
            candidates += folder_candidates(path)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"{p}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            size, mtime = file_stat(str(path))
            candidates.append(Candidate(str(path), path.parent.name, size, mtime))
        else:
            raise UserError(f"{p}: no such file or folder")
    with collection_lock(Path(collection_dir)):
        coll = upgrade_collection(collection_dir)
        coll.remove_leftovers()
        check_files(coll.path / "embeddings", coll.store.chunks(), coll.dim)
        existing = {k: it for k in {c.key for c in candidates} if (it := coll.store.get(k))}
        return sync(
            coll, None, candidates, existing, [], config=config, rebuild_index=False,
            progress=progress, log=log, t0=t0,
        )  # fmt: skip


def remove_paths(
    collection_dir: str | Path, paths: list[str | Path], *, log: Log = print
) -> SyncReport:
    """Drop the items of the given files, of every file under given folders, or given keys."""
    t0 = time.perf_counter()
    with collection_lock(Path(collection_dir)):
        coll = upgrade_collection(collection_dir)
        keys: list[str] = []
        missing = []
        for p in paths:
            spec = str(p)
            resolved = spec if spec.startswith("builtin://") else str(
                Path(spec).expanduser().resolve()
            )  # fmt: skip
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
        coll.remove_keys(keys)
        report = SyncReport(coll.path, removed=len(keys))
        report.compacted = maybe_compact(coll, log=log) is not None  # rebuilds the index
        report.index = "rebuilt" if report.compacted else coll.refresh_index(log=log)
        report.count, report.dim = len(coll), coll.dim
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class EmbedOutput:
    collection_dir: Path
    count: int
    dim: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def embed(
    model_ref: str | Path,
    source_spec: str | Path,
    out: str | Path,
    *,
    batch_size: int = 128,
    workers: int = 2,
    device: str = "cpu",
    backend: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    log: Log = print,
) -> EmbedOutput:
    """Embed every image of a source into a new collection at `out` (replacing any there).

    `index_folder` is the incremental, resumable version.
    """
    config = IndexJobConfig(batch_size=batch_size, workers=workers, device=device, threads=threads)
    if backend is not None:
        config = replace(config, backend=backend)
    report = index_folder(
        source_spec, out, model=model_ref, config=config, replace_existing=True,
        progress=progress, log=lambda _: None,
    )  # fmt: skip
    if report.count == 0:
        raise UserError(f"{source_spec}: none of the {len(report.failed)} images could be decoded")
    for _, reason in report.failed[:10]:
        log(f"skipped: {reason}")
    return EmbedOutput(Path(out), report.count, report.dim, report.seconds, report.failed)
