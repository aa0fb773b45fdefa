"""Pretrained backbones compared: retrieval quality against embedding speed (issue 13).

    python -m bench.backbones                 # table + plot from cached embeddings, speed measured
    python -m bench.backbones --int8          # also efficientnet-lite0 int8 (--quantize, issue 12)
    python -m bench.backbones --side-by-side  # also the three side by side (lite0+lite1+lite2)

Quality: each backbone (`efficientnet-lite0@224`, `-lite1@240`, `-lite2@260`, GeM) embeds every
image of `caltech101` and `cifar10` once (python -m bench.embeddings, cached) and is scored on
the test protocols of ../shared/BENCHMARKS.md, alone and re-ranked (`--rerank`: DBA + alpha-QE
with imgret's defaults; `+ diffusion`: `--diffusion 50` after it). The validation figures
that chose the default backbone are in bench/results/validation.md. With --int8, `imgret
evaluate efficientnet-lite0 PROTOCOL --quantize --no-rerank` is run in full (its JSON kept in
bench-out/backbones/). With --side-by-side, the model `efficientnet-lite0+efficientnet-lite1+
efficientnet-lite2` (imgret.models.side_by_side: its own resizing inside, so not the cached
embeddings) embeds the protocol in full through imgret.evaluation.evaluate.embed_split, once,
scored the three ways.

Speed: images/s of `imgret`'s own embedding path (imgret.models.backend.load_for_inference,
ONNX Runtime, and imgret.models.embed.embed_source: decoding from the files included, one
decode worker) on the same fixed images of each protocol, every model timed in the same run,
in alternating rounds (lite0, lite1, lite2, lite0, ...), median of the rounds: the models
share whatever load the machine has. Writes bench/results/backbones.md and backbones.png
(backbones-<models>-<protocols>.* when --models or --protocols pick a part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.embeddings import cached_split

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench-out" / "backbones"
MODELS = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
SIDE_BY_SIDE = "+".join(MODELS)  # the three at their native sizes, one embedding
PROTOCOLS = ("caltech101", "cifar10")
METRIC = {"caltech101": "mAP@all", "cifar10": "mAP@1000"}  # each protocol's headline mAP
DIFFUSION = 50  # --diffusion N of the "+ diffusion" column (chosen on validation queries)
SPEED_IMAGES = {"caltech101": 256, "cifar10": 1024}  # the first database images of each


def quality(
    protocol: str, split: str = "test", models: dict[str, int] = MODELS
) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {"plain"|"rerank"|"diffusion": {metric: value}}} from the cached embeddings."""
    from imgret.data.benchmarks import load_benchmark

    bench = load_benchmark(protocol if split == "test" else f"{protocol}:{split}")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, size in models.items():
        c = cached_split(protocol, bench, {name: size})
        out[f"{name}@{size}"] = three_ways(bench, c.q, c.ql.tolist(), c.db, c.dbl.tolist())
    return out


def three_ways(
    bench: Any, q: Any, ql: list, db: Any, dbl: list, exclude: Any = None
) -> dict[str, dict[str, float]]:
    """{"plain"|"rerank"|"diffusion": {metric: value}}: exact cosine, `--rerank`, `--rerank
    --diffusion DIFFUSION` (queries (n, dim), database (m, dim), `exclude` as in rank)."""
    from imgret.evaluation.evaluate import protocol_scores, rerank_split
    from imgret.retrieval.rerank import RerankConfig

    reranked = rerank_split(q, db, RerankConfig(), exclude=exclude)
    return {
        how: protocol_scores(bench, qq, ql, dd, dbl, exclude=exclude, diffusion=diffusion)
        for how, (qq, dd), diffusion in (
            ("plain", (q, db), 0), ("rerank", reranked, 0), ("diffusion", reranked, DIFFUSION)
        )
    }  # fmt: skip


def side_by_side_quality(protocol: str) -> dict[str, dict[str, float]]:
    """The side-by-side model's figures, from embedding the protocol with it in full."""
    from imgret.evaluation.evaluate import embed_split, open_benchmark
    from imgret.models.backend import InferenceSettings

    bench = open_benchmark(protocol)
    split = embed_split(SIDE_BY_SIDE, bench, workers=1, progress=False,
                        inference=InferenceSettings(backend="onnx"))  # fmt: skip
    return three_ways(bench, split.queries, split.query_labels, split.database,
                      split.database_labels, split.exclude)  # fmt: skip


def int8_quality(protocol: str) -> dict[str, Any]:
    """`imgret evaluate efficientnet-lite0 PROTOCOL --quantize --no-rerank` (its JSON kept in
    bench-out/)."""
    from imgret.evaluation.evaluate import evaluate
    from imgret.models.backend import InferenceSettings

    path = WORK / f"{protocol}-lite0-int8.json"  # measured afresh in every run
    int8 = InferenceSettings(backend="onnx", quantize=True)
    ev = evaluate("efficientnet-lite0", protocol, workers=1, progress=False, inference=int8,
                  rerank=None)  # fmt: skip
    doc = {"overall": ev.overall, "timings": ev.timings, "n_database": ev.n_database}
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def speed(protocol: str, refs: list[str], rounds: int = 3) -> dict[str, float]:
    """Median images/s of each model over `rounds` alternating rounds, on the same images."""
    from imgret.data.benchmarks import load_benchmark
    from imgret.data.loader import sample_batches
    from imgret.models.backend import InferenceSettings, load_for_inference
    from imgret.models.embed import embed_source

    bench = load_benchmark(protocol)
    images = bench.database.subset(range(SPEED_IMAGES[protocol]))
    models = {}
    for ref in refs:
        quant = ref.endswith("+int8")
        settings = InferenceSettings(backend="onnx", quantize=quant)
        models[ref] = load_for_inference(
            ref.removesuffix("+int8"), settings,
            calibration=lambda s, c: sample_batches(bench.database, s, c),
        )  # fmt: skip
        embed_source(models[ref], images.subset(range(32)), workers=1, progress=False)  # warm-up
    times: dict[str, list[float]] = {ref: [] for ref in refs}
    for _ in range(rounds):
        for ref in refs:
            t0 = time.perf_counter()
            embed_source(models[ref], images, workers=1, progress=False)
            times[ref].append(len(images) / (time.perf_counter() - t0))
    return {ref: statistics.median(v) for ref, v in times.items()}


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = [p for p in PROTOCOLS if p in results]
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4.2), squeeze=False)
    axes = axes[0]
    for ax, protocol in zip(axes, protocols, strict=True):
        r = results[protocol]
        metric = r["metric"]
        for ref, q in r["quality"].items():
            x = r["speed"][ref]
            top = q.get("diffusion", q["rerank"])[metric]
            ax.plot([x, x], [q["plain"][metric], top], color="0.75", zorder=1)
            for how, color in (("plain", "tab:blue"), ("rerank", "tab:orange"),
                               ("diffusion", "tab:green")):  # fmt: skip
                if how in q:
                    ax.scatter([x], [q[how][metric]], color=color, zorder=2)
            ax.annotate(ref.replace("efficientnet-", ""), (x, top),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
        ax.set_xlabel("images/s (ONNX Runtime, decoding included, same run)")
        ax.set_ylabel(f"{metric} (test queries)")
        ax.set_title(protocol)
        ax.grid(alpha=0.3)
    axes[0].scatter([], [], color="tab:blue", label="exact cosine")
    axes[0].scatter([], [], color="tab:orange", label="+ re-ranking (--rerank)")
    axes[0].scatter([], [], color="tab:green", label=f"+ --diffusion {DIFFUSION}")
    axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(results: dict[str, Any], command: str, seconds: float, png: str) -> str:
    lines = [
        "## Pretrained backbones: quality against speed (bench/backbones.py)",
        "",
        f"Command: `{command}`; ran {seconds / 60:.0f} min on {os.cpu_count()} CPUs shared with "
        f"other jobs (load average at the start {results['load']:.1f}). GeM pooling at each "
        "model's native input size (the default of its name), exact cosine search on the test "
        "queries, not re-ranked (`--no-rerank`); `+ rerank`: re-ranked with the default "
        "settings (what `imgret evaluate` and `imgret search` do for these models unless told "
        f"otherwise); `+ diffusion`: `--rerank --diffusion {DIFFUSION}`. Speed: images/s of "
        "imgret's embedding path (ONNX Runtime, one decode worker, decoding from disk included) "
        f"on the first {SPEED_IMAGES['caltech101']} Caltech-101 / {SPEED_IMAGES['cifar10']} "
        "CIFAR-10 database images, all models in the same run in alternating rounds, median of 3.",
        "",
        f"![quality against speed]({png})",
    ]
    for protocol in [p for p in PROTOCOLS if p in results]:
        r = results[protocol]
        m = r["metric"]
        base = r["speed"][next(iter(r["speed"]))]
        lines += ["", f"### `{protocol}`", "",
                  f"| model | {m} | {m} + rerank | {m} + diffusion | P@10 | images/s | "
                  "speed vs lite0 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for ref, q in r["quality"].items():
            s = r["speed"][ref]
            diffused = f"{q['diffusion'][m]:.3f}" if "diffusion" in q else "-"
            lines.append(f"| `{ref}` | {q['plain'][m]:.3f} | {q['rerank'][m]:.3f} | {diffused} | "
                         f"{q['plain']['P@10']:.3f} | {s:.1f} | {s / base:.2f}x |")  # fmt: skip
        if SIDE_BY_SIDE in r["quality"]:
            lines += ["", f"`{SIDE_BY_SIDE}`: the three embeddings side by side (each "
                      "unit-norm, 3,840-d), its figures from embedding the protocol with it in "
                      "full (each part resizes the loader's 260-px images to its own size)."]
        if "int8" in r:
            i8 = r["int8"]
            fl = r["quality"]["efficientnet-lite0@224"]["plain"]
            s8, s0 = r["speed"]["efficientnet-lite0@224+int8"], base
            lines += ["", f"`efficientnet-lite0 --quantize` (static int8, issue 12), the full "
                      f"`imgret evaluate efficientnet-lite0 {protocol} --quantize --no-rerank`: "
                      f"{m} {i8['overall'][m]:.3f} against {fl[m]:.3f} in float "
                      f"({i8['overall'][m] - fl[m]:+.3f}); P@10 {i8['overall']['P@10']:.3f} "
                      f"against {fl['P@10']:.3f}; {s8:.1f} images/s against {s0:.1f} in float "
                      f"({s8 / s0:.2f}x, same run)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--int8", action="store_true", help="also lite0 int8 (issue 12)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--side-by-side", action="store_true", help=f"also {SIDE_BY_SIDE}")
    a = p.parse_args()
    models = {m: MODELS[m] for m in a.models}
    from imgret.core.atomic import write_text

    t0 = time.perf_counter()
    results: dict[str, Any] = {"load": os.getloadavg()[0]}
    for protocol in a.protocols:
        refs = [f"{n}@{s}:gem" for n, s in models.items()]
        if a.int8:
            refs.insert(1, "efficientnet-lite0@224:gem+int8")
        if a.side_by_side:
            refs.append(SIDE_BY_SIDE)
        measured = speed(protocol, refs, a.rounds)
        results[protocol] = {
            "metric": METRIC[protocol],
            "quality": quality(protocol, models=models),
            "speed": {k.replace(":gem", ""): v for k, v in measured.items()},
        }
        if a.side_by_side:
            results[protocol]["quality"][SIDE_BY_SIDE] = side_by_side_quality(protocol)
        if a.int8:
            results[protocol]["int8"] = int8_quality(protocol)
    command = "python -m bench.backbones" + (" --int8" if a.int8 else "") + (
        " --side-by-side" if a.side_by_side else "") + (
        "" if a.protocols == list(PROTOCOLS) else " --protocols " + " ".join(a.protocols)) + (
        "" if a.models == list(MODELS) else " --models " + " ".join(a.models))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "backbones" if a.models == list(MODELS) else "backbones-" + "-".join(a.models)
    name += "" if a.protocols == list(PROTOCOLS) else "-" + "-".join(a.protocols)
    plot(results, RESULTS / f"{name}.png")
    write_text(RESULTS / f"{name}.md", render(results, command, time.perf_counter() - t0,
                                                       f"{name}.png"))
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
