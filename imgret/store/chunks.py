"""Embeddings on disk as append-only chunk files, read back by row without loading them all.

A chunk is one ``.npy`` file of (n_rows, dim) float32 holding the embeddings of rows
``first_row .. first_row + n_rows - 1``. Files are written atomically and listed in the manifest
(the `chunks` table of meta.sqlite) only after they are complete, so a file that is not in the
manifest is left over from an interrupted run and can be deleted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..core.atomic import fsync_dir, make_dir, read_npy, write_npy
from ..core.errors import DamagedError
from .database import repair_hint
from .metadata import ChunkRecord

__all__ = [
    "ChunkReader", "write_chunk", "chunk_name", "chunk_seq", "chunk_first_row", "remove_orphans",
    "data_sha256", "read_chunk", "check_files",
]  # fmt: skip

_NAME = re.compile(r"^chunk-(\d{6,})(?:-r(\d+))?\.npy$")


def chunk_name(seq: int, first_row: int) -> str:
    """``chunk-SEQ-rFIRST_ROW.npy``: the name says where its rows start, so the manifest can
    be rebuilt from the files (`imgret check --repair`)."""
    return f"chunk-{seq:06d}-r{first_row}.npy"


def chunk_seq(name: str) -> int | None:
    """The sequence number of a chunk file name (None for other names)."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def chunk_first_row(name: str) -> int | None:
    """The first row a chunk file name states (None for names without it: older chunks)."""
    m = _NAME.match(name)
    return int(m.group(2)) if m and m.group(2) is not None else None


def data_sha256(embeddings: np.ndarray) -> str:
    """sha256 of (n, dim) float32 embeddings as stored (C order, little-endian)."""
    return hashlib.sha256(np.ascontiguousarray(embeddings, dtype="<f4").data).hexdigest()


def write_chunk(folder: Path, seq: int, first_row: int, embeddings: np.ndarray) -> ChunkRecord:
    """Write (n_rows, dim) float32 embeddings as chunk number `seq` -> its manifest record."""
    name = chunk_name(seq, first_row)
    data = np.ascontiguousarray(embeddings, dtype=np.float32)
    make_dir(folder)
    write_npy(folder / name, data)
    return ChunkRecord(name, first_row, len(data), data_sha256(data))


def remove_orphans(
    folder: Path, manifest: Sequence[ChunkRecord], *, readers_gone: bool
) -> list[str]:
    """Delete files in `folder` the manifest does not list -> their names.

    A chunk numbered after every listed one was never committed (an interrupted run): no
    reader can need it. Older unlisted chunks were replaced (by a compaction or a repair) and
    an open reader may still read them: they go only when `readers_gone`.
    """
    if not folder.is_dir():
        return []
    keep = {c.name for c in manifest}
    newest = max((chunk_seq(c.name) or 0 for c in manifest), default=0)
    removed = []
    for p in folder.iterdir():
        if p.name in keep or not p.is_file():
            continue
        seq = chunk_seq(p.name)
        if readers_gone or seq is None or seq > newest:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        fsync_dir(folder)
    return removed


def check_files(folder: Path, manifest: Sequence[ChunkRecord], dim: int) -> None:
    """DamagedError for the first listed chunk file that is missing or too short (a cheap
    `stat` each: what a writer checks before adding to a collection; `imgret check` reads)."""
    for chunk in manifest:
        path = folder / chunk.name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        if size < chunk.n_rows * dim * 4:
            what = "missing" if size < 0 else f"{size:,} bytes, too short for {chunk.n_rows} rows"
            raise DamagedError(path, f"{what} (an embedding chunk the collection lists)",
                               repair_hint(folder.parent))  # fmt: skip


def read_chunk(path: Path, chunk: ChunkRecord, dim: int) -> np.ndarray:
    """The (n_rows, dim) float32 memory map of a chunk; DamagedError when it does not match."""
    try:
        arr = read_npy(path, mmap=True)
    except FileNotFoundError:
        raise DamagedError(path, "missing (an embedding chunk the collection lists)",
                           repair_hint(path.parent.parent)) from None  # fmt: skip
    except (OSError, ValueError, EOFError) as e:
        raise DamagedError(path, f"unreadable embedding chunk ({e})",
                           repair_hint(path.parent.parent)) from None  # fmt: skip
    if arr.shape != (chunk.n_rows, dim) or arr.dtype != np.float32:
        raise DamagedError(
            path, f"holds {arr.shape} {arr.dtype}, the collection lists ({chunk.n_rows}, {dim}) "
            "float32", repair_hint(path.parent.parent),
        )  # fmt: skip
    return arr


class ChunkReader:
    """Memory-mapped read access to the rows of a chunk store.

    Parameters
    ----------
    folder : the embeddings/ folder
    manifest : its chunk records, as stored in meta.sqlite
    dim : the embedding size every chunk must have
    """

    def __init__(self, folder: Path, manifest: Sequence[ChunkRecord], dim: int) -> None:
        self.folder = folder
        self.manifest = sorted(manifest, key=lambda c: c.first_row)
        self.dim = dim
        self.starts = np.asarray([c.first_row for c in self.manifest], dtype=np.int64)
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, chunk: ChunkRecord) -> np.ndarray:
        arr = self._arrays.get(chunk.name)
        if arr is None:
            arr = read_chunk(self.folder / chunk.name, chunk, self.dim)
            self._arrays[chunk.name] = arr
        return arr

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of `rows` ((n,) int64, any order) -> (n, dim) float32, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if len(rows) == 0:
            return out
        which = np.searchsorted(self.starts, rows, side="right") - 1
        if which.min() < 0:
            self._no_chunk(int(rows[which < 0][0]))
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(self.manifest) + 1))
        for ci, chunk in enumerate(self.manifest):
            sel = order[bounds[ci] : bounds[ci + 1]]
            if len(sel) == 0:
                continue
            local = rows[sel] - chunk.first_row
            if local.max() >= chunk.n_rows:
                self._no_chunk(int(rows[sel][local.argmax()]))
            arr = self._array(chunk)
            # Sorted local rows read a memory map sequentially.
            srt = np.argsort(local, kind="stable")
            out[sel[srt]] = arr[local[srt]]
        return out

    def _no_chunk(self, row: int) -> None:
        meta = self.folder.parent / "meta.sqlite"
        raise DamagedError(meta, f"lists embedding row {row}, which no chunk in {self.folder} "
                           "holds", repair_hint(self.folder.parent))  # fmt: skip

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(slice of `rows` as positions (m,), embeddings (m, dim)) chunk by chunk.

        `rows` : (n,) sorted int64. A chunk whose rows are all wanted is yielded as its memory
        map (no copy: searches read the page cache); others as a copy of the wanted rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        held = sum(
            int(np.searchsorted(rows, c.first_row + c.n_rows) - np.searchsorted(rows, c.first_row))
            for c in self.manifest
        )
        if held != len(rows):  # a row no chunk holds: say so before any is read
            self.gather(rows)
        for chunk in self.manifest:
            lo = int(np.searchsorted(rows, chunk.first_row))
            hi = int(np.searchsorted(rows, chunk.first_row + chunk.n_rows))
            if hi == lo:
                continue
            arr = self._array(chunk)
            positions = np.arange(lo, hi, dtype=np.int64)
            if hi - lo == chunk.n_rows:
                yield positions, arr
            else:
                yield positions, np.asarray(arr[rows[lo:hi] - chunk.first_row])

    def iter_rows(
        self, rows: np.ndarray, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, embeddings) in batches of at most `batch` rows, for bounded memory."""
        rows = np.asarray(rows, dtype=np.int64)
        for s in range(0, len(rows), batch):
            part = rows[s : s + batch]
            yield part, self.gather(part)
