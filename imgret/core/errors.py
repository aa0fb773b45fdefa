"""Errors that are the user's to fix: the CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path

__all__ = ["UserError", "DamagedError", "DiskFullError"]


class UserError(Exception):
    """Something the user can fix (a missing folder, no images, a mismatched model).

    The message says what was wrong and what to do; the CLI prints it and exits with code 2.
    """


class DamagedError(UserError):
    """A file imgret wrote (a model, or a part of a collection) is missing, unreadable or does
    not match what refers to it. `path` is that file; the message names it and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}; {fix}")


class DiskFullError(UserError):
    """A write ran out of space (or quota). What was being written is named; nothing half
    written is left behind (temporary files are removed, the previous state stays current)."""

    def __init__(self, path: str | Path, needed: int | None = None) -> None:
        self.path = Path(path)
        where = self.path.parent
        try:
            import shutil

            free = f", {_size(shutil.disk_usage(where).free)} free there"
        except OSError:
            free = ""
        need = f" (about {_size(needed)} needed)" if needed else ""
        super().__init__(
            f"no space left on the device while writing {path}{need}{free}. Nothing was "
            "half written; free some space and run the same command again"
        )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"
