"""Settings of label-free training, stored beside every checkpoint.

One place for the defaults: `TrainConfig()` is what `imgret train` trains, and the settings an
objective needs (epochs, batch size, schedule, patience) follow the objective unless given;
the epochs also follow the collection's size (default_epochs, resolved by imgret.jobs.train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TrainConfig", "OBJECTIVES", "DEFAULT_OBJECTIVE", "IMAGES_PER_WHITENED_DIM", "AUTO",
    "objective_model_defaults", "choose_objective", "default_epochs", "cluster_head_clusters",
    "CLUSTER_EPOCHS",
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


# Epochs the encoder of a model with a cluster head trains on its own clusters before the head
# is fitted. fashion-mnist:val, mAP@1000 plain / re-ranked: 0.784 / 0.793 with the head alone,
# 0.788 / 0.796 after 3 epochs, 0.791 / 0.798 after 6 (`python scripts/validation.py
# cluster-epochs`, bench/results/validation.md).
CLUSTER_EPOCHS = 6


@dataclass(frozen=True)
class TrainConfig:
    objective: str = DEFAULT_OBJECTIVE  # "reconstruction", "denoising", "contrastive" or "auto"
    # maximum passes over the training images (None: default_epochs, for the collection's size)
    epochs: int | None = None
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
    # With a cluster head (ModelConfig.cluster_head) on a contrastive model: epochs the encoder
    # trains on its own KMeans clusters first (imgret.training.deepcluster); 0 = none
    cluster_epochs: int = CLUSTER_EPOCHS

    def __post_init__(self) -> None:
        if self.objective == AUTO:  # resolved by imgret.jobs.train, which sees the images
            return
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        # epochs are left to default_epochs, which needs the collection's size
        _, batch_size, schedule, patience = _BY_OBJECTIVE[self.objective]
        for name, default in (("batch_size", batch_size), ("schedule", schedule),
                              ("patience", patience)):  # fmt: skip
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.cluster_epochs < 0:
            raise ValueError(f"cluster_epochs must be 0 or more, got {self.cluster_epochs}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")

    def epochs_on_clusters(self, cluster_head: int) -> int:
        """The epochs on its own clusters of a model with a cluster head of `cluster_head`
        clusters (0: none): they keep the contrastive loss beside the classifier's, so only a
        contrastive model has them."""
        return self.cluster_epochs if cluster_head and self.objective == "contrastive" else 0

    # Typed accessors for the training loop (after __post_init__ only `epochs` may be None).
    @property
    def n_epochs(self) -> int:
        """`epochs`, or when not resolved (default_epochs) the objective's for many images."""
        return int(self.epochs if self.epochs is not None else _BY_OBJECTIVE[self.objective][0])

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


# A contrastive model makes few steps per epoch on a small collection: without --epochs it trains
# until it has seen CONTRASTIVE_MIN_IMAGES images in all, in at most SMALL_COLLECTION_EPOCHS
# epochs (30 epochs for 1,000 images, 15 for 2,000, the objective's 10 from 3,000 up). On the
# 1,000-image validation sets 30 epochs beat 10: cifar10:val:small mAP@1000 0.175 -> 0.188,
# caltech101:val:small mAP@all 0.072 -> 0.078; on 60,000 images (fashion-mnist:val) 30 epochs
# gained only 0.739 -> 0.744 for three times the time (bench/results/small_collections.md,
# bench/results/validation.md).
CONTRASTIVE_MIN_IMAGES = 30_000
SMALL_COLLECTION_EPOCHS = 30


def default_epochs(objective: str, n_images: int) -> int:
    """The epochs `imgret train` runs without --epochs: the objective's (20; contrastive 10),
    raised for contrastive training on collections under 3,000 images (CONTRASTIVE_MIN_IMAGES)."""
    epochs = _BY_OBJECTIVE[objective][0]
    if objective == "contrastive" and n_images > 0:
        wanted = math.ceil(CONTRASTIVE_MIN_IMAGES / n_images)
        epochs = max(epochs, min(SMALL_COLLECTION_EPOCHS, wanted))
    return epochs


# A contrastive model ends with a cluster head (imgret.training.finetune.fit_cluster_head) on
# collections of CLUSTER_HEAD_MIN_IMAGES images or more, fitted on one KMeans cluster per
# IMAGES_PER_CLUSTER images. fashion-mnist:val (60,000 images), mAP@1000 re-ranked: 0.778
# without, 0.773 / 0.779 / 0.784 / 0.792 / 0.793 / 0.787 with K 10 / 30 / 100 / 300 / 500 / 1000
# (bench/results/validation.md).
CLUSTER_HEAD_MIN_IMAGES = 20_000
IMAGES_PER_CLUSTER = 200


def cluster_head_clusters(n_images: int) -> int:
    """Clusters of the cluster head a contrastive model trained on `n_images` images ends with
    (0 = none: fewer than CLUSTER_HEAD_MIN_IMAGES)."""
    if n_images < CLUSTER_HEAD_MIN_IMAGES:
        return 0
    return round(n_images / IMAGES_PER_CLUSTER)


def objective_model_defaults(
    objective: str, channels: int, embedding_dim: int, n_images: int | None = None
) -> dict[str, Any]:
    """ModelConfig fields that suit an objective, for `n_images` training images (None: many,
    without the cluster head, whose clusters follow the count).

    Contrastive models have no decoder, a projection head, a PCA-whitening to 128 dims
    when there are enough images to fit it (IMAGES_PER_WHITENED_DIM), and a cluster head on
    large collections (cluster_head_clusters); their feature map is flattened for grayscale
    images (aligned objects such as Fashion-MNIST) and averaged for RGB photos
    (bench/results/quality.md).
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
        "cluster_head": 0 if n_images is None else cluster_head_clusters(n_images),
    }
