"""Retrieval experiments with the ImageNet-pretrained EfficientNet-Lite0 (imgret.pretrained).

Protocol `caltech101` of BENCHMARKS.md: queries = the first 5 images of each class by sorted
file name (505), database = every other image (8,172), cosine ranking, mAP@all and P@10,
relevant = same class (labels are used for scoring only).

Each embedding pass (one input size, one resize mode, optionally horizontally flipped) runs the
network once and caches every pooling of the same feature map (avg, GeM p=2/3/4, max) as
L2-normalised float32 .npy files, so the variants below are cheap:

    python scripts/pretrained_experiments.py embed --size 224 --resize crop
    python scripts/pretrained_experiments.py evaluate            # full protocol, cached passes

On a busy shared machine, settings can be compared on a cheaper subset (all 505 queries + a
seeded random 1,000 of the database; full-protocol passes are sliced to the same subset):

    python scripts/pretrained_experiments.py embed --db-subset 1000 --size 256 --resize crop
    python scripts/pretrained_experiments.py embed --db-subset 1000 --size 224 --resize squash
    python scripts/pretrained_experiments.py embed --db-subset 1000 --size 224 --flip
    python scripts/pretrained_experiments.py evaluate --db-subset 1000

    python scripts/pretrained_experiments.py cifar --size 128   # 5,000-image CIFAR-10 subset

Run from the repository root with PYTHONPATH=. (or with imgret installed).

Throughput is images/s for the whole pass: decoding from disk + resize + forward, batch 64,
torch.set_num_threads(2).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from imgret.models.pretrained import load_pretrained, pool_feature_map

CALTECH = Path("/work/shared/datasets/caltech101")
CIFAR = Path("/work/shared/datasets/cifar10")
CACHE = Path("/tmp/imgret_exp")
BATCH = 64
POOLINGS: dict[str, tuple[str, float]] = {
    "avg": ("avg", 1.0),
    "gem2": ("gem", 2.0),
    "gem3": ("gem", 3.0),
    "gem4": ("gem", 4.0),
}
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}


# ---------------------------------------------------------------- data


def list_dataset(root: Path, per_class_queries: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """root/<class>/<file> -> (paths, labels (n,) int64, is_query (n,) bool).

    The first `per_class_queries` files of each class by sorted name are the queries.
    """
    paths: list[Path] = []
    labels: list[int] = []
    is_query: list[bool] = []
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    for ci, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        for i, f in enumerate(files):
            paths.append(f)
            labels.append(ci)
            is_query.append(i < per_class_queries)
    return paths, np.asarray(labels, dtype=np.int64), np.asarray(is_query)


def subset_indices(is_query: np.ndarray, n_database: int, seed: int = 0) -> np.ndarray:
    """All queries + a seeded random sample of `n_database` database images -> sorted indices.

    A cheaper stand-in for the full protocol when comparing settings (the machine is shared);
    its numbers are only comparable with other runs on the same subset.
    """
    rng = np.random.default_rng(seed)
    sample = rng.choice(np.flatnonzero(~is_query), size=n_database, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(is_query), sample]))


def load_image(path: Path, size: int, resize: str) -> np.ndarray:
    """Decode -> EXIF-rotate -> RGB -> (3, size, size) uint8.

    resize : "crop" (shorter side to `size`, centre crop) or "squash" (plain resize to a square)
    """
    with Image.open(path) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    if resize == "squash":
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    else:
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------- embedding


def pass_name(dataset: str, size: int, resize: str, flip: bool) -> str:
    return f"{dataset}_{resize}{size}" + ("_flip" if flip else "")


def embed_pass(
    dataset: str, paths: Sequence[Path], size: int, resize: str, flip: bool, force: bool = False
) -> dict[str, float]:
    """Embed every image once; cache each pooling as CACHE/<pass>_<pooling>.npy (n, 1280)."""
    name = pass_name(dataset, size, resize, flip)
    meta_path = CACHE / f"{name}.json"
    if meta_path.exists() and not force:
        return json.loads(meta_path.read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(image_size=size)
    out: dict[str, list[np.ndarray]] = {k: [] for k in [*POOLINGS, "max"]}
    t_decode = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(paths), BATCH):
        t = time.perf_counter()
        batch = np.stack([load_image(p, size, resize) for p in paths[start : start + BATCH]])
        x = torch.from_numpy(batch)  # (B, 3, size, size) uint8
        if flip:
            x = x.flip(-1)
        t_decode += time.perf_counter() - t
        with torch.inference_mode():
            fmap = model.feature_map(x)  # (B, 1280, size/32, size/32)
            for key, (pooling, p) in POOLINGS.items():
                pooled = pool_feature_map(fmap, pooling, p)
                out[key].append(torch.nn.functional.normalize(pooled, dim=1).numpy())
            pooled = fmap.amax(dim=(2, 3))
            out["max"].append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        done = min(start + BATCH, len(paths))
        if (start // BATCH) % 20 == 0:
            rate = done / (time.perf_counter() - t0)
            print(f"  {name}: {done}/{len(paths)} images, {rate:.1f} images/s", flush=True)
    elapsed = time.perf_counter() - t0
    for key, chunks in out.items():
        np.save(CACHE / f"{name}_{key}.npy", np.concatenate(chunks).astype(np.float32))
    meta = {
        "images": len(paths),
        "seconds": elapsed,
        "images_per_s": len(paths) / elapsed,
        "decode_seconds": t_decode,
        "load_avg_1min_at_end": float(Path("/proc/loadavg").read_text().split()[0]),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"{name}: {meta['images_per_s']:.1f} images/s ({elapsed:.0f} s)", flush=True)
    return meta


def cached(dataset: str, size: int, resize: str, pooling: str, flip: bool = False) -> np.ndarray:
    return np.load(CACHE / f"{pass_name(dataset, size, resize, flip)}_{pooling}.npy")


# ---------------------------------------------------------------- metrics


def l2n(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def retrieval_metrics(
    q: np.ndarray, d: np.ndarray, q_labels: np.ndarray, d_labels: np.ndarray, k: int | None = None
) -> tuple[float, float]:
    """(mAP@k, P@10) of cosine ranking; k=None is mAP@all (divide by all relevant items).

    q : (n_queries, dim) L2-normalised; d : (n_database, dim) L2-normalised
    """
    sims = q @ d.T  # (n_queries, n_database)
    order = np.argsort(-sims, axis=1, kind="stable")
    rel = d_labels[order] == q_labels[:, None]  # (n_queries, n_database) bool
    p10 = float(rel[:, :10].mean())
    if k is not None:
        rel = rel[:, :k]
    precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    n_rel = rel.sum(axis=1)  # mAP@all: = all relevant items in the database
    ap = np.where(n_rel > 0, (precision * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    return float(ap.mean()), p10


# ---------------------------------------------------------------- label-free post-processing


def pca_whiten(
    q: np.ndarray, d: np.ndarray, dim: int, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """PCA fit on the database only -> both sides projected to `dim`, L2-normalised.

    strength : 1 = PCA(whiten=True) (each component divided by its standard deviation);
        0.5 = "partial" whitening (divided by the square root of it); 0 = plain projection
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dim, whiten=strength == 1.0, random_state=0).fit(d)
    if strength == 1.0:
        return l2n(pca.transform(q)), l2n(pca.transform(d))
    scale = np.sqrt(pca.explained_variance_) ** -strength  # (dim,)
    return l2n(pca.transform(q) * scale), l2n(pca.transform(d) * scale)


def center(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = d.mean(axis=0, keepdims=True)
    return l2n(q - mean), l2n(d - mean)


def power(q: np.ndarray, d: np.ndarray, a: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Signed power normalisation (features are >= 0, so a plain power)."""
    return l2n(np.sign(q) * np.abs(q) ** a), l2n(np.sign(d) * np.abs(d) ** a)


def alpha_qe(
    q: np.ndarray, d: np.ndarray, k: int = 10, alpha: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """alpha-query expansion: q' = q + sum over its top-k database items of sim^alpha * item."""
    sims = q @ d.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]  # (n_queries, k)
    w = np.maximum(np.take_along_axis(sims, top, axis=1), 0) ** alpha
    return l2n(q + np.einsum("qk,qkd->qd", w, d[top])), d


def dba(d: np.ndarray, k: int = 10, alpha: float = 3.0, chunk: int = 2048) -> np.ndarray:
    """Database-side augmentation: every database item averaged with its top-k neighbours."""
    out = np.empty_like(d)
    for s in range(0, len(d), chunk):
        sims = d[s : s + chunk] @ d.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]  # includes the item itself
        w = np.maximum(np.take_along_axis(sims, top, axis=1), 0) ** alpha
        out[s : s + chunk] = np.einsum("qk,qkd->qd", w, d[top])
    return l2n(out)


def dba_qe(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = dba(d)
    return alpha_qe(q, d2)


# ---------------------------------------------------------------- experiment tables


Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def whiten(dim: int, strength: float = 1.0) -> Transform:
    def transform(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pca_whiten(q, d, dim, strength)

    return transform


def then(*transforms: Transform) -> Transform:
    """The transforms applied one after the other."""

    def transform(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for t in transforms:
            q, d = t(q, d)
        return q, d

    return transform


def evaluate_caltech(out_json: Path) -> list[dict[str, object]]:
    _, labels, is_query = list_dataset(CALTECH, per_class_queries=5)
    ql, dl = labels[is_query], labels[~is_query]
    rows: list[dict[str, object]] = []

    def have(size: int, resize: str, flip: bool = False) -> bool:
        return (CACHE / f"{pass_name('caltech101', size, resize, flip)}.json").exists()

    def speed(size: int, resize: str, flip: bool = False) -> float:
        meta = json.loads(
            (CACHE / f"{pass_name('caltech101', size, resize, flip)}.json").read_text()
        )
        return round(meta["images_per_s"], 1)

    def run(label: str, emb: np.ndarray, transform: Transform | None, ips: float | str) -> None:
        q, d = emb[is_query], emb[~is_query]
        if transform is not None:
            q, d = transform(q, d)
        m, p10 = retrieval_metrics(q, d, ql, dl)
        rows.append({"variant": label, "mAP@all": round(m, 4), "P@10": round(p10, 4), "img/s": ips})
        print(f"{label:<62} mAP@all {m:.4f}  P@10 {p10:.4f}  {ips} img/s", flush=True)

    whiten512 = whiten(512)
    passes = [(s, r) for r in ("crop", "squash") for s in (128, 160, 192, 224, 256) if have(s, r)]
    # 1. resolution x resize mode x pooling, with and without PCA-whitening to 512
    for size, resize in passes:
        for pooling in ("avg", "gem2", "gem3", "gem4", "max"):
            emb = cached("caltech101", size, resize, pooling)
            ips = speed(size, resize)
            run(f"{resize}{size} {pooling}", emb, None, ips)
            run(f"{resize}{size} {pooling} + PCA-whiten 512", emb, whiten512, ips)
    # 2. other label-free post-processing on the main settings
    for size, resize in passes:
        for pooling in ("avg", "gem3"):
            emb = cached("caltech101", size, resize, pooling)
            ips = speed(size, resize)
            for dim in (128, 256):
                run(f"{resize}{size} {pooling} + PCA-whiten {dim}", emb, whiten(dim), ips)
            run(f"{resize}{size} {pooling} + PCA 512, no whitening", emb, whiten(512, 0.0), ips)
            run(f"{resize}{size} {pooling} + PCA 512, half whitening", emb, whiten(512, 0.5), ips)
            run(f"{resize}{size} {pooling} + centering", emb, center, ips)
            run(f"{resize}{size} {pooling} + alpha-QE(k=10,a=3)", emb, alpha_qe, ips)
            run(f"{resize}{size} {pooling} + DBA+alpha-QE(k=10,a=3)", emb, dba_qe, ips)
            run(
                f"{resize}{size} {pooling} + centering + DBA+alpha-QE",
                emb,
                then(center, dba_qe),
                ips,
            )
            run(
                f"{resize}{size} {pooling} + PCA 512 half whitening + DBA+alpha-QE",
                emb,
                then(whiten(512, 0.5), dba_qe),
                ips,
            )
            run(
                f"{resize}{size} {pooling} + PCA-whiten 512 + DBA+alpha-QE",
                emb,
                then(whiten512, dba_qe),
                ips,
            )
    # 3. flip test-time augmentation (average of the image and its mirror image)
    for size, resize in passes:
        if not have(size, resize, flip=True):
            continue
        ips = round(1.0 / (1.0 / speed(size, resize) + 1.0 / speed(size, resize, True)), 1)
        for pooling in ("avg", "gem3"):
            emb = l2n(
                cached("caltech101", size, resize, pooling)
                + cached("caltech101", size, resize, pooling, flip=True)
            )
            run(f"{resize}{size} {pooling} + flip TTA", emb, None, ips)
            run(f"{resize}{size} {pooling} + flip TTA + PCA-whiten 512", emb, whiten512, ips)
            run(
                f"{resize}{size} {pooling} + flip TTA + PCA-whiten 512 + DBA+alpha-QE",
                emb,
                then(whiten512, dba_qe),
                ips,
            )
    # 4. multi-scale: concatenation of two L2-normalised embeddings (= mean of their cosines)
    crops = [s for s, r in passes if r == "crop"]
    for i, s1 in enumerate(crops):
        for s2 in crops[i + 1 :]:
            ips = round(1.0 / (1.0 / speed(s1, "crop") + 1.0 / speed(s2, "crop")), 1)
            for pooling in ("avg", "gem3"):
                emb = l2n(
                    np.concatenate(
                        [
                            cached("caltech101", s1, "crop", pooling),
                            cached("caltech101", s2, "crop", pooling),
                        ],
                        axis=1,
                    )
                )
                label = f"crop{s1}+crop{s2} concat {pooling}"
                run(label, emb, None, ips)
                run(f"{label} + PCA-whiten 512", emb, whiten512, ips)
                run(
                    f"{label} + PCA-whiten 512 + DBA+alpha-QE",
                    emb,
                    then(whiten512, dba_qe),
                    ips,
                )
    out_json.write_text(json.dumps(rows, indent=1))
    return rows


def evaluate_caltech_subset(n_database: int) -> list[dict[str, object]]:
    """Every setting embedded on the subset (and the full-protocol passes, sliced to it)."""
    _, labels, is_query = list_dataset(CALTECH, per_class_queries=5)
    idx = subset_indices(is_query, n_database)
    sub_labels, sub_query = labels[idx], is_query[idx]
    ql, dl = sub_labels[sub_query], sub_labels[~sub_query]
    dataset = f"caltech101sub{n_database}"
    rows: list[dict[str, object]] = []

    def load(size: int, resize: str, pooling: str, flip: bool = False) -> np.ndarray | None:
        if (CACHE / f"{pass_name(dataset, size, resize, flip)}.json").exists():
            return cached(dataset, size, resize, pooling, flip)
        if (CACHE / f"{pass_name('caltech101', size, resize, flip)}.json").exists():
            return cached("caltech101", size, resize, pooling, flip)[idx]
        return None

    def run(label: str, emb: np.ndarray, transform: Transform | None) -> None:
        q, d = emb[sub_query], emb[~sub_query]
        if transform is not None:
            q, d = transform(q, d)
        m, p10 = retrieval_metrics(q, d, ql, dl)
        rows.append({"variant": label, "mAP@all": round(m, 4), "P@10": round(p10, 4)})
        print(f"[subset {n_database}] {label:<48} mAP@all {m:.4f}  P@10 {p10:.4f}", flush=True)

    settings = [(s, r) for r in ("crop", "squash") for s in (128, 160, 192, 224, 256)]
    for size, resize in settings:
        for pooling in ("avg", "gem3"):
            emb = load(size, resize, pooling)
            if emb is None:
                continue
            name = f"{resize}{size} {pooling}"
            run(name, emb, None)
            run(f"{name} + PCA-whiten 512", emb, whiten(512))
            run(f"{name} + DBA+alpha-QE", emb, dba_qe)
            flipped = load(size, resize, pooling, flip=True)
            if flipped is not None:
                emb = l2n(emb + flipped)
                run(f"{name} + flip TTA", emb, None)
                run(f"{name} + flip TTA + DBA+alpha-QE", emb, dba_qe)
    for pooling in ("avg", "gem3"):
        a, b = load(224, "crop", pooling), load(256, "crop", pooling)
        if a is not None and b is not None:
            emb = l2n(np.concatenate([a, b], axis=1))
            run(f"crop224+crop256 concat {pooling}", emb, None)
            run(f"crop224+crop256 concat {pooling} + DBA+alpha-QE", emb, dba_qe)
    (CACHE / f"{dataset}_results.json").write_text(json.dumps(rows, indent=1))
    return rows


def cifar_subset(size: int, per_class: int = 500, queries_per_class: int = 100) -> None:
    """5,000-image CIFAR-10 subset: the first 500 test images of each class by sorted name;
    queries = the first 100 of each class (1,000), database = the other 4,000. mAP@1000, P@10.
    """
    paths, labels, _ = list_dataset(CIFAR / "test", per_class_queries=0)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    paths = [paths[i] for i in keep]
    labels = labels[keep]
    rank = np.concatenate([np.arange(per_class)] * 10)
    is_query = rank < queries_per_class
    meta = embed_pass("cifar10sub", paths, size, "crop", flip=False)
    for pooling in ("avg", "gem3"):
        emb = cached("cifar10sub", size, "crop", pooling)
        q, d = emb[is_query], emb[~is_query]
        for label, (qq, dd) in (
            ("", (q, d)),
            (" + PCA-whiten 512", pca_whiten(q, d, 512)),
        ):
            m, p10 = retrieval_metrics(qq, dd, labels[is_query], labels[~is_query], k=1000)
            print(
                f"cifar10 subset {size}px {pooling}{label}: mAP@1000 {m:.4f}  P@10 {p10:.4f}  "
                f"{meta['images_per_s']:.1f} img/s"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_embed = sub.add_parser("embed", help="embed caltech101 once at one setting (cached)")
    p_embed.add_argument("--size", type=int, default=224)
    p_embed.add_argument("--resize", choices=("crop", "squash"), default="crop")
    p_embed.add_argument("--flip", action="store_true", help="embed the mirror images")
    p_embed.add_argument("--force", action="store_true", help="recompute a cached pass")
    p_embed.add_argument(
        "--db-subset", type=int, default=0, help="embed the queries + N database images only"
    )
    p_eval = sub.add_parser("evaluate", help="score every cached caltech101 variant")
    p_eval.add_argument(
        "--db-subset", type=int, default=0, help="score the queries + N database images only"
    )
    p_eval.add_argument("--out", type=Path, default=CACHE / "caltech101_results.json")
    p_cifar = sub.add_parser("cifar", help="5,000-image CIFAR-10 subset at one input size")
    p_cifar.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    if args.command == "embed":
        paths, _, is_query = list_dataset(CALTECH, per_class_queries=5)
        dataset = "caltech101"
        if args.db_subset:
            paths = [paths[i] for i in subset_indices(is_query, args.db_subset)]
            dataset = f"caltech101sub{args.db_subset}"
        embed_pass(dataset, paths, args.size, args.resize, args.flip, force=args.force)
    elif args.command == "evaluate" and args.db_subset:
        evaluate_caltech_subset(args.db_subset)
    elif args.command == "evaluate":
        evaluate_caltech(args.out)
    else:
        cifar_subset(args.size)


if __name__ == "__main__":
    main()
