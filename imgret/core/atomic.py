"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

A file is written under a temporary name beside its destination, fsynced, renamed over the
destination, and the folder is fsynced, so the rename itself survives a power loss. A write
that runs out of space raises DiskFullError (a UserError) and leaves the old file in place.
Temporary names look like ``.NAME.XXXXXXXX.tmp``; `remove_stale_temps` deletes those a killed
process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DiskFullError

__all__ = [
    "atomic_path", "write_json", "read_json", "write_npy", "write_text", "fsync_dir",
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
