"""`imgret train`: train a model on a folder of images, without labels."""

from __future__ import annotations

import argparse

from ..training.config import CLUSTER_EPOCHS
from .options import (
    BATCH,
    EPOCHS,
    LEARNING_RATE,
    SEED,
    WORKERS,
    float_in,
    int_in,
    print_skipped,
    writable_folder,
)  # fmt: skip

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a folder of images, without labels",
        description="Train a convolutional encoder without labels: by default with the objective "
        "that measured best in BENCHMARKS.md (see --objective); `--objective reconstruction` "
        "trains the plain autoencoder of the classic design. Writes the model (safetensors + "
        "JSON), the loss history and curves (and a reconstruction grid for autoencoders) to "
        "--out. Re-running the same command resumes an interrupted run.",
    )
    p.add_argument("source", help="folder of images, a built-in source (digits, fashion-mnist), "
                   "or a benchmark's database images (fashion-mnist:database, cifar10:database, "
                   "caltech101:database)",
                   )  # fmt: skip
    p.add_argument("--out", "-o", default="model", type=writable_folder,
                   help="output folder for the model (default: model)")  # fmt: skip
    p.add_argument("--objective", choices=("reconstruction", "denoising", "contrastive"),
                   help="reconstruction: the autoencoder (MSE); denoising: reconstruct from a "
                   "masked copy; contrastive: SimCLR on augmented views, embedding before the "
                   "projection head (default: contrastive, but reconstruction for grayscale "
                   "collections of fewer than 2,560 images: README, choosing the objective)",
                   )  # fmt: skip
    p.add_argument("--epochs", type=EPOCHS,
                   help="maximum epochs (default: the objective's: 20; contrastive 10, up to 30 "
                   "on collections of fewer than 3,000 images: README, choosing the "
                   "objective)")  # fmt: skip
    p.add_argument("--batch-size", type=BATCH,
                   help="images per step (default: 128; contrastive 256)")  # fmt: skip
    p.add_argument("--lr", type=LEARNING_RATE, default=1e-3,
                   help="Adam learning rate (default: 0.001)")  # fmt: skip
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        help="learning rate schedule (default: constant; contrastive: cosine)",
    )
    p.add_argument(
        "--patience",
        type=int_in(1, 100_000),
        help="stop after this many epochs without a better validation loss (default: the "
        "objective's: 5, contrastive 10)",
    )
    p.add_argument(
        "--val-fraction",
        type=float_in(0, 0.9),
        default=0.1,
        help="share of images held out for validation (default: 0.1)",
    )
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument(
        "--augment",
        choices=("auto", "flip", "crop", "crop-color"),
        default="auto",
        help="views for contrastive training (default: auto = crop for grayscale, "
        "crop-color for RGB)",
    )
    p.add_argument(
        "--temperature", type=float_in(0, 100, above=True),
        help="contrastive softmax temperature (default: 0.5)",
    )  # fmt: skip
    p.add_argument(
        "--neighbor-positives", type=float_in(0, 1), metavar="SHARE",
        help="contrastive: share of positives replaced by the nearest neighbour among recent "
        "training images (NNCLR; default: 0)",
    )  # fmt: skip
    p.add_argument(
        "--mask-ratio",
        type=float_in(0, 0.95),
        default=0.5,
        help="denoising: share of 4x4 patches masked (default: 0.5)",
    )
    p.add_argument(
        "--whiten",
        type=int_in(0, 65536),
        metavar="DIM",
        help="PCA-whiten the embedding to DIM dims, fitted on the training images "
        "after training; 0 = none (default: none; contrastive: 128)",
    )
    p.add_argument(
        "--cluster-head",
        type=int_in(0, 10**6),
        metavar="K",
        help="after training, fit a head on K KMeans clusters of the training images as labels; "
        "0 = none (default: none; contrastive on 20,000+ images: one cluster per 200 images)",
    )
    p.add_argument(
        "--cluster-epochs",
        type=int_in(0, 10**4),
        metavar="N",
        help="with a cluster head on a contrastive model: epochs the encoder first trains "
        f"on its own clusters (DeepCluster); 0 = none (default: {CLUSTER_EPOCHS})",
    )
    p.add_argument(
        "--pool",
        choices=("flatten", "avg"),
        help="last feature map -> embedding: flatten + linear, or average + linear "
        "(default: flatten; contrastive: flatten for grayscale, avg for RGB)",
    )
    p.add_argument(
        "--limit",
        type=int_in(1, 10**9),
        metavar="N",
        help="train on a fixed-seed sample of N images of the source",
    )
    p.add_argument(
        "--image-size",
        type=int_in(8, 1024, multiple=4),
        help="input side in pixels, a multiple of 4 (default: 28 or 32 for small "
        "images, 64 otherwise)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 = grayscale, 3 = RGB (default: from the images)",
    )
    p.add_argument("--embedding-dim", type=int_in(2, 65536), default=512,
                   help="embedding size (default: 512)")  # fmt: skip
    p.add_argument(
        "--width", type=int_in(1, 1024), default=32,
        help="channels of the first conv stage (default: 32)",
    )  # fmt: skip
    p.add_argument(
        "--decoder",
        choices=("transpose", "upsample"),
        default="transpose",
        help="autoencoders: transposed convolutions or upsampling + convolution "
        "(default: transpose)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=WORKERS, default=2,
                   help="image-decoding processes (default: 2)")  # fmt: skip
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(a: argparse.Namespace) -> int:
    from ..jobs.train import train
    from ..training.config import AUTO, TrainConfig

    objective = a.objective or AUTO
    overrides = {"embedding_dim": a.embedding_dim, "width": a.width}
    if objective != "contrastive":  # auto: dropped if it picks contrastive
        overrides["decoder"] = a.decoder
    for key, value in (("image_size", a.image_size), ("channels", a.channels),
                       ("whiten_dim", a.whiten), ("pool", a.pool),
                       ("cluster_head", a.cluster_head)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    changes = {
        "lr": a.lr, "val_fraction": a.val_fraction, "flip": not a.no_flip,
        "seed": a.seed, "workers": a.workers, "augment": a.augment, "mask_ratio": a.mask_ratio,
    }  # fmt: skip
    for key, value in (("epochs", a.epochs), ("batch_size", a.batch_size), ("patience", a.patience),
                       ("schedule", a.schedule), ("temperature", a.temperature),
                       ("neighbor_positives", a.neighbor_positives),
                       ("cluster_epochs", a.cluster_epochs)):  # fmt: skip
        if value is not None:
            changes[key] = value
    tc = TrainConfig(objective=objective, **changes)
    out = train(
        a.source, a.out, train_config=tc, overrides=overrides, device=a.device, limit=a.limit
    )
    print(f"best epoch {out.best_epoch} of {out.epochs_run}, validation loss "
          f"{out.best_val_loss:.5f}, {out.seconds:.1f} s")  # fmt: skip
    print_skipped(out.skipped)
    for name, path in out.files.items():
        print(f"  {name:16s} {path}")
    return 0
