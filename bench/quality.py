"""Retrieval quality on the three protocols of ../shared/BENCHMARKS.md, with baselines.

    python -m bench.quality            # full settings (long: trains on each database)
    python -m bench.quality --quick    # small training budgets, a few minutes
    python -m bench.quality --only fashion-mnist

For each protocol: raw pixels, PCA of raw pixels, the reconstruction autoencoder (exact search
and the classic design: KMeans + search inside the query's cluster), and the other label-free
objectives of `imgret train` (denoising, contrastive), all trained on the protocol's database
images only (no labels). Every row
gives its figures, training time, embedding throughput (images/s from the files on disk,
decoding included; Fashion-MNIST is read from its idx files), single-query latency (image file
-> embedding -> ranked top 10), the settings, and a command that reproduces it.

Each protocol's rows are kept in bench/results/quality_runs.json (a run with --only replaces
just its protocols, so protocols can run in separate processes, one core each); every run
renders bench/results/quality.md from all of them. The label-free variants tried by
scripts/quality_experiments.py (bench/results/quality_experiments.json) are listed after the
protocol tables.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgret.training.config import DEFAULT_OBJECTIVE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench-out" / "quality"
EXPERIMENTS = RESULTS / "quality_experiments.json"
RUNS = RESULTS / "quality_runs.json"  # protocol -> {"run": how it ran, "rows": [Row fields]}
LATENCY_QUERIES = 30


@dataclass(frozen=True)
class Method:
    label: str  # what the table calls it
    model: str  # pixels, pca-N, or "train" (a model trained by this benchmark)
    objective: str = ""  # for trained models: the objective of `imgret train --objective`
    train_args: tuple[str, ...] = ()  # extra `imgret train` arguments (full settings)
    quick_args: tuple[str, ...] = ()  # the same for --quick
    cluster_mode: bool = False  # also report the classic design (search inside the cluster)


METHODS = (
    Method("raw pixels", "pixels"),
    Method("PCA-64 of raw pixels", "pca-64"),
    Method(
        "conv autoencoder (reconstruction), 512-d", "train", "reconstruction",
        ("--epochs", "5"), ("--epochs", "1"), cluster_mode=True,
    ),
    Method(
        "denoising autoencoder (50 % of 4x4 patches masked), 512-d", "train", "denoising",
        ("--epochs", "5"), ("--epochs", "1"),
    ),
    Method(
        "contrastive (SimCLR: crops, flips, jitter; PCA-whitened), the default", "train",
        "contrastive",
        ("--epochs", "10"), ("--epochs", "1"),
    ),
)  # fmt: skip

QUICK_TRAIN_IMAGES = 2000  # --quick trains on this many database images (fixed-seed sample)


@dataclass
class Row:
    bench: str
    method: str
    mode: str
    figures: dict[str, float]
    settings: str
    train_s: float | None = None
    train_cpu_s: float | None = None
    embed_images_per_s: float | None = None
    latency_ms: tuple[float, float] | None = None  # p50, p95
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _train(bench_name: str, m: Method, quick: bool) -> tuple[Path, float, float, str, str]:
    """Train `m` on the database of `bench_name` -> (model, wall s, CPU s, settings, command)."""
    from imgret.cli import main as cli_main

    out = WORK / ("quick" if quick else "full") / bench_name / m.objective
    args = ["train", f"{bench_name}:database", "--out", str(out)]
    args += ["--objective", m.objective]
    args += list(m.quick_args if quick else m.train_args)
    if quick:
        args += ["--limit", str(QUICK_TRAIN_IMAGES)]
    wall, cpu = time.perf_counter(), _cpu_seconds()
    if cli_main(args) != 0:
        raise SystemExit(f"training failed: imgret {' '.join(args)}")
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    history = json.loads((out / "history.json").read_text())
    if wall < 0.5 * sum(h["seconds"] for h in history):  # reused an earlier run's model
        wall, cpu = sum(h["seconds"] for h in history), float("nan")
    doc = json.loads((out / "model.json").read_text())
    mc, tc = doc["model"], doc["train"]
    settings = (
        f"{tc['objective']}, {mc['image_size']}px, width {mc['width']}, pool {mc['pool']}, "
        f"{mc['whiten_dim'] or mc['embedding_dim']}-d"
        + (f" (whitened from {mc['embedding_dim']})" if mc["whiten_dim"] else "")
        + f", {len(history)} epochs, batch {tc['batch_size']}, lr {tc['lr']} {tc['schedule']}"
    )  # fmt: skip
    if tc["objective"] == "contrastive":
        settings += f", augment {tc['augment']}, temperature {tc['temperature']}"
    command = "imgret " + " ".join(args[:3]) + " M " + " ".join(args[4:])
    return out, wall, cpu, settings, command


def _latency(
    embed_query, paths: list[str], database: np.ndarray, rank_args: dict
) -> tuple[float, float]:  # noqa: E501
    """p50, p95 in ms of one query image file -> embedding -> top 10 of the database."""
    from imgret.core.vectors import normalize
    from imgret.evaluation.evaluate import rank

    times = []
    for p in paths:
        t0 = time.perf_counter()
        q = normalize(embed_query([p]))
        rank(q, database, 10, **rank_args)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _query_files(bench) -> list[str]:  # noqa: ANN001
    """Query image files for the latency test (written as PNGs for in-memory datasets)."""
    src = bench.queries
    idx = np.linspace(0, len(src) - 1, LATENCY_QUERIES).astype(int)
    if src.arrays is None:
        return [src.keys[i] for i in idx]
    folder = WORK / "query-files" / bench.name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in idx:
        path = folder / f"{i:04d}.png"
        if not path.exists():
            src.load(int(i)).save(path)
        paths.append(str(path))
    return paths


def run_bench(bench_name: str, quick: bool, log=print) -> list[Row]:  # noqa: ANN001
    from imgret.core.clustering import elbow_curve, fit_kmeans
    from imgret.core.vectors import normalize
    from imgret.data.benchmarks import load_benchmark
    from imgret.evaluation.evaluate import embed_split, protocol_scores
    from imgret.models.embed import embed_files
    from imgret.models.pixels import PixelEmbedder
    from imgret.models.registry import load as load_embedder

    bench = load_benchmark(bench_name)
    query_files = _query_files(bench)
    rows = []
    for m in METHODS:
        log(f"[{bench_name}] {m.label}")
        train_s = train_cpu = None
        if m.model == "train":
            model_ref, train_s, train_cpu, settings, command = _train(bench_name, m, quick)
            ref = str(model_ref)
            command = f"{command} && imgret evaluate M {bench_name}"
            if m.cluster_mode:
                command += " [--mode cluster]"
        else:
            ref = m.model
            settings = f"{bench.image_size}px, {bench.channels} channel(s)" + (
                ", PCA fitted on the database" if m.model.startswith("pca") else ""
            )
            command = f"imgret evaluate {ref} {bench_name}"
        split = embed_split(ref, bench, workers=2, progress=False)
        if split.skipped:
            log(f"  skipped {len(split.skipped)} undecodable images")
        db_unit = normalize(split.database)
        if m.model == "train":
            embedder = load_embedder(ref)
            embed_query = lambda p, e=embedder: embed_files(e, p)  # noqa: E731
        else:
            pix = PixelEmbedder(bench.image_size, bench.channels)

            def embed_query(p, pix=pix, proj=split.pca):  # noqa: ANN001, ANN202
                x = embed_files(pix, p)
                return x if proj is None else (x - proj[0]) @ proj[1]

        modes = [("exact", {})]
        if m.cluster_mode:
            k = elbow_curve(db_unit, range(2, 21), progress=False).chosen_k
            cl = fit_kmeans(db_unit, k)
            modes.append((f"cluster (KMeans K={k}, elbow)",
                          {"assignments": cl.assignments, "centroids": cl.centroids}))  # fmt: skip
        for mode, rank_args in modes:
            figures = protocol_scores(
                bench, split.queries, split.query_labels, split.database, split.database_labels,
                **rank_args,
            )  # fmt: skip
            latency = _latency(embed_query, query_files, db_unit, rank_args)
            rows.append(Row(
                bench_name, m.label, mode, figures, settings, train_s, train_cpu,
                split.timings.get("embed_database_images_per_s"), latency, command,
            ))  # fmt: skip
            log(f"  {mode}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return rows


def _fmt(v: float | None, spec: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, spec)


def save_run(bench_name: str, rows: list[Row], run: dict[str, Any]) -> dict[str, Any]:
    """Store one protocol's rows in RUNS (under a lock: protocols may run in parallel).

    Returns every protocol's record, this one included.
    """
    from imgret.core.atomic import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".quality_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = json.loads(RUNS.read_text()) if RUNS.exists() else {}
        runs[bench_name] = {"run": run, "rows": [asdict(r) for r in rows]}
        write_json(RUNS, runs)
    return runs


def render(runs: dict[str, Any]) -> str:
    """bench/results/quality.md from the records of save_run, one section per protocol."""
    lines = [
        "## Retrieval quality (bench/quality.py)",
        "",
        f"The default of `imgret train` is the {DEFAULT_OBJECTIVE} objective. "
        "Exact cosine search over unit-norm embeddings unless the row says cluster. Models are "
        "trained on the protocol's database images only, without labels. Embedding throughput: "
        "database images/s from the files on disk (decoding included). Latency: one query "
        f"image file -> embedding -> top 10, p50 / p95 over {LATENCY_QUERIES} queries. "
        "Times are wall-clock on a machine shared with other jobs; CPU time (all threads) is "
        "given beside training time.",
    ]  # fmt: skip
    order = [n for n in ("fashion-mnist", "cifar10", "caltech101") if n in runs]
    for bench_name in order + sorted(set(runs) - set(order)):
        run = runs[bench_name]["run"]
        sub = [Row(**r) for r in runs[bench_name]["rows"]]
        metrics = list(sub[0].figures)
        how = (
            f"quick settings: training on a fixed-seed sample of {run['quick_images']} "
            "database images" if run["quick"] else "full settings"
        )  # fmt: skip
        lines += ["", f"### `{bench_name}`", ""]
        lines += [
            f"Command: `{run['command']}` ({how}); this protocol ran {run['seconds'] / 60:.0f} "
            f"min on {run['machine']}, {run['date']}.",
            "",
        ]
        lines.append("| method | search | " + " | ".join(metrics) + " | train s (CPU s) | "
                     "embed img/s | query ms p50 / p95 | settings | reproduce |")  # fmt: skip
        lines.append("|---" * (len(metrics) + 7) + "|")
        for r in sub:
            train = "-" if r.train_s is None else f"{r.train_s:.0f} ({_fmt(r.train_cpu_s, '.0f')})"
            lat = f"{r.latency_ms[0]:.1f} / {r.latency_ms[1]:.1f}" if r.latency_ms else "-"
            lines.append(
                f"| {r.method} | {r.mode} | " + " | ".join(f"{r.figures[m]:.3f}" for m in metrics)
                + f" | {train} | {_fmt(r.embed_images_per_s, ',.0f')} | {lat} | {r.settings} | "
                f"`{r.command}` |"
            )  # fmt: skip
    lines += ["", experiments_table()]
    return "\n".join(lines) + "\n"


def experiments_table() -> str:
    """Every label-free variant tried, from the log of scripts/quality_experiments.py."""
    if not EXPERIMENTS.exists():
        return ""
    rows = json.loads(EXPERIMENTS.read_text())
    lines = [
        "### Label-free variants tried (scripts/quality_experiments.py)",
        "",
        "Each row: one training run on the protocol's database (no labels), exact cosine "
        "search, protocol queries. Rows marked 'PCA-whitening' reuse the model of the row "
        "above them, whitened with PCA fitted on the database embeddings. Train s is wall time "
        "on the shared machine (CPU time of all threads in brackets). Written by the command in "
        "the last column; bench/results/quality_experiments.json holds every setting.",
        "",
        "| protocol | variant | mAP@1000 | P@10 | epochs | train s (CPU s) | notes | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = r.get("train_cpu_seconds")
        note = r["variant"]
        if note == "embedding" and r["settings"]:
            mc, tc = r["settings"]["model"], r["settings"]["train"]
            note = (
                f"{tc['objective']}: width {mc['width']}, pool {mc['pool']}, "
                f"{mc['embedding_dim']}-d, batch {tc['batch_size']}, lr {tc['lr']} {tc['schedule']}"
            )
            if tc["objective"] == "contrastive":
                note += f", augment {tc['augment']}, temperature {tc['temperature']}"
        if r.get("variant_note"):
            note += f" ({r['variant_note']})"
        lines.append(
            f"| {r['bench']} | {r['name']} | {r['mAP@1000']:.3f} | {r['P@10']:.3f} | "
            f"{r['epochs']} | {r['train_seconds']:.0f} ({_fmt(cpu, '.0f')}) | "
            f"{note} | `{r['command']}` |"
        )
    return "\n".join(lines)


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small training budgets (minutes)")
    p.add_argument("--only", nargs="*", help="protocols to run (default: all three)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default: 1; on the shared 2-core machine 2 threads measured 3x "
        "slower training and 40x slower single queries, as OpenMP threads wait for each other)",
    )  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from imgret.core.atomic import write_text

    runs: dict[str, Any] = {}
    for name in a.only or ("fashion-mnist", "cifar10", "caltech101"):
        command = "python -m bench.quality" + (" --quick" if a.quick else "") + f" --only {name}"
        if a.threads != 1:
            command += f" --threads {a.threads}"
        run = {"command": command, "quick": a.quick, "quick_images": QUICK_TRAIN_IMAGES,
               "machine": machine(), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        t0 = time.perf_counter()
        rows = run_bench(name, a.quick)
        runs = save_run(name, rows, {**run, "seconds": time.perf_counter() - t0})
    write_text(RESULTS / "quality.md", render(runs))
    print(f"wrote {RESULTS / 'quality.md'}")


if __name__ == "__main__":
    main()
