"""The write lock of a collection folder: one writer at a time, released when its process dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import UserError

__all__ = ["collection_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def collection_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`/.lock (made with the folder when missing) for the duration of a write.

    flock locks die with the process that holds them (kill -9 included). The file descriptor
    is not inherited by programs the writer starts (O_CLOEXEC); worker processes forked from
    it are killed with it (imgret.data.loader).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder} is being changed by another imgret process; wait for it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
