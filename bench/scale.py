"""Search at scale: FAISS index kinds on 1,000,000 embeddings, the cluster mode's cost, latency.

    python -m bench.scale            # 1,000,000 x 512 (about 20-40 minutes on 2 cores)
    python -m bench.scale --quick    # 100,000 x 512

Data (the recipe of ../shared/BENCHMARKS.md, with this project's own model): a small
autoencoder (32 px, 512-d) is trained on 10,000 images of the CIFAR-10 database and embeds the
59,000 database images and the 1,000 query images of the `cifar10` protocol (cached in
bench-out/scale/). Scale set: the database embeddings, PCA to 512 (fitted on them), repeated
with Gaussian noise (sd = 0.1 x their overall std) up to N, L2-normalised; queries: the 1,000
query embeddings through the same PCA, L2-normalised. Recall@10 is measured against exact
inner-product search; queries/s for the 1,000 queries in one batch (best of 2 runs).

Writes bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/faiss load OpenMP

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CIFAR = Path("/work/shared/datasets/cifar10")
WORK = ROOT / "bench-out" / "scale"
RESULT = ROOT / "bench" / "results" / "scale.md"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SEED = 0


def cifar_split() -> tuple[list[str], list[str]]:
    """(database paths, query paths): the `cifar10` protocol of ../shared/BENCHMARKS.md."""
    database, queries = [], []
    for cls in CLASSES:
        database += sorted(str(p) for p in (CIFAR / "train" / cls).glob("*.jpg"))
        test = sorted(str(p) for p in (CIFAR / "test" / cls).glob("*.jpg"))
        queries += test[:100]
        database += test[100:]
    return database, queries


def prepare(log: list[str], train_images: int = 10_000, epochs: int = 3) -> Path:
    """Train the autoencoder and embed database and queries, unless cached -> the model folder."""
    import torch

    from imgret.data.sources import ImageSource
    from imgret.models.config import ModelConfig
    from imgret.models.embed import embed_source
    from imgret.training.config import TrainConfig
    from imgret.training.trainer import train_autoencoder

    WORK.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    database, queries = cifar_split()
    model_dir = WORK / "model"
    if not (model_dir / "model.safetensors").exists():
        rng = np.random.default_rng(SEED)
        pick = np.sort(rng.choice(len(database), train_images, replace=False))
        src = ImageSource("cifar10-sample", [database[i] for i in pick], [None] * len(pick))
        t0 = time.perf_counter()
        train_autoencoder(
            src, ModelConfig(image_size=32, channels=3, embedding_dim=512, width=32),
            TrainConfig(objective="reconstruction", epochs=epochs, seed=SEED, workers=2),
            model_dir, device="cpu", progress=False, log=lambda s: None,
        )  # fmt: skip
        log.append(f"trained the autoencoder in {time.perf_counter() - t0:.0f} s")
    else:
        log.append(f"autoencoder reused from {model_dir.relative_to(ROOT)}")
    from imgret.models.autoencoder import load_model

    model, _ = load_model(model_dir)
    for name, paths in (("queries", queries), ("database", database)):
        out = WORK / f"{name}.npy"
        if out.exists():
            continue
        src = ImageSource(name, paths, [None] * len(paths))
        t0 = time.perf_counter()
        res = embed_source(model, src, batch_size=256, workers=2, progress=False)
        if len(res.positions) != len(paths):
            raise SystemExit(f"could not decode {res.failures[:3]}")
        seconds = time.perf_counter() - t0
        log.append(f"embedded {len(paths):,} {name} images in {seconds:.0f} s")
        np.save(out, res.embeddings)
    return model_dir


def scale_set(n: int, bases: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 512) database and (1000, 512) queries, unit-norm float32 (see the module doc)."""
    from sklearn.decomposition import PCA

    base = np.load(WORK / "database.npy")[:bases]
    pca = PCA(512, random_state=SEED).fit(base)
    b = pca.transform(base).astype(np.float32)
    q = pca.transform(np.load(WORK / "queries.npy")).astype(np.float32)
    sd = np.float32(0.1 * b.std())
    rng = np.random.default_rng(SEED)
    x = np.empty((n, b.shape[1]), dtype=np.float32)
    for s in range(0, n, len(b)):
        e = min(n, s + len(b))
        x[s:e] = b[: e - s] + sd * rng.standard_normal((e - s, b.shape[1]), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in pairs]))


def best_rate(fn, n: int, runs: int = 2) -> tuple[float, object]:  # noqa: ANN001
    """(queries/s of the fastest of `runs` calls of fn(), its result)."""
    best, out = 0.0, None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best, out


def exact(x: np.ndarray, q: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    """(queries/s, ids) of exact inner-product search with a FAISS flat index."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    rate, (_, ids) = best_rate(lambda index=index: index.search(q, k), len(q))  # type: ignore[misc]
    index.reset()  # free its copy of x
    return rate, ids


def ann_table(x: np.ndarray, q: np.ndarray, truth: np.ndarray, kinds: dict) -> list[list[str]]:
    """Build each index kind with imgret.store.index_files (as a collection does), search it."""
    from imgret.retrieval.faiss_search import search_index
    from imgret.store.index_files import (
        RERANKED,
        IndexSettings,
        LoadedIndex,
        build_index,
        index_memory_bytes,
        plan_index,
        plan_to_meta,
    )  # fmt: skip

    rows = np.arange(len(x), dtype=np.int64)
    out = []
    for kind, variants in kinds.items():
        settings = IndexSettings(kind=kind, seed=SEED)
        plan = plan_index(kind, len(x), x.shape[1], settings)
        t0 = time.perf_counter()
        index = build_index(plan, rows, lambda r: x[r], dim=x.shape[1], settings=settings)
        build = time.perf_counter() - t0
        mem = index_memory_bytes(index) / 2**20
        loaded = LoadedIndex(index, rows, plan_to_meta(plan, metric="cosine", dim=x.shape[1],
                                                       trained_on=len(x)))  # fmt: skip
        for params in variants:
            s = IndexSettings(kind=kind, seed=SEED, **params)
            rate, (_, found) = best_rate(  # type: ignore[misc]
                lambda s=s, ix=loaded: search_index(ix, q, 10, fetch=lambda r: x[r], settings=s),
                len(q),
            )
            if kind in RERANKED:
                params = {"refine": s.refine, **params}
            shown = ", ".join(f"{k} {v}" for k, v in params.items())
            extra = " + embeddings for re-ranking" if kind in RERANKED else ""
            recall = recall_at(found, truth)
            out.append([kind, f"`{plan.factory}`", shown or "-", f"{build:.0f} s",
                        f"{mem:,.0f} MiB{extra}", f"{rate:,.0f}", f"{recall:.3f}"])  # fmt: skip
            print(" | ".join(out[-1]), flush=True)
        index.reset()
    return out


def cluster_table(x: np.ndarray, q: np.ndarray, truth: np.ndarray, flat_rate: float) -> tuple:
    """The classic design: K from the elbow (as `imgret cluster`), IVF over those centroids."""
    from imgret.core.clustering import Clustering, elbow_curve, fit_kmeans
    from imgret.core.vectors import nearest_centroids
    from imgret.retrieval.faiss_search import cluster_index, search_cluster_index

    rng = np.random.default_rng(SEED)
    sample = x[np.sort(rng.choice(len(x), min(len(x), 100_000), replace=False))]
    t0 = time.perf_counter()
    k = elbow_curve(sample, range(2, 21), seed=SEED, progress=False).chosen_k
    fit: Clustering = fit_kmeans(sample, k, seed=SEED)
    assign = np.concatenate([
        nearest_centroids(x[s : s + 65536], fit.centroids, 1)[:, 0]
        for s in range(0, len(x), 65536)
    ])  # fmt: skip
    index = cluster_index(fit.centroids, x, assign)
    seconds = time.perf_counter() - t0
    sizes = np.bincount(assign, minlength=k)
    rows = []
    for nprobe in (1, 2, 4, 8):
        # nprobe >= K scans every cluster: exhaustive, shown so the table has every setting
        probe = min(nprobe, k)
        rate, (_, found, _) = best_rate(  # type: ignore[misc]
            lambda p=probe, ix=index: search_cluster_index(ix, fit.centroids, q, 10, p),
            len(q),
            runs=1,  # slow: whole clusters are scanned
        )
        label = str(nprobe) if nprobe <= k else f"{nprobe} (= all {k} clusters)"
        rows.append([label, f"{rate:,.0f}", f"{rate / flat_rate:.1f}x",
                     f"{recall_at(found, truth):.3f}"])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    del index
    return k, sizes, seconds, rows


def latency(model_dir: Path, n: int, queries: int = 200) -> list[list[str]]:
    """Single queries, image file -> ranked results, on an n-image collection on disk."""
    import tempfile

    import torch

    from imgret.models.embed import embed_files
    from imgret.models.registry import describe as describe_embedder
    from imgret.models.registry import load as load_embedder
    from imgret.retrieval.results import results_for
    from imgret.retrieval.searcher import Searcher
    from imgret.store.opening import create_collection, open_collection

    base = np.load(WORK / "database.npy")  # autoencoder space: queries embed alike
    rng = np.random.default_rng(SEED)
    reps = -(-n // len(base))
    sd = np.float32(0.1 * base.std())
    copies = [base] + [base + sd * rng.standard_normal(base.shape, dtype=np.float32)
                       for _ in range(reps - 1)]  # fmt: skip
    emb = np.concatenate(copies)[:n]
    keys = [f"synthetic/{i:07d}.jpg" for i in range(n)]
    embedder = load_embedder(model_dir)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        t0 = time.perf_counter()
        coll = create_collection(
            Path(tmp) / "coll", model=describe_embedder(model_dir, embedder), source="synthetic",
            keys=keys, labels=[None] * n, embeddings=emb,
        )  # fmt: skip
        build = time.perf_counter() - t0
        del emb
        coll = open_collection(coll.path)
        files = cifar_split()[1][:queries]
        rows = []
        for mode in ("exact", "index"):
            searcher = Searcher(coll)
            searcher.search(embed_files(embedder, files[:1]), 10, mode=mode)  # warm up
            embed_ms, total_ms = [], []
            for f in files:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    qv = embed_files(embedder, [f])
                t1 = time.perf_counter()
                scores, ids, clusters = searcher.search(qv, 10, mode=mode)
                results_for(coll, [f], scores, ids, clusters)
                t2 = time.perf_counter()
                embed_ms.append((t1 - t0) * 1e3)
                total_ms.append((t2 - t0) * 1e3)
            kind = coll.index.meta["factory"] if mode == "index" and coll.index else "brute force"
            p50, p95 = np.percentile(total_ms, 50), np.percentile(total_ms, 95)
            rows.append([mode, kind, f"{np.percentile(embed_ms, 50):.1f}", f"{p50:.1f}",
                         f"{p95:.1f}"])  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    rows.append(["(collection written and indexed in)", f"{build:.0f} s", "", "", ""])
    return rows


def reindex(model_dir: Path, folder: Path) -> list[list[str]]:
    """`imgret index` of a real folder, then again unchanged (a subprocess each: peak memory)."""
    out_dir = WORK / f"reindex-{folder.name}"
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    # A wrapper process whose only child is `imgret index`: its RUSAGE_CHILDREN peak is the
    # largest process of that run (imgret or one of its decoding workers).
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(r.returncode)")  # fmt: skip
    cmd = [sys.executable, "-c", wrapper, sys.executable, "-m", "imgret", "index", str(folder),
           "--out", str(out_dir), "--model", str(model_dir)]  # fmt: skip
    rows = []
    for what in ("first run", "again, unchanged"):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if done.returncode:
            raise SystemExit(done.stderr)
        peak_kib = int(done.stderr.strip().splitlines()[-1])
        summary = done.stdout.strip().splitlines()[0]
        rows.append([what, f"{seconds:.1f} s", f"{peak_kib / 2**10:,.0f} MiB", summary])
        print(" | ".join(rows[-1]), flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 embeddings, fewer settings")
    args = parser.parse_args()
    import faiss
    import torch

    from imgret.store.index_files import set_threads

    set_threads()
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    notes: list[str] = []
    model_dir = prepare(notes)
    n = 100_000 if args.quick else 1_000_000
    bases = 5_900 if args.quick else 59_000  # either way ~17 noisy copies of each
    t0 = time.perf_counter()
    x, q = scale_set(n, bases)
    notes.append(f"scale set of {n:,} made in {time.perf_counter() - t0:.0f} s")
    flat_rate, truth = exact(x, q)
    print(f"exact: {flat_rate:.0f} q/s", flush=True)
    kinds: dict = {
        "ivfsq": [{"nprobe": 32}, {"nprobe": 48}, {"nprobe": 64}, {"nprobe": 96}],
        "ivf": [{"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}],
        "ivfpq": [{"nprobe": 64}, {"nprobe": 64, "refine": 20}, {"nprobe": 128, "refine": 40}],
        "hnsw": [
            {"ef_search": 64},
            {"ef_search": 128},
            {"ef_search": 160},
            {"ef_search": 192},
            {"ef_search": 256},
        ],  # fmt: skip
    }
    if args.quick:
        kinds = {kind: variants[:2] for kind, variants in kinds.items()}
    ann = ann_table(x, q, truth, kinds)
    flat_again, _ = exact(x, q)
    k, sizes, cluster_seconds, clusters = cluster_table(x, q, truth, (flat_rate + flat_again) / 2)
    del x
    lat = latency(model_dir, 100_000)
    folder = CIFAR / "test" / ("cat" if args.quick else "")
    re_rows = reindex(model_dir, folder if args.quick else CIFAR / "test")

    cmd = "python -m bench.scale" + (" --quick" if args.quick else "")
    minutes = (time.perf_counter() - t_start) / 60
    machine = (
        f"{platform.machine()} {platform.processor()}".strip()
        + f", {os.cpu_count()} CPUs shared with other jobs (1-minute load average {load0:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} OpenMP threads, OMP_WAIT_POLICY=PASSIVE)"
    )
    text = f"""## Search at scale (`bench/scale.py`)

Command: `{cmd}` (part of `make bench`; {minutes:.0f} minutes).
Machine: {machine}. {"; ".join(notes)}.

Data: a small autoencoder (32 px, 512-d, 3 epochs on 10,000 CIFAR-10 database images)
embeds the `cifar10` protocol's database and its 1,000 queries; scale set: {bases:,} database
embeddings, PCA to 512, repeated with Gaussian noise (sd = 0.1 x overall std) to {n:,},
L2-normalised; inner product. Recall@10 against exact search; queries/s for the 1,000 queries
in one batch, best of 2 runs; build = training + adding, on the same cores.

### Index kinds on {n:,} x 512 embeddings

Exact search (FAISS flat, the baseline): **{flat_rate:,.0f} queries/s** at the start,
{flat_again:,.0f} after the index runs. Every index below was built by
`imgret.store.index_files.build_index` (what a collection uses; ids = rows) and searched by
`imgret.retrieval.faiss_search.search_index`; ivfsq and
ivfpq candidates are re-ranked with the exact embeddings (held in memory here; a collection reads
them memory-mapped from its chunks). Memory: the FAISS index as serialized.

{
        table(
            [
                "kind",
                "FAISS factory",
                "search setting",
                "build",
                "memory",
                "queries/s",
                "recall@10",
            ],
            ann,
        )
    }

### The classic design: search inside the query's KMeans cluster

K = {k} from the elbow of the KMeans inertia curve (K = 2..20 on 3,000 embeddings, as
`imgret cluster` does), KMeans fitted on 100,000 embeddings and every embedding assigned to its
nearest centroid (cluster sizes {sizes.min():,} to {sizes.max():,}); the search is an
IVF-Flat over those {k} centroids (`imgret.retrieval.faiss_search.cluster_index`, built in
{cluster_seconds:.0f} s with the clustering); nprobe = clusters searched; one run each.
Speed-up against the exact baseline (the mean of its two runs), which uses BLAS matrix products
over the whole batch while IVF scans each query's lists one by one.

{table(["nprobe", "queries/s", "vs exact", "recall@10"], clusters)}

### Single-query latency, image file to ranked results, 100,000-image collection

A collection written with `create_collection` (autoencoder embeddings of the 59,000 database
images plus noisy copies up to 100,000; index kind `auto`), loaded from disk; then for each of
200 CIFAR-10 query JPEGs, one at a time: decode, resize, autoencoder forward pass
(`embed_files`), `Searcher.search` (k = 10), `results_for`. The model and collection are
loaded once, as a server would. Milliseconds.

{table(["mode", "index", "decode + embed p50", "total p50", "total p95"], lat)}

### Re-indexing a folder: `imgret index`

`imgret index {folder if args.quick else CIFAR / "test"} --out ... --model <the autoencoder>`,
run as a subprocess twice: the first run embeds every image (decoding from disk included), the
second finds nothing changed. Peak memory: the largest resident set of any process of that run.

{table(["run", "wall time", "peak memory", "imgret's summary"], re_rows)}
"""
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text, encoding="utf-8")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
