"""Cached backbone embeddings of whole datasets, so that every experiment embeds an image once.

    python -m bench.embeddings cifar10 efficientnet-lite0 224     # embed (resumable), then exit
    python -m bench.embeddings cifar10 efficientnet-lite0 160 --views 4   # augmented views

A dataset's images (every image of `caltech101`, or `train/` and `test/` of `cifar10`, sorted
by path) are embedded by a pretrained backbone through ONNX Runtime (imgret's fast path:
imgret.models.onnx_export, imgret.data.loader), average- and GeM-pooled from the same feature
map in one pass, L2-normalised, and stored as float16 in chunks under
bench-out/embeddings/DATASET/NAME@SIZE/ (a killed run resumes at its last chunk). Every
benchmark split (test, :val, :small) is then a choice of rows (`rows_of`). The throughput of
each chunk is logged; speed comparisons are made elsewhere (bench/backbones.py), in one run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench-out" / "embeddings"
CHUNK = 2048  # images per stored chunk
POOLINGS = ("avg", "gem")

Log = Callable[[str], None]


def dataset_source(dataset: str) -> Any:
    """Every image of a dataset, sorted by path, labelled by folder -> ImageSource."""
    from imgret.data.benchmarks import dataset_root
    from imgret.data.images import scan_folder
    from imgret.data.sources import ImageSource

    root = dataset_root(dataset)
    paths = scan_folder(root)
    return ImageSource(dataset, [str(p) for p in paths], [p.parent.name for p in paths], root=root)


class BothPoolings(torch.nn.Module):
    """A pretrained backbone pooled two ways: (B, 3, S, S) in [0, 1] -> (B, 2560) [avg | GeM],
    each half L2-normalised."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__()
        from imgret.models.pretrained import load_pretrained

        self.net = load_pretrained(name, image_size=size, pooling="gem")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from imgret.models.pretrained import pool_feature_map

        fm = self.net.feature_map(x)
        avg = F.normalize(pool_feature_map(fm, "avg"), dim=1)
        gem = F.normalize(pool_feature_map(fm, "gem", 3.0), dim=1)
        return torch.cat([avg, gem], dim=1)


def onnx_both(name: str, size: int) -> Path:
    """The ONNX graph of BothPoolings (exported once into bench-out/embeddings/onnx/)."""
    from imgret.models.onnx_export import export_onnx

    path = WORK / "onnx" / f"{name}@{size}-both.onnx"
    if not path.is_file():
        export_onnx(BothPoolings(name, size), path, image_size=size, channels=3)
    return path


def _folder(dataset: str, name: str, size: int) -> Path:
    return WORK / dataset / f"{name}@{size}"


def backbone_embeddings(
    dataset: str, name: str, size: int, *, threads: int = 1, workers: int = 1, log: Log = print
) -> dict[str, Any]:
    """{"keys": (n,) str, "labels": (n,) str, "avg"/"gem": (n, 1280) float32 unit rows,
    "images_per_s": mean throughput of the chunks embedded (decoding included)}."""
    from imgret.data.loader import iter_batches
    from imgret.models.onnx_runtime import OnnxEmbedder

    source = dataset_source(dataset)
    folder = _folder(dataset, name, size)
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-len(source) // CHUNK)
    session = None
    for c in range(n_chunks):
        out = folder / f"chunk-{c:04d}.npy"
        if out.is_file():
            continue
        if session is None:
            session = OnnxEmbedder(onnx_both(name, size), threads=threads)
        part = source.subset(range(c * CHUNK, min((c + 1) * CHUNK, len(source))))
        t0 = time.perf_counter()
        rows = np.zeros((len(part), 2 * 1280), np.float16)
        for batch in iter_batches(part, size=size, channels=3, batch_size=64, workers=workers):
            if len(batch.indices):
                emb = session.embed_uint8(np.ascontiguousarray(batch.images.numpy()))
                rows[batch.indices.numpy()] = emb
            for i, reason in batch.failures:
                log(f"  undecodable: {part.keys[i]}: {reason}")
        seconds = time.perf_counter() - t0
        tmp = out.with_suffix(".tmp.npy")
        np.save(tmp, rows)
        tmp.replace(out)
        with open(folder / "timings.jsonl", "a") as f:
            f.write(json.dumps({"chunk": c, "images": len(part), "seconds": seconds}) + "\n")
        log(f"  {dataset} {name}@{size}: chunk {c + 1}/{n_chunks}, "
            f"{len(part) / seconds:.1f} images/s")  # fmt: skip
    both = np.concatenate([np.load(folder / f"chunk-{c:04d}.npy") for c in range(n_chunks)])
    timings = [json.loads(line) for line in (folder / "timings.jsonl").read_text().splitlines()]
    speed = sum(t["images"] for t in timings) / max(sum(t["seconds"] for t in timings), 1e-9)
    return {
        "keys": np.asarray(source.keys),
        "labels": np.asarray([str(x) for x in source.labels]),
        "avg": both[:, :1280].astype(np.float32),
        "gem": both[:, 1280:].astype(np.float32),
        "images_per_s": speed,
    }


def view_embeddings(
    dataset: str, ref: str, views: int = 4, seed: int = 0, *, threads: int = 1, log: Log = print
) -> np.ndarray:
    """`views` augmented views of every image of a dataset, embedded by `ref` (a pretrained
    name with size and pooling) exactly as `imgret adapt` makes them (imgret.training.views,
    default augmentations) -> (n, views, dim) float32, rows in `dataset_source` order."""
    from imgret.models import registry
    from imgret.models.backend import InferenceSettings, load_for_inference
    from imgret.training.views import ViewConfig, embed_views

    before = torch.get_num_threads()  # loading the model sets the shared pool: restored below
    model = load_for_inference(ref, InferenceSettings(backend="onnx", threads=threads))
    cache = WORK / dataset / f"views-{registry.canonical_ref(ref)}-v{views}-s{seed}"
    t0 = time.perf_counter()
    facts = {"ref": registry.canonical_ref(ref)}
    out = embed_views(model, dataset_source(dataset), ViewConfig(views=views, seed=seed),
                      cache=cache, model_facts=facts, log=log)  # fmt: skip
    log(f"  {dataset} views of {ref}: {time.perf_counter() - t0:.0f} s")
    torch.set_num_threads(before)
    return out


def rows_of(keys: np.ndarray, wanted: list[str]) -> np.ndarray:
    """Rows of `keys` (n,) holding the `wanted` keys, in their order -> (m,) int64."""
    where = {k: i for i, k in enumerate(keys.tolist())}
    return np.asarray([where[k] for k in wanted], dtype=np.int64)


@dataclass
class Split:
    """Cached embeddings of one benchmark split: unit rows of the queries and the database,
    their labels, and the database's rows in the dataset cache (for view caches)."""

    q: np.ndarray  # (n_queries, dim)
    ql: np.ndarray  # (n_queries,) labels
    db: np.ndarray  # (n_database, dim)
    dbl: np.ndarray  # (n_database,) labels
    db_rows: np.ndarray  # (n_database,) int64 rows of the dataset cache
    images_per_s: float  # of the (first) model's cached embedding run


def cached_split(
    dataset: str, bench: Any, models: dict[str, int], pooling: str = "gem"
) -> Split:
    """A benchmark's split from the cached embeddings of `models` ({name: size}); several
    models side by side as imgret.models.side_by_side joins them (each unit-norm, then the
    whole), though each from its own cache (embedded at its own size by the data loader)."""
    from imgret.core.vectors import normalize

    parts = [backbone_embeddings(dataset, name, size) for name, size in models.items()]
    first = parts[0]
    q = rows_of(first["keys"], bench.queries.keys)
    db = rows_of(first["keys"], bench.database.keys)
    for emb in parts[1:]:
        if not np.array_equal(emb["keys"], first["keys"]):
            raise ValueError(f"{dataset}: the cached embeddings list other images")

    def joined(rows: np.ndarray) -> np.ndarray:
        return normalize(np.concatenate([normalize(e[pooling][rows]) for e in parts], axis=1))

    return Split(joined(q), first["labels"][q], joined(db), first["labels"][db], db,
                 float(first["images_per_s"]))  # fmt: skip


def joined_views(
    dataset: str, models: list[str], size: int, views: int, rows: np.ndarray
) -> np.ndarray:
    """The cached views (view_embeddings) of `models` at `size`, side by side, of the dataset's
    `rows` -> (len(rows), views, total dim) float32, unit rows. View j of an image is the same
    crop for every model (views are drawn per chunk from one seed, at one side)."""
    parts = [view_embeddings(dataset, f"{m}@{size}:gem", views)[rows] for m in models]
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    out /= np.float32(np.sqrt(len(parts)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=("cifar10", "caltech101"))
    p.add_argument("name", help="efficientnet-lite0, -lite1 or -lite2")
    p.add_argument("size", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--views", type=int, help="embed this many augmented views of each image "
                   "instead (GeM pooling), as imgret adapt does")  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.views:
        view_embeddings(a.dataset, f"{a.name}@{a.size}:gem", a.views, threads=a.threads)
        return
    emb = backbone_embeddings(a.dataset, a.name, a.size, threads=a.threads, workers=a.workers)
    print(f"{a.dataset} {a.name}@{a.size}: {len(emb['keys']):,} images, "
          f"{emb['images_per_s']:.1f} images/s")  # fmt: skip


if __name__ == "__main__":
    main()
