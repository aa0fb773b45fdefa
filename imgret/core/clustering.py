"""Clustering embeddings: the elbow of KMeans inertia (with silhouette) picks K; KMeans groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .progress import progress_bar

__all__ = ["ElbowCurve", "Clustering", "elbow_curve", "find_elbow", "fit_kmeans"]


@dataclass
class ElbowCurve:
    ks: list[int]
    inertias: list[float]
    silhouettes: list[float]  # mean silhouette on the same sample; higher is better
    chosen_k: int  # the elbow of the inertia curve


@dataclass
class Clustering:
    k: int
    centroids: np.ndarray  # (k, dim) float32, in the space searched (unit-norm for cosine)
    assignments: np.ndarray  # (n_images,) int64 cluster of each image
    inertia: float


def find_elbow(ks: list[int], inertias: list[float]) -> int:
    """The kneedle elbow of a decreasing curve: the K farthest below the chord of the curve.

    Both axes are scaled to [0, 1]; the elbow maximises (1 - x) - y, the distance below the
    straight line from the first point to the last.
    """
    if len(ks) < 3:
        return ks[0]
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    x = (x - x[0]) / (x[-1] - x[0])
    span = y.max() - y.min()
    if span <= 0:
        return ks[0]
    y = (y - y.min()) / span
    return ks[int(np.argmax((1.0 - x) - y))]


def fit_kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 3) -> Clustering:
    """KMeans of (n_images, dim) embeddings into `k` clusters (sklearn, fixed seed)."""
    from sklearn.cluster import KMeans

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    return Clustering(
        k=k,
        centroids=km.cluster_centers_.astype(np.float32),
        assignments=km.labels_.astype(np.int64),
        inertia=float(km.inertia_),
    )


def elbow_curve(
    x: np.ndarray,
    ks: list[int] | range = range(2, 21),
    *,
    seed: int = 0,
    sample_size: int = 3000,
    progress: bool = True,
) -> ElbowCurve:
    """KMeans inertia and silhouette for each K in `ks` on up to `sample_size` embeddings."""
    from sklearn.metrics import silhouette_score

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) > sample_size:
        x = x[np.random.default_rng(seed).choice(len(x), sample_size, replace=False)]
    ks = [k for k in ks if 2 <= k < len(x)]
    if not ks:
        raise ValueError(f"too few embeddings ({len(x)}) for an elbow curve")
    inertias, silhouettes = [], []
    for k in progress_bar(ks, desc="elbow", unit="K", enabled=progress, leave=False):
        c = fit_kmeans(x, k, seed=seed, n_init=1)
        inertias.append(c.inertia)
        silhouettes.append(float(silhouette_score(x, c.assignments, random_state=seed)))
    return ElbowCurve(list(ks), inertias, silhouettes, find_elbow(list(ks), inertias))
