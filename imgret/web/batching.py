"""Searches of concurrent requests ranked together: one pass over the embeddings for many.

A flat index (and exact mode) reads every embedding for each search; a batch of queries reads
them once (imgret.core.vectors.knn then multiplies matrices). Requests put their query on a
queue; each of a few worker threads takes every waiting query for the same Searcher and mode,
up to `max_batch`, ranks them in one call and hands each request its own row. Nothing waits on
purpose: a query that arrives while the workers are idle is ranked at once, alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..retrieval.searcher import Ranking, Searcher

__all__ = ["SearchQueue"]

@dataclass
class _Job:
    searcher: Searcher
    query: np.ndarray  # (1, dim) float32
    k: int
    mode: str
    exclude: int  # position never returned (-1: none)
    done: Future = field(default_factory=Future)


class SearchQueue:
    """`workers` threads ranking queued queries in batches of at most `max_batch`; `start` is
    called first in each of them."""

    def __init__(
        self, workers: int, max_batch: int = 64, start: Callable[[], None] | None = None
    ) -> None:
        self.max_batch = max_batch
        self._start = start  # run first in each worker thread (per-thread settings)
        self._jobs: list[_Job] = []
        self._ready = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"imgret-search-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def submit(
        self, searcher: Searcher, query: np.ndarray, k: int, mode: str, exclude: int = -1
    ) -> Future:
        """Queue one (1, dim) query -> a Future of its Ranking, shape (1, k)."""
        job = _Job(searcher, query, k, mode, exclude)
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        return job.done

    def search(
        self, searcher: Searcher, query: np.ndarray, k: int, mode: str, exclude: int = -1
    ) -> Ranking:
        """Rank for one (1, dim) query -> Ranking of shape (1, k); blocks until done."""
        return self.submit(searcher, query, k, mode, exclude).result()  # type: ignore[no-any-return]

    def _take(self) -> list[_Job]:
        with self._ready:
            while not self._jobs:
                self._ready.wait()
            first = self._jobs[0]
            batch: list[_Job] = []
            rest: list[_Job] = []
            for job in self._jobs:
                same = job.searcher is first.searcher and job.mode == first.mode
                (batch if same and len(batch) < self.max_batch else rest).append(job)
            self._jobs = rest
            return batch

    def _work(self) -> None:
        if self._start is not None:
            self._start()
        while True:
            batch = self._take()
            try:
                k = max(job.k for job in batch)
                queries = np.concatenate([job.query for job in batch])
                exclude = np.array([job.exclude for job in batch], dtype=np.int64)
                scores, ids, clusters = batch[0].searcher.search(
                    queries, k, mode=batch[0].mode,
                    exclude=exclude if (exclude >= 0).any() else None,
                )  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - each request gets the error
                for job in batch:
                    job.done.set_exception(e)
                continue
            for r, job in enumerate(batch):
                c = None if clusters is None else clusters[r : r + 1]
                job.done.set_result(Ranking(scores[r : r + 1, : job.k], ids[r : r + 1, : job.k], c))
