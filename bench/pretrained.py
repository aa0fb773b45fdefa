"""Pretrained EfficientNet-Lite0 embeddings on `caltech101` and `cifar10`, with and without labels.

    python -m bench.pretrained                   # both protocols, in full
    python -m bench.pretrained --quick           # a seeded database sample (a few minutes)
    python -m bench.pretrained --only caltech101 --size 224

For each protocol of ../shared/BENCHMARKS.md the backbone embeds the database and the queries
once (average and GeM pooling of the same feature map, so both cost one pass) and the rows are
scored with exact cosine search:

- baselines: raw pixels, the backbone with average pooling, with GeM pooling (the default);
- label-free: PCA-whitening (fitted on the database), database-side augmentation (DBA) and
  alpha query expansion (alpha-QE) from imgret.rerank, and a triplet head trained on KMeans
  pseudo-labels of the database;
- a few labels: a triplet-loss head (imgret.finetune) trained on a seeded random 1 % and 10 %
  of the database with their labels, alone and followed by DBA + alpha-QE.

Embedding throughput is measured from the files on disk (decoding included); latency is one
query image file -> embedding -> top 10 of the database (p50 / p95). Embeddings are cached in
bench-out/pretrained/ so that a second run only re-scores. Writes bench/results/pretrained.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.quality import LATENCY_QUERIES, _latency, _query_files, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench-out" / "pretrained"
QUICK_DATABASE = {"caltech101": 3000, "cifar10": 5000}  # --quick: database images sampled
LABEL_FRACTIONS = (0.01, 0.10)
PSEUDO_CLUSTERS = {"caltech101": 100, "cifar10": 100}
SEED = 0


@dataclass
class Row:
    method: str
    labels: str  # how many labels it used
    figures: dict[str, float]
    seconds: float  # time of the step beyond embedding (fit, re-rank, fine-tune)
    note: str = ""


class BothPoolings(torch.nn.Module):
    """The backbone, pooled two ways in one pass: (B, 3, S, S) -> (B, 2 * 1280) = [avg | GeM]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        from imgret.models.pretrained import load_pretrained

        self.net = load_pretrained("efficientnet-lite0", image_size=size, pooling="gem")
        self.image_size, self.channels = size, 3
        self.embedding_dim = 2 * self.net.embedding_dim

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        from imgret.models.pretrained import pool_feature_map

        with torch.inference_mode():
            fm = self.net.feature_map(x)  # (B, 1280, S/32, S/32)
            avg = F.normalize(pool_feature_map(fm, "avg"), dim=1)
            gem = F.normalize(pool_feature_map(fm, "gem", 3.0), dim=1)
            return torch.cat([avg, gem], dim=1)


def _split(name: str, quick: bool) -> Any:
    from imgret.data.benchmarks import load_benchmark

    bench = load_benchmark(name)
    if quick:
        rng = np.random.default_rng(SEED)
        n = min(QUICK_DATABASE[name], len(bench.database))
        bench.database = bench.database.subset(np.sort(rng.permutation(len(bench.database))[:n]))
    return bench


def _embed(bench: Any, size: int, quick: bool, log: Any) -> dict[str, Any]:
    """Database and query embeddings of both poolings (cached), pixels, and throughput."""
    from imgret.models.embed import embed_source
    from imgret.models.pixels import PixelEmbedder

    cache = WORK / f"{bench.name}-{'quick' if quick else 'full'}-{size}.npz"
    if cache.exists():
        log(f"  embeddings from {cache}")
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    out: dict[str, Any] = {}
    for kind, embedder in (
        ("net", BothPoolings(size)),
        ("pixels", PixelEmbedder(bench.image_size, bench.channels)),
    ):
        for side, source in (("db", bench.database), ("q", bench.queries)):
            log(f"  embedding {len(source):,} {side} images ({kind})")
            t0 = time.perf_counter()
            res = embed_source(embedder, source, batch_size=64, workers=2, progress=True)
            seconds = time.perf_counter() - t0
            if res.failures:
                log(f"  skipped {len(res.failures)} undecodable images")
            out[f"{kind}_{side}"] = res.embeddings
            out[f"{kind}_{side}_labels"] = np.asarray(
                [str(source.labels[i]) for i in res.positions]
            )
            out[f"{kind}_{side}_images_per_s"] = np.float64(len(source) / seconds)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out


def _score(bench: Any, q: np.ndarray, ql: np.ndarray, db: np.ndarray, dbl: np.ndarray) -> dict:
    from imgret.evaluation.evaluate import protocol_scores

    return protocol_scores(bench, q, list(ql), db, list(dbl))


def _rerank(q: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `imgret evaluate --rerank` does: DBA of the database, then alpha-QE of the queries."""
    from imgret.evaluation.evaluate import rerank_split
    from imgret.retrieval.rerank import RerankConfig

    return rerank_split(q, db, RerankConfig())


def _head(
    x: np.ndarray, labels: list[str], apply_to: list[np.ndarray], lr: float | None = None
) -> list[np.ndarray]:
    from imgret.training.finetune import FinetuneConfig, finetune_head

    head, _ = finetune_head(x, labels, FinetuneConfig(lr=lr, seed=SEED))
    with torch.inference_mode():
        return [head(torch.from_numpy(np.ascontiguousarray(a))).numpy() for a in apply_to]


def run_bench(name: str, size: int, quick: bool, log: Any = print) -> dict[str, Any]:
    from imgret.core.vectors import normalize
    from imgret.models.embed import embed_files
    from imgret.models.registry import load as load_embedder
    from imgret.models.whitening import Whitening

    bench = _split(name, quick)
    log(f"[{name}] {len(bench.queries):,} queries, {len(bench.database):,} database images")
    e = _embed(bench, size, quick, log)
    dim = e["net_db"].shape[1] // 2
    ql, dbl = e["net_q_labels"], e["net_db_labels"]
    emb = {
        "avg": (e["net_q"][:, :dim], e["net_db"][:, :dim]),
        "gem": (e["net_q"][:, dim:], e["net_db"][:, dim:]),
    }
    rows: list[Row] = []

    def add(method: str, labels: str, q: np.ndarray, db: np.ndarray, t0: float, note: str = ""):
        seconds = time.perf_counter() - t0
        rows.append(Row(method, labels, _score(bench, q, ql, db, dbl), seconds, note))
        log(
            f"  {method} [{labels}]: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].figures.items())
        )

    t0 = time.perf_counter()
    rows.append(
        Row(
            "raw pixels",
            "none",
            _score(
                bench, e["pixels_q"], e["pixels_q_labels"], e["pixels_db"], e["pixels_db_labels"]
            ),
            time.perf_counter() - t0,
            f"{bench.image_size} px",
        )
    )
    q, db = emb["avg"]
    add("EfficientNet-Lite0, average pooling", "none", q, db, time.perf_counter())
    q, db = emb["gem"]
    add("EfficientNet-Lite0, GeM pooling (p = 3), the default", "none", q, db, time.perf_counter())
    t0 = time.perf_counter()
    whitening = Whitening(512).fit(db)  # what `imgret whiten --dim 512` fits
    add(
        "GeM + PCA-whitening to 512 (fitted on the database)",
        "none",
        whitening.apply(q),
        whitening.apply(db),
        t0,
    )
    t0 = time.perf_counter()
    from imgret.retrieval.rerank import database_augmentation, query_expansion

    add("GeM + alpha-QE (10 neighbours, alpha 3)", "none", query_expansion(q, db, 10, 3.0), db, t0)
    t0 = time.perf_counter()
    add("GeM + DBA (10 neighbours, alpha 3)", "none", q, database_augmentation(db, 10, 3.0), t0)
    t0 = time.perf_counter()
    add("average pooling + DBA + alpha-QE", "none", *_rerank(*emb["avg"]), t0)
    t0 = time.perf_counter()
    q_rr, db_rr = _rerank(q, db)
    add("GeM + DBA + alpha-QE (`--rerank`)", "none", q_rr, db_rr, t0)

    k = PSEUDO_CLUSTERS[name]
    t0 = time.perf_counter()
    from imgret.training.finetune import PSEUDO_LABEL_LR, pseudo_labels

    # the head of `imgret finetune --pseudo-labels K`, then re-ranked
    hq, hdb = _head(db, pseudo_labels(db, k, seed=SEED), [q, db], lr=PSEUDO_LABEL_LR)
    add(
        f"GeM + triplet head on KMeans pseudo-labels (K = {k}) + DBA + alpha-QE",
        "none",
        *_rerank(hq, hdb),
        t0,
    )

    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(db))
    for frac in LABEL_FRACTIONS:
        pick = order[: max(2, round(frac * len(db)))]
        n_classes = len(set(dbl[pick].tolist()))
        labels = f"{len(pick):,} ({frac:.0%} of the database, {n_classes} classes)"
        t0 = time.perf_counter()
        hq, hdb = _head(db[pick], dbl[pick].tolist(), [q, db])
        add("GeM + triplet head (semi-hard, margin 0.2)", labels, hq, hdb, t0)
        t0 = time.perf_counter()
        add("GeM + triplet head + DBA + alpha-QE", labels, *_rerank(hq, hdb), t0)

    embedder = load_embedder(f"efficientnet-lite0@{size}:gem")
    files = _query_files(bench)
    latency = _latency(lambda p: embed_files(embedder, p), files, normalize(db), {})
    return {
        "name": name,
        "size": size,
        "quick": quick,
        "rows": rows,
        "latency_ms": latency,
        "n_queries": len(q),
        "n_database": len(db),
        "images_per_s": float(e["net_db_images_per_s"]),
        "pixels_images_per_s": float(e["pixels_db_images_per_s"]),
    }


def render(results: list[dict[str, Any]], command: str, seconds: float, threads: int) -> str:
    lines = [
        "## Pretrained backbone and triplet fine-tuning (bench/pretrained.py)",
        "",
        f"Command: `{command}`; ran {seconds / 60:.0f} min on {machine()}. Torch threads: "
        f"{threads}. The machine is shared with other jobs, so times are wall-clock under load.",
        "",
        "Model `efficientnet-lite0@SIZE:gem` (ImageNet weights, input resized to SIZE x SIZE, "
        "GeM pooling of the last feature map, L2-normalised, 1280-d), exact cosine search. "
        "Label-free rows learn only from the database images; labelled rows use the labels of a "
        f"seeded random sample of the database (seed {SEED}). DBA / alpha-QE: "
        "`imgret.rerank` with 10 neighbours and alpha 3. Triplet head: `imgret.finetune` "
        "defaults (600 steps, semi-hard mining, 16 x 16 batches, margin 0.2, learning rate "
        "1e-3 when the labelled classes have a median of 20+ images, else 1e-4; 1e-4 on "
        "pseudo-labels) on the frozen GeM embeddings.",
    ]
    for r in results:
        metrics = list(r["rows"][0].figures)
        scope = (
            f"a seeded sample of {r['n_database']:,} database images (`--quick`)"
            if r["quick"]
            else f"the full protocol ({r['n_database']:,} database images)"
        )
        lines += [
            "",
            f"### `{r['name']}`, {r['size']} px",
            "",
            f"{r['n_queries']:,} queries against {scope}. Embedding throughput from the files "
            f"on disk: **{r['images_per_s']:.1f} images/s** for the backbone (both poolings in "
            f"one pass; raw pixels, the baseline of the same run: "
            f"{r['pixels_images_per_s']:,.0f} images/s). Single query (image file -> "
            f"embedding -> top 10 of the database, exact): p50 {r['latency_ms'][0]:.0f} ms, "
            f"p95 {r['latency_ms'][1]:.0f} ms over {LATENCY_QUERIES} queries.",
            "",
            "| method | labels used | " + " | ".join(metrics) + " | extra s |",
            "|---|---|" + "---|" * len(metrics) + "---|",
        ]
        best = {
            m: max(row.figures[m] for row in r["rows"] if row.labels == "none") for m in metrics
        }
        for row in r["rows"]:
            cells = []
            for m in metrics:
                v = f"{row.figures[m]:.3f}"
                cells.append(
                    f"**{v}**" if row.labels == "none" and row.figures[m] == best[m] else v
                )
            method = row.method + (f" ({row.note})" if row.note else "")
            lines.append(
                f"| {method} | {row.labels} | " + " | ".join(cells) + f" | {row.seconds:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a seeded sample of each database")
    p.add_argument(
        "--only",
        nargs="*",
        choices=("caltech101", "cifar10"),
        help="protocols to run (default: both)",
    )
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    command = (
        "python -m bench.pretrained"
        + (" --quick" if a.quick else "")
        + (f" --only {' '.join(a.only)}" if a.only else "")
        + (f" --size {a.size}" if a.size != 224 else "")
    )
    t0 = time.perf_counter()
    results = [run_bench(n, a.size, a.quick) for n in a.only or ("caltech101", "cifar10")]
    text = render(results, command, time.perf_counter() - t0, a.threads)
    from imgret.core.atomic import write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "pretrained.md", text)
    (WORK / "last.json").write_text(
        json.dumps([{**r, "rows": [row.__dict__ for row in r["rows"]]} for r in results], indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
