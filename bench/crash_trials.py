"""Random kill -9 trials: any command, any moment; then an immediate re-run (issue 16).

    python -m bench.crash_trials             # 30 trials
    python -m bench.crash_trials --trials 5  # a quick look

A folder of 160 generated images and a tiny untrained model (CPU, seconds). Each trial picks a
command (index of a changed folder, add, remove, compact, check --repair after damaging a
chunk), starts `python -m imgret ...` with chunks of 8 images, kills it with SIGKILL after a
random delay (0.2 to 6 s; a run that ends first counts as not killed), then, at once:

- opens the collection (`unloadable` if it does not load);
- counts images whose committed embeddings are gone: items lost that the command was not
  asked to drop (`lost_items`), and listed chunk files missing or damaged (`lost_chunks`);
- looks for duplicate keys or embedding rows (`duplicates`);
- re-runs the same command (`rerun_failed` unless it exits 0; a remove whose files are
  already gone says so with exit 2 and counts as done when they are gone);
- runs `imgret check` (`damaged` if it finds damage).

Prints the counts and writes bench/results/crash_trials.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imgret.store.check import check_collection
from imgret.store.opening import open_collection

ROOT = Path(__file__).resolve().parent.parent
COUNTS = ("trials", "killed", "unloadable", "lost_items", "lost_chunks", "duplicates",
          "rerun_failed", "damaged")  # fmt: skip


class _NoneYet(Exception):
    """Killed before the new collection existed: as before the trial, there is none."""


def make_photos(root: Path, n: int = 160, seed: int = 0) -> Path:
    """n noisy 96x96 PNG pictures in 4 sub-folders (blocks of colour; distinct)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"group{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.kron(rng.integers(0, 255, (6, 6, 3)), np.ones((16, 16, 1))).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:04d}.png")
    return root


def make_model(path: Path) -> Path:
    import torch

    from imgret.models.autoencoder import ConvAutoencoder, save_model
    from imgret.models.config import ModelConfig

    torch.manual_seed(0)
    model = ConvAutoencoder(ModelConfig(image_size=32, channels=3, embedding_dim=64, width=8))
    save_model(model, path)
    return path


def _items(coll_dir: Path) -> set[str]:
    uri = f"{(coll_dir / 'meta.sqlite').resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        return {k for (k,) in db.execute("SELECT key FROM items")}


def run_trials(
    photos: Path | None, work: Path, *, n: int = 30, seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, int]:  # fmt: skip
    """Run `n` trials in `work` (made afresh) -> the counts (see the module docstring)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    photos = make_photos(work / "photos") if photos is None else photos
    model = make_model(work / "model")
    coll = work / "coll"
    rng = random.Random(seed)
    env = {**os.environ, "IMGRET_BACKEND": "torch", "IMGRET_TEST_CRASH_AT": ""}
    job = ["--workers", "0", "--chunk-size", "8", "--batch-size", "8"]
    counts = dict.fromkeys(COUNTS, 0)
    spare = work / "spare"
    spare.mkdir()
    for t in range(n):
        before = _items(coll) if (coll / "collection.json").exists() else set()
        kind = "index" if not before else rng.choice(
            ["index", "add", "remove", "compact", "repair"])  # fmt: skip
        group = photos / f"group{rng.randrange(4)}"
        dropped: set[str] = set()
        if kind == "index":  # change the folder: move a few images out or back in
            for p in rng.sample(sorted(photos.rglob("*.png")), 5):
                shutil.move(p, spare / f"{p.parent.name}__{p.name}")
            for p in rng.sample(sorted(spare.glob("*.png")), min(3, len(list(spare.glob("*"))))):
                g, name = p.name.split("__")
                shutil.move(p, photos / g / name)
            present = {str(p) for p in photos.rglob("*.png")}
            dropped = {k for k in before if k not in present}
            cmd: list[object] = ["index", photos, "--out", coll, "--model", model, *job]
        elif kind == "add":
            cmd = ["add", coll, group, *job]
        elif kind == "remove":
            dropped = {k for k in before if k.startswith(str(group) + os.sep)}
            if not dropped:
                kind, cmd = "add", ["add", coll, group, *job]
            else:
                cmd = ["remove", coll, group]
        elif kind == "compact":
            cmd = ["compact", coll]
        else:  # damage a chunk, then repair: the images of that chunk are dropped
            chunks = sorted((coll / "embeddings").glob("chunk-*.npy"))
            if chunks:
                victim = rng.choice(chunks)
                victim.write_bytes(victim.read_bytes()[:100])
                first = int(victim.stem.split("-r")[1])
                with sqlite3.connect(coll / "meta.sqlite") as db:
                    n_rows = db.execute("SELECT n_rows FROM chunks WHERE name = ?",
                                        (victim.name,)).fetchone()  # fmt: skip
                    rows = range(first, first + (n_rows[0] if n_rows else 0))
                    dropped = {k for (k, r) in db.execute("SELECT key, row FROM items")
                               if r in rows}  # fmt: skip
            cmd = ["check", coll, "--repair"]
        argv = [sys.executable, "-m", "imgret", *map(str, cmd)]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        delay = rng.uniform(0.2, 6.0)
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        counts["trials"] += 1
        counts["killed"] += killed
        problems: list[str] = []
        gc.collect()
        try:
            if before or (coll / "collection.json").exists():
                open_collection(coll).close()
            after = _items(coll) if (coll / "collection.json").exists() else set()
        except Exception as e:  # noqa: BLE001 - a count, not a crash of the bench
            counts["unloadable"] += 1
            problems.append(f"unloadable: {e}")
            after = set()
        lost = before - after - dropped
        if lost and "unloadable" not in " ".join(problems):
            counts["lost_items"] += 1
            problems.append(f"{len(lost)} items lost")
        try:
            if not (coll / "collection.json").exists():
                raise _NoneYet
            with sqlite3.connect(coll / "meta.sqlite") as db:
                dup = db.execute("SELECT (SELECT COUNT(*) - COUNT(DISTINCT key) FROM items) + "
                                 "(SELECT COUNT(*) - COUNT(DISTINCT row) FROM items)").fetchone()
            if dup[0]:
                counts["duplicates"] += 1
                problems.append("duplicates")
            if kind != "repair":
                report = check_collection(coll)
                if any(f.file.startswith("embeddings/chunk") for f in report.findings if f.damage):
                    counts["lost_chunks"] += 1
                    problems.append("a committed chunk is damaged")
        except _NoneYet:
            pass
        except Exception as e:  # noqa: BLE001
            problems.append(f"after the kill: {type(e).__name__}: {e}")
            counts["unloadable"] += 1
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        ok = rerun.returncode == 0 or (
            kind == "remove" and "not in" in rerun.stderr and not (_items(coll) & dropped)
        )
        if not ok:
            counts["rerun_failed"] += 1
            problems.append(f"re-run exit {rerun.returncode}: {rerun.stderr.strip()[-300:]}")
        gc.collect()
        report = check_collection(coll)
        if report.damaged:
            counts["damaged"] += 1
            problems.append(f"damaged: {[f.problem for f in report.findings if f.damage]}")
        log(f"trial {t + 1:2d}: {kind:7s} {'killed after' if killed else 'ended within'} "
            f"{delay:4.1f} s; {len(_items(coll)):3d} images"
            + ("; " + "; ".join(problems) if problems else ""))  # fmt: skip
        time.sleep(0.05)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "crash-trials")
    a = parser.parse_args()
    t0 = time.perf_counter()
    counts = run_trials(None, a.work, n=a.trials, seed=a.seed)
    seconds = time.perf_counter() - t0
    print(counts)
    lines = [
        "## Crash trials (issue 16)",
        "",
        f"`python -m bench.crash_trials --trials {a.trials} --seed {a.seed}` ({seconds:.0f} s): "
        "random commands (index, add, remove, compact, check --repair) on a 160-image "
        "collection, each killed with SIGKILL after a random 0.2-6 s, then re-run at once.",
        "",
        "| " + " | ".join(COUNTS) + " |",
        "|" + "---|" * len(COUNTS),
        "| " + " | ".join(str(counts[c]) for c in COUNTS) + " |",
        "",
    ]
    out = ROOT / "bench" / "results" / "crash_trials.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
