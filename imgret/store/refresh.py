"""Bringing a collection's FAISS index in step with its items: keep, update or rebuild."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .index_files import (
    Fetch,
    IndexSettings,
    LoadedIndex,
    build_index,
    choose_kind,
    plan_index,
    plan_to_meta,
    save_index,
    update_index,
)  # fmt: skip

__all__ = ["refresh_index", "index_delta"]

Log = Callable[[str], None]


def index_delta(rows: np.ndarray, loaded: LoadedIndex | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows of items the index lacks, rows the index holds of items now gone)."""
    if loaded is None:
        return rows, np.zeros(0, np.int64)
    return (
        np.setdiff1d(rows, loaded.rows, assume_unique=True),
        np.setdiff1d(loaded.rows, rows, assume_unique=True),
    )


def refresh_index(
    folder: Path,
    rows: np.ndarray,
    fetch: Fetch,
    *,
    dim: int,
    metric: str,
    settings: IndexSettings,
    loaded: LoadedIndex | None,
    rebuild: bool = False,
    log: Log | None = None,
    build: Callable[..., Any] = build_index,
) -> tuple[str, LoadedIndex | None]:
    """-> ("current" | "updated" | "rebuilt", the index now saved in `folder`).

    `rows` (n,) int64 are the current items' embedding rows, `loaded` the saved index (None:
    none, or a damaged one). Rebuilds when there is none, when the kind for the size (or the
    setting) changed, when the number of IVF lists for the size is 4 times off, or when more
    than 10 % of the index is removed items it cannot drop (HNSW); otherwise adds and removes
    rows. The caller holds the collection's lock.
    """
    n = len(rows)
    if n == 0:
        return "current", loaded
    plan = plan_index(choose_kind(n, settings), n, dim, settings)
    if loaded is not None and not rebuild:
        old = loaded.plan
        stale_ivf = bool(plan.nlist) and not (old.nlist / 4 < plan.nlist < old.nlist * 4)
        same_kind = old.kind == plan.kind and (old.kind != "hnsw" or old.factory == plan.factory)
        if loaded.meta.get("metric") != metric or loaded.meta.get("dim") != dim:
            rebuild = True
        elif not same_kind or stale_ivf:
            rebuild = True
    if loaded is None or rebuild:
        if log:
            log(f"building a {plan.kind} index ({plan.factory}) of {n:,} embeddings")
        index = build(  # build_index, or one with its result (a sharded build)
            plan, rows, fetch, dim=dim, metric=metric, settings=settings
        )
        meta = plan_to_meta(plan, metric=metric, dim=dim, trained_on=n)
        fresh = LoadedIndex(index, rows.copy(), meta)
        save_index(folder, fresh)
        return "rebuilt", fresh
    add, drop = index_delta(rows, loaded)
    if len(add) == 0 and len(drop) == 0:
        return "current", loaded
    updated = update_index(loaded, add, drop, fetch)
    tombstones = len(updated.rows) - n
    if tombstones > 0.1 * len(updated.rows):
        return refresh_index(
            folder, rows, fetch, dim=dim, metric=metric, settings=settings, loaded=None,
            rebuild=True, log=log, build=build,
        )  # fmt: skip
    if log:
        log(f"index: added {len(add):,}, removed {len(drop):,}")
    save_index(folder, updated)
    return "updated", updated
