"""The stages as one call each: train, embed, cluster, search. The CLI maps onto these."""

from __future__ import annotations


from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .atomic import write_json
from .config import ModelConfig, TrainConfig
from .errors import UserError
from .sources import ImageSource, open_source

__all__ = [
    "TrainOutput", "EmbedOutput", "ClusterOutput", "suggest_model_config",
    "train", "embed", "cluster", "search", "write_search_outputs",
]  # fmt: skip

Log = Callable[[str], None]


def suggest_model_config(source: ImageSource) -> ModelConfig:
    """Input size and channels that suit the source: its native size for small images."""
    if source.arrays is not None:
        side = max(source.arrays.shape[1:3])
        return ModelConfig(image_size=max(16, -(-side // 4) * 4), channels=1 if source.is_grayscale else 3)
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


def train(
    source_spec: str | Path,
    out: str | Path,
    *,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    overrides: dict | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Log = print,
) -> TrainOutput:
    """Train an autoencoder on a folder or built-in source; write the model and its pictures.

    `overrides` sets ModelConfig fields on top of the suggestion for the source.
    """
    import time

    import torch

    from .loader import split_indices
    from .plots import plot_losses, plot_reconstructions
    from .train import decode_all, train_autoencoder

    source = open_source(source_spec)
    mc = model_config or replace(suggest_model_config(source), **(overrides or {}))
    tc = train_config or TrainConfig()
    log(f"training on {len(source):,} images from {source.name}: {mc.image_size}px, "
        f"{mc.channels} channel(s), {mc.embedding_dim}-d embedding")  # fmt: skip
    t0 = time.perf_counter()
    result = train_autoencoder(source, mc, tc, out, device=device, progress=progress, log=log)
    seconds = time.perf_counter() - t0
    out = Path(out)
    files = {"model": out / "model.safetensors", "config": out / "model.json"}
    files["history"] = out / "history.json"
    files["losses"] = plot_losses(result.history, out / "loss.png")
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
    """Embed every image of a source into a new collection at `out`."""
    import time

    from .collection import Collection
    from .embed import describe_embedder, embed_source, load_embedder

    source = open_source(source_spec)
    embedder = load_embedder(model_ref, device=device)
    t0 = time.perf_counter()
    result = embed_source(embedder, source, batch_size=batch_size, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    if len(result.positions) == 0:
        raise UserError(f"{source.name}: none of the {len(source)} images could be decoded")
    kept = source.subset(result.positions)
    Collection.create(
        out, model=describe_embedder(model_ref, embedder), source=source.name,
        keys=kept.keys, labels=kept.labels, embeddings=result.embeddings,
        failures=result.failures,
    )  # fmt: skip
    for _, reason in result.failures[:10]:
        log(f"skipped: {reason}")
    return EmbedOutput(Path(out), len(kept), result.embeddings.shape[1], seconds, result.failures)


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
    from .cluster import elbow_curve, fit_kmeans
    from .collection import Collection
    from .plots import plot_cluster_samples, plot_elbow

    coll = Collection.load(collection_dir)
    if len(coll) < 2:
        raise UserError(f"{coll.path}: {len(coll)} image(s) is too few to cluster")
    files: dict[str, Path] = {}
    elbow = None
    if k is None:
        elbow = elbow_curve(coll.embeddings, range(k_min, k_max + 1), seed=seed, progress=progress)
        k = elbow.chosen_k
        files["elbow"] = plot_elbow(
            elbow.ks, elbow.inertias, elbow.silhouettes, k, coll.path / "elbow.png"
        )
    clustering = fit_kmeans(coll.embeddings, k, seed=seed)
    coll.save_clustering(clustering, elbow)
    files["clusters"] = plot_cluster_samples(
        coll.keys, clustering.assignments, coll.path / "clusters.png", seed=seed
    )
    sizes = np.bincount(clustering.assignments, minlength=clustering.k).tolist()
    return ClusterOutput(clustering.k, sizes, elbow.chosen_k if elbow else None, files)


def search(
    collection_dir: str | Path,
    queries: list[str | Path],
    *,
    k: int = 10,
    mode: str = "exact",
    model: str | Path | None = None,
    device: str = "cpu",
) -> list:
    """Rank a collection for each query image file -> list of QueryResult."""
    from .collection import Collection
    from .search import search_files

    if not queries:
        raise UserError("give at least one query image")
    coll = Collection.load(collection_dir)
    return search_files(coll, queries, k=k, mode=mode, model=model, device=device)


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


