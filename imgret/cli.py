"""The command line: parse arguments, call one library function, print the result.

Nothing heavy is imported here at module level, so `imgret --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rerank import RerankConfig

__all__ = ["main", "build_parser", "add_rerank_options", "rerank_config"]

# Modules that add further commands: each has `add_commands(sub)` and imports nothing heavy
# at module level (so that `imgret --help` stays instant).
COMMAND_MODULES: tuple[str, ...] = (
    "imgret.cli_finetune",
    "imgret.cli_web",
    "imgret.cli_evaluate",
    "imgret.cli_collection",
    "imgret.cli_whiten",
)


def _add_train(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--out", "-o", default="model", help="output folder for the model (default: model)"
    )
    p.add_argument("--objective", choices=("reconstruction", "denoising", "contrastive"),
                   help="reconstruction: the autoencoder (MSE); denoising: reconstruct from a "
                   "masked copy; contrastive: SimCLR on augmented views, embedding before the "
                   "projection head (default: the best label-free setting measured)",
                   )  # fmt: skip
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 20, or the objective's)")
    p.add_argument("--batch-size", type=int, help="images per step (default: 128; contrastive 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        help="learning rate schedule (default: constant; contrastive: cosine)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=5,
        help="stop after this many epochs without a better validation loss (default: 5)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
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
        "--temperature", type=float, help="contrastive softmax temperature (default: 0.5)"
    )
    p.add_argument(
        "--mask-ratio",
        type=float,
        default=0.5,
        help="denoising: share of 4x4 patches masked (default: 0.5)",
    )
    p.add_argument(
        "--whiten",
        type=int,
        metavar="DIM",
        help="PCA-whiten the embedding to DIM dims, fitted on the training images "
        "after training; 0 = none (default: none; contrastive: 128)",
    )
    p.add_argument(
        "--pool",
        choices=("flatten", "avg"),
        help="last feature map -> embedding: flatten + linear, or average + linear "
        "(default: flatten; contrastive: flatten for grayscale, avg for RGB)",
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="train on a fixed-seed sample of N images of the source",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="input side in pixels, a multiple of 4 (default: 28 or 32 for small "
        "images, 64 otherwise)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 = grayscale, 3 = RGB (default: from the images)",
    )
    p.add_argument("--embedding-dim", type=int, default=512, help="embedding size (default: 512)")
    p.add_argument(
        "--width", type=int, default=32, help="channels of the first conv stage (default: 32)"
    )
    p.add_argument(
        "--decoder",
        choices=("transpose", "upsample"),
        default="transpose",
        help="autoencoders: transposed convolutions or upsampling + convolution "
        "(default: transpose)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: 2)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from .config import DEFAULT_OBJECTIVE, objective_defaults
    from .pipeline import train

    tc = objective_defaults(a.objective or DEFAULT_OBJECTIVE)
    overrides = {"embedding_dim": a.embedding_dim, "width": a.width}
    if tc.objective != "contrastive":
        overrides["decoder"] = a.decoder
    for key, value in (("image_size", a.image_size), ("channels", a.channels),
                       ("whiten_dim", a.whiten), ("pool", a.pool)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    changes = {
        "lr": a.lr, "patience": a.patience, "val_fraction": a.val_fraction, "flip": not a.no_flip,
        "seed": a.seed, "workers": a.workers, "augment": a.augment, "mask_ratio": a.mask_ratio,
    }  # fmt: skip
    for key, value in (("epochs", a.epochs), ("batch_size", a.batch_size),
                       ("schedule", a.schedule), ("temperature", a.temperature)):  # fmt: skip
        if value is not None:
            changes[key] = value
    tc = replace(tc, **changes)
    out = train(
        a.source, a.out, train_config=tc, overrides=overrides, device=a.device, limit=a.limit
    )
    print(f"best epoch {out.best_epoch} of {out.epochs_run}, validation loss "
          f"{out.best_val_loss:.5f}, {out.seconds:.1f} s")  # fmt: skip
    _print_skipped(out.skipped)
    for name, path in out.files.items():
        print(f"  {name:16s} {path}")
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed every image of a folder into a collection",
        description="Encode every image with a model into an (n_images, dim) matrix stored with "
        "the image paths and labels in a collection folder. Broken images are skipped and listed.",
    )
    p.add_argument("model", help="model folder made by `imgret train`, or efficientnet-lite0")
    p.add_argument("source", help="folder of images, or a built-in source")
    p.add_argument(
        "--out", "-o", default="collection", help="collection folder (default: collection)"
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(a: argparse.Namespace) -> int:
    from .pipeline import embed

    out = embed(
        a.model, a.source, a.out, batch_size=a.batch_size, workers=a.workers, device=a.device
    )
    rate = out.count / out.seconds if out.seconds else 0.0
    print(f"embedded {out.count:,} images ({out.dim}-d) in {out.seconds:.1f} s "
          f"({rate:.0f} images/s) -> {out.collection_dir}")  # fmt: skip
    _print_skipped(out.skipped)
    return 0


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="group a collection with KMeans (K from the elbow method)",
        description="Pick K with the elbow of the KMeans inertia curve (silhouette alongside) "
        "unless --k is given, cluster, and store each image's cluster in the collection. Writes "
        "elbow.png and clusters.png into the collection folder.",
    )
    p.add_argument("collection", help="collection folder made by `imgret embed`")
    p.add_argument("--k", type=int, help="number of clusters (default: the elbow)")
    p.add_argument("--k-min", type=int, default=2, help="smallest K tried (default: 2)")
    p.add_argument("--k-max", type=int, default=20, help="largest K tried (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_cluster)


def _cmd_cluster(a: argparse.Namespace) -> int:
    from .pipeline import cluster

    out = cluster(a.collection, k=a.k, k_min=a.k_min, k_max=a.k_max, seed=a.seed)
    how = "elbow" if out.elbow_k is not None else "given"
    print(f"K = {out.k} ({how}); cluster sizes: {out.sizes}")
    for name, path in out.files.items():
        print(f"  {name:16s} {path}")
    return 0


def add_rerank_options(p: argparse.ArgumentParser) -> None:
    """--rerank and its settings (label-free re-ranking, imgret.rerank)."""
    g = p.add_argument_group("re-ranking (label-free: DBA + alpha query expansion)")
    g.add_argument(
        "--rerank",
        action="store_true",
        help="re-rank: each database image becomes the weighted mean of its --dba nearest "
        "neighbours, each query the weighted mean of itself and its --qe nearest (augmented) "
        "images (default: off; any of the options below switches it on)",
    )
    g.add_argument("--dba", type=int, metavar="N", help="neighbours per database image (10)")
    g.add_argument("--qe", type=int, metavar="N", help="neighbours per query (10)")
    g.add_argument("--alpha", type=float, metavar="A", help="weight = similarity ** A (3)")


def rerank_config(a: argparse.Namespace) -> RerankConfig | None:
    """The RerankConfig that `add_rerank_options` asked for, or None when it is off."""
    given = {"dba_neighbors": a.dba, "qe_neighbors": a.qe, "alpha": a.alpha}
    if not a.rerank and all(v is None for v in given.values()):
        return None
    from .errors import UserError
    from .rerank import RerankConfig

    if (a.dba is not None and a.dba < 0) or (a.qe is not None and a.qe < 0):
        raise UserError("--dba and --qe must be 0 or more")
    if a.alpha is not None and a.alpha < 0:
        raise UserError("--alpha must be 0 or more")
    return RerankConfig(**{name: v for name, v in given.items() if v is not None})


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="find the images of a collection most like query images",
        description="Rank the collection for each query image by cosine similarity: with the "
        "collection's FAISS index (--mode index), over the whole collection (--mode exact) or "
        "only inside the query's cluster (--mode cluster). A folder query searches with every "
        "image in it, in batches. --rerank re-ranks the top candidates of each query (at least "
        "100) without labels (index and exact modes).",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument(
        "queries",
        nargs="+",
        help="query image file(s) or folder(s); with "
        "--in-collection, keys, paths or ids of images in the collection",
    )
    p.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    p.add_argument(
        "--mode",
        choices=("index", "exact", "cluster"),
        default="index",
        help="index: the collection's FAISS index (exact when small); exact: whole "
        "collection; cluster: inside the query's cluster (default: index)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        help="IVF lists scanned per query; in cluster mode, "
        "the nearest clusters searched (default: the index's; 1 cluster)",
    )
    p.add_argument(
        "--in-collection",
        action="store_true",
        help="queries are images of the collection: use their stored embeddings",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--grid",
        metavar="FOLDER",
        help="also write results.json and a PNG grid per query into FOLDER",
    )
    p.add_argument("--model", help="model to embed the queries (default: the collection's)")
    add_rerank_options(p)
    p.set_defaults(func=_cmd_search)


def _cmd_search(a: argparse.Namespace) -> int:
    from .pipeline import search, write_search_outputs

    results = search(
        a.collection,
        a.queries,
        k=a.k,
        mode=a.mode,
        model=a.model,
        nprobe=a.nprobe,
        in_collection=a.in_collection,
        rerank=rerank_config(a),
    )
    if a.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            where = f" (cluster {r.cluster})" if r.cluster is not None else ""
            print(f"query {r.query}{where}")
            print(f"  {'rank':>4s}  {'score':>7s}  {'label':12s} image")
            for h in r.hits:
                print(f"  {h.rank:4d}  {h.score:7.4f}  {str(h.label or '-'):12s} {h.key}")
    if a.grid:
        files = write_search_outputs(results, a.grid, a.mode)
        print(f"wrote {len(files)} files to {a.grid}", file=sys.stderr)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on scikit-learn's digits",
        description="Write scikit-learn's digits as a folder of PNGs (with two broken files), "
        "train the autoencoder, draw reconstructions, embed, pick K by the elbow, cluster, and "
        "answer example queries in cluster and exact mode. Needs no download.",
    )
    p.add_argument("--out", "-o", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs (default: 15)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    out = run_demo(a.out, epochs=a.epochs, seed=a.seed)
    print()
    for line in out.summary:
        print(line)
    print(f"\ndemo finished in {out.seconds:.0f} s; files:")
    for name, path in out.files.items():
        print(f"  {name:24s} {path}")
    return 0


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):")
        for _, reason in skipped[:20]:
            print(f"  {reason}")
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more (listed in collection.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgret",
        description="Unsupervised content-based image retrieval: find the images in a "
        "collection that look like this one.",
    )
    parser.add_argument("--version", action="version", version="imgret 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_embed, _add_cluster, _add_search):
        add(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"imgret: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgret: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
