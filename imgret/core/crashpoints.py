"""A test hook: kill this process with SIGKILL at a named point of a write, to test recovery.

Set ``IMGRET_TEST_CRASH_AT=POINT:N`` (for example ``chunk-committed:2``) and the process kills
itself the N-th time it passes POINT. Unset (always, outside the tests), it does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]

_counts: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("IMGRET_TEST_CRASH_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
