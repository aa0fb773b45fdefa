"""Helpers the tests share: a tiny untrained model, and ranking a collection in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imgret.models.autoencoder import ConvAutoencoder, save_model
from imgret.models.config import ModelConfig
from imgret.retrieval.searcher import Ranking, Searcher

CLASSES = ("red", "blue", "stripes", "disc")


def pattern_image(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy image of one of four easy-to-tell classes."""
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "red":
        arr = np.stack([np.full_like(x, 0.9), x * 0.2, y * 0.2], -1)
    elif kind == "blue":
        arr = np.stack([x * 0.2, y * 0.2, np.full_like(x, 0.9)], -1)
    elif kind == "stripes":
        v = (np.sin(x * 25) > 0).astype(float)
        arr = np.stack([v, v, v], -1)
    else:  # "disc"
        v = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.1).astype(float)
        arr = np.stack([v * 0.2, v, v * 0.2], -1)
    arr = np.clip(arr + rng.normal(0, 0.05, arr.shape), 0, 1)
    return Image.fromarray((arr * 255).astype(np.uint8))


def make_tiny_model(path: Path, dim: int = 16, seed: int = 0) -> Path:
    """A small untrained autoencoder, its embedding bias zeroed so images embed apart."""
    torch.manual_seed(seed)
    model = ConvAutoencoder(ModelConfig(image_size=16, channels=3, embedding_dim=dim, width=4))
    torch.nn.init.zeros_(model.to_embedding.bias)
    save_model(model, path)
    return path


def rank(vectors: Any, queries: np.ndarray, k: int = 10, mode: str = "exact", **kw: Any) -> Ranking:
    """A fresh Searcher's ranking of `vectors` (a Collection or ArrayVectors) for `queries`."""
    return Searcher(vectors).search(queries, k, mode=mode, **kw)
