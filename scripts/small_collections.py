"""`imgret train` on small collections: each objective against raw pixels (issue 13).

For each collection, every label-free objective is trained exactly as `imgret train SOURCE
--out M [--objective O]` does (the CLI, in this process, one torch thread) on the collection's
database images only, then scored as `imgret evaluate M BENCHMARK [--rerank]` does:

- `PROTOCOL:val:small`: the validation queries against 1,000 images of the validation
  database; what the objective rule of imgret.training.config is chosen on;
- `PROTOCOL:small`: the test queries against 1,000 database images (reported, not chosen on);
- `digits`: scikit-learn's 1,797 digits, every image a query against the others.

    python scripts/small_collections.py --split val        # the :val:small variants
    python scripts/small_collections.py --split test       # the :small variants and digits

Models are kept in bench-out/small/ (a second run only re-scores). Each run's table is kept in
bench/results/small_collections.json and rendered into bench/results/small_collections.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgret.cli import main as imgret  # noqa: E402
from imgret.evaluation.evaluate import evaluate  # noqa: E402
from imgret.retrieval.rerank import RerankConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench-out" / "small"
RESULTS = ROOT / "bench" / "results"
PROTOCOLS = ("fashion-mnist", "cifar10", "caltech101")
OBJECTIVES = ("reconstruction", "denoising", "contrastive")


def train(source: str, objective: str | None, out: Path, extra: list[str]) -> dict:
    """`imgret train SOURCE --out OUT [--objective O] EXTRA` (kept when already trained);
    "seconds" are the epochs' own, from history.json (a kept model's too)."""
    args = ["train", source, "--out", str(out), "--workers", "0", *extra]
    if objective:
        args += ["--objective", objective]
    t0 = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = imgret(args)
    if code != 0:
        raise SystemExit(f"imgret {' '.join(args)} failed ({code})")
    doc = json.loads((out / "model.json").read_text())
    history = json.loads((out / "history.json").read_text())  # every epoch, resumed ones too
    seconds = sum(e.get("seconds", 0.0) for e in history) or time.perf_counter() - t0
    return {"seconds": seconds, "objective": doc["train"]["objective"],
            "best_val_loss": doc.get("best_val_loss"), "epochs": doc.get("best_epoch")}  # fmt: skip


def score(model: str, bench: str, rerank: bool) -> dict[str, float]:
    ev = evaluate(model, bench, progress=False, log=lambda s: None,
                  rerank=RerankConfig() if rerank else None)  # fmt: skip
    return ev.overall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--objectives", nargs="*", default=[*OBJECTIVES, "default"],
                   help="objectives to train; 'default' = no --objective (what a user gets)")
    p.add_argument("--only", nargs="*", help="collections to run (default: all)")
    p.add_argument("--tag", default="", help="a name for extra settings (kept apart)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more `imgret train` options, e.g. --extra --epochs 30")
    a = p.parse_args()
    torch.set_num_threads(1)
    suffix = ":val:small" if a.split == "val" else ":small"
    collections = [f"{name}{suffix}" for name in PROTOCOLS]
    if a.split == "test":
        collections.append("digits")
    if a.only:
        collections = [c for c in collections if c.split(":")[0] in a.only or c in a.only]
    log_path = RESULTS / "small_collections.json"
    log: dict = {}
    for coll in collections:
        source = "digits" if coll == "digits" else f"{coll}:database"
        rows = {}
        for rerank in (False, True):
            figures = score("pixels", coll, rerank)
            rows[f"raw pixels{' + rerank' if rerank else ''}"] = {"figures": figures}
        for objective in a.objectives:
            name = objective + (f"-{a.tag}" if a.tag else "")
            out = WORK / coll.replace(":", "-") / name
            info = train(source, None if objective == "default" else objective, out, a.extra)
            for rerank in (False, True):
                key = f"{name}{' + rerank' if rerank else ''}"
                rows[key] = {**info, "figures": score(str(out), coll, rerank)}
                print(coll, key, {k: round(v, 3) for k, v in rows[key]["figures"].items()
                                  if k.startswith(("mAP", "P@10"))}, flush=True)  # fmt: skip
        log = json.loads(log_path.read_text()) if log_path.exists() else {}  # others' rows too
        entry = log.setdefault(coll, {})
        entry.update(rows)
        # the section's first run names it; rows added later say their date in the text
        entry.setdefault("_machine", f"{platform.machine()}, 1 torch thread, "
                                     f"{time.strftime('%Y-%m-%d')}")
        log_path.write_text(json.dumps(log, indent=1))
    render(log)


def render(log: dict) -> None:
    lines = [
        "## Small collections (scripts/small_collections.py)",
        "",
        "Each objective trained as `imgret train COLLECTION:database --out M [--objective O]` "
        "does, on the collection's 1,000 database images only (digits: all 1,797), and scored "
        "as `imgret evaluate M COLLECTION [--rerank]` does. `default` is what `imgret train` "
        "picks without `--objective`. `:val:small` rows chose the rule; `:small` and digits "
        "rows are the reported check. Names: `contrastive` = whitened to 128 dims (the default "
        "before the whitening rule; `--whiten 128`), `-nowhite` = `--whiten 0`, "
        "`default-whitenrule` = `imgret train` with no option since the rule (a contrastive "
        "model whitened only with 20 training images per dimension), `-whitenrule` rows were "
        "trained in that run; `default-graysrule` = `imgret train` with no option since the "
        "objective rule (grayscale collections of fewer than 2,560 images train the "
        "reconstruction autoencoder); `default-e30` = `imgret train` with no option but "
        "`--epochs 30`, which is what `imgret train` with no option does on 1,000 images since the "
        "epoch rule (trained 2026-12-02 while other jobs shared the cores: its train s are "
        "slower than the rows above). train s: the epochs' own seconds (history.json).",
    ]
    for coll, rows in log.items():
        metric = "mAP@all" if coll.startswith("caltech") else "mAP@100" if coll == "digits" \
            else "mAP@1000"  # fmt: skip
        lines += ["", f"### `{coll}` ({rows.get('_machine', '')})", "",
                  f"| method | {metric} | P@10 | objective used | best val loss | train s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in rows.items():
            if name.startswith("_"):
                continue
            f = row["figures"]
            loss = row.get("best_val_loss")
            lines.append(
                f"| {name} | {f[metric]:.3f} | {f['P@10']:.3f} | {row.get('objective', '-')} | "
                f"{'-' if loss is None else f'{loss:.4g}'} | "
                f"{row['seconds']:.0f} |" if "seconds" in row else
                f"| {name} | {f[metric]:.3f} | {f['P@10']:.3f} | - | - | - |"
            )  # fmt: skip
    (RESULTS / "small_collections.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
