"""`imgret check`: verify every part of a collection against what refers to it; repair.

Checked (like `git fsck`): collection.json; meta.sqlite (SQLite's integrity check, its tables);
every chunk listed in the manifest (present, its shape, its checksum); every item's row (held
by a listed chunk); the index (readable, its rows file, how far it lags); the clustering.
`repair` rebuilds what can be rebuilt and never touches an image file:

- a damaged meta.sqlite is moved aside (``meta.sqlite.damaged-N``) and what can still be read
  of it is copied into a new one;
- a missing or damaged chunk leaves the manifest, and the items whose rows it held are dropped:
  the next `imgret index` (or `imgret add`) embeds their files again;
- items whose row no listed chunk holds are given back the chunk file that holds them (its
  name says its first row), or dropped like the above;
- a damaged, missing or stale index is rebuilt from the chunks;
- a clustering that does not fit the items is dropped (run `imgret cluster` again);
- leftovers of interrupted runs (uncommitted chunks, temporary files, old index generations)
  are deleted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.atomic import TEMP_PATTERN, fsync_dir, read_npy
from ..core.crashpoints import crash_point
from ..core.errors import DamagedError, UserError
from .chunks import chunk_first_row, data_sha256, read_chunk
from .collection import Collection
from .index_files import load_index
from .lock import collection_lock
from .metadata import ChunkRecord, MetaStore, from_db
from .opening import read_info

__all__ = ["Finding", "CheckReport", "check_collection"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Finding:
    file: str  # the part of the collection that is wrong (relative to its folder)
    problem: str
    repair: str  # what --repair does about it
    damage: bool = True  # False: only leftovers or a lagging index (searches are right)


@dataclass
class CheckReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    repaired: bool = False
    reembed: list[str] = field(default_factory=list)  # keys dropped: `imgret index` embeds them
    items: int = 0

    @property
    def damaged(self) -> bool:
        return any(f.damage for f in self.findings)


def check_collection(
    path: str | Path, *, repair: bool = False, log: Log | None = None
) -> CheckReport:
    """Check the collection at `path` (under its write lock) and, with `repair`, repair it."""
    path = Path(path)
    report = CheckReport(path)
    note = log or (lambda _: None)
    info = read_info(path)  # a damaged collection.json cannot be rebuilt: DamagedError
    if info.get("version", 0) < 2:
        raise UserError(f"{path}: an old (format 1) collection; run `imgret index` to upgrade it")
    with collection_lock(path):
        store = _open_store(path, report, repair, note)
        if store is None:
            return report
        with Collection(path, info, store=store, reader=False) as coll, coll.writing():
            coll.store.upgrade()
            bad, relist = _check_chunks(coll, report)
            fix_index = _check_index(coll, report)
            drop_clusters = _check_clustering(coll, report)
            _check_leftovers(coll, report, relist)
            report.items = coll.store.count()
            if not repair or not report.findings:
                return report
            _repair(coll, report, bad, relist, drop_clusters, note)
            coll.invalidate()
            coll.refresh_index(rebuild=fix_index or bool(bad or relist), log=note)
            coll.remove_leftovers()
            report.items = coll.store.count()
            report.repaired = True
    return report


def _open_store(path: Path, report: CheckReport, repair: bool, note: Log) -> MetaStore | None:
    file = path / "meta.sqlite"
    try:
        store = MetaStore(file)
        problems = store.integrity_problems()
        if not problems:
            return store
        store.close()
        detail = "; ".join(problems[:3])
    except DamagedError as e:
        detail = _problem(e)
    report.findings.append(Finding("meta.sqlite", detail, "moved aside; what can be read of it "
                                   "is copied into a new one"))  # fmt: skip
    if not repair:
        return None
    return _salvage(path, note)


def _salvage(path: Path, note: Log) -> MetaStore:
    """Copy what can be read of a damaged meta.sqlite into a new one, then swap them.

    The new database is made beside it and renamed in last, so a repair killed at any point
    leaves the damaged file (to salvage again) or the salvaged one (to use).
    """
    meta, ready = path / "meta.sqlite", path / ".meta.sqlite.salvaged"
    if meta.exists() or not ready.exists():
        lost = _copy_readable(meta, path / ".meta.sqlite.salvage", ready)
        note("salvaged meta.sqlite: "
             + (f"could not read its {', '.join(lost)}" if lost else "every table was read"))
    crash_point("salvage-ready")
    (path / "index.json").unlink(missing_ok=True)  # the index is rebuilt
    n = 1 + sum(1 for _ in path.glob("meta.sqlite.damaged-*[0-9]"))
    for suffix in ("", "-wal", "-shm"):
        if (path / f"meta.sqlite{suffix}").exists():
            os.replace(path / f"meta.sqlite{suffix}", path / f"meta.sqlite.damaged-{n}{suffix}")
    os.replace(ready, meta)
    fsync_dir(path)
    if (path / f"meta.sqlite.damaged-{n}").exists():
        note(f"the damaged file is kept as meta.sqlite.damaged-{n}")
    return MetaStore(meta)


def _copy_readable(damaged: Path, work: Path, ready: Path) -> list[str]:
    """Build `ready`: a new database holding every table of `damaged` that can be read ->
    the names of those that could not."""
    for p in (work, work.with_name(work.name + "-wal"), work.with_name(work.name + "-shm")):
        p.unlink(missing_ok=True)
    fresh = MetaStore(work, create=True)
    lost = []
    try:
        old = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        old = None
    for table in ("items", "chunks", "failures", "clustering", "state"):
        try:
            assert old is not None
            rows = old.execute(f"SELECT * FROM {table}").fetchall()
            cols = [d[0] for d in old.execute(f"SELECT * FROM {table} LIMIT 0").description]
            with fresh.transaction() as db:
                db.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
                               f"({', '.join('?' * len(cols))})", rows)  # fmt: skip
        except (sqlite3.Error, AssertionError):
            lost.append(table)
    if old is not None:
        old.close()
    # Rows are never reused, whatever the old database lost: a chunk file or an index may name
    # any row up to here.
    folder = damaged.parent
    used = [0]
    for p in (folder / "embeddings").glob("chunk-*.npy"):
        with contextlib.suppress(OSError, ValueError):
            used.append((chunk_first_row(p.name) or 0) + len(read_npy(p, mmap=True)))
    for p in folder.glob("index-*.rows.npy"):
        with contextlib.suppress(OSError, ValueError):
            row_ids = read_npy(p)
            used.append(int(row_ids.max()) + 1 if len(row_ids) else 0)
    with fresh.transaction() as db:
        db.execute("INSERT INTO state (name, value) VALUES ('next_row', ?) ON CONFLICT(name) "
                   "DO UPDATE SET value = MAX(value, excluded.value)", (max(used),))  # fmt: skip
    fresh.close()  # checkpoints its write-ahead log: one file to rename
    with open(work, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(work, ready)
    fsync_dir(folder)
    return lost


def _check_chunks(
    coll: Collection, report: CheckReport
) -> tuple[list[ChunkRecord], list[ChunkRecord]]:
    """-> (listed chunks that are damaged, unlisted chunk files that hold items' rows)."""
    folder = coll.path / "embeddings"
    bad: list[ChunkRecord] = []
    manifest = coll.store.chunks()
    for chunk in manifest:
        where = f"embeddings/{chunk.name}"
        try:
            arr = read_chunk(folder / chunk.name, chunk, coll.dim)
            problem = None
            if chunk.sha256 and data_sha256(arr) != chunk.sha256:
                problem = "its data does not match its checksum"
        except DamagedError as e:
            problem = _problem(e)
        if problem is not None:
            bad.append(chunk)
            report.findings.append(Finding(where, problem, f"dropped; the {chunk.n_rows:,} "
                                           "images it held are embedded again by the next "
                                           "`imgret index`"))  # fmt: skip
    good = [c for c in manifest if c not in bad]
    rows = coll.store.rows()
    lost = rows[~_covered(rows, good)]
    relist: list[ChunkRecord] = []
    if len(lost):
        relist = _chunks_holding(coll, lost, {c.name for c in manifest})
        held = _covered(lost, relist) | _covered(lost, bad)  # bad ones are reported above
        for c in relist:
            report.findings.append(Finding(f"embeddings/{c.name}", "holds items' embeddings but "
                                           "is not in the manifest", "listed again"))  # fmt: skip
        unheld = int((~held).sum())
        if unheld > 0:
            report.findings.append(Finding("meta.sqlite", f"{unheld:,} item(s) point past "
                                           "every chunk (their embeddings are gone)",
                                           "dropped; embedded again by the next `imgret "
                                           "index`"))  # fmt: skip
    return bad, relist


def _problem(e: DamagedError) -> str:
    """The problem part of a DamagedError's message (without the file and the fix)."""
    return str(e).split(": ", 1)[-1].split("; run `imgret check", 1)[0]


def _covered(rows: np.ndarray, chunks: list[ChunkRecord]) -> np.ndarray:
    """(len(rows),) bool: which rows a chunk of `chunks` holds."""
    out = np.zeros(len(rows), dtype=bool)
    for c in chunks:
        out |= (rows >= c.first_row) & (rows < c.first_row + c.n_rows)
    return out


def _chunks_holding(coll: Collection, rows: np.ndarray, listed: set[str]) -> list[ChunkRecord]:
    """Unlisted, sound chunk files whose rows (from their names) hold some of `rows`."""
    found = []
    for p in sorted((coll.path / "embeddings").glob("chunk-*.npy")):
        first = chunk_first_row(p.name)
        if p.name in listed or first is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            arr = read_npy(p, mmap=True)
            if arr.ndim != 2 or arr.shape[1] != coll.dim or arr.dtype != np.float32:
                continue
            c = ChunkRecord(p.name, first, len(arr), data_sha256(arr))
            if _covered(rows, [c]).any():
                found.append(c)
    return found


def _check_index(coll: Collection, report: CheckReport) -> bool:
    """-> whether the index must be rebuilt."""
    try:
        loaded = load_index(coll.path)
    except DamagedError as e:
        file = e.path.name if e.path.parent == coll.path else str(e.path)
        report.findings.append(Finding(file, _problem(e), "the index is rebuilt from the chunks"))
        return True
    rows = coll.store.rows()
    if loaded is None:
        if len(rows):
            report.findings.append(Finding("index.json", "no index yet", "built", damage=False))
        return True
    lacks = np.setdiff1d(rows, loaded.rows).size
    if lacks:
        report.findings.append(Finding(loaded.meta["file"], f"lacks {lacks:,} image(s) (searched "
                                       "exactly until it is updated)", "updated",
                                       damage=False))  # fmt: skip
    return False


def _check_clustering(coll: Collection, report: CheckReport) -> bool:
    """-> whether the clustering must be dropped."""
    stored = coll.store.clustering()
    if stored is None:
        return False
    clusters = [c for (c,) in coll.store.db.execute("SELECT cluster FROM items").fetchall()]
    wrong = stored.centroids.shape[1] != coll.dim or any(
        c is None or not 0 <= c < stored.k for c in clusters
    )
    if wrong:
        report.findings.append(Finding("meta.sqlite", "the clustering does not fit the items",
                                       "dropped (run `imgret cluster` again)"))  # fmt: skip
    return wrong


def _check_leftovers(coll: Collection, report: CheckReport, relist: list[ChunkRecord]) -> None:
    listed = {c.name for c in coll.store.chunks()} | {c.name for c in relist}
    folder = coll.path / "embeddings"
    extra = [p.name for p in folder.glob("*") if p.name not in listed] if folder.is_dir() else []
    temps = [p.name for p in coll.path.iterdir() if TEMP_PATTERN.match(p.name)]
    gens = sorted({p.name.split(".")[0] for p in coll.path.glob("index-*")})
    if extra:
        report.findings.append(Finding("embeddings/", f"{len(extra)} file(s) no manifest row "
                                       "lists (left by an interrupted run)", "deleted",
                                       damage=False))  # fmt: skip
    if temps:
        report.findings.append(Finding(".", f"{len(temps)} temporary file(s) of interrupted "
                                       "writes", "deleted", damage=False))  # fmt: skip
    if len(gens) > 1:
        report.findings.append(Finding(".", f"{len(gens) - 1} old index generation(s)",
                                       "deleted (when no reader has the collection open)",
                                       damage=False))  # fmt: skip


def _repair(
    coll: Collection, report: CheckReport, bad: list[ChunkRecord], relist: list[ChunkRecord],
    drop_clusters: bool, note: Log,
) -> None:  # fmt: skip
    """One transaction: the manifest without damaged chunks and with re-found ones, and the
    items no sound chunk holds dropped (their files are embedded again by the next index)."""
    good = [c for c in coll.store.chunks() if c not in bad] + relist
    found = coll.store.db.execute("SELECT row, key FROM items").fetchall()
    rows = np.asarray([r for r, _ in found], dtype=np.int64)
    gone = ~_covered(rows, good)
    report.reembed = [from_db(k) or "" for (_, k), g in zip(found, gone, strict=True) if g]
    with coll.store.transaction() as db:
        MetaStore.delete_chunks(db, [c.name for c in bad])
        for c in relist:
            MetaStore.put_chunk(db, c)
        MetaStore.delete_rows(db, rows[gone].tolist())
        if drop_clusters:
            MetaStore.drop_clustering(db)
    crash_point("repair-committed")
    if report.reembed:
        note(f"dropped {len(report.reembed):,} item(s) whose embeddings were lost; run `imgret "
             "index` on the collection's folder (or `imgret add`) to embed them again")
