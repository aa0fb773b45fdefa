"""The Embedder contract: what every model kind offers to the stages that embed images."""

from __future__ import annotations

from typing import Any, Protocol

import torch

__all__ = ["Embedder", "DerivedEmbedder", "device_of", "SEPARATOR"]

SEPARATOR = "+"  # between the pretrained names of models side by side (imgret.models.side_by_side)


class Embedder(Protocol):
    """What embedding needs of a model (the autoencoder, a pretrained backbone, a derived model).

    `name` says which kind it is; a collection records it to refuse a different model later.
    """

    name: str

    @property
    def image_size(self) -> int:
        """Square input side in pixels the images are resized to."""
        ...

    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        ...

    @property
    def embedding_dim(self) -> int: ...

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, image_size, image_size) float32 in [0, 1] -> (B, embedding_dim)."""
        ...


class DerivedEmbedder(torch.nn.Module):
    """A frozen base embedder followed by a learned step (a fine-tuned head, a whitening).

    Images go in as the base takes them, so the input side and channels are the base's.
    """

    base: Any
    base_ref: str

    @property
    def image_size(self) -> int:
        return int(self.base.image_size)

    @property
    def channels(self) -> int:
        return int(self.base.channels)


def device_of(embedder: Any) -> torch.device:
    """The device an embedder's weights are on (CPU for weightless ones)."""
    params = list(embedder.parameters()) if isinstance(embedder, torch.nn.Module) else []
    return params[0].device if params else torch.device("cpu")
