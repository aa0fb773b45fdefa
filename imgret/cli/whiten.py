"""`imgret whiten`: PCA-whiten any model's embedding, learned on a collection without labels."""

from __future__ import annotations

import argparse

from .options import BATCH, SEED, WORKERS, int_in, writable_folder

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "whiten",
        help="PCA-whiten a model's embedding, learned on images without labels",
        description="Embed the images of SOURCE with MODEL, learn a PCA-whitening of the "
        "embedding (centre, keep the top --dim principal directions, scale each to unit "
        "variance, L2-normalise) and write it with a reference to MODEL as a new model "
        "folder. Use the output folder as a model: `imgret index FOLDER --model OUT`. It "
        "compresses the embedding; whether it helps retrieval depends on the model (see "
        "README.md).",
    )
    p.add_argument(
        "model", help="base model: a model folder, or efficientnet-lite0[@SIZE][:POOLING]"
    )
    p.add_argument("source", help="folder of images, a built-in source, or a benchmark's "
                   "database images (e.g. caltech101:database)")  # fmt: skip
    p.add_argument("--out", "-o", default="model-whitened", type=writable_folder,
                   help="output folder")
    p.add_argument("--dim", type=int_in(1, 65536), default=512,
                   help="dimensions kept (default: 512)")  # fmt: skip
    p.add_argument(
        "--limit",
        type=int_in(1, 10**9),
        default=20_000,
        help="fit on a fixed-seed sample of at most N images (default: 20000)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the sample (default: 0)")
    p.add_argument("--batch-size", type=BATCH, default=64, help="images per batch (default: 64)")
    p.add_argument("--workers", type=WORKERS, default=2,
                   help="image-decoding processes (default: 2)")  # fmt: skip
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=_cmd_whiten)


def _cmd_whiten(a: argparse.Namespace) -> int:
    from ..training.trainer import pick_device
    from ..training.whiten import whiten_model

    out = whiten_model(
        a.model, a.source, a.out, dim=a.dim, limit=a.limit, seed=a.seed,
        batch_size=a.batch_size, workers=a.workers, device=pick_device(a.device),
    )  # fmt: skip
    print(
        f"whitened {out.input_dim} -> {out.dim} dims, fitted on {out.fitted_on} images; "
        f"the kept directions hold {out.explained_variance:.1%} of the variance"
    )
    if out.skipped:
        print(f"skipped {len(out.skipped)} unreadable file(s)")
    print(f"model: {out.model_dir}  (use it like any model: imgret embed {out.model_dir} FOLDER)")
    return 0
