"""Settings of label-free training, stored beside every checkpoint.

One place for the defaults: `TrainConfig()` is what `imgret train` trains, and the settings an
objective needs (epochs, batch size, schedule, patience) follow the objective unless given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "TrainConfig", "OBJECTIVES", "DEFAULT_OBJECTIVE", "IMAGES_PER_WHITENED_DIM", "AUTO",
    "objective_model_defaults", "choose_objective",
]  # fmt: skip

OBJECTIVES = ("reconstruction", "denoising", "contrastive")

# The label-free objective that measured best on the benchmarks (bench/results/quality.md);
# `imgret train` without --objective trains it unless `choose_objective` says otherwise.
DEFAULT_OBJECTIVE = "contrastive"
AUTO = "auto"  # TrainConfig.objective: `choose_objective` decides once the images are known

# Per objective: (epochs, batch_size, schedule, patience), as measured (bench/results/quality.md).
_BY_OBJECTIVE: dict[str, tuple[int, int, str, int]] = {
    "contrastive": (10, 256, "cosine", 10),
    "reconstruction": (20, 128, "constant", 5),
    "denoising": (20, 128, "constant", 5),
}


@dataclass(frozen=True)
class TrainConfig:
    objective: str = DEFAULT_OBJECTIVE  # "reconstruction", "denoising", "contrastive" or "auto"
    epochs: int | None = None  # maximum passes over the training images (None: the objective's)
    batch_size: int | None = None  # images per optimisation step (None: the objective's)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    val_fraction: float = 0.1  # share of images held out for the validation loss
    patience: int | None = None  # stop after this many epochs without a better validation loss
    flip: bool = True  # random horizontal flip (p=0.5) of training batches
    seed: int = 0  # one seed for the split, initialisation, shuffling and flips
    augment: str = "auto"  # views of imgret.training.augment.AUGMENT_PRESETS; "auto": by channels
    temperature: float = 0.5  # softmax temperature of the contrastive (NT-Xent) loss
    # contrastive: share of positives replaced by the nearest neighbour of the other view among
    # recent training embeddings (NNCLR, Dwibedi et al. 2021); 0 = plain SimCLR
    neighbor_positives: float = 0.0
    support_size: int = 8192  # recent training embeddings searched for those neighbours
    mask_ratio: float = 0.5  # share of 4x4 patches zeroed in the denoising objective's input
    schedule: str | None = None  # learning rate per step: "constant" or "cosine" (decay to 0)
    workers: int = 2  # data-loader worker processes for image folders (0 = main process)

    def __post_init__(self) -> None:
        if self.objective == AUTO:  # resolved by imgret.jobs.train, which sees the images
            return
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        epochs, batch_size, schedule, patience = _BY_OBJECTIVE[self.objective]
        for name, default in (("epochs", epochs), ("batch_size", batch_size),
                              ("schedule", schedule), ("patience", patience)):  # fmt: skip
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")

    # After __post_init__ these are never None; typed accessors for the training loop.
    @property
    def n_epochs(self) -> int:
        return int(self.epochs or 0)

    @property
    def batch(self) -> int:
        return int(self.batch_size or 1)

    @property
    def wait(self) -> int:
        """Epochs without a better validation loss before training stops (`patience`)."""
        return int(self.patience or 0)


# The PCA-whitening of a contrastive model is fitted on its training images: only when there
# are at least this many per whitened dimension (2,560 for 128). On 1,000-image collections a
# whitening cost up to 0.22 mAP on validation queries (bench/results/small_collections.md).
IMAGES_PER_WHITENED_DIM = 20
WHITEN_DIM = 128  # dimensions a contrastive model is PCA-whitened to


def choose_objective(channels: int, n_images: int) -> str:
    """The objective `imgret train` uses without --objective, by a label-free rule.

    Grayscale collections too small to whiten a contrastive model (fewer than
    IMAGES_PER_WHITENED_DIM x WHITEN_DIM images) train the reconstruction autoencoder: on
    fashion-mnist:val:small it tied the unwhitened contrastive model on mAP (0.498 both) and led
    on P@10 (0.689 against 0.661) and with re-ranking (0.516 against 0.511); the contrastive
    default stays for colour images and for larger collections
    (bench/results/small_collections.md).
    """
    if channels == 1 and n_images < IMAGES_PER_WHITENED_DIM * WHITEN_DIM:
        return "reconstruction"
    return DEFAULT_OBJECTIVE


def objective_model_defaults(
    objective: str, channels: int, embedding_dim: int, n_images: int | None = None
) -> dict[str, Any]:
    """ModelConfig fields that suit an objective, for `n_images` training images (None: many).

    Contrastive models have no decoder, a projection head, and a PCA-whitening to 128 dims
    when there are enough images to fit it (IMAGES_PER_WHITENED_DIM); their feature map is
    flattened for grayscale images (aligned objects such as Fashion-MNIST) and averaged for
    RGB photos (bench/results/quality.md).
    """
    if objective != "contrastive":
        return {}
    whiten = min(WHITEN_DIM, embedding_dim)
    if n_images is not None and n_images < IMAGES_PER_WHITENED_DIM * whiten:
        whiten = 0
    return {
        "decoder": "none",
        "projection_dim": 128,
        "pool": "flatten" if channels == 1 else "avg",
        "whiten_dim": whiten,
    }
