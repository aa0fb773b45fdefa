"""The pieces of the 10-million-image plan, measured, and the report of bench/scaleout.py.

Measured here (one thread each, so CPU-seconds = seconds): decoding + hashing per image of the
Caltech-101 sample and of synthetic 12-megapixel JPEGs (real photos are that big); a
collection's bytes on disk per image; the driver's Python memory per image for the scan and
the Ray items; and the index build of a 10-million-image collection (ivfsq, what "auto" picks
there) from its parts on synthetic 1280-d embeddings: training, PCA, assignment to the coarse
lists (timed at the list count of 10 million), encoding, and merging Ray shards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

N_PLAN = 10_000_000
DAY = 86_400
DIM = 1280  # efficientnet-lite0 with GeM pooling
PHOTO = (4000, 3000)  # a 12-megapixel photo


def _cpu_per_image(source: Any, size: int) -> float:
    """CPU-seconds per image of reading, hashing and decoding (imgret's loader item)."""
    from imgret.data.loader import ImageDataset

    data = ImageDataset(source, size, 3, hash_files=True)
    t0 = time.process_time()
    for i in range(len(data)):
        assert data[i][1] is not None, data[i][2]
    return (time.process_time() - t0) / len(data)


def _photos(work: Path, n: int) -> list[str]:
    """n synthetic 12-MP JPEGs (smooth colour fields with noise, quality 90)."""
    from PIL import Image

    folder = work / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:02d}.jpg"
        if not path.exists():
            small = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
            img = Image.fromarray(small).resize(PHOTO, Image.Resampling.BICUBIC)
            noise = rng.normal(0, 12, (PHOTO[1], PHOTO[0], 3))
            arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    return paths


def _driver_bytes_per_image(keys: list[str], k: int = 100_000) -> float:
    """Python memory the driver holds per image: candidates, the to-do list, Ray's items."""
    from imgret.jobs.sync import Candidate

    mean = int(np.mean([len(os.fsencode(key)) for key in keys]))
    tracemalloc.start()
    fake = [f"/photos/{i:09d}/".ljust(mean - 4, "x") + ".jpg" for i in range(k)]
    candidates = [Candidate(key, "label", 3_000_000 + i, 1_700_000_000_000_000_000 + i)
                  for i, key in enumerate(fake)]  # fmt: skip
    todo = list(candidates)
    is_new = {c.key for c in todo}
    items = [{"pos": i, "key": os.fsencode(c.key)} for i, c in enumerate(todo)]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del fake, candidates, todo, is_new, items
    return size / k


def _commit_cpu_per_image(work: Path, dim: int, chunks: int = 4, rows: int = 4096) -> float:
    """The driver's CPU per image to commit chunks of 4,096 (normalise, write the chunk file,
    one SQLite transaction), into a scratch collection."""
    from imgret.store.metadata import Item
    from imgret.store.opening import open_collection

    coll = open_collection(work / "collection")
    rng = np.random.default_rng(0)
    cpu = 0.0
    with coll.writing():
        for c in range(chunks):
            emb = rng.standard_normal((rows, dim)).astype(np.float32)
            keys = [f"/scratch/{c:03d}/{'x' * 40}/{i:06d}.jpg" for i in range(rows)]
            items = [Item(k, -1, 3_000_000, 1, "0" * 64, "label") for k in keys]
            t0 = time.process_time()
            coll.append(emb, items)
            cpu += time.process_time() - t0
    return cpu / (chunks * rows)


def _sqlite_bytes_per_image(work: Path) -> float:
    """meta.sqlite's size per item, its write-ahead log checkpointed into it first."""
    import sqlite3

    from imgret.store.opening import open_collection

    path = work / "collection" / "meta.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size / len(open_collection(work / "collection"))


def _index_parts(n: int, work: Path) -> dict[str, Any]:
    """Seconds (one FAISS thread) of each part of an ivfsq build, and the 10M plan's facts."""
    import faiss
    import ray

    from imgret.scaleout.cluster import RayConfig
    from imgret.scaleout.index_shards import build_index_sharded
    from imgret.store.index_files import (
        IndexSettings,
        build_index,
        choose_kind,
        plan_index,
        trained_index,
    )

    rng = np.random.default_rng(0)
    # Clustered data (a few hundred centres, noise), unit-norm, like embeddings.
    centres = rng.standard_normal((300, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 300, n)] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(n, dtype=np.int64)

    def fetch(r: np.ndarray) -> np.ndarray:
        return x[r]

    settings = IndexSettings(kind="ivfsq", threads=1)
    plan = plan_index("ivfsq", n, DIM, settings)
    big_kind = choose_kind(N_PLAN)
    big = plan_index(big_kind, N_PLAN, DIM, IndexSettings())
    out: dict[str, Any] = {"n": n, "plan": plan, "big": big}
    cpu = time.process_time  # one FAISS thread: CPU-seconds, less disturbed by other jobs
    t0 = cpu()
    index = trained_index(plan, rows, fetch, dim=DIM, settings=settings)
    out["train"] = cpu() - t0
    out["train_sample"] = min(n, max(plan.nlist * settings.train_per_list, 10_000))
    out["big_sample"] = min(N_PLAN, max(big.nlist * settings.train_per_list, 10_000))
    single = faiss.clone_index(index)
    t0 = cpu()
    single.add_with_ids(x, rows)
    out["add"] = cpu() - t0
    pca = faiss.downcast_VectorTransform(index.chain.at(0))
    t0 = cpu()
    reduced = pca.apply(x)
    out["pca"] = cpu() - t0
    d = reduced.shape[1]
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    t0 = cpu()
    quantizer.search(reduced, 1)
    out["assign"] = cpu() - t0
    m = min(n, 10_000)
    lists = faiss.IndexFlatIP(d)
    lists.add(rng.standard_normal((big.nlist, d)).astype(np.float32))
    t0 = cpu()
    lists.search(reduced[:m], 1)
    out["assign_big_per_vector"] = (cpu() - t0) / m
    out["d_reduced"] = d
    empty = faiss.index_factory(DIM, big.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(empty)
    out["big_code_bytes"] = int(ivf.code_size) + 8  # code + its int64 id in the inverted list
    out["big_fixed_bytes"] = (big.nlist * ivf.d + DIM * ivf.d + DIM) * 4  # lists, PCA
    copy = faiss.clone_index(index)
    t0 = cpu()
    copy.merge_from(faiss.clone_index(single), 0)  # what merging every shard costs
    out["merge"] = cpu() - t0
    del copy
    t0 = time.perf_counter()
    build_index(plan, rows, fetch, dim=DIM, settings=settings)
    out["single_wall"] = time.perf_counter() - t0

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    shard = max(1, n // 4)
    config = RayConfig(actors=1, shard_rows=shard)
    t0 = time.perf_counter()
    sharded = build_index_sharded(plan, rows, fetch, dim=DIM, settings=settings, config=config)
    out["sharded_wall"] = time.perf_counter() - t0
    ray.shutdown()
    for ix in (single, sharded):
        faiss.extract_index_ivf(ix).nprobe = plan.nprobe
    _, i_one = single.search(x[:200], 10)
    _, i_sharded = sharded.search(x[:200], 10)
    out["identical"] = bool(np.array_equal(i_one, i_sharded))
    out["shards"] = math.ceil(n / shard)
    return out


def measure_plan(folder: Path, work: Path, *, quick: bool) -> dict[str, Any]:
    import faiss
    import torch

    from imgret.data.sources import ImageSource, open_source
    from imgret.store.opening import open_collection

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    source = open_source(str(folder))
    photos = _photos(work, 4 if quick else 12)
    coll = open_collection(work / "collection")
    chunk_bytes = sum(p.stat().st_size for p in (coll.path / "embeddings").iterdir())
    out = {
        "decode_small": _cpu_per_image(source, 224),
        "decode_photo": _cpu_per_image(ImageSource("photos", photos, [None] * len(photos)), 224),
        "photo_bytes": float(np.mean([Path(p).stat().st_size for p in photos])),
        "chunk_bytes": chunk_bytes / len(coll),
        "key_bytes": float(np.mean([len(os.fsencode(k)) for k in coll.keys])),
        "dim": coll.dim,
        "driver_bytes": _driver_bytes_per_image(coll.keys),
        "commit_cpu": _commit_cpu_per_image(work, coll.dim),
        "sqlite_bytes": _sqlite_bytes_per_image(work),  # after the commits: 16,000+ items
        "index": _index_parts(20_000 if quick else 100_000, work),
    }
    print(f"plan parts: {out}", flush=True)
    return out


def write_report(args: Any, n: int, runs: list[dict[str, Any]], plan: dict[str, Any],
                 load0: float, seconds: float) -> None:  # fmt: skip
    from bench.scaleout import ROOT
    from bench.scaleout_report import report_text

    text = report_text(args, n, runs, plan, load0, os.getloadavg()[0], seconds,
                       platform.machine(), N_PLAN, DAY, PHOTO)  # fmt: skip
    out = ROOT / "bench" / "results" / "scaleout.md"
    raw = json.dumps({"runs": runs, "plan": plan}, indent=1, default=str)  # every input
    for path, content in ((out, text), (out.with_suffix(".json"), raw)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
    print(f"wrote {out} and its measurements, {out.with_suffix('.json').name}")
