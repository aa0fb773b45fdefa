"""Settings of the autoencoder and of its training, stored beside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "ModelConfig", "TrainConfig", "OBJECTIVES", "DEFAULT_OBJECTIVE", "objective_defaults",
    "objective_model_defaults", "from_dict", "to_dict",
]  # fmt: skip


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
    objective: str = "reconstruction"  # or "denoising" (masked input) or "contrastive" (SimCLR)
    augment: str = "auto"  # views of imgret.augment.AUGMENT_PRESETS; "auto": by channels
    temperature: float = 0.2  # softmax temperature of the contrastive (NT-Xent) loss
    mask_ratio: float = 0.5  # share of 4x4 patches zeroed in the denoising objective's input
    schedule: str = "constant"  # learning rate per step: "constant" or "cosine" (decay to 0)
    workers: int = 2  # data-loader worker processes for image folders (0 = main process)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


OBJECTIVES = ("reconstruction", "denoising", "contrastive")


# What `imgret train` uses when no --objective is given: the label-free setting that measured
# best on the benchmarks (bench/results/quality.md).
DEFAULT_OBJECTIVE = "contrastive"


def objective_defaults(objective: str) -> TrainConfig:
    """The TrainConfig that suits a training objective (what `imgret train` starts from)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "contrastive":
        return TrainConfig(
            objective=objective, epochs=10, batch_size=256, schedule="cosine", patience=10,
            temperature=0.5,
        )  # fmt: skip
    return TrainConfig(objective=objective)


def objective_model_defaults(objective: str, channels: int, embedding_dim: int) -> dict[str, Any]:
    """ModelConfig fields that suit an objective, as measured (bench/results/quality.md).

    Contrastive models have no decoder, a projection head, and a PCA-whitening to 128 dims;
    their feature map is flattened for grayscale images (aligned objects such as Fashion-MNIST)
    and averaged for RGB photos.
    """
    if objective != "contrastive":
        return {}
    return {
        "decoder": "none",
        "projection_dim": 128,
        "pool": "flatten" if channels == 1 else "avg",
        "whiten_dim": min(128, embedding_dim),
    }


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, ignoring keys it does not know."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)
