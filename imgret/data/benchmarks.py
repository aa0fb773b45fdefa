"""Labelled query/database splits: the named protocols of ../shared/BENCHMARKS.md and folders.

Named benchmarks:

- ``fashion-mnist``: database = the 60,000 train images; queries = the first 100 test images of
  each class, in file order (1,000); reported: mAP@1000, P@10, mAP@all.
- ``cifar10``: queries = the first 100 images of each class of ``test/`` by sorted file name
  (1,000); database = all of ``train/`` plus the rest of ``test/`` (59,000); mAP@1000, P@10.
- ``caltech101``: queries = the first 5 images of each class by sorted file name (505);
  database = every other image (8,172); mAP@all, P@10.

Labels are for scoring only; unsupervised training may see the database images alone.
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
    "Benchmark", "BENCHMARK_NAMES", "load_benchmark", "labelled_split", "first_per_class",
    "dataset_root", "open_training_source",
]  # fmt: skip

BENCHMARK_NAMES = ("fashion-mnist", "cifar10", "caltech101")
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


def first_per_class(labels: list[str | None], n: int) -> np.ndarray:
    """Positions of the first `n` items of each label, in the given order -> (m,) int64 sorted."""
    taken: dict[str | None, int] = defaultdict(int)
    picked = []
    for i, label in enumerate(labels):
        if label is not None and taken[label] < n:
            taken[label] += 1
            picked.append(i)
    return np.asarray(picked, dtype=np.int64)


def _rest(n: int, picked: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[picked] = False
    return np.flatnonzero(mask)


def _fashion_mnist() -> Benchmark:
    test = open_source("fashion-mnist:test")
    queries = test.subset(first_per_class(test.labels, 100))
    database = open_source("fashion-mnist:train")
    metrics = ("mAP@1000", "P@10", "mAP@all")
    return Benchmark("fashion-mnist", queries, database, metrics, 28, 1)


def _labelled_files(root: Path) -> tuple[list[str], list[str | None]]:
    paths = scan_folder(root)
    return [str(p) for p in paths], [p.parent.name for p in paths]


def _cifar10() -> Benchmark:
    root = dataset_root("cifar10")
    train_keys, train_labels = _labelled_files(root / "train")
    test_keys, test_labels = _labelled_files(root / "test")
    if not train_keys or not test_keys:
        raise UserError(f"{root}: expected train/<class>/*.jpg and test/<class>/*.jpg")
    q = first_per_class(test_labels, 100)  # scan_folder sorts by path: class, then file name
    rest = _rest(len(test_keys), q)
    queries = ImageSource("cifar10:queries", [test_keys[i] for i in q], [test_labels[i] for i in q])
    database = ImageSource(
        "cifar10:database",
        train_keys + [test_keys[i] for i in rest],
        train_labels + [test_labels[i] for i in rest],
    )
    return Benchmark("cifar10", queries, database, ("mAP@1000", "P@10"), 32, 3)


def _caltech101() -> Benchmark:
    root = dataset_root("caltech101")
    keys, labels = _labelled_files(root)
    q = first_per_class(labels, 5)
    rest = _rest(len(keys), q)
    queries = ImageSource("caltech101:queries", [keys[i] for i in q], [labels[i] for i in q])
    database = ImageSource(
        "caltech101:database", [keys[i] for i in rest], [labels[i] for i in rest], root=root
    )
    return Benchmark("caltech101", queries, database, ("mAP@all", "P@10"), 64, 3)


def load_benchmark(name: str) -> Benchmark:
    """One of BENCHMARK_NAMES, split exactly as its protocol says."""
    loaders = {"fashion-mnist": _fashion_mnist, "cifar10": _cifar10, "caltech101": _caltech101}
    if name not in loaders:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")
    return loaders[name]()


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
    """A folder, a built-in source, or ``BENCHMARK:database`` (a benchmark's database images)."""
    name, _, part = str(spec).partition(":")
    if part == "database" and name in BENCHMARK_NAMES:
        return load_benchmark(name).database
    return open_source(spec)
