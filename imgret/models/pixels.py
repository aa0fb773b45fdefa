"""The raw-pixels baseline: an image resized to `image_size` is its own embedding."""

from __future__ import annotations

import torch

__all__ = ["PixelEmbedder"]


class PixelEmbedder:
    """(B, C, S, S) in [0, 1] -> (B, C * S * S): the resized image as a vector."""

    name = "pixels"

    def __init__(self, image_size: int, channels: int) -> None:
        self.image_size = image_size
        self.channels = channels

    @property
    def embedding_dim(self) -> int:
        return self.channels * self.image_size**2

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1)
