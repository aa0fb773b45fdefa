"""Evaluation: ranking, scoring, the benchmark splits, and `imgret evaluate`."""

import json
from pathlib import Path

import numpy as np
import pytest

from imgret.cli import main
from imgret.core.errors import UserError
from imgret.data.benchmarks import first_per_class, labelled_split, load_benchmark
from imgret.evaluation.evaluate import evaluate, evaluate_embeddings, protocol_scores, rank
from imgret.evaluation.report import write_evaluation


def test_rank_orders_by_cosine_excludes_self_and_keeps_database_order_on_ties() -> None:
    db = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    q = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert rank(q, db, 4).tolist() == [[0, 2, 3, 1], [1, 3, 0, 2]]
    assert rank(q, db, 2, exclude=np.array([0, -1])).tolist() == [[2, 3], [1, 3]]


def test_rank_in_cluster_mode_returns_only_the_query_cluster() -> None:
    db = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    assignments = np.array([0, 1, 0, 1])
    centroids = np.array([[1, 0], [0.3, 0.9]], dtype=np.float32)
    ids = rank(np.array([[0.9, 0.1]], np.float32), db, 4, assignments=assignments,
               centroids=centroids)  # fmt: skip
    assert ids.tolist() == [[0, 2, -1, -1]]


def test_evaluate_embeddings_by_hand() -> None:
    # Query "a" along x; database: a (x), b (y), a (at 45 degrees), b (almost x).
    db = np.array([[1, 0], [0, 1], [1, 1], [1, 0.1]], dtype=np.float32)
    labels = ["a", "b", "a", "b"]
    q = np.array([[1, 0], [0, 1]], dtype=np.float32)
    overall, per_class, curve = evaluate_embeddings(
        q, ["a", "b"], db, labels, map_ks=(2,), ks=(1, 2)
    )
    # q "a" ranks a, b, a, b -> rel 1 0 1 0: AP@2 = 1, AP@all = (1 + 2/3) / 2, P@2 = 1/2.
    # q "b" ranks b, a(45), b(0.1), a -> rel 1 0 1 0 as well.
    assert per_class["a"]["mAP@2"] == pytest.approx(1.0)
    assert per_class["a"]["mAP@all"] == pytest.approx(5 / 6)
    assert overall["P@2"] == pytest.approx(0.5) and overall["R@2"] == pytest.approx(0.5)
    assert overall["P@1"] == pytest.approx(1.0)
    assert curve["ranks"][0] == 1 and curve["precision"][0] == pytest.approx(1.0)


def test_first_per_class_keeps_order() -> None:
    assert first_per_class(["a", "b", "a", "a", "b", None], 2).tolist() == [0, 1, 2, 4]


def test_labelled_split_of_a_folder(image_folder: Path) -> None:
    loo = labelled_split(image_folder)
    assert loo.queries is loo.database and loo.exclude is not None
    assert np.array_equal(loo.exclude, np.arange(len(loo.database)))
    split = labelled_split(image_folder, queries_per_class=2)
    assert split.exclude is None
    names = {Path(k).parent.name for k in split.queries.keys}
    assert names == {"red", "blue", "stripes", "disc"}
    assert not set(split.queries.keys) & set(split.database.keys)
    with pytest.raises(UserError, match="1 or more"):
        labelled_split(image_folder, queries_per_class=0)


def _touch_tree(root: Path, layout: dict[str, int]) -> None:
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i:04d}.jpg").write_bytes(b"x")


def test_cifar10_and_caltech101_splits_follow_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch_tree(tmp_path / "cifar10", {"train/cat": 3, "train/dog": 2, "test/cat": 102,
                                        "test/dog": 101})  # fmt: skip
    _touch_tree(tmp_path / "caltech101", {"ant": 7, "bee": 5})
    monkeypatch.setenv("IMGRET_DATASETS", str(tmp_path))
    cifar = load_benchmark("cifar10")
    assert len(cifar.queries) == 200 and len(cifar.database) == 3 + 2 + 2 + 1
    assert cifar.queries.keys[0].endswith("test/cat/0000.jpg")
    assert cifar.queries.keys[99].endswith("test/cat/0099.jpg")
    assert sorted(Path(k).name for k in cifar.database.keys if "/test/" in k) == [
        "0100.jpg", "0100.jpg", "0101.jpg"
    ]  # fmt: skip
    assert cifar.metrics == ("mAP@1000", "P@10") and cifar.k_map == 1000
    caltech = load_benchmark("caltech101")
    assert len(caltech.queries) == 10 and len(caltech.database) == 2
    assert caltech.database.labels == ["ant", "ant"] and caltech.k_map is None
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("imagenet")


def test_fashion_mnist_split_follows_the_protocol() -> None:
    try:
        bench = load_benchmark("fashion-mnist")
    except UserError:
        pytest.skip("Fashion-MNIST is not installed")
    assert len(bench.queries) == 1000 and len(bench.database) == 60_000
    counts = {label: bench.queries.labels.count(label) for label in set(bench.queries.labels)}
    assert set(counts.values()) == {100}
    first = [int(k.rsplit("/", 1)[1]) for k in bench.queries.keys]
    assert first == sorted(first) and all("/test/" in k for k in bench.queries.keys)


def test_evaluate_pixels_leave_one_out_and_cluster_mode(image_folder: Path) -> None:
    logs: list[str] = []
    ev = evaluate("pixels", image_folder, progress=False, log=logs.append)
    assert ev.n_queries == ev.n_database == 24
    # fake.png lies in the root folder: no label, so not part of the evaluation at all.
    assert {Path(k).name for k, _ in ev.skipped} == {"corrupt.jpg", "empty.png"}
    assert logs == ["skipped 2 image(s) that could not be decoded"]
    assert set(ev.per_class) == {"red", "blue", "stripes", "disc"}
    # Five other images of each class: R@10 reaches 1 when the classes are told apart.
    assert ev.overall["mAP@100"] > 0.9 and ev.overall["R@100"] == pytest.approx(1.0)
    cl = evaluate("pixels", image_folder, mode="cluster", clusters=4, progress=False)
    assert cl.settings["clusters"] == 4 and cl.overall["mAP@all"] <= 1.0
    pca = evaluate("pca-3", image_folder, progress=False)
    assert pca.overall["mAP@100"] > 0.5


def test_write_evaluation_and_cli(image_folder: Path, tmp_path: Path, capsys) -> None:
    ev = evaluate("pixels", image_folder, queries_per_class=2, progress=False, log=print)
    capsys.readouterr()
    files = write_evaluation(ev, tmp_path / "ev")
    assert files["png"].read_bytes().startswith(b"\x89PNG")
    assert json.loads(files["json"].read_text())["n_queries"] == 8
    assert main(["evaluate", "pixels", str(image_folder), "--queries-per-class", "2",
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["overall"]["mAP@100"] == pytest.approx(ev.overall["mAP@100"])
    assert main(["evaluate", "pixels", str(image_folder), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "mAP@100" in out and "stripes" in out
    assert (tmp_path / "cli" / "evaluation.png").exists()
    assert main(["evaluate", "pixels", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("metrics", [("mAP@3", "P@10"), ("mAP@all", "P@10")])
def test_protocol_scores_are_the_protocols_own_figures(metrics: tuple[str, ...]) -> None:
    """What bench and scripts score with: the protocol's metrics, as evaluate_embeddings."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    q, db = rng.standard_normal((6, 4)), rng.standard_normal((30, 4))
    ql, dbl = list("aabbcc"), [("a", "b", "c")[i % 3] for i in range(30)]
    bench = SimpleNamespace(metrics=metrics, k_map=3 if "mAP@3" in metrics else None)
    got = protocol_scores(bench, q, ql, db, dbl)  # type: ignore[arg-type]
    want, _, _ = evaluate_embeddings(q, ql, db, dbl, map_ks=(3,), ks=(10,))
    assert list(got) == list(metrics) and got == {m: want[m] for m in metrics}
