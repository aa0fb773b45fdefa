"""The encoder trained further on its own clusters (DeepCluster, Caron et al. 2018).

After contrastive training, the KMeans clusters of the collection's embeddings serve as labels
of a cosine classifier on the encoder's features; the encoder and the classifier are trained
together for a few epochs, with the contrastive loss kept beside the classification loss so
that the views of one image still agree. No label is used. `imgret train` runs it before the
cluster head on large collections (imgret.training.finish).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..core.progress import progress_bar
from ..data.loader import to_float
from ..models.autoencoder import ConvAutoencoder
from .augment import augment, augment_preset
from .config import TrainConfig
from .losses import nt_xent
from .schedule import index_batches, set_lr

__all__ = ["CLUSTER_LR", "CLASSIFIER_TEMPERATURE", "cluster_epochs"]

# Peak learning rate of these epochs (cosine decay to 0), below the 1e-3 of contrastive training:
# the encoder is refined, not retrained.
CLUSTER_LR = 3e-4
CLASSIFIER_TEMPERATURE = 0.1  # softmax temperature of the cosine classifier


def cluster_epochs(
    model: ConvAutoencoder,
    images: torch.Tensor,
    labels: np.ndarray,
    cfg: TrainConfig,
    *,
    epochs: int,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train `model` (in place) for `epochs` passes over `images` (n, C, S, S) uint8, whose
    `labels` (n,) int are cluster ids 0..K-1: NT-Xent of two views of each image plus the
    cross-entropy of a cosine classifier of each view's encoder features (B, embedding_dim)
    to its image's cluster. -> the mean loss of each epoch."""
    n, k = len(images), int(labels.max()) + 1
    aug = augment_preset(cfg, model.channels)
    gen = torch.Generator().manual_seed(cfg.seed * 100_057)
    aug_gen = torch.Generator().manual_seed(cfg.seed * 100_069)
    targets = torch.from_numpy(labels.astype(np.int64))
    init = torch.randn(k, model.config.embedding_dim, generator=gen) * 0.01  # (K, embedding_dim)
    classifier = nn.Parameter(init.to(device))
    optimizer = torch.optim.Adam([*model.parameters(), classifier], lr=CLUSTER_LR)
    per_epoch = math.ceil(n / cfg.batch)
    total, losses = epochs * per_epoch, []
    model.train()
    for epoch in range(epochs):
        t0, summed = time.perf_counter(), 0.0
        batches = index_batches(n, cfg.batch, gen, training=True)
        bar = progress_bar(batches, total=per_epoch, desc=f"cluster epoch {epoch + 1}/{epochs}",
                           unit="batch", enabled=progress, leave=False)  # fmt: skip
        done = 0
        for i, idx in enumerate(bar):
            x, y = to_float(images[idx]), targets[idx].to(device)
            set_lr(optimizer, CLUSTER_LR, "cosine", (epoch * per_epoch + i) / total)
            h1 = model.encode(augment(x, aug, aug_gen).to(device))  # (B, embedding_dim)
            h2 = model.encode(augment(x, aug, aug_gen).to(device))
            w = nn.functional.normalize(classifier, dim=1)  # (K, embedding_dim)
            classify = sum(
                nn.functional.cross_entropy(
                    nn.functional.normalize(h, dim=1) @ w.T / CLASSIFIER_TEMPERATURE, y
                )
                for h in (h1, h2)
            ) / 2  # fmt: skip
            loss = nt_xent(model.project(h1), model.project(h2), cfg.temperature) + classify
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            summed, done = summed + float(loss.detach()), done + 1
            bar.set_postfix(loss=f"{summed / done:.4f}")
        bar.close()
        losses.append(summed / max(done, 1))
        log(f"cluster epoch {epoch + 1}/{epochs}  loss {losses[-1]:.4f}  "
            f"{n / (time.perf_counter() - t0):7.0f} img/s")  # fmt: skip
    model.eval()
    return losses
