"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

A file is written under a temporary name beside its destination, fsynced, renamed over the
destination, and the folder is fsynced, so the rename itself survives a power loss. A write
that runs out of space raises DiskFullError (a UserError) and leaves the old file in place.
Temporary names look like ``.NAME.XXXXXXXX.tmp``; `remove_stale_temps` deletes those a killed
process left behind. `read_npy` reads the .npy files back (np.load parses their header with
ast.literal_eval, which CPython before 3.11.9 cannot run in two threads at once: a search
beside a writer failed with "SystemError: AST constructor recursion depth mismatch").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import DiskFullError

__all__ = [
    "atomic_path", "write_json", "read_json", "write_npy", "read_npy", "write_text", "fsync_dir",
    "make_dir", "remove_stale_temps", "is_disk_full", "TEMP_PATTERN",
]  # fmt: skip

TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_path names its files
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _FULL


def fsync_dir(folder: str | Path) -> None:
    """Make the entries of `folder` (a rename, a new or deleted file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(folder: str | Path) -> None:
    """mkdir -p, with the new entries made durable (the parent folder fsynced)."""
    folder = Path(folder)
    if folder.is_dir():
        return
    make_dir(folder.parent)
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
    fsync_dir(folder.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    `needed`: the bytes about to be written, for the message when the disk is full.
    """
    path = Path(path)
    make_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, needed) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Delete the temporary files of interrupted atomic writes in `folder` -> their names.

    Only the one process that may write the folder (the collection's lock holder) calls it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if TEMP_PATTERN.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def write_text(path: str | Path, text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, needed=int(array.nbytes)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(  # what np.save writes for a plain array (no objects, no fields)
    r"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': (False|True), "
    r"'shape': \(((?:\d+, ?)*\d*)\), \}\s*"
)


def read_npy(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """The array of a .npy file written by np.save (with `mmap`, a copy-on-write memory map:
    its pages are the file's until written, and nothing written reaches the file; so arrays are
    writable, as torch.from_numpy wants them, without a copy).

    FileNotFoundError when missing; ValueError when it is not such a file or is too short.
    """
    with open(path, "rb") as f:
        magic = f.read(8)
        if len(magic) < 8 or magic[:6] != _NPY_MAGIC or magic[6] not in (1, 2, 3):
            raise ValueError("not a .npy file")
        size_format = "<H" if magic[6] == 1 else "<I"
        raw = f.read(struct.calcsize(size_format))
        if len(raw) < struct.calcsize(size_format):
            raise ValueError("truncated .npy header")
        header = f.read(struct.unpack(size_format, raw)[0]).decode("latin1")
        offset = f.tell()
        found = _NPY_HEADER.fullmatch(header)
        if found is None:
            raise ValueError(f"unexpected .npy header {header[:80]!r}")
        dtype = np.dtype(found[1])
        if dtype.hasobject:
            raise ValueError("a .npy file of Python objects (never read: it would unpickle)")
        shape = tuple(int(n) for n in found[3].split(",") if n.strip())
        order: Literal["C", "F"] = "F" if found[2] == "True" else "C"
        count = int(np.prod(shape, dtype=np.int64))
        if os.fstat(f.fileno()).st_size < offset + count * dtype.itemsize:
            raise ValueError(f"{count * dtype.itemsize:,} bytes of data expected, file too short")
        if not mmap or count == 0:  # (a memory map of nothing cannot be made)
            return np.fromfile(f, dtype=dtype, count=count).reshape(shape, order=order)
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
