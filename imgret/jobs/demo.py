"""`imgret demo`: the whole pipeline on scikit-learn's digits, written out as image files."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..data.sources import open_source
from ..models.config import ModelConfig
from ..training.config import TrainConfig
from .cluster import cluster
from .index import embed
from .search import search, write_search_outputs
from .train import train

__all__ = ["DemoOutput", "run_demo", "write_digits_folder"]


@dataclass
class DemoOutput:
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def write_digits_folder(
    folder: Path, queries: Path, query_digits: tuple[str, ...] = ("2", "5", "9")
) -> list[Path]:
    """Digits as 32x32 PNGs in <folder>/<digit>/, plus two broken files to show they are skipped.

    The last image of each of `query_digits` goes to `queries` instead: it is not in the
    collection. Returns the query paths.
    """
    source = open_source("digits")
    assert source.arrays is not None
    folder.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    last = {d: max(i for i, lab in enumerate(source.labels) if lab == d) for d in query_digits}
    query_paths = []
    for i in range(len(source)):
        img = Image.fromarray(source.arrays[i]).resize((32, 32), Image.Resampling.BICUBIC)
        if i in last.values():
            path = queries / f"query_{source.labels[i]}_{i:04d}.png"
            query_paths.append(path)
        else:
            path = folder / str(source.labels[i]) / f"{i:04d}.png"
            path.parent.mkdir(exist_ok=True)
        if not path.exists():
            img.save(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    png = (folder / "0" / "0000.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    return query_paths


def run_demo(
    out: str | Path = "demo-out",
    *,
    epochs: int = 15,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoOutput:
    """Train -> reconstructions -> embed -> elbow -> KMeans -> example queries, into `out`."""
    t0 = time.perf_counter()
    out = Path(out)
    images, queries_dir = out / "images", out / "queries"
    log(f"[1/5] writing scikit-learn's digits as image files to {images}/ (plus 2 broken files)")
    queries = write_digits_folder(images, queries_dir)

    log("[2/5] training the autoencoder")
    mc = ModelConfig(image_size=32, channels=1, embedding_dim=512, width=32)
    tc = TrainConfig(
        objective="reconstruction", epochs=epochs, batch_size=64, seed=seed, workers=0
    )
    trained = train(
        images, out / "model", model_config=mc, train_config=tc, progress=progress, log=log
    )

    log("[3/5] embedding the folder into a collection")
    emb = embed(out / "model", images, out / "collection", workers=0, progress=progress, log=log)

    log("[4/5] clustering: elbow method, then KMeans")
    clus = cluster(out / "collection", seed=seed, progress=progress)

    log("[5/5] example queries (images not in the collection), in cluster mode and exact mode")
    files = dict(trained.files)
    files.update(clus.files)
    summary = []
    for mode in ("cluster", "exact"):
        results = search(out / "collection", list(queries), k=8, mode=mode)
        written = write_search_outputs(results, out / f"search-{mode}", mode)
        files.update({f"search-{mode}-{k}": v for k, v in written.items()})
        for r in results:
            labels = [h.label for h in r.hits]
            truth = Path(r.query).name.split("_")[1]
            hits = sum(lab == truth for lab in labels)
            summary.append(
                f"{mode:7s} query {Path(r.query).name} (digit {truth}): top-8 labels {labels} "
                f"-> {hits}/8 the same digit"
            )
    summary.insert(0, (
        f"trained {trained.epochs_run} epochs (best {trained.best_epoch}, validation MSE "
        f"{trained.best_val_loss:.4f}); embedded {emb.count} images, skipped "
        f"{len(emb.skipped)} broken: " + ", ".join(Path(k).name for k, _ in emb.skipped)
    ))  # fmt: skip
    summary.insert(1, f"KMeans: K = {clus.k} (elbow), cluster sizes {clus.sizes}")
    return DemoOutput(time.perf_counter() - t0, files, summary)
