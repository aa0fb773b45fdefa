"""Retrieval metrics as small pure functions of a ranked relevance matrix.

`relevance` is an (n_queries, depth) boolean array: row q, column r-1 says whether the item at
rank r of query q's ranking is relevant (same class). Rankings may be shorter than `depth`
(e.g. search inside a cluster); pad them with False. `n_relevant` is (n_queries,): how many
relevant items the whole database holds for each query (for recall and mAP@all).

Conventions follow ../shared/BENCHMARKS.md:

- AP@k = sum over ranks r <= k of P@r * rel(r), divided by the number of relevant items within
  the top k (0 where there are none);
- AP@all = the same sum over the whole ranking divided by the total number of relevant items
  (relevant items never retrieved count as misses).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "precision_at_k", "recall_at_k", "average_precision_at_k", "average_precision_all",
    "pr_curve", "relevance_matrix",
]  # fmt: skip


def _as_relevance(relevance: np.ndarray) -> np.ndarray:
    rel = np.asarray(relevance, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be (n_queries, depth), got shape {rel.shape}")
    return rel


def relevance_matrix(
    ranked_ids: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray
) -> np.ndarray:
    """(n_queries, depth) database ids (-1 = no item) -> (n_queries, depth) bool relevance."""
    ids = np.asarray(ranked_ids)
    db = np.asarray(database_labels)
    rel = db[np.where(ids >= 0, ids, 0)] == np.asarray(query_labels)[:, None]
    return rel & (ids >= 0)


def precision_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """Share of relevant items among the first k ranks -> (n_queries,) float64.

    A ranking shorter than k counts its missing ranks as not relevant.
    """
    rel = _as_relevance(relevance)
    return rel[:, :k].sum(axis=1) / float(k)


def recall_at_k(relevance: np.ndarray, k: int, n_relevant: np.ndarray) -> np.ndarray:
    """Share of all relevant items found in the first k ranks -> (n_queries,) (0 if none exist)."""
    rel = _as_relevance(relevance)
    total = np.asarray(n_relevant, dtype=np.float64)
    found = rel[:, :k].sum(axis=1)
    return np.divide(found, total, out=np.zeros(len(rel)), where=total > 0)


def _precision_sum(rel: np.ndarray) -> np.ndarray:
    """sum over ranks r of P@r * rel(r) -> (n_queries,)."""
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    return (hits / ranks * rel).sum(axis=1)


def average_precision_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """AP@k of each query (divided by the relevant items within the top k) -> (n_queries,)."""
    rel = _as_relevance(relevance)[:, :k]
    found = rel.sum(axis=1).astype(np.float64)
    return np.divide(_precision_sum(rel), found, out=np.zeros(len(rel)), where=found > 0)


def average_precision_all(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP over the whole ranking, divided by all relevant items of the database -> (n_queries,)."""
    rel = _as_relevance(relevance)
    total = np.asarray(n_relevant, dtype=np.float64)
    return np.divide(_precision_sum(rel), total, out=np.zeros(len(rel)), where=total > 0)


def pr_curve(
    relevance: np.ndarray, n_relevant: np.ndarray, ranks: np.ndarray | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and mean recall over queries at each cut-off in `ranks`.

    Returns (precision, recall), each (len(ranks),) float64: the points of a precision-recall
    curve traced by growing the number of results returned.
    """
    rel = _as_relevance(relevance)
    total = np.asarray(n_relevant, dtype=np.float64)
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    precision, recall = [], []
    for k in ranks:
        found = hits[:, min(k, rel.shape[1]) - 1]
        precision.append(float(np.mean(found / k)))
        r = np.divide(found, total, out=np.zeros(len(rel)), where=total > 0)
        recall.append(float(np.mean(r)))
    return np.asarray(precision), np.asarray(recall)
