"""PCA-whitening of any model's embedding, learned on a collection without labels.

As in Radenovic et al. (fine-tuning CNN image retrieval with no human annotation): the
L2-normalised embeddings are centred, projected on their top `dim` principal components,
each divided by the square root of its eigenvalue, and L2-normalised again.

A whitened model is a folder: whitening.safetensors (mean, projection) + model.json (kind
"whitened", the base model's reference, the dimension, and what it was fitted on). Its base can
be any model; imgret.training.whiten fits one on a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import atomic_path, write_json
from ..core.errors import UserError
from ..core.vectors import pca
from .base import DerivedEmbedder

__all__ = [
    "Whitening", "WhitenedEmbedder", "whitening_matrix", "save_whitening", "load_folder",
    "KIND", "WEIGHTS",
]  # fmt: skip

KIND = "whitened"
WEIGHTS = "whitening.safetensors"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float64 rows of norm 1 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def whitening_matrix(
    z: np.ndarray, dim: int, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening of (n, d) embeddings to `dim` dims -> (mean (d,), matrix (d, dim)) float32.

    (z - mean) @ matrix has identity covariance on the fitted embeddings; `eps` (relative to the
    largest eigenvalue) keeps near-empty directions from blowing up.
    """
    mean, components, variances = pca(z, dim)
    vals = variances + eps * max(float(variances.max()) if len(variances) else 0.0, 1e-12)
    return mean.astype(np.float32), (components / np.sqrt(vals)[None, :]).astype(np.float32)


class Whitening:
    """PCA-whitening of L2-normalised embeddings to `dim` dims.

    Parameters
    ----------
    dim : number of principal directions kept (at most min(n_samples - 1, n_features))
    eps : added to every eigenvalue, relative to the largest, so that near-empty directions
        are not blown up

    Attributes (after `fit`)
    ------------------------
    mean_ : ndarray of shape (n_features,) float32, mean of the normalised embeddings
    projection_ : ndarray of shape (n_features, dim) float32, components / sqrt(eigenvalue)
    explained_variance_ratio_ : float, share of the total variance the kept directions hold
    n_fitted_ : int, number of embeddings fitted on
    """

    def __init__(self, dim: int = 512, *, eps: float = 1e-6) -> None:
        self.dim = dim
        self.eps = eps

    def fit(self, embeddings: np.ndarray) -> Whitening:
        """Learn the whitening of `embeddings` : ndarray of shape (n_samples, n_features)."""
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise ValueError(f"expected embeddings of shape (n, d), got {x.shape}")
        x = _unit_rows(x)
        n, d = x.shape
        if not 1 <= self.dim <= min(n - 1, d):
            # n centred points span at most n - 1 directions; beyond them there is no variance
            raise UserError(
                f"cannot whiten to {self.dim} dims: {n} embeddings of {d} dims give at most "
                f"{max(min(n - 1, d), 0)} (use a smaller dim, or fit on more images)"
            )
        mean, matrix = whitening_matrix(x, self.dim, eps=self.eps)
        centred = x - mean.astype(np.float64)
        directions = matrix / np.linalg.norm(matrix, axis=0, keepdims=True)  # unit components
        kept = float(np.square(centred @ directions).sum())
        total = float(np.square(centred).sum())
        self.mean_ = mean
        self.projection_ = matrix
        self.explained_variance_ratio_ = kept / total if total > 0 else 1.0
        self.n_fitted_ = int(n)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "projection_"):
            raise RuntimeError("this Whitening is not fitted yet; call fit() first")

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_features) embeddings -> (n, dim) float32 whitened, rows L2-normalised."""
        self._check_fitted()
        z = (_unit_rows(embeddings) - self.mean_) @ self.projection_.astype(np.float64)
        return _unit_rows(z).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The learned arrays as tensors, as written to whitening.safetensors."""
        self._check_fitted()
        return {
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean_, np.float32)),
            "projection": torch.from_numpy(np.ascontiguousarray(self.projection_, np.float32)),
        }


class WhitenedEmbedder(DerivedEmbedder):
    """A frozen base embedder followed by a whitening: (B, C, S, S) -> (B, dim) unit-norm."""

    name = KIND
    mean: torch.Tensor
    projection: torch.Tensor

    def __init__(self, base: Any, mean: torch.Tensor, projection: torch.Tensor, base_ref: str):
        super().__init__()
        if mean.shape != (projection.shape[0],) or projection.shape[0] != base.embedding_dim:
            raise UserError(
                f"whitening of shape {tuple(projection.shape)} does not fit the "
                f"{base.embedding_dim}-d embedding of {base_ref}"
            )
        self.base = base
        self.base_ref = base_ref
        self.register_buffer("mean", mean.float())  # (d,)
        self.register_buffer("projection", projection.float())  # (d, dim)

    @property
    def embedding_dim(self) -> int:
        return int(self.projection.shape[1])

    @torch.inference_mode()
    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> (B, dim) float32 whitened, rows L2-normalised."""
        self.eval()
        return self.whiten(self.base.embed_batch(x).float())

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) base embeddings -> (B, dim) whitened, rows L2-normalised."""
        return _whiten(z, self.mean, self.projection)

    def embedding_graph(self) -> nn.Module:
        """base graph then the whitening, without inference mode (for export)."""
        return nn.Sequential(self.base.embedding_graph(), _Whiten(self.mean, self.projection))


def _whiten(z: torch.Tensor, mean: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    return F.normalize((F.normalize(z, dim=1) - mean) @ projection, dim=1)


class _Whiten(nn.Module):
    """The whitening step alone, as a module (its buffers are copies)."""

    mean: torch.Tensor
    projection: torch.Tensor

    def __init__(self, mean: torch.Tensor, projection: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("projection", projection.detach().clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _whiten(z, self.mean, self.projection)


def save_whitening(whitening: Whitening, out: Path, doc: dict[str, Any]) -> None:
    """Write whitening.safetensors and model.json (`doc` plus the kind) into the folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(whitening.state_dict(), str(tmp))
    write_json(out / "model.json", {"format": "imgret-model", "version": 1, "kind": KIND, **doc})


def load_folder(path: Path, doc: dict[str, Any], base: Any, device: str = "cpu") -> Any:
    """Rebuild a whitened model from its folder, on its already loaded `base`."""
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: {WEIGHTS} is missing; make the model again with imgret whiten")
    arrays = load_file(str(path / WEIGHTS))
    base_ref = doc["base"]["ref"]
    return WhitenedEmbedder(base, arrays["mean"], arrays["projection"], base_ref).to(device)
