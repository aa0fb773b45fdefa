"""Labelled query/database splits: the named protocols of ../shared/BENCHMARKS.md and folders.

Named benchmarks:

- ``fashion-mnist``: database = the 60,000 train images; queries = the first 100 test images of
  each class, in file order (1,000); reported: mAP@1000, P@10, mAP@all.
- ``cifar10``: queries = the first 100 images of each class of ``test/`` by sorted file name
  (1,000); database = all of ``train/`` plus the rest of ``test/`` (59,000); mAP@1000, P@10.
- ``caltech101``: queries = the first 5 images of each class by sorted file name (505);
  database = every other image (8,172); mAP@all, P@10.

Variants of each, for choosing settings and for small collections:

- ``NAME:val``: the validation queries, disjoint from the test queries, against the protocol's
  database minus them (fashion-mnist: test images 101-200 of each class, the same database;
  cifar10: images 101-200 of each class of ``test/``, 58,000; caltech101: images 6-8 of each
  class, 7,869). Settings are chosen on these; their figures are never reported as results.
- ``NAME:small``: the test queries against 1,000 images of the database: the first 1,000 of a
  seed-0 shuffle, every class kept present (`small_subset`); a model for it is trained on
  those 1,000 images only (``NAME:small:database``).
- ``NAME:val:small``: the validation queries against 1,000 images of the validation database,
  chosen the same way (imgret's own addition, to choose small-collection settings).

Labels are for scoring only; unsupervised training may see the database images alone
(``NAME[:VARIANT]:database``, `open_training_source`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from .images import scan_folder
from .sources import ImageSource, open_source

__all__ = [
    "Benchmark", "BENCHMARK_NAMES", "VARIANTS", "is_benchmark_name", "load_benchmark",
    "labelled_split", "first_per_class", "per_class_range", "small_subset", "dataset_root",
    "open_training_source", "SMALL_SIZE",
]  # fmt: skip

BENCHMARK_NAMES = ("fashion-mnist", "cifar10", "caltech101")
VARIANTS = ("val", "small", "val:small")  # NAME:VARIANT; see the module docstring
SMALL_SIZE = 1000  # database images of a :small variant
SMALL_SEED = 0
DEFAULT_DATASETS = Path("/work/shared/datasets")


@dataclass
class Benchmark:
    """Queries and database of one evaluation, both with labels.

    `exclude` is None when queries are not in the database; otherwise (n_queries,) int64: the
    database position of each query (never ranked for itself; -1 = not in the database).
    """

    name: str
    queries: ImageSource
    database: ImageSource
    metrics: tuple[str, ...]  # the figures the protocol reports, e.g. ("mAP@1000", "P@10")
    image_size: int  # input side that suits the images (for pixel baselines)
    channels: int
    exclude: np.ndarray | None = None

    @property
    def k_map(self) -> int | None:
        """The k of the protocol's mAP@k (None when it reports mAP@all only)."""
        for m in self.metrics:
            if m.startswith("mAP@") and m != "mAP@all":
                return int(m[4:])
        return None


def dataset_root(name: str) -> Path:
    """Folder of a named image dataset: $IMGRET_DATASETS/<name> (default /work/shared/datasets)."""
    base = Path(os.environ.get("IMGRET_DATASETS", str(DEFAULT_DATASETS)))
    root = base / name
    if not root.is_dir():
        raise UserError(
            f"{name}: dataset not found at {root}. Set IMGRET_DATASETS to the folder holding "
            f"{name}/, or evaluate a labelled folder instead."
        )
    return root


def per_class_range(labels: list[str | None], start: int, stop: int) -> np.ndarray:
    """Positions of items `start`..`stop - 1` (0-based) of each label, counted in the given
    order -> (m,) int64 sorted. Unlabelled items (None) are never picked."""
    seen: dict[str | None, int] = defaultdict(int)
    picked = []
    for i, label in enumerate(labels):
        if label is None:
            continue
        if start <= seen[label] < stop:
            picked.append(i)
        seen[label] += 1
    return np.asarray(picked, dtype=np.int64)


def first_per_class(labels: list[str | None], n: int) -> np.ndarray:
    """Positions of the first `n` items of each label, in the given order -> (m,) int64 sorted."""
    return per_class_range(labels, 0, n)


def small_subset(
    labels: list[str | None], n: int = SMALL_SIZE, seed: int = SMALL_SEED
) -> np.ndarray:
    """`n` positions of a seeded shuffle with every label present -> (n,) int64 sorted.

    The first `n` of a permutation (numpy's default_rng(seed)); when a label is missing from
    them, the first image of each label in the shuffle is taken first and the rest of the `n`
    filled in shuffle order. All positions when there are at most `n`.
    """
    if len(labels) <= n:
        return np.arange(len(labels), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    first: dict[str | None, int] = {}
    for i in order:
        first.setdefault(labels[i], int(i))
    if len(first) > n:
        raise UserError(f"a small variant of {n} images cannot hold all {len(first)} classes")
    picked = set(first.values())
    for i in order:
        if len(picked) >= n:
            break
        picked.add(int(i))
    return np.asarray(sorted(picked), dtype=np.int64)


def _rest(n: int, picked: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[picked] = False
    return np.flatnonzero(mask)


def _fashion_mnist(val: bool) -> Benchmark:
    test = open_source("fashion-mnist:test")
    queries = test.subset(per_class_range(test.labels, 100, 200) if val
                          else first_per_class(test.labels, 100))  # fmt: skip
    database = open_source("fashion-mnist:train")
    metrics = ("mAP@1000", "P@10", "mAP@all")
    return Benchmark("fashion-mnist", queries, database, metrics, 28, 1)


def _labelled_files(root: Path) -> tuple[list[str], list[str | None]]:
    paths = scan_folder(root)
    return [str(p) for p in paths], [p.parent.name for p in paths]


def _cifar10(val: bool) -> Benchmark:
    root = dataset_root("cifar10")
    train_keys, train_labels = _labelled_files(root / "train")
    test_keys, test_labels = _labelled_files(root / "test")
    if not train_keys or not test_keys:
        raise UserError(f"{root}: expected train/<class>/*.jpg and test/<class>/*.jpg")
    # scan_folder sorts by path: class, then file name
    q = per_class_range(test_labels, 100, 200) if val else first_per_class(test_labels, 100)
    rest = _rest(len(test_keys), per_class_range(test_labels, 0, 200) if val else q)
    queries = ImageSource("cifar10:queries", [test_keys[i] for i in q], [test_labels[i] for i in q])
    database = ImageSource(
        "cifar10:database",
        train_keys + [test_keys[i] for i in rest],
        train_labels + [test_labels[i] for i in rest],
    )
    return Benchmark("cifar10", queries, database, ("mAP@1000", "P@10"), 32, 3)


def _caltech101(val: bool) -> Benchmark:
    root = dataset_root("caltech101")
    keys, labels = _labelled_files(root)
    q = per_class_range(labels, 5, 8) if val else first_per_class(labels, 5)
    rest = _rest(len(keys), per_class_range(labels, 0, 8) if val else q)
    queries = ImageSource("caltech101:queries", [keys[i] for i in q], [labels[i] for i in q])
    database = ImageSource(
        "caltech101:database", [keys[i] for i in rest], [labels[i] for i in rest], root=root
    )
    return Benchmark("caltech101", queries, database, ("mAP@all", "P@10"), 64, 3)


def is_benchmark_name(name: str) -> bool:
    """A named benchmark: one of BENCHMARK_NAMES, alone or with one of VARIANTS."""
    base, _, variant = name.partition(":")
    return base in BENCHMARK_NAMES and variant in ("", *VARIANTS)


def load_benchmark(name: str) -> Benchmark:
    """``NAME[:VARIANT]`` (BENCHMARK_NAMES, VARIANTS), split exactly as its protocol says."""
    loaders = {"fashion-mnist": _fashion_mnist, "cifar10": _cifar10, "caltech101": _caltech101}
    if not is_benchmark_name(name):
        known = ", ".join(BENCHMARK_NAMES)
        raise UserError(
            f"unknown benchmark {name!r}; known: {known}, each also as NAME:val, NAME:small "
            "or NAME:val:small"
        )
    base, _, variant = name.partition(":")
    bench = loaders[base](variant.startswith("val"))
    if variant.endswith("small"):
        bench.database = bench.database.subset(small_subset(bench.database.labels))
    bench.name = name
    return bench


def labelled_split(spec: str | Path, queries_per_class: int | None = None) -> Benchmark:
    """A benchmark from a labelled folder (labels = sub-folder names) or a built-in source.

    With `queries_per_class` = n, the first n images of each class (sorted by path) are the
    queries and the others the database. Without it, every image is a query against all the
    others (leave-one-out).
    """
    source = open_source(spec)
    labelled = [i for i, label in enumerate(source.labels) if label is not None]
    if len(labelled) < len(source):
        source = source.subset(labelled)  # images directly in the root have no label
    classes = set(source.labels)
    if len(classes) < 2:
        raise UserError(
            f"{source.name}: evaluation needs labelled images in at least 2 sub-folders "
            f"(found {len(classes)} label(s))"
        )
    if source.arrays is not None:
        side = max(source.arrays.shape[1:3])
        size, channels = max(8, -(-side // 4) * 4), 1 if source.is_grayscale else 3
    else:
        size, channels = 32, 3
    metrics = ("mAP@100", "mAP@all", "P@10")
    if queries_per_class is None:
        exclude = np.arange(len(source), dtype=np.int64)
        return Benchmark(source.name, source, source, metrics, size, channels, exclude)
    if queries_per_class < 1:
        raise UserError("--queries-per-class must be 1 or more")
    q = first_per_class(source.labels, queries_per_class)
    rest = _rest(len(source), q)
    if len(rest) == 0:
        raise UserError(f"{source.name}: no database images left after taking the queries")
    return Benchmark(
        source.name, source.subset(q), source.subset(rest), metrics, size, channels, None
    )


def open_training_source(spec: str | Path) -> ImageSource:
    """A folder, a built-in source, or ``BENCHMARK:database`` (a benchmark's database images,
    e.g. ``cifar10:database`` or ``cifar10:small:database``)."""
    name, _, part = str(spec).rpartition(":")
    if part == "database" and is_benchmark_name(name):
        return load_benchmark(name).database
    return open_source(spec)
