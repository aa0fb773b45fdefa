"""Label-free ways to adapt pretrained embeddings to a collection, on bench.pretrained's cache.

Works on the EfficientNet-Lite0 GeM embeddings that `python -m bench.pretrained` caches in
bench-out/pretrained/<protocol>-full-224.npz (run that first). Labels are used for scoring only.

    python scripts/label_free_heads.py neighbours cifar10      # kNN purity of the embedding
    python scripts/label_free_heads.py kmeans cifar10 10 20 50  # cluster purity, cluster search
    python scripts/label_free_heads.py neighbour-head cifar10 --positives 10 50
    python scripts/label_free_heads.py pseudo caltech101 --clusters 100

- neighbours: share of each database image's k nearest neighbours with its class.
- kmeans: spherical KMeans with K clusters; purity (share of the majority class per cluster),
  and mAP of the classic design (search inside the query's cluster).
- neighbour-head: an MLP head (1280 -> 1024 -> 128) trained with a symmetric InfoNCE loss in
  which an image's positive is one of its `positives` nearest neighbours (batch 1024,
  temperature 0.1, 2,000 Adam steps at 1e-3); scored on the head's output.
- pseudo: `imgret finetune --pseudo-labels K`'s head (triplet loss on KMeans clusters, lr 1e-4)
  with semi-hard mining, 16 per cluster and with batch-hard mining, 4 per cluster; scored
  alone and re-ranked (DBA + alpha-QE, `--rerank`).

Each command's output is kept in bench/results/label_free_heads.json and rendered into
bench/results/label_free_heads.md (a section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import run_log
import torch
import torch.nn.functional as F
from run_log import say  # scripts/run_log.py
from torch import nn

from imgret.core.vectors import normalize
from imgret.evaluation.evaluate import evaluate_embeddings, rerank_split
from imgret.retrieval.rerank import RerankConfig
from imgret.training.finetune import PSEUDO_LABEL_LR, FinetuneConfig, finetune_head, pseudo_labels

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench-out" / "pretrained"


HEADER = [
    "## Label-free adaptations of the pretrained embeddings, tried "
    "(scripts/label_free_heads.py)",
    "",
    "EfficientNet-Lite0 GeM embeddings at 224 px as cached by `python -m bench.pretrained`; "
    "labels used only for scoring. What each command printed:",
]  # fmt: skip


def save(command: str, seconds: float, threads: int) -> None:
    """Keep this command's output (its last run) and render bench/results/label_free_heads.md."""
    run_log.save("label_free_heads", HEADER, command, seconds, threads)


def load(name: str) -> dict[str, np.ndarray]:
    """GeM embeddings (unit-norm) and labels of a protocol's queries and database."""
    path = CACHE / f"{name}-full-224.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m bench.pretrained` first")
    z = np.load(path)
    half = z["net_db"].shape[1] // 2  # the cache holds [avg | GeM]
    return {
        "q": normalize(z["net_q"][:, half:]), "db": normalize(z["net_db"][:, half:]),
        "ql": z["net_q_labels"], "dbl": z["net_db_labels"],
    }  # fmt: skip


def score(data: dict, q: np.ndarray, db: np.ndarray, **rank_args) -> str:
    """The protocol's figures (mAP@1000 for cifar10, mAP@all for caltech101, P@10)."""
    cifar = len(data["db"]) > 20_000
    overall, _, _ = evaluate_embeddings(
        q, list(data["ql"]), db, list(data["dbl"]), map_ks=(1000,) if cifar else (), ks=(10,),
        with_all=not cifar, **rank_args,
    )  # fmt: skip
    keys = ("mAP@1000" if cifar else "mAP@all", "P@10")
    return ", ".join(f"{k} {overall[k]:.3f}" for k in keys)


def knn(db: np.ndarray, k: int) -> np.ndarray:
    """(n, k) ids of each row's k nearest other rows (cosine)."""
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    _, ids = index.search(db, k + 1)
    return ids[:, 1:]


def neighbours(data: dict, ks: list[int]) -> None:
    ids = knn(data["db"], max(ks))
    same = data["dbl"][ids] == data["dbl"][:, None]
    for k in ks:
        say(f"{k:3d} nearest neighbours: {same[:, :k].mean():.3f} of the same class")


def kmeans(data: dict, ks: list[int]) -> None:
    db, q = data["db"], data["q"]
    classes, y = np.unique(data["dbl"], return_inverse=True)
    say(f"exact search: {score(data, q, db)}")
    for k in ks:
        km = faiss.Kmeans(db.shape[1], k, niter=30, seed=0, spherical=True)
        km.train(db)
        assign = km.index.search(db, 1)[1][:, 0]
        counts = np.zeros((k, len(classes)))
        np.add.at(counts, (assign, y), 1)
        purity = counts.max(1).sum() / len(db)
        cluster = score(data, q, db, assignments=assign, centroids=normalize(km.centroids))
        say(f"K = {k:3d}: purity {purity:.3f}; search inside the query's cluster: {cluster}")


class Head(nn.Module):
    """(B, dim) -> (B, out) unit-norm."""

    def __init__(self, dim: int, hidden: int = 1024, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def neighbour_head(data: dict, positives: list[int], steps: int = 2000, batch: int = 1024) -> None:
    ids = torch.from_numpy(knn(data["db"], max(positives)))
    x, xq = torch.from_numpy(data["db"]), torch.from_numpy(data["q"])
    say(f"GeM: {score(data, data['q'], data['db'])}")
    for k in positives:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        head = Head(x.shape[1])
        opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-5)
        target = torch.arange(batch)
        for _ in range(steps):
            i = torch.randint(0, len(x), (batch,), generator=gen)
            j = ids[i, torch.randint(0, k, (batch,), generator=gen)]
            logits = head(x[i]) @ head(x[j]).T / 0.1
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            hq, hdb = head(xq).numpy(), head(x).numpy()
        took = time.perf_counter() - t0
        say(f"head, positive among the {k} nearest: {score(data, hq, hdb)} ({took:.0f} s)")


def pseudo(data: dict, clusters: int) -> None:
    labels = pseudo_labels(data["db"], clusters, seed=0)
    for mining, per_class in (("semi-hard", 16), ("batch-hard", 4)):
        cfg = FinetuneConfig(mining=mining, per_class=per_class, lr=PSEUDO_LABEL_LR)
        head, _ = finetune_head(data["db"], labels, cfg)
        with torch.inference_mode():
            hq, hdb = head(torch.from_numpy(data["q"])).numpy(), head(torch.from_numpy(data["db"]))
        hdb = hdb.numpy()
        reranked = score(data, *rerank_split(hq, hdb, RerankConfig()))
        say(
            f"K = {clusters}, {mining}, {per_class} per cluster: head {score(data, hq, hdb)}; "
            f"+ rerank {reranked}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("neighbours", "kmeans", "neighbour-head", "pseudo"):
        s = sub.add_parser(cmd)
        s.add_argument("protocol", choices=("cifar10", "caltech101"))
        if cmd == "neighbours":
            s.add_argument("ks", type=int, nargs="*", default=[1, 5, 10, 20])
        if cmd == "kmeans":
            s.add_argument("ks", type=int, nargs="*", default=[10, 20, 50])
        if cmd == "neighbour-head":
            s.add_argument("--positives", type=int, nargs="*", default=[10, 50])
        if cmd == "pseudo":
            s.add_argument("--clusters", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    data = load(a.protocol)
    t0 = time.perf_counter()
    if a.cmd == "neighbours":
        neighbours(data, a.ks)
    elif a.cmd == "kmeans":
        kmeans(data, a.ks)
    elif a.cmd == "neighbour-head":
        neighbour_head(data, a.positives)
    else:
        pseudo(data, a.clusters)
    command = "python scripts/label_free_heads.py " + shlex.join(sys.argv[1:])
    save(command, time.perf_counter() - t0, a.threads)


if __name__ == "__main__":
    main()
