import numpy as np
import pytest

from imgret.retrieval.rerank import database_augmentation, exact_knn, query_expansion


def test_exact_knn_by_hand() -> None:
    db = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    sims, ids = exact_knn(db)(np.array([[1, 0]], np.float32), 2)
    assert ids.tolist() == [[0, 2]] and sims[0].tolist() == pytest.approx([1.0, 0.6])


def test_dba_by_hand() -> None:
    # a=(1,0), b=(0.6,0.8): sim 0.6. With 2 neighbours and alpha 1, a -> a + 0.6 b, normalised.
    db = np.array([[1, 0], [0.6, 0.8], [-1, 0]], np.float32)
    out = database_augmentation(db, n_neighbors=2, alpha=1.0)
    want = np.array([1 + 0.36, 0.48])
    assert out[0] == pytest.approx(want / np.linalg.norm(want), rel=1e-5)
    # (-1, 0): its second neighbour is b at similarity -0.6, weight 0: it stays put
    assert out[2] == pytest.approx([-1, 0])


def test_query_expansion_by_hand_and_identity_when_off() -> None:
    db = np.array([[0.6, 0.8], [0, 1]], np.float32)
    q = np.array([[1, 0]], np.float32)
    # nearest is (0.6, 0.8) at 0.6; alpha 1: q + 0.6 * (0.6, 0.8) = (1.36, 0.48)
    out = query_expansion(q, db, n_neighbors=1, alpha=1.0)
    assert out[0] == pytest.approx(np.array([1.36, 0.48]) / np.hypot(1.36, 0.48), rel=1e-5)
    assert np.array_equal(query_expansion(q, db, n_neighbors=0), q)


def test_rerank_pulls_a_class_together() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (5, 32))
    labels = np.repeat(np.arange(5), 40)
    x = centers[labels] + rng.normal(0, 2.5, (200, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def p10(q: np.ndarray, d: np.ndarray) -> float:
        s = q @ d.T
        np.fill_diagonal(s, -np.inf)
        top = np.argsort(-s, axis=1)[:, :10]
        return float((labels[top] == labels[:, None]).mean())

    d2 = database_augmentation(x, 10, 3.0)
    assert p10(d2, d2) > p10(x, x) + 0.05
