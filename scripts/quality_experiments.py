"""Label-free training variants on the quality benchmarks, logged for bench/quality.py.

Each `run` trains one variant with imgret.train (database images only, no labels), embeds the
benchmark's queries and database, scores mAP@1000 / P@10 (exact cosine search, imgret.evaluate)
and appends a row -- with the exact command that produced it -- to
bench/results/quality_experiments.json. Post-hoc variants of the same model (PCA-whitening to
several sizes) are scored and logged too.

    python scripts/quality_experiments.py run fashion-mnist simclr-w32 --objective contrastive \\
        --epochs 10 --pool avg --projection-dim 128

Decoded benchmark images are cached as uint8 arrays under /tmp/imgret_quality.
Uses torch.set_num_threads(1) by default: on the shared 2-core machine, 2 threads ran 3x slower
(OpenMP threads waiting on each other while other jobs hold the cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from imgret.core.atomic import read_json, write_json
from imgret.data.benchmarks import load_benchmark
from imgret.data.loader import decode_all
from imgret.data.sources import ImageSource
from imgret.evaluation.evaluate import evaluate_embeddings
from imgret.models.config import ModelConfig
from imgret.models.whitening import whitening_matrix as fit_whitening
from imgret.training.config import TrainConfig
from imgret.training.trainer import train_autoencoder

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/imgret_quality")
LOG = ROOT / "bench" / "results" / "quality_experiments.json"


def cached_split(name: str) -> dict[str, np.ndarray]:
    """Benchmark images as uint8 (n, C, S, S) arrays + labels, decoded once into CACHE."""
    path = CACHE / f"{name}.npz"
    if path.exists():
        return dict(np.load(path))
    bench = load_benchmark(name)
    out: dict[str, np.ndarray] = {}
    for side, src in (("db", bench.database), ("q", bench.queries)):
        images, kept, failures = decode_all(src, bench.image_size, bench.channels, workers=2)
        assert not failures, failures[:3]
        out[f"{side}_x"] = images.numpy()
        out[f"{side}_y"] = np.asarray([src.labels[i] for i in kept])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


@torch.inference_mode()
def encode(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """(n, C, S, S) uint8 -> (n, config.embedding_dim) float32, before whitening."""
    model.eval()
    chunks = []
    for start in range(0, len(x), 1024):
        batch = torch.from_numpy(x[start : start + 1024]).float().div_(255.0)
        chunks.append(model.encode(batch).float().numpy())
    return np.concatenate(chunks)


def score(q: np.ndarray, data: dict, db: np.ndarray) -> dict[str, float]:
    overall, _, _ = evaluate_embeddings(
        q, list(data["q_y"]), db, list(data["db_y"]), map_ks=(1000,), ks=(10,), with_all=False
    )
    return {"mAP@1000": overall["mAP@1000"], "P@10": overall["P@10"]}


def log_row(row: dict) -> None:
    rows = read_json(LOG) if LOG.exists() else []
    rows = [r for r in rows if not (r["bench"] == row["bench"] and r["name"] == row["name"])]
    write_json(LOG, rows + [row])
    print(json.dumps(row))


def run(a: argparse.Namespace, command: str) -> None:
    torch.set_num_threads(a.threads)
    data = cached_split(a.bench)
    db_x = data["db_x"]
    if a.train_limit:
        db_x = db_x[np.random.default_rng(0).permutation(len(db_x))[: a.train_limit]]
    train_x = db_x.transpose(0, 2, 3, 1)  # (n, S, S, C) as ImageSource arrays
    src = ImageSource(
        f"{a.bench}:database", [f"mem://{i}" for i in range(len(train_x))], [None] * len(train_x),
        arrays=train_x[..., 0] if train_x.shape[-1] == 1 else train_x,
    )  # fmt: skip
    size, channels = db_x.shape[2], db_x.shape[1]
    mc = ModelConfig(
        image_size=size, channels=channels, embedding_dim=a.embedding_dim, width=a.width,
        decoder="none" if a.objective == "contrastive" else "transpose", pool=a.pool,
        projection_dim=a.projection_dim if a.objective == "contrastive" else 0,
    )  # fmt: skip
    tc = TrainConfig(
        epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
        patience=a.epochs, seed=a.seed, workers=0, objective=a.objective, augment=a.augment,
        temperature=a.temperature, mask_ratio=a.mask_ratio, schedule=a.schedule,
    )  # fmt: skip
    out = CACHE / "models" / a.bench / a.name
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = train_autoencoder(src, mc, tc, out, progress=False, log=print)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    q, db = encode(res.model, data["q_x"]), encode(res.model, data["db_x"])
    base = {
        "bench": a.bench, "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1), "epochs": len(res.history),
        "best_epoch": res.best_epoch, "settings": {"model": vars(mc), "train": vars(tc)},
        "machine": f"{platform.processor() or platform.machine()}, {a.threads} torch threads",
        "command": command,
    }  # fmt: skip
    log_row({**base, "name": a.name, "variant": "embedding", **score(q, data, db)})
    for dim in a.whiten:
        mean, matrix = fit_whitening(db, dim)
        variant = {"variant": f"PCA-whitening to {dim}"}
        log_row({**base, "name": f"{a.name}+white{dim}", **variant,
                 **score((q - mean) @ matrix, data, (db - mean) @ matrix)})  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _knn(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours of each row of unit-norm z among all rows (itself included, first)."""
    ids = np.empty((len(z), k), np.int64)
    sims = np.empty((len(z), k), np.float32)
    for s in range(0, len(z), 1000):
        sc = z[s : s + 1000] @ z.T
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        ps = np.take_along_axis(sc, part, 1)
        order = np.argsort(-ps, 1)
        ids[s : s + 1000] = np.take_along_axis(part, order, 1)
        sims[s : s + 1000] = np.take_along_axis(ps, order, 1)
    return ids, sims


def pixels(a: argparse.Namespace, command: str) -> None:
    """PCA (and partial whitening) of unit-norm pixels; database-side augmentation + alpha-QE."""
    data = cached_split(a.bench)
    x = _unit(data["db_x"].reshape(len(data["db_x"]), -1).astype(np.float32) / 255)
    q = _unit(data["q_x"].reshape(len(data["q_x"]), -1).astype(np.float32) / 255)
    mean = x.mean(0)
    sample = x[:: max(1, len(x) // 20_000)] - mean
    vals, vecs = np.linalg.eigh(sample.T @ sample / len(sample))
    top = np.argsort(vals)[::-1]
    base = {"bench": a.bench, "train_seconds": 0.0, "epochs": 0, "best_epoch": 0,
            "settings": {}, "machine": platform.processor() or platform.machine(),
            "command": command}  # fmt: skip
    for dim, power in ((64, 0.0), (96, 0.0), (96, 0.25), (96, 0.5)):
        proj = vecs[:, top[:dim]] / (vals[top[:dim]] ** (power / 2))[None]
        name = f"unit-pixels-pca{dim}" + (f"-white{power}" if power else "")
        note = f"PCA-{dim} of L2-normalised pixels" + (
            f", eigenvalues^-{power / 2:g} (partial whitening)" if power else ""
        )
        log_row({**base, "name": name, "variant": note,
                 **score((q - mean) @ proj, data, (x - mean) @ proj)})  # fmt: skip
    proj = vecs[:, top[:96]]
    z, zq = _unit((x - mean) @ proj), _unit((q - mean) @ proj)
    ids, sims = _knn(z, 10)
    for k in (5, 10):
        db = _unit(z[ids[:, :k]].sum(1))  # database-side augmentation: mean of the top k
        sc = zq @ db.T
        top_q = np.argsort(-sc, 1)[:, :10]
        w = np.maximum(np.take_along_axis(sc, top_q, 1), 0) ** 3
        qe = _unit(zq + (db[top_q] * w[..., None]).sum(1))  # alpha-query expansion, alpha 3
        log_row({**base, "name": f"unit-pixels-pca96+dba{k}", "variant":
                 f"PCA-96 unit pixels + database-side augmentation (top {k})",
                 **score(zq, data, db)})  # fmt: skip
        log_row({**base, "name": f"unit-pixels-pca96+dba{k}+aqe10", "variant":
                 "the same + alpha-query expansion (top 10, alpha 3)",
                 **score(qe, data, db)})  # fmt: skip


def knn_mlp(a: argparse.Namespace, command: str) -> None:
    """An MLP on pixels trained with NT-Xent where positives are pixel-space nearest neighbours."""
    torch.set_num_threads(a.threads)
    data = cached_split(a.bench)
    x = data["db_x"].reshape(len(data["db_x"]), -1).astype(np.float32) / 255
    q = data["q_x"].reshape(len(data["q_x"]), -1).astype(np.float32) / 255
    t0, cpu0 = time.perf_counter(), time.process_time()
    xn = _unit(x)
    mean = xn.mean(0)
    sample = xn[:: max(1, len(x) // 20_000)] - mean
    vals, vecs = np.linalg.eigh(sample.T @ sample / len(sample))
    ids, _ = _knn(_unit((xn - mean) @ vecs[:, np.argsort(vals)[::-1][:96]]), 11)
    nbr = torch.from_numpy(ids[:, 1:])  # without itself
    gen = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    dim = x.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(dim, 1024), torch.nn.BatchNorm1d(1024),
                              torch.nn.ReLU(), torch.nn.Linear(1024, 512))  # fmt: skip
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 128))  # fmt: skip
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], 1e-3)
    xt = torch.from_numpy(x)
    from imgret.training.losses import nt_xent

    for _ in range(a.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - 511, 512):
            i = perm[s : s + 512]
            j = nbr[i, torch.randint(0, nbr.shape[1], (len(i),), generator=gen)]
            loss = nt_xent(head(net(xt[i])), head(net(xt[j])), a.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    net.eval()
    with torch.no_grad():
        db, qe = net(xt).numpy(), net(torch.from_numpy(q)).numpy()
    log_row({"bench": a.bench, "name": f"knn-positive-mlp-e{a.epochs}", "variant":
             "MLP 1024-512 on pixels, NT-Xent with a pixel-space top-10 neighbour as positive",
             "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
             "epochs": a.epochs, "best_epoch": a.epochs, "settings": {},
             "machine": f"{platform.processor() or platform.machine()}, {a.threads} torch threads",
             "command": command, **score(qe, data, db)})  # fmt: skip


def rerank(a: argparse.Namespace, command: str) -> None:
    """An already trained model (`imgret train` output) scored plain and with `--rerank`."""
    from imgret.evaluation.evaluate import rerank_split
    from imgret.models.registry import load as load_embedder
    from imgret.retrieval.rerank import RerankConfig

    torch.set_num_threads(a.threads)
    data = cached_split(a.bench)
    model = load_embedder(a.model)

    @torch.inference_mode()
    def embed(x: np.ndarray) -> np.ndarray:
        return np.concatenate([
            model.embed_batch(torch.from_numpy(x[s : s + 1024]).float().div_(255.0)).numpy()
            for s in range(0, len(x), 1024)
        ])  # fmt: skip

    q, db = embed(data["q_x"]), embed(data["db_x"])
    doc = read_json(Path(a.model) / "model.json")
    history = read_json(Path(a.model) / "history.json")
    base = {
        "bench": a.bench, "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "epochs": len(history), "best_epoch": doc.get("best_epoch", len(history)),
        "settings": {"model": doc["model"], "train": doc["train"]},
        "machine": f"{platform.processor() or platform.machine()}, {a.threads} torch threads",
        "command": command,
    }  # fmt: skip
    log_row({**base, "name": a.name, "variant": "embedding", **score(q, data, db)})
    rq, rdb = rerank_split(q, db, RerankConfig())
    log_row({**base, "name": f"{a.name}+rerank", "variant": "the same + `--rerank` (DBA 10 + "
             "alpha-QE 10, alpha 3)", **score(rq, data, rdb)})  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("bench")
    r.add_argument("name")
    r.add_argument("--objective", default="contrastive")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--schedule", default="cosine")
    r.add_argument("--embedding-dim", type=int, default=512)
    r.add_argument("--width", type=int, default=32)
    r.add_argument("--pool", default="avg")
    r.add_argument("--projection-dim", type=int, default=128)
    r.add_argument("--temperature", type=float, default=0.2)
    r.add_argument("--augment", default="auto")
    r.add_argument("--mask-ratio", type=float, default=0.5)
    r.add_argument("--whiten", type=int, nargs="*", default=[])
    r.add_argument("--train-limit", type=int, default=0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("cache")
    c.add_argument("bench")
    px = sub.add_parser("pixels")
    px.add_argument("bench")
    km = sub.add_parser("knn-mlp")
    km.add_argument("bench")
    km.add_argument("--epochs", type=int, default=6)
    km.add_argument("--temperature", type=float, default=0.2)
    km.add_argument("--seed", type=int, default=0)
    km.add_argument("--threads", type=int, default=1)
    rr = sub.add_parser("rerank")
    rr.add_argument("bench")
    rr.add_argument("name")
    rr.add_argument("model")
    rr.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    command = "python scripts/quality_experiments.py " + shlex.join(sys.argv[1:])
    if a.cmd == "cache":
        cached_split(a.bench)
    elif a.cmd == "pixels":
        pixels(a, command)
    elif a.cmd == "knn-mlp":
        knn_mlp(a, command)
    elif a.cmd == "rerank":
        rerank(a, command)
    else:
        run(a, command)


if __name__ == "__main__":
    main()
