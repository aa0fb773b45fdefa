"""`imgret cluster`: KMeans on a collection, K from the elbow method; its pictures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.clustering import Clustering, elbow_curve, fit_kmeans
from ..core.errors import UserError
from ..core.vectors import nearest_centroids
from ..store.collection import Collection
from ..store.opening import open_collection
from ..viz.plots import plot_cluster_samples, plot_elbow

__all__ = ["ClusterOutput", "cluster", "KMEANS_SAMPLE"]


@dataclass
class ClusterOutput:
    k: int
    sizes: list[int]
    elbow_k: int | None
    files: dict[str, Path] = field(default_factory=dict)


def cluster(
    collection_dir: str | Path,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> ClusterOutput:
    """KMeans on a collection: K from the elbow of the inertia curve unless given."""
    with open_collection(collection_dir) as coll, coll.writing():  # pictures included
        if len(coll) < 2:
            raise UserError(f"{coll.path}: {len(coll)} image(s) is too few to cluster")
        files: dict[str, Path] = {}
        elbow = None
        if k is None:
            elbow = elbow_curve(
                _cluster_sample(coll, seed), range(k_min, k_max + 1), seed=seed,
                progress=progress,
            )  # fmt: skip
            k = elbow.chosen_k
            files["elbow"] = plot_elbow(
                elbow.ks, elbow.inertias, elbow.silhouettes, k, coll.path / "elbow.png"
            )
        clustering = _fit_clusters(coll, k, seed)
        coll.save_clustering(clustering, elbow)
        files["clusters"] = plot_cluster_samples(
            coll.keys, clustering.assignments, coll.path / "clusters.png", seed=seed
        )
    sizes = np.bincount(clustering.assignments, minlength=clustering.k).tolist()
    return ClusterOutput(clustering.k, sizes, elbow.chosen_k if elbow else None, files)


KMEANS_SAMPLE = 100_000  # KMeans is fitted on at most this many embeddings, then all are assigned


def _cluster_sample(coll: Collection, seed: int) -> np.ndarray:
    """The embeddings KMeans is fitted on: all, or a seeded sample of a large collection."""
    if len(coll) <= KMEANS_SAMPLE:
        return coll.embeddings
    pick = np.sort(np.random.default_rng(seed).choice(len(coll), KMEANS_SAMPLE, replace=False))
    return coll.fetch(coll.rows[pick])


def _fit_clusters(coll: Collection, k: int, seed: int) -> Clustering:
    """KMeans on the collection (on a sample when large; every image then goes to its nearest)."""
    clustering = fit_kmeans(_cluster_sample(coll, seed), k, seed=seed)
    if len(coll) <= KMEANS_SAMPLE:
        return clustering
    assign = np.concatenate([
        nearest_centroids(emb, clustering.centroids, 1)[:, 0]
        for _, emb in coll.reader.iter_rows(coll.rows)
    ])  # fmt: skip
    return Clustering(clustering.k, clustering.centroids, assign, clustering.inertia)


