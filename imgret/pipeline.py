"""The stages as one call each: train, embed, cluster, search. The CLI maps onto these."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import write_json
from .config import ModelConfig, TrainConfig
from .errors import UserError
from .sources import ImageSource, open_source

if TYPE_CHECKING:
    from .rerank import RerankConfig

__all__ = [
    "TrainOutput", "EmbedOutput", "ClusterOutput", "suggest_model_config",
    "train", "embed", "cluster", "search", "write_search_outputs",
]  # fmt: skip

Log = Callable[[str], None]


def suggest_model_config(source: ImageSource) -> ModelConfig:
    """Input size and channels that suit the source: its native size for small images."""
    if source.arrays is not None:
        side = max(source.arrays.shape[1:3])
        return ModelConfig(
            image_size=max(16, -(-side // 4) * 4), channels=1 if source.is_grayscale else 3
        )
    from PIL import Image

    sides, gray = [], 0
    step = max(1, len(source) // 50)
    for key in source.keys[::step][:50]:
        try:
            with Image.open(key) as img:  # header only: cheap
                sides.append(min(img.size))
                gray += img.mode in ("L", "1", "I;16", "LA")
        except Exception:  # noqa: BLE001 - a bad file is reported later, when decoded
            continue
    median = float(np.median(sides)) if sides else 64.0
    size = 32 if median <= 48 else 64
    channels = 1 if sides and gray == len(sides) else 3
    return ModelConfig(image_size=size, channels=channels)


@dataclass
class TrainOutput:
    model_dir: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def open_training_source(spec: str | Path) -> ImageSource:
    """A folder, a built-in source, or ``BENCHMARK:database`` (a benchmark's database images)."""
    name, _, part = str(spec).partition(":")
    if part == "database":
        from .benchmarks import BENCHMARK_NAMES, load_benchmark

        if name in BENCHMARK_NAMES:
            return load_benchmark(name).database
    return open_source(spec)


def train(
    source_spec: str | Path,
    out: str | Path,
    *,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    overrides: dict | None = None,
    device: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    log: Log = print,
) -> TrainOutput:
    """Train a model on a folder or built-in source without labels; write it and its pictures.

    `overrides` sets ModelConfig fields on top of the suggestion for the source and the
    defaults of the objective (imgret.config.objective_model_defaults); `limit` trains
    on a sample of that many images (fixed by the training seed). The source
    may also be ``fashion-mnist:database``, ``cifar10:database`` or ``caltech101:database``:
    the database images of a benchmark protocol (imgret.benchmarks).
    """
    import time

    import torch

    from .loader import split_indices
    from .plots import plot_losses, plot_reconstructions
    from .train import decode_all, train_autoencoder

    source = open_training_source(source_spec)
    tc = train_config or TrainConfig()
    if limit is not None and limit < len(source):
        if limit < 2:
            raise UserError(f"--limit must be 2 or more, got {limit}")
        pick = np.sort(np.random.default_rng(tc.seed).permutation(len(source))[:limit])
        source = replace(source.subset(pick), name=f"{source.name} (sample of {limit})")
    if model_config is None:
        from .config import objective_model_defaults

        base = replace(suggest_model_config(source), **(overrides or {}))
        defaults = objective_model_defaults(tc.objective, base.channels, base.embedding_dim)
        mc = replace(base, **{**defaults, **(overrides or {})})
    else:
        mc = model_config
    log(f"training on {len(source):,} images from {source.name}: {mc.image_size}px, "
        f"{mc.channels} channel(s), {mc.embedding_dim}-d embedding, {tc.objective} "
        "objective")  # fmt: skip
    t0 = time.perf_counter()
    result = train_autoencoder(source, mc, tc, out, device=device, progress=progress, log=log)
    seconds = time.perf_counter() - t0
    out = Path(out)
    files = {"model": out / "model.safetensors", "config": out / "model.json"}
    files["history"] = out / "history.json"
    files["losses"] = plot_losses(result.history, out / "loss.png")
    if result.model.has_decoder:
        # Reconstructions of validation images (the model never trained on them).
        _, val_idx = split_indices(len(source), tc.val_fraction, tc.seed)
        sample = source.subset(val_idx[:8] if len(val_idx) else range(min(8, len(source))))
        images, _, _ = decode_all(sample, mc.image_size, mc.channels, workers=0, progress=False)
        x = images.float() / 255.0
        with torch.inference_mode():
            recon, _ = result.model.cpu().eval()(x)
        files["reconstructions"] = plot_reconstructions(
            x.numpy(), recon.numpy(), out / "reconstructions.png"
        )
    return TrainOutput(
        out, result.best_epoch, result.best_val_loss, len(result.history), seconds, files,
        result.failures,
    )  # fmt: skip


@dataclass
class EmbedOutput:
    collection_dir: Path
    count: int
    dim: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def embed(
    model_ref: str | Path,
    source_spec: str | Path,
    out: str | Path,
    *,
    batch_size: int = 128,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    log: Log = print,
) -> EmbedOutput:
    """Embed every image of a source into a new collection at `out` (replacing any there).

    `imgret index` (imgret.indexing.index_folder) is the incremental, resumable version.
    """
    from .indexing import IndexJobConfig, index_folder

    config = IndexJobConfig(batch_size=batch_size, workers=workers, device=device)
    report = index_folder(
        source_spec, out, model=model_ref, config=config, replace_existing=True,
        progress=progress, log=lambda _: None,
    )  # fmt: skip
    if report.count == 0:
        raise UserError(f"{source_spec}: none of the {len(report.failed)} images could be decoded")
    for _, reason in report.failed[:10]:
        log(f"skipped: {reason}")
    return EmbedOutput(Path(out), report.count, report.dim, report.seconds, report.failed)


@dataclass
class ClusterOutput:
    k: int
    sizes: list[int]
    elbow_k: int | None
    files: dict[str, Path] = field(default_factory=dict)


def cluster(
    collection_dir: str | Path,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> ClusterOutput:
    """KMeans on a collection: K from the elbow of the inertia curve unless given."""
    from .cluster import elbow_curve
    from .collection import Collection
    from .plots import plot_cluster_samples, plot_elbow

    coll = Collection.load(collection_dir)
    if len(coll) < 2:
        raise UserError(f"{coll.path}: {len(coll)} image(s) is too few to cluster")
    files: dict[str, Path] = {}
    elbow = None
    if k is None:
        elbow = elbow_curve(
            _cluster_sample(coll, seed), range(k_min, k_max + 1), seed=seed, progress=progress
        )
        k = elbow.chosen_k
        files["elbow"] = plot_elbow(
            elbow.ks, elbow.inertias, elbow.silhouettes, k, coll.path / "elbow.png"
        )
    clustering = _fit_clusters(coll, k, seed)
    coll.save_clustering(clustering, elbow)
    files["clusters"] = plot_cluster_samples(
        coll.keys, clustering.assignments, coll.path / "clusters.png", seed=seed
    )
    sizes = np.bincount(clustering.assignments, minlength=clustering.k).tolist()
    return ClusterOutput(clustering.k, sizes, elbow.chosen_k if elbow else None, files)


KMEANS_SAMPLE = 100_000  # KMeans is fitted on at most this many embeddings, then all are assigned


def _cluster_sample(coll: Any, seed: int) -> np.ndarray:
    """The embeddings KMeans is fitted on: all, or a seeded sample of a large collection."""
    if len(coll) <= KMEANS_SAMPLE:
        return coll.embeddings
    pick = np.sort(np.random.default_rng(seed).choice(len(coll), KMEANS_SAMPLE, replace=False))
    return coll.fetch(coll.rows[pick])


def _fit_clusters(coll: Any, k: int, seed: int) -> Any:
    """KMeans on the collection (on a sample when large; every image then goes to its nearest)."""
    from .cluster import Clustering, fit_kmeans
    from .index import nearest_centroids

    clustering = fit_kmeans(_cluster_sample(coll, seed), k, seed=seed)
    if len(coll) <= KMEANS_SAMPLE:
        return clustering
    assign = np.concatenate([
        nearest_centroids(emb, clustering.centroids, 1)[:, 0]
        for _, emb in coll.reader.iter_rows(coll.rows)
    ])  # fmt: skip
    return Clustering(clustering.k, clustering.centroids, assign, clustering.inertia)


def search(
    collection_dir: str | Path,
    queries: list[str | Path],
    *,
    k: int = 10,
    mode: str = "index",
    model: str | Path | None = None,
    device: str = "cpu",
    nprobe: int | None = None,
    in_collection: bool = False,
    rerank: RerankConfig | None = None,
    log: Log = lambda msg: print(msg, file=sys.stderr),
) -> list:
    """Rank a collection for each query -> list of QueryResult, in the order of the queries.

    A query is an image file or a folder of them (each image a query, embedded and searched in
    batches; unreadable ones are logged and skipped). With `in_collection`, queries are items
    of the collection (key, path or id) and their stored embeddings are used; each is left out
    of its own results. `rerank` (imgret.rerank.RerankConfig) re-ranks each query's top
    candidates without labels (DBA + alpha-QE; modes index and exact).
    """
    from .collection import Collection
    from .search import _embedder_for, resolve_items, search_files, search_folder, search_items

    if not queries:
        raise UserError("give at least one query image")
    coll = Collection.load(collection_dir)
    if in_collection:
        ids = resolve_items(coll, [str(q) for q in queries])
        return search_items(coll, ids, k=k, mode=mode, nprobe=nprobe, rerank=rerank)
    embedder = _embedder_for(coll, model, device)
    results: list = []
    files: list[str | Path] = []
    opts: dict[str, Any] = {
        "k": k, "mode": mode, "nprobe": nprobe, "rerank": rerank, "embedder": embedder,
    }  # fmt: skip
    for q in [*queries, None]:
        if q is not None and not Path(q).is_dir():
            files.append(q)
            continue
        if files:
            results += search_files(coll, files, **opts)
            files = []
        if q is not None:
            found, skipped = search_folder(coll, q, **opts)
            for _, reason in skipped:
                log(f"skipped query: {reason}")
            results += found
    return results


def write_search_outputs(results: list, out_dir: str | Path, mode: str) -> dict[str, Path]:
    """results.json and one grid PNG per query in `out_dir`."""
    from .plots import plot_results

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
