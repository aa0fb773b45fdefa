"""Searching a collection with query images: files, folders, or items of the collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.sources import open_source
from ..models.embed import embed_files, embed_source
from ..store.collection import Collection
from .rerank import RerankConfig
from .results import QueryResult, results_for
from .searcher import Searcher

__all__ = ["search_files", "search_folder", "search_items"]


def search_files(
    searcher: Searcher,
    embedder: Any,
    paths: list[str | Path],
    *,
    k: int = 10,
    mode: str = "index",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
) -> list[QueryResult]:
    """Embed query image files with `embedder` (the collection's model) and rank."""
    queries = embed_files(embedder, list(paths))
    ranking = searcher.search(queries, k, mode=mode, nprobe=nprobe, rerank=rerank)
    return results_for(_collection(searcher), [str(p) for p in paths], *ranking)


def search_folder(
    searcher: Searcher,
    embedder: Any,
    folder: str | Path,
    *,
    k: int = 10,
    mode: str = "index",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
    batch_size: int = 256,
    workers: int = 2,
) -> tuple[list[QueryResult], list[tuple[str, str]]]:
    """Every image of a folder as a query, embedded and searched in batches.

    Returns (results, skipped): unreadable query files are skipped and listed as (path, reason).
    """
    source = open_source(folder)
    results: list[QueryResult] = []
    skipped: list[tuple[str, str]] = []
    step = max(batch_size * 8, 1)
    for s in range(0, len(source), step):
        part = source.subset(range(s, min(s + step, len(source))))
        res = embed_source(embedder, part, batch_size=batch_size, workers=workers, progress=False)
        skipped += res.failures
        if len(res.positions) == 0:
            continue
        ranking = searcher.search(res.embeddings, k, mode=mode, nprobe=nprobe, rerank=rerank)
        names = [part.keys[i] for i in res.positions]
        results += results_for(_collection(searcher), names, *ranking)
    return results, skipped


def search_items(
    searcher: Searcher,
    ids: list[int],
    *,
    k: int = 10,
    mode: str = "index",
    nprobe: int | None = None,
    rerank: RerankConfig | None = None,
    exclude_self: bool = True,
) -> list[QueryResult]:
    """Rank the collection for items already in it (their stored embeddings), by position.

    With `exclude_self` a query is left out of its own results (and of its expansion
    neighbours when re-ranking).
    """
    coll = _collection(searcher)
    pos = np.asarray(ids, dtype=np.int64)
    queries = coll.fetch(coll.rows[pos])
    ranking = searcher.search(
        queries, k, mode=mode, nprobe=nprobe, rerank=rerank,
        exclude=pos if exclude_self else None,
    )  # fmt: skip
    return results_for(coll, [coll.keys[i] for i in pos], *ranking)


def _collection(searcher: Searcher) -> Collection:
    vectors = searcher.vectors
    if not isinstance(vectors, Collection):
        raise TypeError("query results need a Searcher over a Collection")
    return vectors
