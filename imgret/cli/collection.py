"""Commands that make and keep a collection: embed, index, add, remove, cluster, duplicates."""

from __future__ import annotations

import argparse
import json
import sys

from .inference import add_inference_options, inference_settings
from .options import (
    BATCH,
    NPROBE,
    SEED,
    WORKERS,
    K,
    float_in,
    int_in,
    print_skipped,
    writable_folder,
)  # fmt: skip

__all__ = ["add_commands"]

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw", "ivfsq", "ivfpq")


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=BATCH, default=64, help="images per batch (default: 64)")
    p.add_argument("--workers", type=WORKERS, default=2,
                   help="image-decoding processes (default: 2)")  # fmt: skip
    p.add_argument("--chunk-size", type=int_in(1, 10**7), default=4096,
                   help="embeddings committed together; an interrupted run loses at most one "
                   "chunk (default: 4096)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_inference_options(p)
    _ray_options(p)


def _ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a Ray cluster (needs imgret[ray]; README: run on a cluster)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS|local",
                   help="embed with Ray actors and build IVF indexes in Ray tasks: `local` (the "
                   "default) starts a private cluster here, HOST:PORT joins a running one")
    g.add_argument("--ray-actors", type=int_in(1, 100_000), metavar="N",
                   help="embedding actors (default: 2)")
    g.add_argument("--ray-threads", type=int_in(1, 1024), metavar="T",
                   help="inference threads and CPUs of each actor (default: 1)")
    g.add_argument("--ray-gpus", type=float_in(0, 1024), metavar="G",
                   help="GPUs of each actor; above 0 the model runs on CUDA (default: 0)")


def _ray_config(a: argparse.Namespace):  # noqa: ANN202 - imported lazily
    given = {"actors": a.ray_actors, "threads": a.ray_threads, "gpus": a.ray_gpus}
    given = {name: v for name, v in given.items() if v is not None}
    if a.ray is None:
        if given:
            from ..core.errors import UserError

            raise UserError("--ray-actors, --ray-threads and --ray-gpus need --ray")
        return None
    from ..scaleout.cluster import RayConfig

    return RayConfig(address=a.ray, **given)


def _job_config(a: argparse.Namespace):  # noqa: ANN202 - imported lazily
    from ..jobs.sync import IndexJobConfig

    inference = inference_settings(a)
    return IndexJobConfig(
        batch_size=a.batch_size, workers=a.workers, chunk_rows=a.chunk_size, device=a.device,
        ray=_ray_config(a), backend=inference.backend, threads=inference.threads,
        quantize=inference.quantize,
    )  # fmt: skip


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_embed(sub)
    _add_cluster(sub)
    p = sub.add_parser(
        "index",
        help="make or update a collection from a folder (only new or changed files are embedded)",
        description="Bring a collection in step with a folder: new and changed images are "
        "embedded, items of deleted files are dropped, unchanged files cost nothing, and the "
        "FAISS index is updated. Interrupted (even with kill -9), the same command resumes.",
    )
    p.add_argument("folder", help="folder of images, or a built-in source: digits, fashion-mnist")
    p.add_argument("--out", "-o", default="collection", type=writable_folder,
                   help="collection folder (default: collection)")  # fmt: skip
    p.add_argument(
        "--model",
        help="model folder made by `imgret train`, or efficientnet-lite0 (-lite1, -lite2; "
        "names joined by + run side by side) "
        "(needed to make a new collection; else it must be the collection's)",
    )
    p.add_argument(
        "--index-kind",
        choices=INDEX_KINDS,
        help="FAISS index: auto (by size: flat, then ivf, then ivfsq), flat (exact), ivf, "
        "hnsw, ivfsq or ivfpq; stored in the collection (default: as stored, auto)",
    )
    p.add_argument(
        "--nprobe",
        type=NPROBE,
        help="IVF lists scanned per query, stored in the collection (default: by size)",
    )
    p.add_argument("--rebuild-index", action="store_true", help="build the index from scratch")
    _job_options(p)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser(
        "add",
        help="embed given image files or folders into a collection",
        description="Embed the given images (and the images in given folders) into an existing "
        "collection with its model; unchanged ones already in it cost nothing.",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument("paths", nargs="+", help="image files or folders")
    _job_options(p)
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser(
        "remove",
        help="drop images from a collection",
        description="Drop the given files (or every file under given folders, or given keys) "
        "from a collection and its index. The image files themselves are not touched.",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument("paths", nargs="+", help="image files, folders or keys")
    p.set_defaults(func=_cmd_remove)

    p = sub.add_parser(
        "duplicates",
        help="list pairs of near-duplicate images in a collection",
        description="List pairs of images whose cosine similarity is at least --threshold, "
        "most similar first, found through the collection's index (each image's -k nearest "
        "neighbours are checked).",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument("--threshold", type=float_in(-1, 1), default=0.95,
                   help="least cosine similarity of a pair (default: 0.95)")  # fmt: skip
    p.add_argument("-k", type=K, default=10, help="neighbours checked per image (default: 10)")
    p.add_argument("--mode", choices=("index", "exact"), default="index",
                   help="search with the index or exactly (default: index)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the pairs as JSON")
    p.set_defaults(func=_cmd_duplicates)


def _print_report(report, verb: str) -> None:  # noqa: ANN001
    print(
        f"{verb} {report.collection_dir}: {report.added:,} added, {report.updated:,} changed, "
        f"{report.removed:,} removed, {report.unchanged:,} unchanged; index {report.index}; "
        f"{report.count:,} images, {report.seconds:.1f} s"
        + ("; chunks compacted" if report.compacted else "")
    )
    listed = f"`imgret failures {report.collection_dir}` lists them all"
    print_skipped(report.failed, "unreadable file(s)", listed)
    print_skipped(report.retry, "file(s) that could not be read now (tried "
                  "again next run)")  # fmt: skip
    if report.warnings:
        print(f"{len(report.warnings)} warning(s) while decoding (the images were used), e.g. "
              f"{report.warnings[0][1]}")  # fmt: skip
    if report.known_failures:
        print(f"({report.known_failures} unreadable file(s) unchanged since the last run, "
              f"skipped; {listed})")  # fmt: skip


def _cmd_index(a: argparse.Namespace) -> int:
    from ..jobs.index import index_folder

    report = index_folder(
        a.folder, a.out, model=a.model, index_kind=a.index_kind, nprobe=a.nprobe,
        config=_job_config(a), rebuild_index=a.rebuild_index,
        log=lambda msg: print(msg, file=sys.stderr),
    )  # fmt: skip
    _print_report(report, "indexed")
    return 0


def _cmd_add(a: argparse.Namespace) -> int:
    from ..jobs.index import add_paths

    report = add_paths(
        a.collection, a.paths, config=_job_config(a), log=lambda msg: print(msg, file=sys.stderr)
    )
    _print_report(report, "updated")
    return 0


def _cmd_remove(a: argparse.Namespace) -> int:
    from ..jobs.index import remove_paths

    report = remove_paths(a.collection, a.paths, log=lambda msg: print(msg, file=sys.stderr))
    _print_report(report, "updated")
    return 0


def _cmd_duplicates(a: argparse.Namespace) -> int:
    from ..jobs.search import duplicates

    pairs = duplicates(a.collection, a.threshold, k=a.k, mode=a.mode)
    if a.json:
        print(json.dumps([vars(p) for p in pairs], indent=2))
        return 0
    print(f"{len(pairs)} pair(s) with similarity >= {a.threshold}")
    for p in pairs:
        print(f"  {p.score:7.4f}  {p.key_a}  {p.key_b}")
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
        "--out", "-o", default="collection", type=writable_folder,
        help="collection folder (default: collection)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=BATCH, default=128, help="images per batch (default: 128)")
    p.add_argument("--workers", type=WORKERS, default=2,
                   help="image-decoding processes (default: 2)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_inference_options(p, quantize=False)
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(a: argparse.Namespace) -> int:
    from ..jobs.index import embed

    out = embed(
        a.model, a.source, a.out, batch_size=a.batch_size, workers=a.workers, device=a.device,
        backend=a.backend, threads=a.threads,
    )  # fmt: skip
    rate = out.count / out.seconds if out.seconds else 0.0
    print(f"embedded {out.count:,} images ({out.dim}-d) in {out.seconds:.1f} s "
          f"({rate:.0f} images/s) -> {out.collection_dir}")  # fmt: skip
    print_skipped(out.skipped, "unreadable file(s)",
                  f"`imgret failures {out.collection_dir}` lists them all")  # fmt: skip
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
    p.add_argument("--k", type=int_in(2, 100_000), help="number of clusters (default: the elbow)")
    p.add_argument("--k-min", type=int_in(2, 100_000), default=2,
                   help="smallest K tried (default: 2)")  # fmt: skip
    p.add_argument("--k-max", type=int_in(2, 100_000), default=20,
                   help="largest K tried (default: 20)")  # fmt: skip
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_cluster)


def _cmd_cluster(a: argparse.Namespace) -> int:
    from ..jobs.cluster import cluster

    out = cluster(a.collection, k=a.k, k_min=a.k_min, k_max=a.k_max, seed=a.seed)
    how = "elbow" if out.elbow_k is not None else "given"
    print(f"K = {out.k} ({how}); cluster sizes: {out.sizes}")
    for name, path in out.files.items():
        print(f"  {name:16s} {path}")
    return 0
