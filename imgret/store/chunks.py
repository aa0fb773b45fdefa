"""Embeddings on disk as append-only chunk files, read back by row without loading them all.

A chunk is one ``.npy`` file of (n_rows, dim) float32 holding the embeddings of rows
``first_row .. first_row + n_rows - 1``. Files are written atomically and listed in the manifest
(the `chunks` table of meta.sqlite) only after they are complete, so a file that is not in the
manifest is left over from an interrupted run and can be deleted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..core.atomic import write_npy
from .metadata import ChunkRecord

__all__ = ["ChunkReader", "write_chunk", "chunk_name", "remove_orphans"]


def chunk_name(seq: int) -> str:
    return f"chunk-{seq:06d}.npy"


def write_chunk(folder: Path, seq: int, first_row: int, embeddings: np.ndarray) -> ChunkRecord:
    """Write (n_rows, dim) float32 embeddings as chunk number `seq` -> its manifest record."""
    name = chunk_name(seq)
    write_npy(folder / name, np.ascontiguousarray(embeddings, dtype=np.float32))
    return ChunkRecord(name, first_row, len(embeddings))


def remove_orphans(folder: Path, manifest: Sequence[ChunkRecord]) -> list[str]:
    """Delete files in `folder` the manifest does not list (left by an interrupted run)."""
    if not folder.is_dir():
        return []
    keep = {c.name for c in manifest}
    removed = []
    for p in folder.iterdir():
        if p.is_file() and p.name not in keep:
            p.unlink()
            removed.append(p.name)
    return removed


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
            path = self.folder / chunk.name
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: unreadable embedding chunk ({e})") from None
            if arr.shape != (chunk.n_rows, self.dim) or arr.dtype != np.float32:
                raise ValueError(
                    f"{path}: holds {arr.shape} {arr.dtype}, the manifest says "
                    f"({chunk.n_rows}, {self.dim}) float32"
                )
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
            raise KeyError(f"row {int(rows[which < 0][0])} is in no chunk")
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(self.manifest) + 1))
        for ci, chunk in enumerate(self.manifest):
            sel = order[bounds[ci] : bounds[ci + 1]]
            if len(sel) == 0:
                continue
            local = rows[sel] - chunk.first_row
            if local.max() >= chunk.n_rows:
                raise KeyError(f"row {int(rows[sel][local.argmax()])} is in no chunk")
            arr = self._array(chunk)
            # Sorted local rows read a memory map sequentially.
            srt = np.argsort(local, kind="stable")
            out[sel[srt]] = arr[local[srt]]
        return out

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(slice of `rows` as positions (m,), embeddings (m, dim)) chunk by chunk.

        `rows` : (n,) sorted int64. A chunk whose rows are all wanted is yielded as its memory
        map (no copy: searches read the page cache); others as a copy of the wanted rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
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
