"""`imgret evaluate`: retrieval quality of a model on a benchmark or a labelled folder."""

from __future__ import annotations

import argparse
import json
import sys

from .inference import add_inference_options, inference_settings
from .options import (
    BATCH,
    SEED,
    WORKERS,
    add_rerank_options,
    int_in,
    rerank_config,
    writable_folder,
)  # fmt: skip

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure retrieval quality (mAP, precision, recall) on labelled images",
        description="Embed the queries and the database of a benchmark (fashion-mnist, cifar10, "
        "caltech101: the protocols of BENCHMARKS.md) or of a labelled folder (labels = sub-folder "
        "names; every image queries all the others unless --queries-per-class is given), rank "
        "the database for each query by cosine similarity and report mAP@k, mAP@all, P@k and "
        "R@k, overall and per class. MODEL is a folder made by `imgret train`, "
        "efficientnet-lite0 (or -lite1, -lite2; pretrained names joined by + embed side by "
        "side, e.g. efficientnet-lite0+efficientnet-lite1+efficientnet-lite2), or a baseline: "
        "`pixels` (raw pixels) or `pca-N` (raw pixels on "
        "their first N principal components, fitted on the database). A model built on a "
        "pretrained backbone or trained on at least 5,000 images is re-ranked in exact mode "
        "unless --no-rerank is given (as "
        "`imgret search` does); --rerank re-ranks any model: database-side augmentation of the "
        "whole database, then alpha query expansion of each query (in cluster mode, KMeans runs "
        "on the augmented database).",
    )
    p.add_argument("model", help="model folder, efficientnet-lite0, pixels, or pca-N (e.g. pca-64)")
    p.add_argument("benchmark", help="fashion-mnist, cifar10, caltech101, or a labelled folder")
    p.add_argument(
        "--mode",
        choices=("exact", "cluster"),
        default="exact",
        help="exact: rank the whole database; cluster: KMeans on the database, rank only the "
        "query's cluster (default: exact)",
    )
    p.add_argument("--clusters", type=int_in(2, 100_000),
                   help="K of cluster mode (default: the elbow)")  # fmt: skip
    p.add_argument(
        "--queries-per-class",
        type=int_in(1, 10**6),
        help="folders only: the first N images of each class are the queries (default: all "
        "images, each against the others)",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--out", "-o", type=writable_folder,
                   help="also write evaluation.json and evaluation.png here")  # fmt: skip
    p.add_argument("--no-per-class", action="store_true", help="table: overall row only")
    p.add_argument("--batch-size", type=BATCH, default=128, help="images per batch (default: 128)")
    p.add_argument("--workers", type=WORKERS, default=2,
                   help="image-decoding processes (default: 2)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=SEED, default=0, help="KMeans seed (default: 0)")
    add_rerank_options(p)
    add_inference_options(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import format_table, write_evaluation

    ev = evaluate(
        a.model, a.benchmark, mode=a.mode, clusters=a.clusters,
        queries_per_class=a.queries_per_class, batch_size=a.batch_size, workers=a.workers,
        inference=inference_settings(a), seed=a.seed, rerank=rerank_config(a),
        progress=not a.json, log=lambda s: print(s, file=sys.stderr),
    )  # fmt: skip
    if a.json:
        print(json.dumps(ev.to_dict(), indent=2))
    else:
        where = f", K = {ev.settings['clusters']}" if "clusters" in ev.settings else ""
        if "rerank" in ev.settings:
            r = ev.settings["rerank"]
            diffusion = r.get("diffusion_neighbors", 0)
            where += (f", re-ranked (DBA {r['dba_neighbors']}, alpha-QE {r['qe_neighbors']}, "
                      f"alpha {r['alpha']:g}"
                      + (f", diffusion {diffusion}" if diffusion else "")
                      + ("; the default for this model, --no-rerank: off"
                         if r.get("by_default") else "") + ")")  # fmt: skip
        print(f"{ev.benchmark}: {ev.n_queries:,} queries, {ev.n_database:,} database images; "
              f"model {ev.model}, {ev.mode} search{where}")  # fmt: skip
        print(format_table(ev, per_class=not a.no_per_class))
    if a.out:
        files = write_evaluation(ev, a.out)
        print("wrote " + ", ".join(str(f) for f in files.values()), file=sys.stderr)
    return 0
