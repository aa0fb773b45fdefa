"""Settings of the convolutional autoencoder, stored beside its weights in model.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ModelConfig", "from_dict", "to_dict"]


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "conv-autoencoder"  # the only architecture of this config class
    image_size: int = 64  # square input side in pixels; a multiple of 4 (28 and 64 both work)
    channels: int = 3  # 3 for RGB, 1 for grayscale
    embedding_dim: int = 512  # size of the dense embedding between encoder and decoder
    width: int = 32  # channels of the first encoder stage; doubled at each further stage (max 256)
    decoder: str = "transpose"  # "transpose", "upsample" (+ conv), or "none" (encoder only)
    pool: str = "flatten"  # last feature map -> embedding: "flatten" + linear, or "avg" + linear
    projection_dim: int = 0  # output of the projection head of contrastive training (0 = none)
    whiten_dim: int = 0  # PCA-whitening of the embedding to this many dims (0 = none)
    # a residual head after the whitening, fitted after training on this many KMeans clusters
    # of the training images as labels (imgret.training.finetune); 0 = none
    cluster_head: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.decoder not in ("transpose", "upsample", "none"):
            raise ValueError(
                f"decoder must be 'transpose', 'upsample' or 'none', got {self.decoder!r}"
            )
        if self.pool not in ("flatten", "avg"):
            raise ValueError(f"pool must be 'flatten' or 'avg', got {self.pool!r}")
        if not 0 <= self.whiten_dim <= self.embedding_dim:
            raise ValueError(f"whiten_dim must be in 0..embedding_dim, got {self.whiten_dim}")
        if self.cluster_head < 0 or self.cluster_head == 1:
            raise ValueError(f"cluster_head must be 0 or 2 and more, got {self.cluster_head}")


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, ignoring keys it does not know."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)
