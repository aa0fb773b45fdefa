"""`imgret finetune`: sharpen a model with a few labels (triplet loss on a projection head)."""

from __future__ import annotations

import argparse

from .options import LEARNING_RATE, SEED, float_in, int_in, writable_folder

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="sharpen a model with a few labels (triplet loss)",
        description="Train a projection head on top of a frozen model (an autoencoder folder "
        "or efficientnet-lite0) with triplet loss. Labels are the sub-folder names of FOLDER, or "
        "the rows of --labels (a CSV of path,label); unlabelled images are not used. Five "
        "labelled images per class are enough to start. Use the output folder as a model: "
        "`imgret embed OUT FOLDER`.",
    )
    p.add_argument(
        "model", help="base model: a folder made by `imgret train`, or efficientnet-lite0"
    )
    p.add_argument("folder", help="folder of images (labels = sub-folder names unless --labels), "
                   "or a benchmark's database images (e.g. cifar10:database)")  # fmt: skip
    p.add_argument("--labels", metavar="CSV", help="CSV of path,label rows")
    p.add_argument(
        "--pseudo-labels", type=int_in(2, 100_000), metavar="K",
        help="no labels: use KMeans clusters (K of them, e.g. 100) of every image of FOLDER as "
        "labels, a label-free adaptation of the model to the collection",
    )  # fmt: skip
    p.add_argument("--out", "-o", default="model-finetuned", type=writable_folder,
                   help="output folder")
    p.add_argument("--margin", type=float_in(0, 10, above=True), default=0.2,
                   help="triplet margin (default: 0.2)")  # fmt: skip
    p.add_argument(
        "--mining",
        choices=("batch-hard", "semi-hard"),
        default="semi-hard",
        help="how triplets are picked in a batch (default: semi-hard)",
    )
    p.add_argument("--steps", type=int_in(1, 10**7), default=600,
                   help="optimisation steps (default: 600)")  # fmt: skip
    p.add_argument(
        "--lr", type=LEARNING_RATE,
        help="Adam learning rate (default: 0.001 when the classes have 20+ labelled images "
        "each, else 0.0001)",
    )  # fmt: skip
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(a: argparse.Namespace) -> int:
    from ..training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(margin=a.margin, mining=a.mining, steps=a.steps, lr=a.lr, seed=a.seed)
    out = finetune(
        a.model, a.folder, a.out, labels_csv=a.labels, pseudo_clusters=a.pseudo_labels, config=cfg
    )
    sizes = sorted(out.classes.values())
    what = "pseudo-labelled" if a.pseudo_labels else "labelled"
    print(
        f"fine-tuned on {out.n_labelled} {what} images in {len(out.classes)} classes "
        f"({sizes[0]}-{sizes[-1]} per class); final loss {sum(out.losses[-20:]) / 20:.4f}"
    )
    if out.skipped:
        print(f"skipped {len(out.skipped)} unreadable file(s)")
    print(f"model: {out.model_dir}  (use it like any model: imgret embed {out.model_dir} FOLDER)")
    return 0
