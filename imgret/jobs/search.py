"""`imgret search`: rank a collection for query images (files, folders, or its own items)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic import write_json
from ..core.errors import UserError
from ..models import registry
from ..models.backend import InferenceSettings, load_for_inference
from ..retrieval.duplicates import DuplicatePair, find_duplicates
from ..retrieval.queries import search_files, search_folder, search_items
from ..retrieval.rerank import AUTO, RERANK_TRAINED_IMAGES, RerankChoice, chosen_rerank
from ..retrieval.results import QueryResult, resolve_items
from ..retrieval.searcher import Searcher
from ..store.collection import Collection
from ..store.opening import open_collection
from ..viz.plots import plot_results

__all__ = ["search", "write_search_outputs", "collection_embedder", "duplicates"]

Log = Callable[[str], None]


def collection_embedder(
    collection: Collection,
    model: str | Path | None = None,
    inference: InferenceSettings | None = None,
) -> Any:
    """The collection's model (or `model`, which must make the same embeddings), loaded."""
    ref = model or collection.model["ref"]
    embedder = load_for_inference(ref, inference)
    collection.check_model(registry.describe(ref, embedder))
    return embedder


def search(
    collection_dir: str | Path,
    queries: list[str | Path],
    *,
    k: int = 10,
    mode: str = "index",
    model: str | Path | None = None,
    inference: InferenceSettings | None = None,
    nprobe: int | None = None,
    in_collection: bool = False,
    rerank: RerankChoice = AUTO,
    log: Log = lambda msg: print(msg, file=sys.stderr),
) -> list[QueryResult]:
    """Rank a collection for each query -> list of QueryResult, in the order of the queries.

    A query is an image file or a folder of them (each image a query, embedded and searched in
    batches; unreadable ones are logged and skipped). With `in_collection`, queries are items
    of the collection (key, path or id) and their stored embeddings are used; each is left out
    of its own results. `rerank` (imgret.retrieval.rerank.RerankConfig) re-ranks each query's top
    candidates without labels (DBA + alpha-QE; modes index and exact); None: not; AUTO (the
    default): when the collection's model is built on a pretrained backbone or trained on a
    large collection (`chosen_rerank`).
    `inference`: how the query images are embedded (imgret.models.backend; default: auto).
    """
    if not queries:
        raise UserError("give at least one query image")
    coll = open_collection(collection_dir)
    by_default = rerank == AUTO
    rerank = chosen_rerank(rerank, coll.model["ref"], mode, coll.metric)
    if by_default and rerank is not None:
        log("re-ranking each query's top candidates (DBA + alpha-QE), the default for a model "
            f"built on a pretrained backbone or trained on at least {RERANK_TRAINED_IMAGES:,} "
            "images; --no-rerank turns it off")  # fmt: skip
    coll.map_index()  # only searched: a flat index's vectors stay in its file
    searcher = Searcher(coll, log=log)
    if in_collection:
        ids = resolve_items(coll, [str(q) for q in queries])
        return search_items(searcher, ids, k=k, mode=mode, nprobe=nprobe, rerank=rerank)
    embedder = collection_embedder(coll, model, inference)
    results: list[QueryResult] = []
    files: list[str | Path] = []
    opts: dict[str, Any] = {"k": k, "mode": mode, "nprobe": nprobe, "rerank": rerank}
    for q in [*queries, None]:
        if q is not None and not Path(q).is_dir():
            files.append(q)
            continue
        if files:
            results += search_files(searcher, embedder, files, **opts)
            files = []
        if q is not None:
            found, skipped = search_folder(searcher, embedder, q, **opts)
            for _, reason in skipped:
                log(f"skipped query: {reason}")
            results += found
    return results


def write_search_outputs(
    results: list[QueryResult], out_dir: str | Path, mode: str
) -> dict[str, Path]:
    """results.json and one grid PNG per query in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json"}
    write_json(files["json"], [r.to_dict() for r in results])
    for i, r in enumerate(results):
        hits = [(h.key, h.score, h.label) for h in r.hits]
        title = f"{Path(r.query).name}: {mode} search" + (
            f" in cluster {r.cluster}" if r.cluster is not None else ""
        )
        files[f"grid{i}"] = plot_results(r.query, hits, out_dir / f"query{i}.png", title)
    return files


def duplicates(
    collection_dir: str | Path, threshold: float = 0.95, *, k: int = 10, mode: str = "index"
) -> list[DuplicatePair]:
    """Pairs of near-duplicate images of a collection, most similar first."""
    coll = open_collection(collection_dir)
    coll.map_index()  # only searched: a flat index's vectors stay in its file
    return find_duplicates(Searcher(coll), threshold, k=k, mode=mode)
