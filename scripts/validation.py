"""Choosing the settings of the pretrained path on VALIDATION queries (issue 13).

Works on the backbone embeddings that `python -m bench.embeddings DATASET NAME SIZE` caches
(every image of a dataset embedded once, both poolings), so that each setting costs a
re-scoring, not an embedding. Every figure printed is on `PROTOCOL:val` (the validation
queries of ../shared/BENCHMARKS.md against the protocol's database minus them) unless the
command says `--split`; test queries are never used here.

    python scripts/validation.py pooling caltech101                  # avg vs GeM, +/- re-ranking
    python scripts/validation.py rerank caltech101                   # DBA / alpha-QE grid
    python scripts/validation.py pseudo caltech101 --clusters 50 100 200 --lr 1e-4 1e-3
    python scripts/validation.py finetune-lr caltech101             # labelled heads, 1e-4 vs 1e-3
    python scripts/validation.py size caltech101 --sizes 160 192 224 256
    python scripts/validation.py backbones caltech101                # lite0/1/2 at their sizes
    python scripts/validation.py adapt caltech101 --neighbors 0 5 ... (see --help)
    python scripts/validation.py diffusion caltech101               # after DBA + alpha-QE
    python scripts/validation.py default-rerank fashion-mnist:val:small digits  # imgret evaluate,
                                                    # --no-rerank against its default
    python scripts/validation.py model-rerank fashion-mnist:val --model DIR  # any model: plain,
                                                    # --rerank, --rerank --diffusion N
    python scripts/validation.py cluster-epochs fashion-mnist:val --model DIR --source
        fashion-mnist:train --epochs 0 3 6   # the cluster epochs of `imgret train`

Each command's output is kept in bench/results/validation.json and rendered into
bench/results/validation.md (a section of BENCHMARKS.md), with the command that printed it.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_log  # noqa: E402
from run_log import say  # noqa: E402 - scripts/run_log.py

from bench.embeddings import cached_split  # noqa: E402
from imgret.data.benchmarks import load_benchmark  # noqa: E402
from imgret.evaluation.evaluate import protocol_scores, rerank_split  # noqa: E402
from imgret.retrieval.rerank import RerankConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NATIVE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


HEADER = [
    "## Settings chosen on validation queries (scripts/validation.py)",
    "",
    "Every figure here is on the validation queries (`PROTOCOL:val`: disjoint from the "
    "test queries, against the protocol's database minus them); the test queries were "
    "not used to choose anything (scikit-learn's digits, which has no split, is a check set "
    "in `default-rerank`). Backbone embeddings as cached by `python -m "
    "bench.embeddings`. What each command printed:",
]  # fmt: skip


def save(command: str, seconds: float, threads: int) -> None:
    """Keep this command's output (its last run) and render bench/results/validation.md."""
    run_log.save("validation", HEADER, command, seconds, threads)


class Split:
    """Cached embeddings of one benchmark split (bench.embeddings.cached_split): queries,
    database, their labels; `models` ({name: size}) several: side by side."""

    def __init__(self, protocol: str, models: dict[str, int], pooling: str, split: str) -> None:
        self.bench = load_benchmark(f"{protocol}:{split}" if split != "test" else protocol)
        c = cached_split(protocol, self.bench, models, pooling)
        self.q, self.ql, self.db, self.dbl = c.q, c.ql, c.db, c.dbl
        self.db_rows = c.db_rows  # rows of the dataset cache, for view caches in the same order
        self.images_per_s = c.images_per_s

    def score(
        self, q: np.ndarray | None = None, db: np.ndarray | None = None, **diffusion: int
    ) -> dict[str, float]:
        """The protocol's metrics; `diffusion`, `diffusion_candidates`: as evaluate_embeddings."""
        return protocol_scores(
            self.bench, self.q if q is None else q, list(self.ql),
            self.db if db is None else db, list(self.dbl), **diffusion,
        )  # fmt: skip

    def rerank(self, q: np.ndarray, db: np.ndarray, cfg: RerankConfig | None = None):  # noqa: ANN201
        return rerank_split(q, db, cfg or RerankConfig())


def models_of(a: argparse.Namespace) -> dict[str, int]:
    """{name: size} of --models (side by side) or --model, each at --size or its own side."""
    return {m: a.size or NATIVE[m] for m in (getattr(a, "models", None) or [a.model])}


def fmt(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in figures.items())


def cmd_pooling(a: argparse.Namespace) -> None:
    for pooling in ("avg", "gem"):
        s = Split(a.protocol, models_of(a), pooling, a.split)
        say(f"{a.model}@{a.size or NATIVE[a.model]}:{pooling}: {fmt(s.score())}; "
            f"+ rerank: {fmt(s.score(*s.rerank(s.q, s.db)))}")  # fmt: skip


def cmd_rerank(a: argparse.Namespace) -> None:
    """The grid of `imgret evaluate --rerank` settings (DBA computed once per DBA value)."""
    from imgret.retrieval.rerank import database_augmentation, exact_knn, query_expansion

    s = Split(a.protocol, models_of(a), a.pooling, a.split)
    say(f"no re-ranking: {fmt(s.score())}")
    for dba, alpha in itertools.product(a.dba, a.alpha):
        db = database_augmentation(s.db, dba, alpha)
        knn = exact_knn(db)
        for qe in a.qe:
            q = query_expansion(s.q, db, qe, alpha, knn=knn)
            say(f"DBA {dba:2d}, alpha-QE {qe:2d}, alpha {alpha:g}: {fmt(s.score(q, db))}")


def cmd_diffusion(a: argparse.Namespace) -> None:
    """Diffusion after the default DBA + alpha-QE: graph neighbours x candidates. With
    --models, of the models' embeddings side by side (each unit-norm, then the whole)."""
    s = Split(a.protocol, models_of(a), a.pooling, a.split)
    say(f"{' + '.join(models_of(a))}, no re-ranking: {fmt(s.score())}")
    q, db = s.rerank(s.q, s.db)
    say(f"DBA + alpha-QE (--rerank): {fmt(s.score(q, db))}")
    for n, c in itertools.product(a.neighbors, a.candidates):
        say(f"+ diffusion, {n} neighbours, top {c}: "
            f"{fmt(s.score(q, db, diffusion=n, diffusion_candidates=c))}")  # fmt: skip


def _head(x: np.ndarray, labels: list[str], apply: list[np.ndarray], **cfg: Any) -> list:
    from imgret.training.finetune import FinetuneConfig, finetune_head

    head, _ = finetune_head(x, labels, FinetuneConfig(seed=0, **cfg))
    with torch.inference_mode():
        return [head(torch.from_numpy(np.ascontiguousarray(v))).numpy() for v in apply]


def cmd_pseudo(a: argparse.Namespace) -> None:
    from imgret.training.finetune import pseudo_labels

    s = Split(a.protocol, models_of(a), a.pooling, a.split)
    say(f"base: {fmt(s.score())}; + rerank: {fmt(s.score(*s.rerank(s.q, s.db)))}")
    for k in a.clusters:
        labels = pseudo_labels(s.db, k, seed=0)
        for lr in a.lr:
            hq, hdb = _head(s.db, labels, [s.q, s.db], lr=lr)
            say(f"pseudo-labels K = {k}, lr {lr:g}: {fmt(s.score(hq, hdb))}; "
                f"+ rerank: {fmt(s.score(*s.rerank(hq, hdb)))}")  # fmt: skip


def cmd_finetune_lr(a: argparse.Namespace) -> None:
    s = Split(a.protocol, models_of(a), a.pooling, a.split)
    say(f"base: {fmt(s.score())}")
    order = np.random.default_rng(0).permutation(len(s.db))
    for frac in a.fractions:
        pick = order[: max(2, round(frac * len(s.db)))]
        labels = s.dbl[pick].tolist()
        per_class = np.median(np.unique(labels, return_counts=True)[1])
        for lr in a.lr:
            hq, hdb = _head(s.db[pick], labels, [s.q, s.db], lr=lr)
            reranked = fmt(s.score(*s.rerank(hq, hdb)))
            say(f"{frac:.0%} of the labels ({len(pick)}, median {per_class:g} per class), "
                f"lr {lr:g}: {fmt(s.score(hq, hdb))}; + rerank: {reranked}")  # fmt: skip


def cmd_size(a: argparse.Namespace) -> None:
    for size in a.sizes:
        s = Split(a.protocol, {a.model: size}, a.pooling, a.split)
        say(f"{a.model}@{size}:{a.pooling}: {fmt(s.score())}; + rerank: "
            f"{fmt(s.score(*s.rerank(s.q, s.db)))}")  # fmt: skip


def cmd_backbones(a: argparse.Namespace) -> None:
    for name in a.models:
        s = Split(a.protocol, {name: NATIVE[name]}, a.pooling, a.split)
        say(f"{name}@{NATIVE[name]}:{a.pooling}: {fmt(s.score())}; + rerank: "
            f"{fmt(s.score(*s.rerank(s.q, s.db)))}")  # fmt: skip


def cmd_adapt(a: argparse.Namespace) -> None:
    """Adaptation heads (imgret.training.adapt) on the database's cached views, one per grid
    point; the head never sees a query."""
    from dataclasses import replace

    from bench.embeddings import joined_views
    from imgret.training.adapt import AdaptConfig, neighbour_table, train_adapt_head

    models = models_of(a)
    s = Split(a.protocol, models, a.pooling, a.split)
    say(f"base {' + '.join(f'{m}@{size}' for m, size in models.items())}:{a.pooling}: "
        f"{fmt(s.score())}; + rerank: {fmt(s.score(*s.rerank(s.q, s.db)))}")  # fmt: skip
    if max(a.use_views) > 0:  # GeM views, side by side as the models are
        views = joined_views(a.protocol, list(models), a.view_size, a.views, s.db_rows)
    else:  # neighbours only: no view cache needed
        views = np.zeros((len(s.db), 0, s.db.shape[1]), np.float32)
    ok = ~np.isnan(views).any(axis=(1, 2))
    grid = itertools.product(a.neighbors, a.neighbor_p, a.temperature, a.steps, a.use_views)
    for k, p_nn, t, steps, v in grid:
        cfg = replace(AdaptConfig(), neighbors=k, neighbor_p=p_nn, temperature=t, steps=steps,
                      batch_size=a.batch_size, hidden=a.hidden, lr=a.lr)  # fmt: skip
        table = mutual_neighbours(neighbour_table(s.db[ok], k)) if a.mutual and k else None
        for r in range(a.rounds):  # rounds after the first: neighbours in the last head's space
            t0 = time.perf_counter()
            head, losses = train_adapt_head(s.db[ok], views[ok][:, :v], cfg, neighbours=table)
            took = time.perf_counter() - t0
            with torch.inference_mode():
                hq = head(torch.from_numpy(s.q)).numpy()
                hdb = head(torch.from_numpy(s.db)).numpy()
            if k > 0:
                table = neighbour_table(hdb[ok], k)
            say(f"views {v} @{a.view_size}, K {k}{' mutual' if a.mutual else ''}, p {p_nn:g}, "
                f"T {t:g}, {steps} steps"
                f"{f', round {r + 1}' if a.rounds > 1 else ''}, batch {a.batch_size}, hidden "
                f"{a.hidden}, lr {a.lr:g} ({took:.0f} s, loss {np.mean(losses[-50:]):.3f}): "
                f"{fmt(s.score(hq, hdb))}; + rerank: "
                f"{fmt(s.score(*s.rerank(hq, hdb)))}")  # fmt: skip
            for clusters in (c for c in a.cluster_head if c):
                _score_cluster_head(s, hq, hdb, clusters)


def _score_cluster_head(s: Split, q: np.ndarray, db: np.ndarray, clusters: int) -> None:
    """The cluster head of `imgret train` (imgret.training.finetune.fit_cluster_head) fitted on
    the database's (n, dim) embeddings `db` alone, then applied to `q` and `db`: scored."""
    from imgret.training.finetune import fit_cluster_head

    t0 = time.perf_counter()
    head, _ = fit_cluster_head(db, clusters, seed=0)
    with torch.inference_mode():
        cq, cdb = head(torch.from_numpy(q)).numpy(), head(torch.from_numpy(db)).numpy()
    say(f"  + cluster head K {clusters} ({time.perf_counter() - t0:.0f} s): "
        f"{fmt(s.score(cq, cdb))}; + rerank: {fmt(s.score(*s.rerank(cq, cdb)))}")  # fmt: skip


def mutual_neighbours(table: np.ndarray) -> np.ndarray:
    """(n, K) neighbour ids -> the same, each neighbour j of row i that does not have i among
    its own K replaced by i (a view of the image itself)."""
    own = np.arange(len(table))
    mutual = (table[table] == own[:, None, None]).any(axis=2)  # (n, K): i in table[j]
    say(f"mutual neighbours: {mutual.mean():.3f} of the table")
    return np.where(mutual, table, own[:, None])


def validation_sets(names: list[str]) -> list[str]:
    """`names` when each is a validation split (NAME:val...) or digits: never test queries."""
    for name in names:
        if ":val" not in name and name != "digits":
            raise SystemExit(f"{name}: validation splits (NAME:val...) or digits only")
    return names


def cmd_default_rerank(a: argparse.Namespace) -> None:
    """`imgret evaluate MODEL BENCHMARK --no-rerank` against `imgret evaluate MODEL BENCHMARK`
    (its default: re-ranked when MODEL is built on a pretrained backbone or trained on at least
    RERANK_TRAINED_IMAGES images), embedding in full;
    for benchmarks without cached embeddings (fashion-mnist, digits, the :val:small sets)."""
    from imgret.evaluation.evaluate import evaluate

    for bench in validation_sets(a.benchmarks):
        plain = evaluate(a.model, bench, rerank=None, progress=False, log=lambda s: None)
        default = evaluate(a.model, bench, progress=False, log=lambda s: None)
        how = "re-ranked" if "rerank" in default.settings else "not re-ranked"
        shown = [m for m in plain.overall if m.startswith("mAP") or m == "P@10"]
        say(f"{bench}, {a.model}: --no-rerank {fmt({m: plain.overall[m] for m in shown})}; "
            f"default ({how}) {fmt({m: default.overall[m] for m in shown})}")  # fmt: skip


def _embedded(name: str, ref: str) -> tuple[Any, Any]:
    """A model embeds a validation split once -> (EmbeddedSplit, score(q, db, diffusion=0))."""
    from imgret.evaluation.evaluate import embed_split, open_benchmark

    bench = open_benchmark(name)
    e = embed_split(ref, bench, progress=False)
    labels = list(e.query_labels), list(e.database_labels)

    def score(q: np.ndarray, db: np.ndarray, diffusion: int = 0) -> dict[str, float]:
        return protocol_scores(bench, q, labels[0], db, labels[1], exclude=e.exclude,
                               diffusion=diffusion)  # fmt: skip

    return e, score


def cmd_model_rerank(a: argparse.Namespace) -> None:
    """Any model (a trained folder too), embedded once: exact search, then `--rerank` for each
    --dba x --qe x --alpha (the defaults: imgret's), each also with `--diffusion N`."""
    for name in validation_sets(a.benchmarks):
        e, score = _embedded(name, a.model)
        say(f"{name}, {a.model}, {len(e.database):,} images: no re-ranking: "
            f"{fmt(score(e.queries, e.database))}")  # fmt: skip
        for dba, qe, alpha in itertools.product(a.dba, a.qe, a.alpha):
            cfg = RerankConfig(dba_neighbors=dba, qe_neighbors=qe, alpha=alpha)
            q, db = rerank_split(e.queries, e.database, cfg, exclude=e.exclude)
            for n in [0, *a.diffusion]:
                say(f"  --rerank --dba {dba} --qe {qe} --alpha {alpha:g}"
                    f"{f' --diffusion {n}' if n else ''}: {fmt(score(q, db, n))}")  # fmt: skip


def cmd_cluster_epochs(a: argparse.Namespace) -> None:
    """A contrastive model trained without a cluster head (--model) finished as `imgret train`
    finishes one (imgret.training.finish.finish_model) on its training images (--source: the
    validation database), with each --epochs of training on its own clusters (0: the cluster
    head alone); each scored on the validation split without and with re-ranking."""
    import tempfile
    from dataclasses import replace

    from imgret.data.benchmarks import open_training_source
    from imgret.data.loader import decode_all
    from imgret.models.autoencoder import ConvAutoencoder, load_model, save_model
    from imgret.training.config import TrainConfig, cluster_head_clusters
    from imgret.training.finish import finish_model

    (name,) = validation_sets([a.benchmark])
    base, doc = load_model(a.model)
    source = open_training_source(a.source)
    images = decode_all(source, base.image_size, base.channels, workers=2, progress=False)[0]
    k = a.clusters or cluster_head_clusters(len(images))
    say(f"{a.model} finished on {len(images):,} images of {a.source}, K {k}; scored on {name}")
    for epochs in a.epochs:
        model = ConvAutoencoder(replace(base.config, cluster_head=k))
        model.load_state_dict(base.state_dict(), strict=False)  # the head starts as identity
        cfg = TrainConfig(**{**doc["train"], "cluster_epochs": epochs})
        t0 = time.perf_counter()
        finish_model(model, images, cfg, progress=False, log=lambda s: None)
        seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, tmp)
            e, score = _embedded(name, tmp)
            q, db = rerank_split(e.queries, e.database, RerankConfig(), exclude=e.exclude)
            say(f"  --cluster-epochs {epochs} ({seconds:.0f} s): no re-ranking: "
                f"{fmt(score(e.queries, e.database))}; --rerank: {fmt(score(q, db))}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cmds = {"pooling": cmd_pooling, "rerank": cmd_rerank, "pseudo": cmd_pseudo,
            "finetune-lr": cmd_finetune_lr, "size": cmd_size, "backbones": cmd_backbones,
            "adapt": cmd_adapt, "diffusion": cmd_diffusion,
            "default-rerank": cmd_default_rerank, "model-rerank": cmd_model_rerank,
            "cluster-epochs": cmd_cluster_epochs}  # fmt: skip
    for name in cmds:
        s = sub.add_parser(name)
        if name == "cluster-epochs":
            s.add_argument("benchmark", help="e.g. fashion-mnist:val")
            s.add_argument("--model", required=True, help="contrastive, without a cluster head")
            s.add_argument("--source", required=True, help="its training images, e.g. "
                           "fashion-mnist:train")  # fmt: skip
            s.add_argument("--epochs", type=int, nargs="*", default=[0, 3])
            s.add_argument("--clusters", type=int, help="default: as imgret train picks them")
            continue
        if name in ("default-rerank", "model-rerank"):
            s.add_argument("benchmarks", nargs="+", help="e.g. fashion-mnist:val:small digits")
            s.add_argument("--model", default="efficientnet-lite0")
            if name == "model-rerank":
                d = RerankConfig()
                s.add_argument("--dba", type=int, nargs="*", default=[d.dba_neighbors])
                s.add_argument("--qe", type=int, nargs="*", default=[d.qe_neighbors])
                s.add_argument("--alpha", type=float, nargs="*", default=[d.alpha])
                s.add_argument("--diffusion", type=int, nargs="*", default=[])
            continue
        s.add_argument("protocol", choices=("cifar10", "caltech101"))
        s.add_argument("--model", default="efficientnet-lite0")
        s.add_argument("--size", type=int)
        s.add_argument("--pooling", default="gem")
        s.add_argument("--split", default="val", choices=("val", "val:small"))
        if name == "rerank":
            s.add_argument("--dba", type=int, nargs="*", default=[0, 5, 10, 20])
            s.add_argument("--qe", type=int, nargs="*", default=[0, 5, 10, 20])
            s.add_argument("--alpha", type=float, nargs="*", default=[3.0])
        if name == "pseudo":
            s.add_argument("--clusters", type=int, nargs="*", default=[100])
            s.add_argument("--lr", type=float, nargs="*", default=[1e-4, 1e-3])
        if name == "finetune-lr":
            s.add_argument("--fractions", type=float, nargs="*", default=[0.01, 0.1])
            s.add_argument("--lr", type=float, nargs="*", default=[1e-4, 1e-3])
        if name == "size":
            s.add_argument("--sizes", type=int, nargs="*", default=[160, 192, 224, 256])
        if name == "adapt":
            s.add_argument("--view-size", type=int, default=160)
            s.add_argument("--views", type=int, default=4, help="views cached per image")
            s.add_argument("--use-views", type=int, nargs="*", default=[4])
            s.add_argument("--neighbors", type=int, nargs="*", default=[5])
            s.add_argument("--neighbor-p", type=float, nargs="*", default=[0.5])
            s.add_argument("--temperature", type=float, nargs="*", default=[0.1])
            s.add_argument("--steps", type=int, nargs="*", default=[2000])
            s.add_argument("--batch-size", type=int, default=512)
            s.add_argument("--hidden", type=int, default=1024)
            s.add_argument("--lr", type=float, default=1e-3)
            s.add_argument("--rounds", type=int, default=1, help="retrain with neighbours "
                           "found by the last head (1: neighbours of the base only)")  # fmt: skip
            s.add_argument("--cluster-head", type=int, nargs="*", default=[0],
                           help="also score the cluster head of K clusters on each adapted "
                           "head (0: none)")  # fmt: skip
            s.add_argument("--mutual", action="store_true", help="keep a neighbour only when "
                           "the image is among its K nearest too (else the image "
                           "itself)")  # fmt: skip
        if name == "backbones":
            s.add_argument("--models", nargs="*", default=list(NATIVE))
        if name == "diffusion":
            s.add_argument("--neighbors", type=int, nargs="*", default=[20, 50, 100])
            s.add_argument("--candidates", type=int, nargs="*", default=[100, 300, 1000])
        if name in ("diffusion", "adapt"):
            s.add_argument("--models", nargs="*", help="several: embeddings side by side")
    p.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import faiss

    faiss.omp_set_num_threads(a.threads)
    t0 = time.perf_counter()
    cmds[a.cmd](a)
    save("python scripts/validation.py " + shlex.join(sys.argv[1:]), time.perf_counter() - t0,
         a.threads)  # fmt: skip


if __name__ == "__main__":
    main()
