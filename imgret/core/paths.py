"""File names as the file system has them, and as people read them.

On Linux a file name is bytes; Python shows the bytes that are not UTF-8 as lone surrogates
("caf\\udce9.jpg", os.fsdecode). imgret keeps such names exactly (they are stored as those
bytes, imgret.store.metadata) and shows them with the odd bytes escaped ("caf\\xe9.jpg").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["display", "name_bytes", "from_name_bytes", "why_unusable"]


def name_bytes(name: str) -> bytes:
    """The bytes of a name as os.fsencode gives them (lossless for any file name)."""
    return name.encode("utf-8", "surrogateescape")


def from_name_bytes(raw: bytes) -> str:
    """The inverse of `name_bytes`: bytes -> str with undecodable bytes as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def display(text: str) -> str:
    """`text` safe to print or store as UTF-8: bytes that are not UTF-8 shown as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def why_unusable(path: str | Path) -> str | None:
    """Why `path` cannot be read as an image file (None when it is a regular file).

    Says what it is: missing, a dangling link, a link loop, a folder, a named pipe, a device.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "a symbolic link to nothing (its target does not exist)"
        return "no such file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not an image file"
    if stat.S_ISFIFO(st.st_mode):
        return "a named pipe, not an image file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device, not an image file"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket, not an image file"
    return "not a regular file"
