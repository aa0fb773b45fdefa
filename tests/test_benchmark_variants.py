"""Validation and small-collection variants of the named benchmarks (imgret.data.benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgret.core.errors import UserError
from imgret.data.benchmarks import (
    is_benchmark_name,
    load_benchmark,
    open_training_source,
    per_class_range,
    small_subset,
)


def _tree(root: Path, layout: dict[str, int]) -> None:
    """Empty files named 0000.jpg ... per folder: the splits only look at names."""
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i:04d}.jpg").write_bytes(b"x")


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _tree(tmp_path / "cifar10", {"train/cat": 400, "train/dog": 300, "test/cat": 230,
                                 "test/dog": 210})  # fmt: skip
    caltech = {f"class{c:02d}": 30 + c for c in range(30)}  # 30 classes, 1,335 images
    caltech["rare"] = 9  # a class the first 1,000 of the shuffle might miss
    _tree(tmp_path / "caltech101", caltech)
    monkeypatch.setenv("IMGRET_DATASETS", str(tmp_path))
    return tmp_path


def _names(keys: list[str]) -> list[str]:
    return ["/".join(Path(k).parts[-2:]) for k in keys]


def test_per_class_range_counts_each_label_in_order() -> None:
    labels = ["a", "b", "a", None, "a", "b", "b", "a"]
    assert per_class_range(labels, 0, 2).tolist() == [0, 1, 2, 5]
    assert per_class_range(labels, 1, 3).tolist() == [2, 4, 5, 6]
    assert per_class_range(labels, 5, 9).tolist() == []


def test_cifar10_validation_queries_are_images_101_to_200(datasets: Path) -> None:
    test, val = load_benchmark("cifar10"), load_benchmark("cifar10:val")
    assert val.name == "cifar10:val" and val.metrics == test.metrics
    assert len(val.queries) == 200
    assert _names(val.queries.keys)[:2] == ["cat/0100.jpg", "cat/0101.jpg"]
    assert _names(val.queries.keys)[-1] == "dog/0199.jpg"
    # No query in its own database, no validation query among the test queries.
    assert not set(val.queries.keys) & set(val.database.keys)
    assert not set(val.queries.keys) & set(test.queries.keys)
    # The validation database is the protocol's database minus the validation queries.
    assert set(val.database.keys) == set(test.database.keys) - set(val.queries.keys)
    assert len(val.database) == 400 + 300 + 30 + 10


def test_caltech101_validation_queries_are_images_6_to_8(datasets: Path) -> None:
    test, val = load_benchmark("caltech101"), load_benchmark("caltech101:val")
    assert len(test.queries) == 31 * 5 and len(val.queries) == 31 * 3
    assert [n for n in _names(val.queries.keys) if n.startswith("rare/")] == [
        "rare/0005.jpg", "rare/0006.jpg", "rare/0007.jpg"
    ]  # fmt: skip
    assert not set(val.queries.keys) & set(val.database.keys)
    assert not set(val.queries.keys) & set(test.queries.keys)
    assert set(val.database.keys) == set(test.database.keys) - set(val.queries.keys)


def test_small_variant_keeps_the_queries_and_1000_database_images(datasets: Path) -> None:
    full, small = load_benchmark("caltech101"), load_benchmark("caltech101:small")
    assert small.queries.keys == full.queries.keys
    assert len(small.database) == 1000
    assert set(small.database.keys) <= set(full.database.keys)
    assert set(small.database.labels) == set(full.database.labels)  # every class kept
    assert load_benchmark("caltech101:small").database.keys == small.database.keys  # fixed seed
    trained_on = open_training_source("caltech101:small:database")
    assert trained_on.keys == small.database.keys
    val_small = load_benchmark("caltech101:val:small")
    val = load_benchmark("caltech101:val")
    assert val_small.queries.keys == val.queries.keys
    assert len(val_small.database) == 1000
    assert set(val_small.database.keys) <= set(val.database.keys)
    assert not set(val_small.queries.keys) & set(val_small.database.keys)


def test_small_subset_is_a_seeded_shuffle_with_every_label() -> None:
    labels: list[str | None] = ["common"] * 5000 + ["rare"]
    picked = small_subset(labels, 1000, seed=0)
    assert len(picked) == 1000 and np.all(np.diff(picked) > 0)
    assert 5000 in picked  # the only "rare" image
    order = np.random.default_rng(0).permutation(len(labels))
    if 5000 not in order[:1000]:  # the rest is the shuffle's order, minus what made room
        assert set(picked.tolist()) == set(order[:999].tolist()) | {5000}
    assert small_subset(labels, 1000, seed=0).tolist() == picked.tolist()
    assert small_subset(labels, 1000, seed=1).tolist() != picked.tolist()
    plain: list[str | None] = ["a", "b"] * 1000
    assert small_subset(plain, 1000).tolist() == sorted(
        np.random.default_rng(0).permutation(2000)[:1000].tolist()
    )
    assert small_subset(["a", "b"], 1000).tolist() == [0, 1]


def test_variant_names() -> None:
    assert is_benchmark_name("cifar10:val") and is_benchmark_name("fashion-mnist:val:small")
    assert not is_benchmark_name("cifar10:test") and not is_benchmark_name("digits")
    with pytest.raises(UserError, match="NAME:val"):
        load_benchmark("cifar10:validation")


def test_fashion_mnist_validation_queries() -> None:
    try:
        test, val = load_benchmark("fashion-mnist"), load_benchmark("fashion-mnist:val")
    except UserError:
        pytest.skip("Fashion-MNIST is not installed")
    assert len(val.queries) == 1000 and val.database.keys == test.database.keys
    assert not set(val.queries.keys) & set(test.queries.keys)
    counts = {label: val.queries.labels.count(label) for label in set(val.queries.labels)}
    assert set(counts.values()) == {100}
