"""Web app under load: the new service against the old one, adding while searching, thin images.

    python -m bench.web            # 20 clients, 30 s per load phase
    python -m bench.web --quick    # 10 s per load phase

The collection: the first 1,000 images of each CIFAR-10 class in train/ (10,000), embedded with
the pretrained `efficientnet-lite0` (224 px, GeM, 1280-d), KMeans K = 10; built once in
bench-out/web-pretrained/ (about 7 min on 2 idle cores; run it under nice) and reused.

Phases, every server on 127.0.0.1 in its own process (`imgret serve --threads 1`), every
client (httpx, asyncio) in this process:

1. the old service (the code of commit 2eb900f, checked out with `git worktree add` into
   /tmp/web-old and run with PYTHONPATH there) on a copy of the same collection in its own
   format: 20 clients searching by id ("more like this", its default mode, exact);
2. the new service, the same requests (its default mode: the collection's FAISS index), its
   resident memory sampled while under load, beside the size of the embeddings on disk;
   1. and 2. run in turn, 3 rounds each (a third of the phase's time per round);
3. the new service, 20 clients alternating searches by upload and by id in every mode;
4. the new service with --allow-add: 100 CIFAR-10 test images added from the add page's API
   while 5 clients search by id; then each added image searched by upload (is it found first?);
5. the thin-image attack: a 1x100000 PNG posted 20 times at once (status, latency, memory).

Writes bench/results/web.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CIFAR = Path("/work/shared/datasets/cifar10")
WORK = ROOT / "bench-out" / "web-pretrained"
OLD_TREE = Path("/tmp/web-old")
OLD_COMMIT = "2eb900f"
RESULTS = ROOT / "bench" / "results" / "web.md"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")  # fmt: skip
PER_CLASS = 1000
MODEL = "efficientnet-lite0"
K = 10  # results per search
ROUNDS = 3  # searches by id: old and new service alternated, this many times each


# -- the collections ------------------------------------------------------------------------


def build_collection() -> Path:
    """The 10,000-image collection (embed with the pretrained model, cluster), made once."""
    coll_dir = WORK / "collection"
    if (coll_dir / "collection.json").exists():
        from imgret.store.opening import open_collection

        if len(open_collection(coll_dir)) == len(CLASSES) * PER_CLASS:
            return coll_dir
    import torch

    from imgret.data.sources import ImageSource
    from imgret.jobs.cluster import cluster
    from imgret.models.embed import embed_source
    from imgret.models.registry import describe, load
    from imgret.store.opening import create_collection

    torch.set_num_threads(2)
    keys, labels = [], []
    for cls in CLASSES:
        files = sorted((CIFAR / "train" / cls).glob("*.jpg"))[:PER_CLASS]
        keys += [str(p) for p in files]
        labels += [cls] * len(files)
    source = ImageSource("cifar10-train-10k", keys, labels, root=CIFAR / "train")
    print(f"embedding {len(keys):,} images with {MODEL} (minutes)", flush=True)
    embedder = load(MODEL)
    result = embed_source(embedder, source, batch_size=64, workers=1, progress=False)
    kept = source.subset(result.positions)
    WORK.mkdir(parents=True, exist_ok=True)
    create_collection(
        coll_dir, model=describe(MODEL, embedder), source=str(CIFAR / "train"), keys=kept.keys,
        labels=kept.labels, embeddings=result.embeddings, failures=result.failures,
    )  # fmt: skip
    cluster(coll_dir, k=10, seed=0, progress=False)
    return coll_dir


_OLD_CONVERT = """
import json, sys, numpy as np
from imgret.cluster import Clustering
from imgret.collection import Collection
from imgret.embed import describe_embedder, load_embedder
d = np.load(sys.argv[1]); meta = json.load(open(sys.argv[2]))
model = describe_embedder(meta["model"], load_embedder(meta["model"]))
coll = Collection.create(sys.argv[3], model=model, source=meta["source"], keys=meta["keys"],
                         labels=meta["labels"], embeddings=d["embeddings"])
coll.save_clustering(Clustering(int(d["k"]), d["centroids"], d["assignments"], float(d["inertia"])))
print(len(coll))
"""


def old_tree() -> Path:
    """The code of the old service, checked out once (git worktree)."""
    if not (OLD_TREE / "imgret" / "web" / "service.py").exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(OLD_TREE), OLD_COMMIT],
                       cwd=ROOT, check=True)  # fmt: skip
    return OLD_TREE


def old_collection(coll_dir: Path) -> Path:
    """The same embeddings, keys, labels and clusters, written by the old code in its format."""
    out = WORK / "collection-old"
    if (out / "collection.json").exists():
        return out
    from imgret.store.opening import open_collection

    coll = open_collection(coll_dir)
    c = coll.clustering
    assert c is not None
    arrays = WORK / "old-input.npz"
    np.savez(arrays, embeddings=coll.fetch(coll.rows), centroids=c.centroids,
             assignments=c.assignments, k=c.k, inertia=c.inertia)  # fmt: skip
    meta = WORK / "old-input.json"
    meta.write_text(json.dumps({"model": MODEL, "source": coll.info["source"],
                                "keys": coll.keys, "labels": coll.labels}))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(old_tree())}
    subprocess.run([sys.executable, "-c", _OLD_CONVERT, str(arrays), str(meta), str(out)],
                   env=env, cwd=old_tree(), check=True)  # fmt: skip
    return out


def embeddings_bytes(coll_dir: Path) -> int:
    files = list((coll_dir / "embeddings").glob("*.npy")) or [coll_dir / "embeddings.npy"]
    return sum(p.stat().st_size for p in files if p.exists())


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`imgret serve` in a subprocess (the old code when `old`), answering on 127.0.0.1."""

    def __init__(self, coll_dir: Path, *, old: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        cwd = ROOT
        if old:
            env["PYTHONPATH"] = str(old_tree())
            cwd = old_tree()
        cmd = [sys.executable, "-m", "imgret", "serve", str(coll_dir), "--port", str(self.port),
               "--threads", "1", *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env)
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imgret serve exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/api/info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("imgret serve did not answer within 300 s")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, int]:
        """Resident memory of the server process, bytes: total, anonymous, file-backed."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) * 1024
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MemoryPeak:
    """The highest resident memory of a server while the block runs (sampled every 0.2 s);
    with `kill_above` (bytes), the server is killed when its resident memory passes it."""

    def __init__(self, server: Server, kill_above: int | None = None) -> None:
        self.server = server
        self.peak: dict[str, int] = {}
        self.kill_above = kill_above
        self.killed = False
        self._stop = threading.Event()

    def __enter__(self) -> MemoryPeak:
        def sample() -> None:
            while not self._stop.is_set() and self.server.proc.poll() is None:
                with contextlib.suppress(OSError):  # the process may have just ended
                    for name, value in self.server.memory().items():
                        self.peak[name] = max(self.peak.get(name, 0), value)
                if self.kill_above and self.peak.get("VmRSS", 0) > self.kill_above:
                    self.server.proc.kill()  # before it takes the machine's memory
                    self.killed = True
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- load -----------------------------------------------------------------------------------


Queries = list[tuple[str, bytes]]


def query_images(split: str = "test", per_class: int = 10, skip: int = 0) -> Queries:
    """(name, bytes) of CIFAR-10 images: `per_class` of each class, after the first `skip`."""
    out = []
    for cls in CLASSES:
        for p in sorted((CIFAR / split / cls).glob("*.jpg"))[skip : skip + per_class]:
            out.append((f"{cls}-{p.name}", p.read_bytes()))
    return out


class RawGet:
    """A keep-alive HTTP/1.1 connection for GET requests, with next to no client-side work.

    The clients share the CPU with the server; httpx spends about 5 ms of it per request
    (measured here), which would leave the server waiting for requests it could batch."""

    def __init__(self, base: str) -> None:
        self.host, self.port = base.removeprefix("http://").rsplit(":", 1)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))  # fmt: skip
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_clients(
    base: str, clients: int, seconds: float, queries: list[tuple[str, bytes]], n_items: int,
    kinds: tuple[str, ...], modes: tuple[str | None, ...], stop: asyncio.Event | None = None,
) -> dict:  # fmt: skip
    """`clients` loops for `seconds` (or until `stop`); each cycles through kinds and modes.

    A search by id is a GET on a RawGet connection of its own, a search by upload an httpx
    POST (multipart); both count as errors unless answered 200 with K hits."""
    import httpx

    records: list[tuple[str, float, bool]] = []  # kind, ms, ok
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(ci: int, http: httpx.AsyncClient) -> None:
        rng = np.random.default_rng(ci)
        raw = RawGet(base)
        i = 0
        while time.perf_counter() < end and not (stop is not None and stop.is_set()):
            kind = kinds[i % len(kinds)]
            mode = modes[(i // len(kinds)) % len(modes)]
            i += 1
            # not re-ranked: as the old service searches (the default re-ranks, since issue 13)
            params = {"k": K, "rerank": "false", **({"mode": mode} if mode else {})}
            t0 = time.perf_counter()
            try:
                if kind == "upload":
                    name, data = queries[int(rng.integers(len(queries)))]
                    r = await http.post("/api/search", files={"file": (name, data, "image/jpeg")},
                                        data={k: str(v) for k, v in params.items()})  # fmt: skip
                    ok = r.status_code == 200 and len(r.json()["hits"]) == K
                else:
                    query = "&".join(f"{k}={v}" for k, v in params.items())
                    item = int(rng.integers(n_items))
                    status, body = await raw.get(f"/api/search/{item}?{query}")
                    ok = status == 200 and body.count(b'"rank":') == K
            except (httpx.HTTPError, ValueError, KeyError, OSError, asyncio.IncompleteReadError):
                ok = False
                raw.close()
                raw = RawGet(base)
            records.append((kind, (time.perf_counter() - t0) * 1000, ok))
        raw.close()

    t_start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        await asyncio.gather(*(client(ci, http) for ci in range(clients)))
    return {"records": records, "seconds": time.perf_counter() - t_start}


def merged(runs: list[dict]) -> dict:
    """Several load runs of one server as one: their records, seconds and server CPU."""
    return {"records": [r for run in runs for r in run["records"]],
            "seconds": sum(run["seconds"] for run in runs),
            "server_cpu": sum(run["server_cpu"] for run in runs),
            "client_cpu": sum(run["client_cpu"] for run in runs)}  # fmt: skip


def summarize(run: dict, kind: str | None = None) -> dict:
    recs = [r for r in run["records"] if kind is None or r[0] == kind]
    ok = [r[1] for r in recs if r[2]]
    cpu = run.get("server_cpu") if kind is None else None
    client = run.get("client_cpu") if kind is None else None
    return {
        "cpu_ms": 1000 * cpu / max(1, len(recs)) if cpu is not None else None,
        "client_ms": 1000 * client / max(1, len(recs)) if client is not None else None,
        "server_cores": cpu / run["seconds"] if cpu is not None else None,
        "requests": len(recs),
        "rate": len(recs) / run["seconds"],
        "p50": float(np.percentile(ok, 50)) if ok else 0.0,
        "p95": float(np.percentile(ok, 95)) if ok else 0.0,
        "errors": sum(not r[2] for r in recs),
    }


# -- adding while searching -----------------------------------------------------------------


async def add_while_searching(server: Server, n_items: int, images: Queries) -> dict:
    """Add `images` through the add page's API while 5 clients search by id; then look for
    each added image by uploading it."""
    import httpx

    stop = asyncio.Event()
    searching = asyncio.create_task(
        run_clients(server.base, 5, 3600, [], n_items, ("item",), (None,), stop=stop)
    )
    await asyncio.sleep(2)
    async with httpx.AsyncClient(base_url=server.base, timeout=600) as http:
        t0 = time.perf_counter()
        files = [("files", (name, data, "image/jpeg")) for name, data in images]
        job = (await http.post("/api/add/files", files=files)).json()
        progress = []
        while job["state"] not in ("done", "failed"):
            await asyncio.sleep(0.5)
            job = (await http.get(f"/api/jobs/{job['id']}")).json()
            progress.append(job["done"])
        seconds = time.perf_counter() - t0
        await asyncio.sleep(1)
        stop.set()
        search = await searching
        found = 0
        for name, data in images:
            r = await http.post("/api/search", files={"file": (name, data, "image/jpeg")},
                                data={"k": "1", "rerank": "false"})  # fmt: skip
            hit = r.json()["hits"][0] if r.status_code == 200 else {}
            found += hit.get("name", "").endswith(name.replace(" ", "_")) and hit["score"] > 0.999
    return {"job": job, "seconds": seconds, "progress_steps": len(set(progress)),
            "search": summarize(search), "found": found}  # fmt: skip


# -- the thin-image attack ------------------------------------------------------------------


def thin_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    raw = b"".join(b"\x00" + bytes(width) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))  # fmt: skip


THIN_KILL_BYTES = 6 << 30  # a server past 6 GiB resident under the attack is killed


async def thin_attack(server: Server, n: int = 20) -> dict:
    import httpx

    data = thin_png(1, 100_000)
    before = server.memory()["VmRSS"]
    with MemoryPeak(server, kill_above=THIN_KILL_BYTES) as mem:
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as http:

            async def one() -> tuple[int | str, float]:
                t0 = time.perf_counter()
                try:
                    upload = {"file": ("thin.png", data, "image/png")}
                    r = await http.post("/api/search", files=upload)
                except httpx.HTTPError:
                    return "no answer", time.perf_counter() - t0
                return r.status_code, time.perf_counter() - t0

            answers = await asyncio.gather(*(one() for _ in range(n)))
    return {"bytes": len(data), "statuses": sorted({str(s) for s, _ in answers}),
            "max_s": max(t for _, t in answers), "killed": mem.killed,
            "rss_growth": mem.peak["VmRSS"] - before}  # fmt: skip


def thin_before_after() -> None:
    """The thin-image attack on the old service (2eb900f) and on the new one, printed."""
    coll_dir = build_collection()
    for name, server in (("old service (2eb900f)", lambda: Server(old_collection(coll_dir),
                                                                    old=True)),
                         ("new service", lambda: Server(coll_dir))):  # fmt: skip
        s = server()
        try:
            print(f"{name}: {_thin_line(asyncio.run(thin_attack(s)))}", flush=True)
        finally:
            s.stop()


def _thin_line(thin: dict) -> str:
    killed = (f" (killed by the benchmark when it passed {THIN_KILL_BYTES >> 30} GiB resident)"
              if thin.get("killed") else "")  # fmt: skip
    return (f"a 1x100000 PNG ({thin['bytes']} bytes) posted 20 times at once: answers "
            f"{', '.join(map(str, thin['statuses']))}, the slowest in {thin['max_s']:.2f} s, "
            f"resident memory +{thin['rss_growth'] / 2**20:,.0f} MiB{killed}")  # fmt: skip


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 s per load phase instead of 30 s")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (default: 20)")
    ap.add_argument("--thin-only", action="store_true",
                    help="only the thin-image attack, old service and new (printed)")  # fmt: skip
    args = ap.parse_args()
    if args.thin_only:
        thin_before_after()
        return
    seconds = 10.0 if args.quick else 30.0
    load_before = os.getloadavg()[0]
    coll_dir = build_collection()
    old_dir = old_collection(coll_dir)
    from imgret.store.opening import open_collection

    n_items = len(open_collection(coll_dir))
    queries = query_images()
    out: dict = {"seconds": seconds, "clients": args.clients, "n_items": n_items,
                 "load_before": load_before,
                 "embeddings_bytes": embeddings_bytes(coll_dir)}  # fmt: skip

    def load(server: Server, kinds: tuple[str, ...], modes: tuple[str | None, ...],
             duration: float = seconds) -> dict:  # fmt: skip
        cpu, mine = server.cpu_seconds(), time.process_time()
        run = asyncio.run(run_clients(server.base, args.clients, duration, queries, n_items,
                                      kinds, modes))  # fmt: skip
        run["server_cpu"] = server.cpu_seconds() - cpu
        run["client_cpu"] = time.process_time() - mine
        return run

    print(f"1. and 2. searches by id, old service and new in turn, {ROUNDS} rounds", flush=True)
    old, new = Server(old_dir, old=True), Server(coll_dir)
    try:
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        with MemoryPeak(old) as old_mem, MemoryPeak(new) as new_mem:
            for _ in range(ROUNDS):  # alternated: both see the same spells of other jobs
                for who, server in (("old", old), ("new", new)):
                    runs[who].append(load(server, ("item",), (None,), seconds / ROUNDS))
        for who in ("old", "new"):
            out[f"{who}_id"] = summarize(merged(runs[who]))
            out[f"{who}_rounds"] = [summarize(r)["rate"] for r in runs[who]]
        out["old_memory"], out["new_memory"] = old_mem.peak, new_mem.peak
        out["old_thin"] = asyncio.run(thin_attack(old))
    finally:
        old.stop()
    print("3. the new service, every kind of search", flush=True)
    try:
        mixed = load(new, ("upload", "item"), ("index", "exact", "cluster"))
        out["mixed"] = {k or "all": summarize(mixed, k) for k in (None, "upload", "item")}
        print("5. thin images", flush=True)
        out["thin"] = asyncio.run(thin_attack(new))
    finally:
        new.stop()
    print("4. adding 100 images while 5 clients search", flush=True)
    copy = WORK / "collection-add"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(coll_dir, copy, ignore=shutil.ignore_patterns("thumbs", ".readers", "uploads"))
    allowed = WORK / "allowed"
    allowed.mkdir(exist_ok=True)
    adder = Server(copy, extra=("--allow-add", str(allowed)))
    try:
        images = query_images(per_class=10, skip=100)  # not among the search queries
        out["add"] = asyncio.run(add_while_searching(adder, n_items, images))
        out["add"]["count"] = len(images)
    finally:
        adder.stop()
    write_report(args, out)


def write_report(args: argparse.Namespace, out: dict) -> None:
    import torch

    from imgret.core.prescan import prescan_pays

    mib = 1024 * 1024
    cmd = "python -m bench.web" + (" --quick" if args.quick else "")
    ratio = out["new_id"]["rate"] / max(out["old_id"]["rate"], 1e-9)
    cpu_ratio = out["old_id"]["cpu_ms"] / max(out["new_id"]["cpu_ms"], 1e-9)
    rows = [("old service (2eb900f)", "by id (exact: its default)", out["old_id"]),
            ("new service", "by id (index: its default)", out["new_id"]),
            ("new service", "by upload and by id, index/exact/cluster", out["mixed"]["all"]),
            ("new service", "of which by upload", out["mixed"]["upload"]),
            ("new service", "of which by id", out["mixed"]["item"])]  # fmt: skip
    add, thin = out["add"], out["thin"]
    lines = [
        "## Web app under load (`imgret serve`)",
        "",
        f"Command: `{cmd}` (part of `make bench`). Collection: {out['n_items']:,} CIFAR-10 train "
        f"images (the first 1,000 of each class) embedded with the pretrained `{MODEL}` (224 px, "
        "GeM, 1280-d), KMeans K = 10; embeddings on disk: "
        f"{out['embeddings_bytes'] / mib:.1f} MiB. Each server (`imgret serve --threads 1`) runs "
        "in its own process on 127.0.0.1; the clients (httpx, asyncio) run in the benchmark "
        f"process on the same machine, {out['clients']} at once for {out['seconds']:.0f} s per "
        f"row, the first two rows in {ROUNDS} alternated rounds (searches by id on keep-alive "
        "connections with a minimal HTTP client, so that the clients leave the CPU to the "
        f"servers: {out['old_id']['client_ms']:.2f} and {out['new_id']['client_ms']:.2f} ms of "
        f"the benchmark's CPU a request in the first two rows; uploads with httpx); k = {K}, "
        "not re-ranked (`rerank=false`, as the old service: the default re-ranks for a "
        "pretrained model since issue 13); a request counts as an error unless it answers "
        f"200 with {K} hits. The "
        f"old service is the code of commit {OLD_COMMIT} (`git worktree add {OLD_TREE} "
        f"{OLD_COMMIT}`, run with PYTHONPATH there), serving the same embeddings, clusters and "
        "index written by its own code, in the same run.",
        "",
        f"Machine: {os.cpu_count()} CPUs shared with other jobs (1-minute load average "
        f"{out['load_before']:.1f} at the start), torch {torch.__version__}.",
        "",
        "| service | searches | count | requests/s | p50 ms | p95 ms | errors | server CPU "
        "ms per request (cores used) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for who, what, s in rows:
        cpu = f"{s['cpu_ms']:.2f} ({s['server_cores']:.2f})" if s.get("cpu_ms") else "-"
        lines.append(f"| {who} | {what} | {s['requests']:,} | {s['rate']:.1f} | {s['p50']:.1f} | "
                     f"{s['p95']:.1f} | {s['errors']} | {cpu} |")  # fmt: skip
    om, nm = out["old_memory"], out["new_memory"]
    prescan_note = (f"; the anonymous part holds the pre-scan's bfloat16 copy of them "
                    f"({out['embeddings_bytes'] / 2 / mib:.1f} MiB; this CPU has AMX)"
                    if prescan_pays() else "")  # fmt: skip
    lines += [
        "",
        f"Searches by id: the new service answered {ratio:.2f}x the requests/s of the old one "
        f"(target: 2x), with {cpu_ratio:.2f}x less server CPU time per request; by round "
        f"(each {out['seconds'] / ROUNDS:.0f} s, old then new): "
        + ", ".join(f"{n / o:.2f}x" for o, n in zip(out["old_rounds"], out["new_rounds"],
                                                    strict=True))  # fmt: skip
        + ". Both servers get "
        "the share of the CPU the machine's other jobs leave them (the last column: the cores "
        "they used), so requests/s follows that share; CPU time per request does not. "
        "Resident memory of the server under that load (peak): old "
        f"{om['VmRSS'] / mib:.0f} MiB (anonymous {om.get('RssAnon', 0) / mib:.0f}), new "
        f"{nm['VmRSS'] / mib:.0f} MiB (anonymous {nm.get('RssAnon', 0) / mib:.0f}, file-backed "
        f"{nm.get('RssFile', 0) / mib:.0f}: the memory-mapped chunks and the libraries), beside "
        f"{out['embeddings_bytes'] / mib:.1f} MiB of embeddings on disk{prescan_note}.",
        "",
        f"Adding {add['count']} images (CIFAR-10 test JPEGs, uploaded to `/api/add/files` of "
        "`imgret serve --allow-add`) while 5 clients searched by id: the job took "
        f"{add['seconds']:.1f} s (state {add['job']['state']}, "
        f"{add['job']['report'].get('added', 0)} added, progress seen at "
        f"{add['progress_steps']} different counts); the searches: "
        f"{add['search']['requests']:,} requests, {add['search']['errors']} failed, p95 "
        f"{add['search']['p95']:.0f} ms. Afterwards {add['found']} of {add['count']} added images "
        "were the first result of a search by their own file (score > 0.999).",
        "",
        f"Thin-image attack, new service: {_thin_line(thin)}; the old service (2eb900f): "
        f"{_thin_line(out['old_thin'])}.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(RESULTS)
    (WORK / "web.json").write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
