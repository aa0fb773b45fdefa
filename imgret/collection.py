"""A collection directory: the embeddings of a set of images, their keys, and the clustering.

Layout (format version 1)::

    collection.json   format, version, model facts, source, metric, count, skipped files
    items.json        keys (file paths or builtin:// keys) and labels, one per embedding row
    embeddings.npy    (n_images, dim) float32, unit-norm rows when metric is cosine
    clusters.json     K, inertia, the elbow curve (when clustered)
    centroids.npy     (K, dim) float32
    assignments.npy   (n_images,) int64
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import read_json, write_json, write_npy
from .cluster import Clustering, ElbowCurve, normalize
from .errors import UserError

__all__ = ["Collection", "FORMAT", "FORMAT_VERSION"]

FORMAT = "imgret-collection"
FORMAT_VERSION = 1


@dataclass
class Collection:
    path: Path
    info: dict[str, Any]
    keys: list[str]
    labels: list[str | None]
    embeddings: np.ndarray  # (n_images, dim) float32
    clustering: Clustering | None = None
    elbow: ElbowCurve | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def model(self) -> dict[str, Any]:
        return self.info["model"]

    @property
    def metric(self) -> str:
        return self.info["metric"]

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        model: dict[str, Any],
        source: str,
        keys: list[str],
        labels: list[str | None],
        embeddings: np.ndarray,
        failures: list[tuple[str, str]] | None = None,
        metric: str = "cosine",
    ) -> Collection:
        """Write a new collection (replacing any at `path`) from (n_images, dim) embeddings."""
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(keys) or len(keys) != len(labels):
            raise ValueError(
                f"embeddings {embeddings.shape} must be (n_images, dim) with n_images == "
                f"len(keys) == len(labels) ({len(keys)}, {len(labels)})"
            )
        if metric == "cosine":
            embeddings = normalize(embeddings)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for stale in ("clusters.json", "centroids.npy", "assignments.npy"):
            (path / stale).unlink(missing_ok=True)
        info = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": model,
            "source": source,
            "metric": metric,
            "count": len(keys),
            "dim": int(embeddings.shape[1]),
            "skipped": [{"key": k, "reason": r} for k, r in (failures or [])],
        }
        write_npy(path / "embeddings.npy", embeddings)
        write_json(path / "items.json", {"keys": keys, "labels": labels})
        write_json(path / "collection.json", info)  # written last: its presence marks completion
        return cls(path, info, list(keys), list(labels), embeddings)

    @classmethod
    def load(cls, path: str | Path) -> Collection:
        path = Path(path)
        if not (path / "collection.json").exists():
            raise UserError(
                f"{path}: not an imgret collection (no collection.json). "
                "Make one with `imgret embed MODEL FOLDER --out COLLECTION`."
            )
        info = read_json(path / "collection.json")
        if info.get("format") != FORMAT:
            raise UserError(f"{path}: not an imgret collection")
        if info.get("version", 0) > FORMAT_VERSION:
            raise UserError(
                f"{path}: made by a newer imgret (format {info['version']}); upgrade imgret"
            )
        items = read_json(path / "items.json")
        embeddings = np.load(path / "embeddings.npy")
        coll = cls(path, info, items["keys"], items["labels"], embeddings)
        if (path / "clusters.json").exists():
            doc = read_json(path / "clusters.json")
            coll.clustering = Clustering(
                k=doc["k"],
                centroids=np.load(path / "centroids.npy"),
                assignments=np.load(path / "assignments.npy"),
                inertia=doc["inertia"],
            )
            coll.elbow = ElbowCurve(**doc["elbow"]) if doc.get("elbow") else None
        return coll

    def save_clustering(self, clustering: Clustering, elbow: ElbowCurve | None = None) -> None:
        if len(clustering.assignments) != len(self):
            raise ValueError("clustering does not match the collection's size")
        write_npy(self.path / "centroids.npy", clustering.centroids.astype(np.float32))
        write_npy(self.path / "assignments.npy", clustering.assignments.astype(np.int64))
        write_json(
            self.path / "clusters.json",
            {
                "k": clustering.k,
                "inertia": clustering.inertia,
                "elbow": asdict(elbow) if elbow else None,
            },
        )
        self.clustering, self.elbow = clustering, elbow

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse a model other than the one that made the collection's embeddings."""
        mine = self.model
        for key in ("embedding_dim", "image_size", "channels", "name"):
            if mine.get(key) != model.get(key):
                raise UserError(
                    f"{self.path} was made with model {mine.get('ref')} ({key}={mine.get(key)}), "
                    f"not {model.get('ref')} ({key}={model.get(key)}). Use the same model or "
                    "rebuild the collection."
                )
        if mine.get("ref") != model.get("ref"):
            raise UserError(
                f"{self.path} was made with model {mine.get('ref')}, not {model.get('ref')}. "
                "Use the same model or rebuild the collection."
            )
