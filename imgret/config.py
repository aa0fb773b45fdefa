"""Settings of the autoencoder and of its training, stored beside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ModelConfig", "TrainConfig", "from_dict"]


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "conv-autoencoder"  # the only architecture of this config class
    image_size: int = 64  # square input side in pixels; a multiple of 4 (28 and 64 both work)
    channels: int = 3  # 3 for RGB, 1 for grayscale
    embedding_dim: int = 512  # size of the dense embedding between encoder and decoder
    width: int = 32  # channels of the first encoder stage; doubled at each further stage (max 256)
    decoder: str = "transpose"  # "transpose" (transposed convolutions) or "upsample" (+ conv)

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.decoder not in ("transpose", "upsample"):
            raise ValueError(f"decoder must be 'transpose' or 'upsample', got {self.decoder!r}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # maximum number of passes over the training images
    batch_size: int = 128  # images per optimisation step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    val_fraction: float = 0.1  # share of images held out for the validation loss
    patience: int = 5  # stop after this many epochs without a better validation loss
    flip: bool = True  # random horizontal flip (p=0.5) of training batches
    seed: int = 0  # one seed for the split, initialisation, shuffling and flips
    workers: int = 2  # data-loader worker processes for image folders (0 = main process)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, ignoring keys it does not know."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)
