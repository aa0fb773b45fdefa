"""Embedding past one process: the same folder single-process and on Ray, in one run.

    python -m bench.scaleout            # 400 Caltech-101 JPEGs (about 10 minutes on 2 cores)
    python -m bench.scaleout --quick    # 120

Runs, one after the other on the same cores, with efficientnet-lite0 (224 px, GeM) and the
default inference backend in every run (imgret.models.backend): the single-process imgret
path (the loader's decode workers + the model in this process), Ray on a private local cluster
with 1 actor x 2 threads and 2 actors x 1 thread, and Ray on a 2-node local cluster
(ray.cluster_utils.Cluster, 1 CPU per node, one actor on each). For each: the embedding loop
alone (timestamped batches; start-up = time to the first batch beyond a steady batch;
CPU-seconds per image from getrusage for the single process, from the actors' own CPU clocks
for Ray), then `index_folder` end to end into a fresh collection; the peak memory (PSS) of
this process and all its descendants (Ray's processes included), sampled from /proc. Then the
pieces of the 10-million-image plan (bench/scaleout_plan.py). Writes bench/results/scaleout.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/faiss load OpenMP
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # private clusters on this machine only

import numpy as np  # noqa: E402

from bench.proctree import ProcessTree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALTECH = Path("/work/shared/datasets/caltech101")
WORK = ROOT / "bench-out" / "scaleout"
MODEL = "efficientnet-lite0"
BATCH = 32
SEED = 0


def make_folder(n: int) -> Path:
    """A seeded sample of n Caltech-101 JPEGs, linked (not copied) into class folders."""
    files = sorted(CALTECH.glob("*/*.jpg"))
    pick = np.sort(np.random.default_rng(SEED).choice(len(files), n, replace=False))
    folder = WORK / f"images-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    for i in pick.tolist():
        link = folder / files[i].parent.name / files[i].name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(files[i])
    return folder


def _rusage_cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _rate(images: int, ready: float, last: float) -> float:
    """Images/s from the moment the model was ready to the last batch."""
    return images / (last - ready)


def single_loop(folder: Path) -> dict[str, Any]:
    """sync's single-process loop: the loader (decode workers) and the model, timed."""
    from imgret.core.threads import inference_threads
    from imgret.data.loader import make_loader
    from imgret.data.sources import open_source
    from imgret.jobs.sync import IndexJobConfig
    from imgret.models.backend import load_for_inference
    from imgret.models.embed import embed_arrays

    config = IndexJobConfig(batch_size=BATCH)
    source = open_source(str(folder))
    t0 = time.time()
    embedder = load_for_inference(MODEL, config.inference())
    ready = time.time()
    cpu0 = _rusage_cpu()
    loader = make_loader(
        source, size=embedder.image_size, channels=embedder.channels, batch_size=BATCH,
        workers=config.workers, hash_files=True,
    )  # fmt: skip
    embeddings, images = {}, 0
    for batch in loader:
        emb = embed_arrays(embedder, batch.images)
        for i, e in zip(batch.indices.tolist(), emb, strict=True):
            embeddings[source.keys[i]] = e
        images += len(batch.indices) + len(batch.failures)
    last = time.time()
    del loader
    cpu = _rusage_cpu() - cpu0  # the decode workers are reaped when the loader is done
    threads = inference_threads(config.threads)
    return {
        "images": images, "startup": ready - t0, "rate": _rate(images, ready, last),
        "cpu_per_image": cpu / images, "embeddings": embeddings,
        "backend": type(embedder).__name__,
        "how": f"{config.workers} decode processes + the model on {threads} thread(s)",
    }  # fmt: skip


def ray_loop(folder: Path, actors: int, threads: int, tree: ProcessTree) -> dict[str, Any]:
    """The Ray actors' outputs, timed, with their CPU clocks."""
    from imgret.data.sources import open_source
    from imgret.models.registry import canonical_ref
    from imgret.scaleout.cluster import RayConfig
    from imgret.scaleout.embed import ray_embedded_outputs

    source = open_source(str(folder))
    config = RayConfig(actors=actors, threads=threads)
    t0 = time.time()
    embeddings, cpu, images = {}, 0.0, 0
    workers: set[str] = set()
    batches = []  # (started, images, actors' CPU) of each batch
    outputs = ray_embedded_outputs(source, canonical_ref(MODEL), config, batch_size=BATCH)
    for out in outputs:
        images += len(out["pos"])
        cpu += float(np.sum(out["cpu_seconds"]))
        batches.append(_batch_facts(out))
        workers.update(os.fsdecode(w) for w in out["worker"])
        for key, e, err in zip(out["key"], out["embedding"], out["error"], strict=True):
            if not err:
                embeddings[os.fsdecode(key)] = e
    last = time.time()
    nodes = {w.split(":")[0] for w in workers}
    window = _steady(tree, batches, last)  # from the moment every actor had loaded the model
    return {
        "images": images, "startup": max(b[3] for b in batches) - t0,
        "rate": window["images"] / window["seconds"],
        "cpu_per_image": cpu / images, "workers": len(workers), "nodes": len(nodes),
        "window": window,
        "embeddings": embeddings,
        "how": f"{actors} actor(s) x {threads} thread(s)",
    }  # fmt: skip


def _batch_facts(out: dict[str, np.ndarray]) -> tuple[float, int, float, float]:
    """(started, images, the actor's CPU, its ready time) of one output batch."""
    return (float(out["started_at"][0]), len(out["pos"]), float(np.sum(out["cpu_seconds"])),
            float(out["ready_at"][0]))  # fmt: skip


def _steady(tree: ProcessTree, batches: list[tuple[float, int, float, float]], last: float
            ) -> dict[str, float]:  # fmt: skip
    """The steady part of a run: from the moment every actor had loaded the model to the last
    batch: seconds, images and actors' CPU of the batches begun in it, the driver's CPU and
    all CPU (driver, Ray's processes, actors) in it."""
    start = max(ready for *_, ready in batches)
    begun = [(n, cpu) for started, n, cpu, _ in batches if started >= start]
    if len(begun) < 2:  # too few batches after the last actor started: take them all
        start = min(ready for *_, ready in batches)
        begun = [(n, cpu) for _, n, cpu, _ in batches]
    return {**tree.window(start, last), "images": sum(n for n, _ in begun),
            "actors": sum(c for _, c in begun)}  # fmt: skip


def driver_capacity(n: int, tree: ProcessTree) -> dict[str, Any]:
    """The driver at speed: n tiny PNGs and a tiny model (16 px, 1280-d like the real one)
    through the same pipeline, 2 actors x 1 thread: how fast rows stream back, what the
    driver's process spends per image while they do."""
    import torch
    from PIL import Image

    from imgret.data.sources import open_source
    from imgret.models.autoencoder import ConvAutoencoder, save_model
    from imgret.models.config import ModelConfig
    from imgret.scaleout.cluster import RayConfig
    from imgret.scaleout.embed import ray_embedded_outputs

    folder, model_dir = WORK / f"tiny-{n}", WORK / "tiny-model"
    if not folder.is_dir():
        rng = np.random.default_rng(SEED)
        (folder / "tiny").mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "tiny" / f"{i:05d}.png")
    torch.manual_seed(SEED)
    config = ModelConfig(image_size=16, channels=3, embedding_dim=1280, width=4)
    save_model(ConvAutoencoder(config), model_dir)
    source = open_source(str(folder))
    outputs = ray_embedded_outputs(source, str(model_dir), RayConfig(actors=2, threads=1),
                                   batch_size=BATCH)  # fmt: skip
    batches = [_batch_facts(out) for out in outputs]
    return {"images": sum(n for _, n, _, _ in batches),
            "window": _steady(tree, batches, time.time())}  # fmt: skip


def end_to_end(folder: Path, ray: Any = None) -> float:
    """Seconds of `index_folder` into a fresh collection (scan, embed, commit, index)."""
    from imgret.jobs.index import index_folder
    from imgret.jobs.sync import IndexJobConfig

    out = WORK / "collection"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    config = IndexJobConfig(batch_size=BATCH, ray=ray)
    report = index_folder(folder, out, model=MODEL, config=config, progress=False,
                          log=lambda _: None)  # fmt: skip
    seconds = time.perf_counter() - t0
    if report.failed or report.count == 0:
        raise SystemExit(f"unexpected: {report.count} embedded, failures {report.failed[:3]}")
    return seconds


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if sorted(a) != sorted(b):
        raise SystemExit("Ray and the single process embedded different files")
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def run_configs(folder: Path, tree: ProcessTree) -> list[dict[str, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    from imgret.jobs.sync import IndexJobConfig
    from imgret.models.backend import load_for_inference
    from imgret.scaleout.cluster import RayConfig

    load_for_inference(MODEL, IndexJobConfig().inference())  # export the ONNX graph once
    t0 = time.time()
    single = single_loop(folder)  # getrusage: this process and its decode workers
    single["end_to_end"] = end_to_end(folder)
    single.update(name="single process", cluster_start=0.0, peak_bytes=tree.peak(t0, time.time()),
                  all_cpu_per_image=single["cpu_per_image"])  # fmt: skip
    runs = [single]
    print(f"single: {single['rate']:.1f} images/s", flush=True)

    t0 = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    local_start = time.time() - t0
    for actors, threads in ((1, 2), (2, 1)):
        t0 = time.time()
        run = ray_loop(folder, actors, threads, tree)
        run["end_to_end"] = end_to_end(folder, RayConfig(actors=actors, threads=threads))
        run.update(name=f"Ray, local, {actors} x {threads}", cluster_start=local_start,
                   peak_bytes=tree.peak(t0, time.time()))  # fmt: skip
        runs.append(run)
        print(f"{run['name']}: {run['rate']:.1f} images/s", flush=True)
    runs[2]["capacity"] = driver_capacity(3000, tree)
    print(f"at speed: {runs[2]['capacity']}", flush=True)
    # A second round of the two that decide the 1-machine target: how much they move.
    again = single_loop(folder), ray_loop(folder, 2, 1, tree)
    for r in again:
        r.pop("embeddings")
    runs[2]["again"] = {"single": again[0], "ray": again[1]}
    print(f"again: single {again[0]['rate']:.1f}, 2 x 1 {again[1]['rate']:.1f}", flush=True)
    ray.shutdown()

    t0 = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    two_start = time.time() - t0
    run = ray_loop(folder, 2, 1, tree)
    run["end_to_end"] = end_to_end(folder, RayConfig(address=cluster.address, actors=2))
    ray.shutdown()
    cluster.shutdown()
    run.update(name="Ray, 2 nodes x 1 CPU, 2 x 1", cluster_start=two_start,
               peak_bytes=tree.peak(t0, time.time()))  # fmt: skip
    runs.append(run)
    print(f"{run['name']}: {run['rate']:.1f} images/s on {run['nodes']} nodes", flush=True)
    for r in runs[1:]:
        r["max_diff"] = max_difference(r.pop("embeddings"), single["embeddings"])
        w = r["window"]
        r["all_cpu_per_image"] = w["all"] / w["images"]
    single.pop("embeddings")
    return runs


def main() -> None:
    from bench.scaleout_plan import measure_plan, write_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="120 images (not 1,200), a smaller index")
    args = ap.parse_args()
    n = 120 if args.quick else 1200
    WORK.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    folder = make_folder(n)
    tree = ProcessTree(WORK / "tree.log")
    try:
        runs = run_configs(folder, tree)
    finally:
        tree.close()
    plan = measure_plan(folder, WORK, quick=args.quick)
    write_report(args, n, runs, plan, load0, time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
