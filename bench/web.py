"""Web app load check: 20 concurrent clients searching a 10,000-image collection over HTTP.

    python -m bench.web            # 20 clients for 30 s
    python -m bench.web --quick    # 20 clients for 10 s

The collection: the first 1,000 images of each CIFAR-10 class in train/ (10,000), a small
autoencoder (32 px, 128-d, width 16) trained 2 epochs on them, KMeans K = 10; built once in
bench-out/web/ and reused. Queries: the first 10 test/ images of each class (uploads) and
random collection ids ("more like this"). `imgret serve` runs in a subprocess on 127.0.0.1
with one torch thread per search; every request goes to 127.0.0.1 only.

Baselines measured in the same run: the same query work in-process through the library (no
HTTP), and one client at a time over HTTP. Writes bench/results/web.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CIFAR = Path("/work/shared/datasets/cifar10")
WORK = ROOT / "bench-out" / "web"
RESULTS = ROOT / "bench" / "results" / "web.md"
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
PER_CLASS = 1000
K = 10  # results per search


def build_collection(seed: int = 0) -> Path:
    """The 10,000-image collection (train, embed, cluster), made once in bench-out/web/."""
    coll_dir = WORK / "collection"
    if (coll_dir / "collection.json").exists():
        from imgret.store.opening import create_collection, open_collection

        if len(open_collection(coll_dir)) == len(CLASSES) * PER_CLASS:
            return coll_dir
    import torch

    from imgret.data.sources import ImageSource
    from imgret.jobs.cluster import cluster
    from imgret.models.config import ModelConfig
    from imgret.models.embed import embed_source
    from imgret.models.registry import describe as describe_embedder
    from imgret.models.registry import load as load_embedder
    from imgret.store.opening import create_collection, open_collection
    from imgret.training.config import TrainConfig
    from imgret.training.trainer import train_autoencoder

    torch.set_num_threads(2)
    keys, labels = [], []
    for cls in CLASSES:
        files = sorted((CIFAR / "train" / cls).glob("*.jpg"))[:PER_CLASS]
        keys += [str(p) for p in files]
        labels += [cls] * len(files)
    source = ImageSource("cifar10-train-10k", keys, labels, root=CIFAR / "train")
    model_dir = WORK / "model"
    if not (model_dir / "model.safetensors").exists():
        print(f"training a small autoencoder on {len(keys):,} CIFAR-10 images", flush=True)
        train_autoencoder(
            source,
            ModelConfig(image_size=32, channels=3, embedding_dim=128, width=16),
            TrainConfig(objective="reconstruction", epochs=2, seed=seed, workers=2),
            model_dir,
            device="cpu",
            progress=False,
            log=lambda s: None,
        )
    print("embedding", flush=True)
    embedder = load_embedder(model_dir)
    result = embed_source(embedder, source, batch_size=256, workers=2, progress=False)
    kept = source.subset(result.positions)
    create_collection(
        coll_dir,
        model=describe_embedder(model_dir, embedder),
        source=str(CIFAR / "train"),
        keys=kept.keys,
        labels=kept.labels,
        embeddings=result.embeddings,
        failures=result.failures,
    )
    print("clustering", flush=True)
    cluster(coll_dir, k=10, seed=seed, progress=False)
    return coll_dir


def query_images() -> list[tuple[str, bytes]]:
    """(name, bytes) of the first 10 test images of each class: the uploaded queries."""
    out = []
    for cls in CLASSES:
        for p in sorted((CIFAR / "test" / cls).glob("*.jpg"))[:10]:
            out.append((f"{cls}-{p.name}", p.read_bytes()))
    return out


def percentiles(ms: list[float]) -> tuple[float, float]:
    return (float(np.percentile(ms, 50)), float(np.percentile(ms, 95))) if ms else (0.0, 0.0)


def in_process_baseline(coll_dir: Path, queries: list[tuple[str, bytes]]) -> dict:
    """The server's work for an upload (check + decode, embed, rank) through the library, one
    query at a time, one torch thread."""
    import torch
    from threadpoolctl import threadpool_limits

    from imgret.models.embed import embed_images
    from imgret.models.registry import load as load_embedder
    from imgret.retrieval.searcher import Searcher
    from imgret.store.opening import open_collection
    from imgret.web.uploads import decode_upload

    torch.set_num_threads(1)  # as the server's --threads 1
    threadpool_limits(1, user_api="blas")
    coll = open_collection(coll_dir)
    embedder = load_embedder(coll.model["ref"])
    searcher = Searcher(coll)
    lat = []
    t_start = time.perf_counter()
    for i in range(200):
        _, data = queries[i % len(queries)]
        t0 = time.perf_counter()
        img = decode_upload(data, max_bytes=1 << 30, max_pixels=1 << 30)
        q = embed_images(embedder, [img])
        searcher.search(q, K, mode="exact" if i % 2 == 0 else "cluster")
        lat.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - t_start
    return {"requests": len(lat), "seconds": wall, "latencies": lat, "errors": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(coll_dir: Path, port: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "imgret",
        "serve",
        str(coll_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"imgret serve exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("imgret serve did not answer within 180 s")


async def run_clients(
    base: str,
    clients: int,
    seconds: float,
    queries: list[tuple[str, bytes]],
    n_items: int,
    kinds: tuple[str, ...] = ("upload", "item"),
) -> dict:
    """`clients` concurrent loops for `seconds`; each alternates the request kinds and modes."""
    import httpx

    records: list[tuple[str, float, bool, float | None]] = []  # kind, ms, ok, server took_ms
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(ci: int, http: httpx.AsyncClient) -> None:
        rng = np.random.default_rng(ci)
        i = 0
        while time.perf_counter() < stop:
            kind = kinds[i % len(kinds)]
            mode = "exact" if (i // len(kinds)) % 2 == 0 else "cluster"
            i += 1
            t0 = time.perf_counter()
            try:
                if kind == "upload":
                    name, data = queries[int(rng.integers(len(queries)))]
                    r = await http.post(
                        "/api/search",
                        files={"file": (name, data, "image/jpeg")},
                        data={"k": str(K), "mode": mode},
                    )
                else:
                    r = await http.get(
                        f"/api/search/{int(rng.integers(n_items))}", params={"k": K, "mode": mode}
                    )
                ok = r.status_code == 200
                took = r.json().get("took_ms") if ok else None
            except (httpx.HTTPError, ValueError):
                ok, took = False, None
            records.append((kind, (time.perf_counter() - t0) * 1000, ok, took))

    t_start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(ci, http) for ci in range(clients)))
    wall = time.perf_counter() - t_start
    return {"records": records, "seconds": wall}


def summarize(run: dict, kind: str | None = None) -> dict:
    recs = [r for r in run["records"] if kind is None or r[0] == kind]
    ok = [r[1] for r in recs if r[2]]
    took = [r[3] for r in recs if r[3] is not None]
    p50, p95 = percentiles(ok)
    return {
        "requests": len(recs),
        "rate": len(recs) / run["seconds"],
        "p50": p50,
        "p95": p95,
        "errors": sum(not r[2] for r in recs),
        "server_p50": percentiles(took)[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 s of load instead of 30 s")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (default: 20)")
    args = ap.parse_args()
    seconds = 10.0 if args.quick else 30.0
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    coll_dir = build_collection()
    from imgret.store.opening import open_collection

    n_items = len(open_collection(coll_dir))
    queries = query_images()
    print("in-process baseline", flush=True)
    base_run = in_process_baseline(coll_dir, queries)
    port = free_port()
    proc = start_server(coll_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        print("one client", flush=True)
        single = asyncio.run(
            run_clients(base, 1, min(10.0, seconds), queries, n_items, ("upload",))
        )
        print(f"{args.clients} clients for {seconds:.0f} s", flush=True)
        loaded = asyncio.run(run_clients(base, args.clients, seconds, queries, n_items))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    write_report(args, seconds, n_items, base_run, single, loaded, load_before)


def write_report(
    args: argparse.Namespace,
    seconds: float,
    n_items: int,
    base_run: dict,
    single: dict,
    loaded: dict,
    load_before: float,
) -> None:
    import torch

    b50, b95 = percentiles(base_run["latencies"])
    rows = [
        (
            "library in-process, no HTTP (baseline)",
            "1, sequential",
            "upload-equivalent: decode + embed + rank, exact/cluster alternating",
            base_run["requests"],
            base_run["requests"] / base_run["seconds"],
            b50,
            b95,
            0,
            None,
        ),
    ]

    def http_row(what: str, clients: str, kind: str, s: dict) -> tuple:
        figures = ("requests", "rate", "p50", "p95", "errors", "server_p50")
        return (what, clients, kind, *(s[f] for f in figures))

    rows.append(
        http_row("HTTP, one client (baseline)", "1", "search by upload, exact/cluster",
                 summarize(single))
    )  # fmt: skip
    for kind, what in (
        (None, "all requests"),
        ("upload", "search by upload"),
        ("item", "search by id (more like this)"),
    ):
        rows.append(
            http_row(f"HTTP, {args.clients} concurrent clients", str(args.clients), what,
                     summarize(loaded, kind))
        )  # fmt: skip
    errors = summarize(loaded)["errors"]
    cmd = "python -m bench.web" + (" --quick" if args.quick else "")
    lines = [
        "## Web app under load (`imgret serve`)",
        "",
        f"Command: `{cmd}` (part of `make bench`). Collection: {n_items:,} CIFAR-10 train "
        "images (the first 1,000 of each class), a small autoencoder (32 px, 128-d, width 16, "
        "2 epochs), KMeans K = 10. The server (`imgret serve --threads 1`, uvicorn, one torch "
        "thread per search) runs in a subprocess on 127.0.0.1; the clients (httpx, asyncio) "
        f"run in the benchmark process on the same machine, for {seconds:.0f} s; each client "
        "alternates a search by upload (a CIFAR-10 test JPEG, 100 different ones) and a search "
        f"by a random id, and exact and cluster mode; k = {K}. Latency: from sending the "
        'request to the parsed answer; "server": the time the server itself reports '
        "(`took_ms`: embedding and ranking, waiting for a free search slot included).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(shared with other jobs; 1-minute load average {load_before:.1f} at the start), "
        f"torch {torch.__version__}; {torch.get_num_threads()} torch and 1 BLAS thread per search "
        "in the baseline and in the server.",
        "",
        "| what | clients | request kind | count | requests/s | p50 ms | p95 ms | errors "
        "| server p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for what, clients, kind, count, rate, p50, p95, errs, server in rows:
        server_s = f"{server:.1f}" if server is not None else "-"
        lines.append(
            f"| {what} | {clients} | {kind} | {count:,} | {rate:.1f} | {p50:.1f} | "
            f"{p95:.1f} | {errs} | {server_s} |"
        )
    lines += [
        "",
        f"Errors under load: {errors} (target: none). The clients and the server share the "
        "same cores, so the throughput is a lower bound for a server with a machine to itself.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(RESULTS)
    print("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
