"""Diffusion over a query's candidates: the last stage of label-free re-ranking.

Images of one kind often lie along a curved "manifold" of the embedding space: two of them can
be far apart yet linked by a chain of close neighbours. Diffusion (manifold ranking: Zhou et
al. 2004; truncated to the query's candidates as in Iscen et al., "Efficient diffusion on
region manifolds", CVPR 2017) ranks the candidates by how well they are connected to the
query through such chains, not by their own similarity alone:

- graph: each candidate linked to its `neighbors` most similar candidates, both ways (mutual
  neighbours only), weight max(similarity, 0) ** GAMMA, symmetrically normalised (S);
- seeds: the query's SEEDS most similar candidates, weighted the same way (y);
- scores f solve (I - ALPHA S) f = y (conjugate gradients, ITERATIONS steps); candidates are
  ranked by f, equal scores by their similarity to the query.

The constants were chosen on validation queries (`python scripts/validation.py diffusion`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["diffusion_order", "ALPHA", "GAMMA", "SEEDS", "ITERATIONS"]

ALPHA = 0.7  # how far scores spread along the graph (0: not at all)
GAMMA = 3.0  # edge weight = similarity ** GAMMA
SEEDS = 10  # candidates the query starts from
ITERATIONS = 20  # conjugate-gradient steps


def _graph(candidates: np.ndarray, neighbors: int) -> np.ndarray:
    """(c, dim) unit rows -> (c, c) symmetric normalised mutual-kNN affinity, float64."""
    c = len(candidates)
    sims = candidates.astype(np.float64) @ candidates.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    n = min(neighbors, c - 1)
    nearest = np.argpartition(-sims, n - 1, axis=1)[:, :n]  # (c, n) unordered
    linked = np.zeros((c, c), bool)
    linked[np.repeat(np.arange(c), n), nearest.ravel()] = True
    w = np.where(linked & linked.T, np.clip(sims, 0, None) ** GAMMA, 0.0)
    d = w.sum(1)
    scale = 1 / np.sqrt(np.where(d > 0, d, 1))
    return w * scale[:, None] * scale[None, :]


def _solve(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(I - ALPHA s) f = y by conjugate gradients (the matrix is symmetric positive definite:
    s's eigenvalues lie in [-1, 1])."""
    f = np.zeros_like(y)
    r = y.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(ITERATIONS):
        if rr <= 1e-30:
            break
        ap = p - ALPHA * (s @ p)
        step = rr / (p @ ap)
        f += step * p
        r -= step * ap
        rr, previous = r @ r, rr
        p = r + (rr / previous) * p
    return f


def diffusion_order(
    query_sims: np.ndarray, candidates: np.ndarray, neighbors: int
) -> np.ndarray:
    """One query's candidates re-ranked by diffusion -> (c,) their indices, best first.

    query_sims : (c,) similarity of the (expanded) query to each candidate
    candidates : (c, dim) unit-norm embeddings of the candidates (augmented ones, after DBA)
    neighbors : graph neighbours per candidate; below 1, or under 3 candidates: by query_sims
    """
    query_sims = np.asarray(query_sims, np.float64)
    c = len(query_sims)
    if neighbors < 1 or c < 3:
        return np.argsort(-query_sims, kind="stable")
    y = np.zeros(c)
    seeds = np.argsort(-query_sims, kind="stable")[:SEEDS]
    y[seeds] = np.clip(query_sims[seeds], 0, None) ** GAMMA
    f = _solve(_graph(np.asarray(candidates), neighbors), y)
    return np.lexsort((-query_sims, -f))
