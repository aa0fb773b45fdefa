"""What follows the epochs of `imgret train`, as the model's config asks: the PCA-whitening, the
encoder trained on its own clusters (imgret.training.deepcluster), the cluster head."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.loader import to_float
from ..models.autoencoder import ConvAutoencoder
from ..models.whitening import whitening_matrix
from .config import TrainConfig
from .deepcluster import cluster_epochs
from .finetune import fit_cluster_head, pseudo_labels
from .schedule import index_batches

__all__ = ["finish_model"]


def finish_model(
    model: ConvAutoencoder,
    images: torch.Tensor,
    cfg: TrainConfig,
    *,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """What follows the epochs of a trained model, in place, as its config asks: fit the
    PCA-whitening on `images` (n, C, S, S) uint8; with a cluster head of K clusters, train the
    encoder on its own K clusters for `cfg.epochs_on_clusters(K)` epochs (then whiten again),
    and fit the head on the K clusters of the final embeddings."""
    encoded = _fit_whitening(model, images, device)  # (n, config.embedding_dim)
    k = model.config.cluster_head
    epochs = cfg.epochs_on_clusters(k)
    if epochs:
        log(f"training the encoder on its {k} clusters of {len(images):,} images for "
            f"{epochs} epochs")  # fmt: skip
        clusters = pseudo_labels(_whitened(model, encoded, device), k, seed=cfg.seed)
        labels = np.unique(clusters, return_inverse=True)[1]  # (n,) ids 0..k-1
        cluster_epochs(model, images, labels, cfg, epochs=epochs, device=device,
                       progress=progress, log=log)  # fmt: skip
        encoded = _fit_whitening(model, images, device)
    if k:
        z = _whitened(model, encoded, device)
        log(f"fitting the cluster head on {k} clusters of {len(z):,} images")
        head, losses = fit_cluster_head(z, k, seed=cfg.seed)
        model.cluster_head.load_state_dict(head.state_dict())
        log(f"cluster head: final loss {float(np.mean(losses[-20:])):.4f}")
    model.eval()


def _fit_whitening(model: ConvAutoencoder, images: torch.Tensor, device: str) -> np.ndarray:
    """Encode every image and fit `model`'s PCA-whitening on them when it has one
    -> (n, config.embedding_dim) encoder outputs."""
    encoded = _encode_all(model, images, device)
    if model.config.whiten_dim:
        mean, matrix = whitening_matrix(encoded, model.config.whiten_dim)
        model.get_buffer("whiten_mean").copy_(torch.from_numpy(mean))
        model.get_buffer("whiten_matrix").copy_(torch.from_numpy(matrix))
    return encoded


@torch.inference_mode()
def _whitened(model: ConvAutoencoder, encoded: np.ndarray, device: str) -> np.ndarray:
    """(n, embedding_dim) encoder outputs -> (n, whitened dim) float32, as the model embeds."""
    return model.whiten(torch.from_numpy(encoded).float().to(device)).cpu().numpy()


@torch.inference_mode()
def _encode_all(model: ConvAutoencoder, images: torch.Tensor, device: str) -> np.ndarray:
    """(n, C, S, S) uint8 -> (n, config.embedding_dim) float64 embeddings before whitening."""
    model.eval()
    out = [model.encode(to_float(images[rows], device)).double().cpu().numpy()
           for rows in index_batches(len(images), 512)]  # fmt: skip
    return np.concatenate(out)
