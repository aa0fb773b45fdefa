"""Label-free adaptation (`imgret adapt`) scored on a protocol's test queries (issue 13).

    python -m bench.adapt cifar10                       # the head on efficientnet-lite0
    python -m bench.adapt cifar10 --models efficientnet-lite0 efficientnet-lite1 efficientnet-lite2

The head of `imgret adapt` with its defaults (imgret.training.adapt.AdaptConfig(), chosen on
validation queries: `python scripts/validation.py adapt`, bench/results/validation.md) is trained
on the protocol's database alone, from cached embeddings (python -m bench.embeddings: the images
at each model's own size, and the default views at the default view side), then applied to the
queries and the database; scored as bench.backbones scores a backbone: exact cosine, re-ranked
(the default of these models), + diffusion. Several models are joined side by side as
imgret.models.side_by_side joins them, each from its own cache (the model `A+B+C` resizes
inside instead, so its own embeddings differ slightly). The head never sees a query, no label
is used but to score. Writes bench/results/adapt-PROTOCOL[-MODELS].md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.backbones import METRIC, MODELS, three_ways
from bench.embeddings import cached_split, joined_views

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def adapted_quality(protocol: str, models: dict[str, int]) -> dict[str, Any]:
    """{"base"|"adapted": three_ways figures, "train_s", "config", "images"} on test queries."""
    from dataclasses import asdict

    from imgret.data.benchmarks import load_benchmark
    from imgret.training.adapt import AdaptConfig, train_adapt_head

    cfg = AdaptConfig()
    bench = load_benchmark(protocol)
    s = cached_split(protocol, bench, models)
    ql, dbl = s.ql.tolist(), s.dbl.tolist()
    views = joined_views(protocol, list(models), cfg.view_size or 0, cfg.views.views, s.db_rows)
    ok = ~np.isnan(views).any(axis=(1, 2))
    if not ok.all():  # undecodable images (NaN views) stay out of training
        views = views[ok]
    t0 = time.perf_counter()
    head, losses = train_adapt_head(s.db[ok], views, cfg, log=print)
    train_s = time.perf_counter() - t0
    with torch.inference_mode():
        hq, hdb = head(torch.from_numpy(s.q)).numpy(), head(torch.from_numpy(s.db)).numpy()
    return {
        "base": three_ways(bench, s.q, ql, s.db, dbl),
        "adapted": three_ways(bench, hq, ql, hdb, dbl),
        "train_s": train_s, "final_loss": float(np.mean(losses[-50:])),
        "images": int(ok.sum()), "config": asdict(cfg),
    }  # fmt: skip


def render(protocol: str, models: dict[str, int], r: dict[str, Any], command: str) -> str:
    metric = METRIC[protocol]
    name = " + ".join(f"`{m}@{size}`" for m, size in models.items())
    cfg = r["config"]
    lines = [
        f"## Label-free adaptation on the `{protocol}` test queries (bench/adapt.py)",
        "",
        f"Command: `{command}`; ran {r['seconds'] / 60:.0f} min on 2 CPUs shared with other jobs "
        f"(load average at the start {r['load']:.1f}), {r['threads']} torch and FAISS thread(s). "
        f"Base: {name} (GeM{', side by side' if len(models) > 1 else ''}). The head of "
        f"`imgret adapt` with its defaults ({cfg['views']['views']} views at "
        f"{cfg['view_size']} px, {cfg['neighbors']} nearest neighbours as positives with "
        f"probability {cfg['neighbor_p']:g}, temperature {cfg['temperature']:g}, "
        f"{cfg['steps']} steps of {cfg['batch_size']}: chosen on validation queries, "
        "bench/results/validation.md) trained on the database's "
        f"{r['images']:,} images alone in {r['train_s'] / 60:.1f} min (final loss "
        f"{r['final_loss']:.3f}), from cached embeddings (`python -m bench.embeddings`). "
        "`+ rerank`: the default of models built on a pretrained backbone; `+ diffusion`: "
        "`--rerank --diffusion 50`.",
        "",
        f"| model | {metric} | {metric} + rerank | {metric} + diffusion | P@10 | P@10 + rerank |",
        "|---|---|---|---|---|---|",
    ]
    for how in ("base", "adapted"):
        f = r[how]
        lines.append(
            f"| {how} | {f['plain'][metric]:.3f} | {f['rerank'][metric]:.3f} | "
            f"{f['diffusion'][metric]:.3f} | {f['plain']['P@10']:.3f} | "
            f"{f['rerank']['P@10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("protocol", choices=("cifar10", "caltech101"))
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["efficientnet-lite0"])
    p.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    a = p.parse_args()
    import faiss

    from imgret.core.atomic import write_text

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    models = {m: MODELS[m] for m in a.models}
    t0, load = time.perf_counter(), os.getloadavg()[0]
    r = adapted_quality(a.protocol, models)
    r.update(seconds=time.perf_counter() - t0, load=load, threads=a.threads)
    command = f"python -m bench.adapt {a.protocol}" + (
        "" if a.models == ["efficientnet-lite0"] else " --models " + " ".join(a.models)
    ) + ("" if a.threads == 2 else f" --threads {a.threads}")
    name = f"adapt-{a.protocol}" + (
        "" if a.models == ["efficientnet-lite0"] else "-" + "-".join(m[-5:] for m in a.models)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{name}.md", render(a.protocol, models, r, command))
    write_text(RESULTS / f"{name}.json", json.dumps(r, indent=1))
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
