import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import rank

from imgret.core.clustering import elbow_curve, find_elbow, fit_kmeans
from imgret.core.errors import UserError
from imgret.core.vectors import knn, normalize, top_k
from imgret.store.collection import Collection
from imgret.store.opening import create_collection, open_collection


def test_find_elbow_by_hand() -> None:
    # x scaled: 0, .25, .5, .75, 1; y scaled: 1, .2, .1, .05, 0
    # (1 - x) - y: 0, .55, .4, .2, 0 -> the elbow is K=3
    assert find_elbow([2, 3, 4, 5, 6], [100, 20, 10, 5, 0]) == 3
    assert find_elbow([2, 3], [5, 4]) == 2


def _blobs(n_per: int = 30, k: int = 4, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:k] * 10
    return np.concatenate([c + rng.normal(0, 0.3, (n_per, dim)) for c in centers]).astype(
        np.float32
    )


def test_elbow_finds_the_number_of_blobs_and_kmeans_separates_them() -> None:
    x = normalize(_blobs())
    curve = elbow_curve(x, range(2, 10), progress=False)
    assert curve.chosen_k == 4
    assert int(np.argmax(curve.silhouettes)) == curve.ks.index(4)
    c = fit_kmeans(x, 4, seed=0)
    groups = c.assignments.reshape(4, 30)
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 4
    assert np.array_equal(c.assignments, fit_kmeans(x, 4, seed=0).assignments)


def test_top_k_pads_with_minus_one() -> None:
    scores, ids = top_k(np.array([[0.1, 0.9, -np.inf]]), 4)
    assert ids.tolist() == [[1, 0, -1, -1]]
    assert scores[0, :2].tolist() == pytest.approx([0.9, 0.1])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_knn_is_the_brute_force_with_ties_in_database_order(metric: str) -> None:
    rng = np.random.default_rng(3)
    db = rng.integers(-2, 3, size=(50, 4)).astype(np.float32)  # many exact ties
    q = rng.integers(-2, 3, size=(7, 4)).astype(np.float32)
    full = q @ db.T if metric == "cosine" else -((q[:, None] - db[None]) ** 2).sum(-1)
    scores, ids = knn(q, db, 9, metric)
    for r in range(len(q)):  # best first; equal scores in database order, as a stable sort
        order = np.argsort(-full[r], kind="stable")
        kth = full[r, order[8]]
        assert scores[r].tolist() == pytest.approx(full[r, order[:9]].tolist())
        sure = full[r, order[:9]] > kth  # above the k-th score: exactly these ids
        assert ids[r][sure].tolist() == order[:9][sure].tolist()
        assert np.all(np.diff(ids[r][scores[r] == kth]) > 0)
    assert knn(q, db[:3], 5, metric)[1][:, 3:].tolist() == [[-1, -1]] * 7  # fewer than k


def test_knn_block_by_block_and_memory_mapped_equals_faiss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    from imgret.core import vectors
    from imgret.core.atomic import read_npy

    rng = np.random.default_rng(5)
    db = normalize(rng.normal(size=(3000, 16)).astype(np.float32))
    q = normalize(rng.normal(size=(37, 16)).astype(np.float32))
    want_s, want_i = faiss.knn(q, db, 10, metric=faiss.METRIC_INNER_PRODUCT)
    np.save(tmp_path / "db.npy", db)
    mapped = read_npy(tmp_path / "db.npy", mmap=True)
    monkeypatch.setattr(vectors, "QUERY_BLOCK", 8)  # 5 blocks of queries
    monkeypatch.setattr(vectors, "SCORE_BLOCK", 8 * 100)  # 30 blocks of rows each
    for rows in (db, mapped, np.asarray(mapped).copy().view()):
        scores, ids = knn(q, rows, 10)
        assert np.array_equal(ids, want_i) and np.allclose(scores, want_s, atol=1e-6)
        assert np.array_equal(knn(q[:1], rows, 10)[1], want_i[:1])  # one query: FAISS's scan
    readonly = db.copy()
    readonly.flags.writeable = False  # copied block by block, without torch's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(knn(q, readonly, 10)[1], want_i)


def _collection(tmp_path: Path) -> Collection:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]], np.float32)
    coll = create_collection(
        tmp_path / "c", model={"ref": "m", "name": "x", "embedding_dim": 2, "image_size": 8,
                               "channels": 1},
        source="s", keys=[f"k{i}" for i in range(5)], labels=list("aabbc"), embeddings=emb,
    )  # fmt: skip
    return coll


def test_exact_search_by_hand(tmp_path: Path) -> None:
    coll = _collection(tmp_path)
    scores, ids, clusters = rank(coll, np.array([[2.0, 0.0]]), k=3)
    assert ids.tolist() == [[0, 1, 3]] and clusters is None
    cos = 0.9 / np.hypot(0.9, 0.1)
    assert scores[0].tolist() == pytest.approx([1.0, cos, 0.1 / np.hypot(0.1, 0.9)], rel=1e-5)


def test_cluster_search_stays_in_the_query_cluster(tmp_path: Path) -> None:
    coll = _collection(tmp_path)
    with pytest.raises(UserError, match="not clustered"):
        rank(coll, np.array([[1.0, 0.0]]), mode="cluster")
    clustering = fit_kmeans(coll.embeddings, 3, seed=0)
    coll.save_clustering(clustering)
    scores, ids, clusters = rank(coll, np.array([[1.0, 0.05]]), k=5, mode="cluster")
    members = set(np.flatnonzero(clustering.assignments == clusters[0]))
    assert set(ids[0][ids[0] >= 0]) == members == {0, 1}
    assert ids[0].tolist()[2:] == [-1, -1, -1]


def test_collection_round_trip_and_model_check(tmp_path: Path) -> None:
    coll = _collection(tmp_path)
    coll.save_clustering(fit_kmeans(coll.embeddings, 2, seed=0))
    again = open_collection(tmp_path / "c")
    assert again.keys == coll.keys and again.labels == coll.labels
    assert np.allclose(np.linalg.norm(again.embeddings, axis=1), 1.0)
    assert again.clustering is not None and again.clustering.k == 2
    with pytest.raises(UserError, match="embedding_dim"):
        again.check_model({**again.model, "embedding_dim": 3})
    with pytest.raises(UserError, match="not an imgret collection"):
        open_collection(tmp_path)


def test_wrong_query_dimension_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dimension"):
        rank(_collection(tmp_path), np.ones((1, 3)))
