"""PCA-whitening of any model's embedding, learned on a collection without labels.

As in Radenovic et al. (fine-tuning CNN image retrieval with no human annotation): the
L2-normalised embeddings are centred, projected on their top `dim` principal components,
each divided by the square root of its eigenvalue, and L2-normalised again. The fit itself is
`imgret.train.fit_whitening`, the one the contrastive models use.

A whitened model is a folder: whitening.safetensors (mean, projection) + model.json (kind
"whitened", the base model's reference, the dimension, and what it was fitted on). It can be
used wherever a model can (`--model`), and its base can be any model: efficientnet-lite0, a
folder made by `imgret train` or by `imgret finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path, read_json, write_json
from .embed import DerivedEmbedder
from .errors import UserError

__all__ = [
    "Whitening", "WhitenedEmbedder", "WhitenResult", "fit_whitening", "whiten_model",
    "load_whitened", "KIND", "WEIGHTS",
]  # fmt: skip

KIND = "whitened"
WEIGHTS = "whitening.safetensors"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float64 rows of norm 1 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
        from .train import fit_whitening as fit_mean_and_matrix

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
        mean, matrix = fit_mean_and_matrix(x, self.dim, eps=self.eps)
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


def fit_whitening(embeddings: np.ndarray, dim: int = 512, *, eps: float = 1e-6) -> Whitening:
    """A `Whitening` fitted on (n_samples, n_features) embeddings; UserError if dim is too big."""
    return Whitening(dim, eps=eps).fit(embeddings)


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
        z = F.normalize(self.base.embed_batch(x).float(), dim=1)
        return F.normalize((z - self.mean) @ self.projection, dim=1)


@dataclass
class WhitenResult:
    model_dir: Path
    dim: int
    input_dim: int  # the base model's embedding size
    fitted_on: int  # embeddings the whitening was fitted on
    explained_variance: float  # share of the variance kept by the `dim` directions
    skipped: list[tuple[str, str]] = field(default_factory=list)


def whiten_model(
    model_ref: str | Path,
    source_spec: str | Path,
    out_dir: str | Path,
    *,
    dim: int = 512,
    limit: int | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
) -> WhitenResult:
    """Fit a whitening of `model_ref`'s embedding on the images of `source_spec`, written to
    `out_dir` as a model folder.

    source_spec : a folder, a built-in source, or ``BENCHMARK:database``
    limit : fit on a fixed-seed (`seed`) sample of at most this many images (None = all)
    """
    from .embed import describe_embedder, embed_source, load_embedder
    from .pipeline import open_training_source

    out = Path(out_dir)
    _check_out(out, model_ref)
    if dim < 1:
        raise UserError(f"dim must be 1 or more, got {dim}")
    source = open_training_source(source_spec)
    if limit is not None and limit < len(source):
        if limit < 2:
            raise UserError(f"limit must be 2 or more, got {limit}")
        pick = np.sort(np.random.default_rng(seed).permutation(len(source))[:limit])
        source = replace(source.subset(pick), name=f"{source.name} (sample of {limit})")
    base = load_embedder(model_ref, device=device)
    if dim > min(len(source) - 1, base.embedding_dim):  # known before embedding anything
        raise UserError(
            f"cannot whiten to {dim} dims: {len(source)} images of a {base.embedding_dim}-d "
            f"embedding give at most {max(min(len(source) - 1, base.embedding_dim), 0)} "
            "(use a smaller dim, or fit on more images)"
        )
    result = embed_source(base, source, batch_size=batch_size, workers=workers, progress=progress)
    whitening = fit_whitening(result.embeddings, dim, eps=eps)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    with atomic_path(out / WEIGHTS) as tmp:
        save_file(whitening.state_dict(), str(tmp))
    write_json(out / "model.json", {
        "format": "imgret-model", "version": 1, "kind": KIND,
        "base": describe_embedder(model_ref, base), "dim": int(dim),
        "input_dim": int(base.embedding_dim), "fitted_on": whitening.n_fitted_,
        "source": str(source_spec), "limit": limit, "seed": int(seed), "eps": float(eps),
        "explained_variance": whitening.explained_variance_ratio_,
    })  # fmt: skip
    return WhitenResult(
        out, int(dim), int(base.embedding_dim), whitening.n_fitted_,
        whitening.explained_variance_ratio_, result.failures,
    )  # fmt: skip


def _check_out(out: Path, model_ref: str | Path) -> None:
    """Refuse to write over another kind of model (or over the base model itself)."""
    doc_path = out / "model.json"
    if not doc_path.is_file():
        return
    try:
        kind = read_json(doc_path).get("kind")
    except (ValueError, AttributeError):
        kind = None
    if kind != KIND or out.resolve() == Path(str(model_ref)).resolve():
        raise UserError(
            f"{out} already holds another model; write the whitened model to another folder"
        )


def load_whitened(path: str | Path, device: str = "cpu") -> WhitenedEmbedder:
    """Rebuild a whitened model (base + whitening) from its folder."""
    from safetensors.torch import load_file

    from .embed import load_embedder

    path = Path(path)
    doc = read_json(path / "model.json")
    if doc.get("kind") != KIND:
        raise UserError(f"{path}: not a whitened imgret model")
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: {WEIGHTS} is missing; make the model again with imgret whiten")
    base_ref = doc["base"]["ref"]
    base = load_embedder(base_ref, device=device)
    arrays = load_file(str(path / WEIGHTS))
    return WhitenedEmbedder(base, arrays["mean"], arrays["projection"], base_ref).to(device)
