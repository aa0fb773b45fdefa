"""A test hook: kill this process (or fail a write) at a named point, to test recovery.

Set ``IMGRET_TEST_CRASH_AT=POINT:N`` (for example ``chunk-committed:2``) and the process kills
itself with SIGKILL the N-th time it passes POINT. ``POINT:N:enospc`` raises
OSError(ENOSPC) there instead, as a full disk would. Several specs may be given, separated by
commas. Unset (always, outside the tests), it does nothing.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["crash_point", "POINTS"]

# Every point, by the write it interrupts (tests run a kill at each).
POINTS = {
    "chunk-written": "an embedding chunk is on disk, not yet listed in meta.sqlite",
    "chunk-committed": "a chunk and its items are committed",
    "items-removed": "items are deleted from meta.sqlite, the index not yet updated",
    "index-written": "a new index generation is on disk, index.json not yet pointing to it",
    "index-current": "index.json points to the new generation, older ones not yet deleted",
    "compact-written": "compacted chunks are on disk, not yet listed",
    "compact-committed": "compacted chunks are listed, old chunk files not yet deleted",
    "salvage-ready": "a salvaged copy of a damaged meta.sqlite is made, not yet swapped in",
    "repair-committed": "a repair's changes to meta.sqlite are committed",
}
_counts: dict[str, int] = {}


def crash_point(point: str) -> None:
    env = os.environ.get("IMGRET_TEST_CRASH_AT")
    if not env:
        return
    for spec in env.split(","):
        name, _, rest = spec.partition(":")
        if name != point:
            continue
        nth, _, action = rest.partition(":")
        _counts[point] = _counts.get(point, 0) + 1
        if _counts[point] != int(nth or 1):
            continue
        if action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.kill(os.getpid(), signal.SIGKILL)
