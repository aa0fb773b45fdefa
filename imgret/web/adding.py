"""Adding and removing images from the pages: the indexing jobs, run in a background thread.

Only with `imgret serve --allow-add DIR`. What may be added: files uploaded from the page,
which are kept in the collection's own `uploads/` folder (nothing is written anywhere else),
or a folder on the server under DIR (symlinks that lead out of DIR are not followed). What may
be removed: images whose files lie under DIR or in `uploads/`; removing drops them from the
collection, it never deletes a file. The work is imgret.jobs.index.add_paths / remove_paths,
as for `imgret add` / `imgret remove`, one job at a time. A job's progress is what it has
committed to the collection so far (the service sees each commit).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path
from ..core.errors import UserError
from ..data.images import IMAGE_EXTENSIONS, scan_folder
from .errors import WebError

__all__ = ["AddJobs", "Job"]

_KEEP = 20  # finished jobs remembered
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Job:
    id: int
    kind: str  # "add" or "remove"
    what: str  # in words: "12 uploaded files", "folder holidays/2024"
    paths: list[str]  # files (or keys) the job adds or removes
    state: str = "queued"  # queued, running, done, failed
    message: str = ""
    before: tuple[int, int] = (0, 0)  # (images, unreadable files) when the job started
    report: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    seconds: float = 0.0


class AddJobs:
    """The add and remove jobs of one service; `root` is the folder given to --allow-add."""

    def __init__(self, service: Any, root: Path) -> None:
        self.service = service
        self.root = Path(os.path.realpath(root))
        self.uploads = Path(os.path.realpath(service.path)) / "uploads"
        self._jobs: dict[int, Job] = {}
        self._queue: list[Job] = []
        self._lock = threading.Condition()
        threading.Thread(target=self._work, name="imgret-add-jobs", daemon=True).start()

    # -- starting jobs ----------------------------------------------------------------------

    def add_uploads(self, files: list[tuple[str, bytes]]) -> Job:
        """Keep uploaded files in <collection>/uploads/<time>/ and add them."""
        if not files:
            raise WebError(400, "no files to add")
        folder = self.uploads / time.strftime("%Y%m%d-%H%M%S")
        n = 2
        while folder.exists():
            folder = self.uploads / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
            n += 1
        taken: list[str] = []
        for name, _ in files:  # every name checked before anything is written
            taken.append(_safe_name(name, set(taken)))
        folder.mkdir(parents=True)
        paths = []
        for safe, (_, data) in zip(taken, files, strict=True):
            with atomic_path(folder / safe) as tmp:
                tmp.write_bytes(data)
            paths.append(str(folder / safe))
        return self._start("add", f"{len(paths)} uploaded file{'s' * (len(paths) != 1)}", paths)

    def add_folder(self, relative: str) -> Job:
        """Add the images of a folder under the allowed root (relative to it)."""
        folder = self._inside(relative)
        if not folder.is_dir():
            raise WebError(404, f"no folder {relative!r} under the folder images may be added from")
        paths = [str(p) for p in scan_folder(folder) if self._under_root(p)]
        if not paths:
            raise WebError(400, f"no images in {relative!r}")
        return self._start("add", f"folder {relative or '.'}", paths)

    def remove(self, ids: list[int]) -> Job:
        """Drop images from the collection (their files stay) by id."""
        keys = []
        for i in ids:
            key = self.service.key(i)
            real = Path(os.path.realpath(key)) if not key.startswith("builtin://") else None
            if real is None or not (real.is_relative_to(self.root)
                                    or real.is_relative_to(self.uploads)):  # fmt: skip
                raise WebError(403, f"image {i} lies outside the folders images may be "
                               "removed from (--allow-add, uploads)")  # fmt: skip
            keys.append(key)
        if not keys:
            raise WebError(400, "no images to remove")
        return self._start("remove", f"{len(keys)} image{'s' * (len(keys) != 1)}", keys)

    def folders(self, limit: int = 500) -> list[str]:
        """Folders under the allowed root (relative, '' for the root), for the page to offer."""
        out = [""]
        for dirpath, dirnames, _ in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                full = Path(dirpath) / d
                if self._under_root(full):
                    out.append(full.relative_to(self.root).as_posix())
            if len(out) >= limit:
                break
        return out[:limit]

    # -- progress ---------------------------------------------------------------------------

    def status(self, job_id: int) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        if job is None:
            raise WebError(404, f"no job {job_id}")
        return self.describe(job)

    def describe(self, job: Job) -> dict[str, Any]:
        total = len(job.paths)
        done = total if job.state in ("done", "failed") else 0
        if job.state == "running" and job.kind == "add":
            snap = self.service.current()  # what the job has committed so far
            new = max(0, snap.count - job.before[0]) + max(0, snap.skipped - job.before[1])
            done = min(total, new)
        new_ids: list[int] = []
        if job.state == "done" and job.kind == "add":
            coll = self.service.current().collection
            found = (coll.position_of_key(p) for p in job.paths)
            new_ids = sorted(i for i in found if i is not None)[: self.service.config.max_page]
        elapsed = job.seconds or (time.monotonic() - job.started if job.started else 0.0)
        return {
            "id": job.id, "kind": job.kind, "what": job.what, "state": job.state,
            "message": job.message, "total": total, "done": done, "seconds": round(elapsed, 1),
            "report": job.report, "new_ids": new_ids,
        }  # fmt: skip

    # -- running ----------------------------------------------------------------------------

    def _start(self, kind: str, what: str, paths: list[str]) -> Job:
        with self._lock:
            job = Job(max(self._jobs, default=0) + 1, kind, what, paths)
            self._jobs[job.id] = job
            for old in sorted(self._jobs)[:-_KEEP]:
                if self._jobs[old].state in ("done", "failed"):
                    del self._jobs[old]
            self._queue.append(job)
            self._lock.notify()
        return job

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                job = self._queue.pop(0)
            self._run(job)

    def _run(self, job: Job) -> None:
        from ..jobs.index import IndexJobConfig, add_paths, remove_paths

        snap = self.service.current()
        job.before = (snap.count, snap.skipped)
        job.started = time.monotonic()
        job.state = "running"
        quiet = lambda _: None  # noqa: E731
        try:
            if job.kind == "add":
                # Decoding in this process (no worker processes forked from a threaded server);
                # a commit every 2 s, so that the page sees the progress and new images early.
                config = IndexJobConfig(workers=0, batch_size=16, chunk_seconds=2.0)
                report = add_paths(self.service.path, list(job.paths), config=config,
                                   progress=False, log=quiet)  # fmt: skip
            else:
                report = remove_paths(self.service.path, list(job.paths), log=quiet)
            job.report = {
                "added": report.added, "updated": report.updated, "removed": report.removed,
                "unchanged": report.unchanged, "count": report.count,
                "failed": [[self.service.files.display_name(k), r] for k, r in report.failed],
            }  # fmt: skip
            self.service.refresh()  # the new state is served before the job says "done"
            job.state = "done"
        except UserError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - the page says what went wrong, the server goes on
            job.state, job.message = "failed", f"{type(e).__name__}: {e}"
        job.seconds = time.monotonic() - job.started

    # -- checks -----------------------------------------------------------------------------

    def _under_root(self, path: Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.root)

    def _inside(self, relative: str) -> Path:
        rel = Path(relative.strip().strip("/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise WebError(403, "give a folder relative to the folder images may be added from")
        path = self.root / rel
        if not self._under_root(path):
            raise WebError(403, f"refused: {relative!r} leads outside the folder images may be "
                           "added from")  # fmt: skip
        return path


def _safe_name(name: str, taken: set[str]) -> str:
    """A file name of letters, digits, '.', '_' and '-' only, with an image extension, unique."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    if suffix.lower() not in IMAGE_EXTENSIONS:
        raise WebError(415, f"{base or 'a file'}: not an image file "
                       f"({', '.join(sorted(IMAGE_EXTENSIONS))})")  # fmt: skip
    stem = _SAFE_NAME.sub("_", stem).strip("._") or "image"
    candidate, n = f"{stem[:100]}{suffix.lower()}", 2
    while candidate in taken:
        candidate, n = f"{stem[:100]}-{n}{suffix.lower()}", n + 1
    return candidate
