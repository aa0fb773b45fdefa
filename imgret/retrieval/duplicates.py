"""Near-duplicate images of a collection: pairs whose similarity passes a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store.collection import Collection
from .searcher import Searcher

__all__ = ["DuplicatePair", "find_duplicates", "duplicate_groups"]


@dataclass
class DuplicatePair:
    a: int  # position of the first image (a < b)
    b: int
    key_a: str
    key_b: str
    score: float


def find_duplicates(
    searcher: Searcher,
    threshold: float = 0.95,
    *,
    k: int = 10,
    mode: str = "index",
    batch: int = 4096,
) -> list[DuplicatePair]:
    """Pairs of images with similarity >= `threshold`, most similar first.

    Each image's `k` nearest neighbours are checked (so an image with more than `k` near
    copies lists its `k` closest).
    """
    coll = searcher.vectors
    assert isinstance(coll, Collection)
    n = len(coll)
    pairs: dict[tuple[int, int], float] = {}
    for s in range(0, n, batch):
        pos = np.arange(s, min(s + batch, n))
        queries = coll.fetch(coll.rows[pos])
        scores, found, _ = searcher.search(queries, k, mode=mode, exclude=pos)
        qi, col = np.nonzero((scores >= threshold) & (found >= 0))
        for a, b, sc in zip(pos[qi], found[qi, col], scores[qi, col], strict=True):
            key = (int(min(a, b)), int(max(a, b)))
            pairs[key] = max(pairs.get(key, -np.inf), float(sc))
    keys = coll.keys
    out = [DuplicatePair(a, b, keys[a], keys[b], sc) for (a, b), sc in pairs.items()]
    out.sort(key=lambda p: (-p.score, p.a, p.b))
    return out


def duplicate_groups(pairs: list[DuplicatePair]) -> list[list[int]]:
    """Connected groups of positions linked by pairs, biggest first (union-find)."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        parent[root(p.a)] = root(p.b)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
