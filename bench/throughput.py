"""Embedding and search throughput, honest by construction: every figure is measured fresh in
the run that prints it, against a baseline timed in the same run, median of the repetitions.

    python -m bench.throughput            # about 15-25 minutes on 2 cores
    python -m bench.throughput --quick    # fewer images and repetitions

Parts (each writes its rows into bench/results/throughput.md):

1. `imgret index` (a whole process, start-up included, default settings) of a folder of
   Caltech-101 JPEGs with efficientnet-lite0, against the plain loop of issue 12: Pillow decode
   + resize, torch.inference_mode, 2 torch threads, batch 32, the same backbone. The runs
   alternate (baseline, imgret, baseline, ...), so load changes hit both alike.
2. The same folder as 12-megapixel JPEGs (upscaled, quality 90, made here in bench-out/).
3. One query image file against a 100,000-image collection with the pretrained model (the
   collection's default index): embed + search, p50 and p95, in one process.
4. Flat search over 1,000,000 x 512: imgret's Searcher (the collection's flat index) against a
   plain `faiss.IndexFlatIP.search`, and the same with each query's own row excluded.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as imgret sets it, before OpenMP starts

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALTECH = Path("/work/shared/datasets/caltech101")
WORK = ROOT / "bench-out" / "throughput"
RESULT = ROOT / "bench" / "results" / "throughput.md"
MODEL = "efficientnet-lite0"
PY = sys.executable
OLD_THREADS = max(1, (os.cpu_count() or 1) - 2)  # the thread plan before: cores - 2 decoders


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def photos(n: int) -> Path:
    """The first `n` Caltech-101 JPEGs (sorted, every class in turn), copied into bench-out."""
    folder = WORK / f"caltech-{n}"
    if folder.is_dir() and len(list(folder.rglob("*.jpg"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    classes = sorted(p for p in CALTECH.iterdir() if p.is_dir())
    per_class = [sorted(c.glob("*.jpg")) for c in classes]
    picked: list[Path] = []
    i = 0
    while len(picked) < n:
        picked += [files[i] for files in per_class if i < len(files)][: n - len(picked)]
        i += 1
    for src in picked:
        dst = folder / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return folder


def big_photos(small: Path, n: int) -> Path:
    """12-megapixel versions (upscaled, JPEG quality 90) of the first `n` images of `small`."""
    from PIL import Image

    folder = WORK / f"{small.name}-12mp-{n}"
    sources = sorted(small.rglob("*.jpg"))[:n]
    if folder.is_dir() and len(list(folder.rglob("*.jpg"))) == len(sources):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for src in sources:
        with Image.open(src) as img:
            w, h = img.size
            scale = (12_000_000 / (w * h)) ** 0.5
            big = img.convert("RGB").resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        dst = folder / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        big.save(dst, quality=90)
    return folder


BASELINE = r"""
import sys, time, torch, numpy as np
from pathlib import Path
from PIL import Image
from imgret.models.pretrained import load_pretrained
torch.set_num_threads(2)
model = load_pretrained("efficientnet-lite0", image_size=224, pooling="gem")
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
out = []
def load(p):
    img = Image.open(p).convert("RGB")
    w, h = img.size
    s = 224 / min(w, h)
    img = img.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    l, t = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    return np.asarray(img.crop((l, t, l + 224, t + 224)), np.uint8).transpose(2, 0, 1)
with torch.inference_mode():
    for s in range(0, len(files), 32):
        x = torch.from_numpy(np.stack([load(p) for p in files[s:s + 32]])).float() / 255
        out.append(model.embed_batch(x).numpy())
print(sum(len(o) for o in out))
"""


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of a whole process (start-up included); fails loudly."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def index_rates(
    folder: Path, reps: int, extra: list[str] | None = None, baseline: list[str] | None = None
) -> dict[str, list[float]]:
    """images/s of a baseline and of `imgret index [extra]` (fresh collection each time),
    alternated, the baseline first. baseline : `imgret index` options of the baseline runs
    (None: the plain PyTorch loop)."""
    n = len(list(folder.rglob("*.jpg")))
    env = {**os.environ, "IMGRET_CACHE_DIR": str(WORK / "cache")}
    rates: dict[str, list[float]] = {"baseline": [], "imgret": []}
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        for r in range(reps):
            for what, options in (("baseline", baseline), ("imgret", extra or [])):
                if options is None:
                    rates[what].append(n / _timed([PY, "-c", BASELINE, str(folder)]))
                    continue
                coll = Path(tmp) / f"{what}{r}"
                cmd = [PY, "-m", "imgret", "index", str(folder), "--out", str(coll), "--model"]
                rates[what].append(n / _timed([*cmd, MODEL, *options], env))
                shutil.rmtree(coll)
    return rates


def warm_export() -> float:
    """Seconds to export the model to ONNX once (the cache the timed runs then use)."""
    env = {**os.environ, "IMGRET_CACHE_DIR": str(WORK / "cache")}
    shutil.rmtree(WORK / "cache", ignore_errors=True)
    code = (
        "from imgret.models.backend import load_for_inference as f; "
        f"print(type(f({MODEL!r})).__name__)"
    )
    t0 = time.perf_counter()
    out = subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, env=env)
    if "OnnxBacked" not in out.stdout:
        raise SystemExit(f"the default backend did not give ONNX Runtime: {out.stdout}")
    return time.perf_counter() - t0


def query_latency(n: int, files: list[Path]) -> dict[str, float]:
    """p50/p95 ms of one query file -> ranked results on an n-image collection (pretrained)."""
    from imgret.models import registry
    from imgret.models.backend import load_for_inference
    from imgret.models.embed import embed_files
    from imgret.retrieval.searcher import Searcher
    from imgret.store.opening import create_collection, open_collection

    os.environ["IMGRET_CACHE_DIR"] = str(WORK / "cache")
    model = load_for_inference(MODEL)
    base = embed_files(model, files[:200])  # real embeddings, then noisy copies of them
    rng = np.random.default_rng(0)
    emb = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.02, (n, base.shape[1]))
    folder = WORK / f"collection-{n}"
    if not (folder / "collection.json").exists():
        create_collection(
            folder, model=registry.describe(MODEL, model), source="synthetic",
            keys=[f"k{i}" for i in range(n)], labels=[None] * n,
            embeddings=emb.astype(np.float32),
        )  # fmt: skip
    coll = open_collection(folder)
    searcher = Searcher(coll)
    ms = []
    for i in range(120):
        t0 = time.perf_counter()
        q = embed_files(model, [files[i % len(files)]])
        searcher.search(q, 10, mode="index")
        if i >= 20:  # the first ones warm the caches
            ms.append((time.perf_counter() - t0) * 1000)
    kind = coll.index.meta["factory"] if coll.index is not None else "none"
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "index": kind, "n": n}  # fmt: skip


def flat_search(n: int, reps: int) -> dict[str, list[float]]:
    """queries/s of 1,000 queries, k = 10, over n x 512: FAISS alone vs imgret's Searcher."""
    import faiss

    from imgret.retrieval.searcher import Searcher
    from imgret.store.index_files import IndexSettings
    from imgret.store.opening import create_collection, open_collection

    rng = np.random.default_rng(1)
    dim = 512
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, 1000, replace=False)] + 0.05 * rng.normal(size=(1000, dim)).astype(
        np.float32
    )
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    plain = faiss.IndexFlatIP(dim)
    plain.add(x)
    folder = WORK / f"flat-{n}"
    if not (folder / "collection.json").exists():
        create_collection(
            folder, model={"ref": "synthetic", "name": "x", "embedding_dim": dim,
                           "image_size": 8, "channels": 1, "fingerprint": None},
            source="synthetic", keys=[f"k{i}" for i in range(n)], labels=[None] * n,
            embeddings=x, settings=IndexSettings(kind="flat"),
        )  # fmt: skip
    searcher = Searcher(open_collection(folder))
    exclude = np.arange(1000, dtype=np.int64)  # one excluded position per query
    out: dict[str, list[float]] = {"faiss": [], "imgret": [], "imgret-exclude": []}
    for _ in range(reps):
        for name, run in (
            ("faiss", lambda: plain.search(q, 10)),
            ("imgret", lambda: searcher.search(q, 10, mode="index")),
            ("imgret-exclude", lambda: searcher.search(q, 10, mode="index", exclude=exclude)),
        ):
            t0 = time.perf_counter()
            run()
            out[name].append(1000 / (time.perf_counter() - t0))

    return out


def _med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer images and repetitions")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    n_small, n_big, reps = (300, 60, 3) if a.quick else (900, 150, 3)
    n_coll, n_flat = (100_000, 200_000) if a.quick else (100_000, 1_000_000)
    started, load0 = time.strftime("%Y-%m-%d %H:%M"), _load()
    print(f"load average at start: {load0}", flush=True)
    small = photos(n_small)
    big = big_photos(small, n_big)
    export_s = warm_export()
    print(f"ONNX export of {MODEL}: {export_s:.1f} s", flush=True)
    small_rates = index_rates(small, reps)
    print("small:", {k: [round(v, 1) for v in vs] for k, vs in small_rates.items()}, flush=True)
    big_rates = index_rates(big, reps)
    print("12 MP:", {k: [round(v, 1) for v in vs] for k, vs in big_rates.items()}, flush=True)
    torch_rates = index_rates(small, reps, ["--backend", "torch"])
    print("torch backend:", torch_rates, flush=True)
    old = ["--threads", str(OLD_THREADS)]
    plans = {"small": index_rates(small, reps, baseline=old),
             "big": index_rates(big, reps, baseline=old)}  # fmt: skip
    print("thread plans:", plans, flush=True)
    latency = query_latency(n_coll, sorted(small.rglob("*.jpg")))
    print("latency:", latency, flush=True)
    flat = flat_search(n_flat, reps)
    print("flat:", {k: [round(v) for v in vs] for k, vs in flat.items()}, flush=True)
    write(a, started, load0, export_s, n_small, n_big, small_rates, big_rates, torch_rates,
          plans, latency, flat, n_flat)  # fmt: skip


def write(a, started, load0, export_s, n_small, n_big, small, big, torch_rates, plans,  # noqa: ANN001, PLR0913
          latency, flat, n_flat) -> None:  # fmt: skip
    from imgret.core.atomic import write_text

    cmd = "python -m bench.throughput" + (" --quick" if a.quick else "")
    s_imgret, s_base = _med(small["imgret"]), _med(small["baseline"])
    b_imgret, b_base = _med(big["imgret"]), _med(big["baseline"])
    t_imgret, t_base = _med(torch_rates["imgret"]), _med(torch_rates["baseline"])
    f_plain, f_imgret, f_excl = (_med(flat[k]) for k in ("faiss", "imgret", "imgret-exclude"))

    plans_head = (f"| inference threads: every core (the default) vs the cores 2 decoders leave | "
                  f"default images/s | `--threads {OLD_THREADS}` images/s | ratio |")

    def row(what: str, rates: dict[str, list[float]]) -> str:
        return (f"| {what} | {', '.join(f'{v:.1f}' for v in rates['imgret'])} | "
                f"{', '.join(f'{v:.1f}' for v in rates['baseline'])} | "
                f"**{_med(rates['imgret']) / _med(rates['baseline']):.2f}x** |")  # fmt: skip

    text = f"""## Throughput (`{cmd}`)

Run {started} on {platform.node()} ({os.cpu_count()} cores, {platform.machine()}); load average
at start {load0}; every figure measured in this run, the median of {len(small['imgret'])}
repetitions, runs of imgret and of its baseline alternated. Model: {MODEL} (224 px, GeM),
imgret's defaults (backend auto = ONNX Runtime on this CPU; its one-time export took
{export_s:.1f} s and is cached). images/s = images / wall seconds of the whole process
(start-up, model load, decoding, embedding, writing the collection and its index).

| `imgret index` vs the plain PyTorch loop | imgret images/s | plain loop images/s | ratio |
|---|---|---|---|
{row(f"{n_small} Caltech-101 JPEGs", small)}
{row(f"{n_big} of them as 12-MP JPEGs", big)}
{row(f"{n_small} Caltech-101 JPEGs, `--backend torch`", torch_rates)}

{plans_head}
|---|---|---|---|
{row(f"{n_small} Caltech-101 JPEGs", plans["small"])}
{row(f"{n_big} of them as 12-MP JPEGs", plans["big"])}

- 12-MP JPEGs against small ones, imgret: {b_imgret:.1f} / {s_imgret:.1f} images/s =
  **{b_imgret / s_imgret:.2f}x** (the plain loop: {b_base / s_base:.2f}x).
- PyTorch backend inside imgret: {t_imgret / t_base:.2f}x the plain loop (decoding, threads and
  batching alone, same model runtime).
- One query image file -> top 10 of a {latency['n']:,}-image collection (index
  `{latency['index']}`, the default for that size; pretrained model, ONNX Runtime), in one
  process: **p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms** (100 queries after 20
  warm-up ones).
- Search of 1,000 queries (k = 10) over {n_flat:,} x 512 unit vectors, flat index: plain
  `faiss.IndexFlatIP.search` {f_plain:,.0f} queries/s; imgret's Searcher {f_imgret:,.0f} q/s
  (**{f_imgret / f_plain:.2f}x**); with each query's own position excluded {f_excl:,.0f} q/s
  (**{f_excl / f_imgret:.2f}x** of without).
"""
    write_text(RESULT, text)
    print(text)


if __name__ == "__main__":
    main()
