"""Who is using a collection folder: one writer at a time, and any number of readers.

The writer holds an exclusive flock on ``.lock`` for the whole of a change. Each open
Collection holds a shared flock on ``.readers``; a writer deletes files that readers may still
need (older index generations, chunk files a compaction replaced) only when it can take that
lock exclusively, that is, when no reader has the collection open. flock locks die with their
process (kill -9 included). Their file descriptors are closed in forked children (the image
decoding workers) and not inherited by programs started with exec, so a worker that outlives a
killed job never holds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import UserError

__all__ = ["collection_lock", "ReaderMark", "no_readers", "LOCK_NAME", "READERS_NAME"]

LOCK_NAME = ".lock"
READERS_NAME = ".readers"
_held: set[int] = set()  # lock file descriptors of this process, closed in forked children
_writing: set[tuple[str, int]] = set()  # (folder, thread) holding the write lock here


def _close_held_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _writing.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _open(path: Path, *, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # flock works on read-only fds
        except OSError:
            return None
    except OSError:
        return None
    _held.add(fd)
    return fd


def _close(fd: int) -> None:
    _held.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


@contextlib.contextmanager
def collection_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`/.lock (made with the folder when missing) for the duration of a write.

    Refused at once (UserError) when another process (or another thread) holds it; re-entrant
    in the thread that holds it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot make this folder ({e.strerror or e})") from None
    me = (str(folder.resolve()), threading.get_ident())
    if me in _writing:
        yield
        return
    fd = _open(folder / LOCK_NAME, create=True)
    if fd is None:
        raise UserError(f"{folder}: cannot write here (the lock file cannot be made)")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder} is being changed by another imgret process; wait for it to finish "
                "and run this command again"
            ) from None
        _writing.add(me)
        try:
            yield
        finally:
            _writing.discard(me)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _close(fd)


class ReaderMark:
    """A shared lock on `folder`/.readers, held while a Collection is open for reading.

    Best effort: where the file cannot be opened (a read-only folder no writer can change
    either) nothing is held.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None
        self.acquire()

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = _open(self.folder / READERS_NAME, create=True)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a writer is deleting files
        except OSError:
            _close(fd)
            return
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            _close(self._fd)  # closing the descriptor drops its lock
            self._fd = None


def no_readers(folder: Path) -> contextlib.AbstractContextManager[bool]:
    """A context in which True means no reader has the collection open (and none can start).

    Readers wait while it is held, so keep it to the deleting of files.
    """
    return _exclusive_readers(Path(folder))


@contextlib.contextmanager
def _exclusive_readers(folder: Path) -> Iterator[bool]:
    fd = _open(folder / READERS_NAME, create=True)
    if fd is None:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _close(fd)
