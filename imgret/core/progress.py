"""Progress bars that show on a terminal and stay quiet in logs and pipes."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, disabled when `enabled` is false or stderr is not a terminal."""
    return tqdm(iterable, disable=not enabled or not sys.stderr.isatty(), **kwargs)
