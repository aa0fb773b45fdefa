"""`imgret search`: find the images of a collection most like query images."""

from __future__ import annotations

import argparse
import json
import sys

from .inference import add_inference_options, inference_settings
from .options import NPROBE, K, add_rerank_options, rerank_config, writable_folder

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="find the images of a collection most like query images",
        description="Rank the collection for each query image by cosine similarity: with the "
        "collection's FAISS index (--mode index), over the whole collection (--mode exact) or "
        "only inside the query's cluster (--mode cluster). A folder query searches with every "
        "image in it, in batches. Re-ranking (of each query's top 100 candidates, without "
        "labels; index and exact modes) is on for a collection whose model is built on a "
        "pretrained backbone or trained on at least 5,000 images, and off otherwise; "
        "--rerank and --no-rerank choose.",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument(
        "queries",
        nargs="+",
        help="query image file(s) or folder(s); with "
        "--in-collection, keys, paths or ids of images in the collection",
    )
    p.add_argument("-k", type=K, default=10, help="results per query (default: 10)")
    p.add_argument(
        "--mode",
        choices=("index", "exact", "cluster"),
        default="index",
        help="index: the collection's FAISS index (exact when small); exact: whole "
        "collection; cluster: inside the query's cluster (default: index)",
    )
    p.add_argument(
        "--nprobe",
        type=NPROBE,
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
        type=writable_folder,
        help="also write results.json and a PNG grid per query into FOLDER",
    )
    p.add_argument("--model", help="model to embed the queries (default: the collection's)")
    add_rerank_options(p)
    add_inference_options(p)
    p.set_defaults(func=_cmd_search)


def _cmd_search(a: argparse.Namespace) -> int:
    from ..jobs.search import search, write_search_outputs

    results = search(
        a.collection,
        a.queries,
        k=a.k,
        mode=a.mode,
        model=a.model,
        nprobe=a.nprobe,
        in_collection=a.in_collection,
        rerank=rerank_config(a),
        inference=inference_settings(a),
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
