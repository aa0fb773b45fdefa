"""Diffusion re-ranking (imgret.retrieval.diffusion): neighbours of neighbours count."""

from __future__ import annotations

import numpy as np

from imgret.core.vectors import normalize
from imgret.evaluation.evaluate import evaluate_embeddings
from imgret.retrieval.diffusion import diffusion_order
from imgret.retrieval.rerank import RerankConfig
from imgret.retrieval.searcher import Searcher
from imgret.retrieval.vector_set import ArrayVectors


def _arc_and_cluster() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chain of 30 unit vectors 3 degrees apart from the query's direction round to 90
    degrees (kind A), and a tight cluster of 10 (kind B) that is nearer the query than A's
    far half is: cosine ranks B in the middle of A; the chain links every A to the query.
    -> (query (3,), rows (40, 3), labels (40,))."""
    rng = np.random.default_rng(0)
    angles = np.radians(np.arange(1, 31) * 3.0)
    chain = np.stack([np.cos(angles), np.sin(angles), np.zeros(30)], 1)
    side, up = np.radians(40), np.radians(30)
    b_dir = np.array([np.cos(side) * np.cos(up), np.sin(side) * np.cos(up), np.sin(up)])
    cluster = normalize((b_dir + rng.normal(0, 0.01, (10, 3))).astype(np.float32))
    rows = np.concatenate([chain.astype(np.float32), cluster])
    return np.array([1.0, 0.0, 0.0], np.float32), rows, np.array(["a"] * 30 + ["b"] * 10)


def test_diffusion_follows_the_chain_that_cosine_leaves() -> None:
    q, rows, labels = _arc_and_cluster()
    sims = rows @ q
    by_cosine = labels[np.argsort(-sims)]
    assert set(by_cosine[:30]) == {"a", "b"}  # cosine mixes the kinds
    order = diffusion_order(sims, rows, neighbors=4)
    assert sorted(order.tolist()) == list(range(40))  # a permutation
    assert (labels[order[:30]] == "a").all()  # diffusion: the whole chain first
    assert np.array_equal(diffusion_order(sims, rows, neighbors=0), np.argsort(-sims))


def test_diffusion_in_search_and_in_evaluation() -> None:
    q, rows, labels = _arc_and_cluster()
    searcher = Searcher(ArrayVectors(rows))
    plain = RerankConfig(dba_neighbors=0, qe_neighbors=0)
    diffused = RerankConfig(dba_neighbors=0, qe_neighbors=0, diffusion_neighbors=4)
    before = searcher.search(q[None], 30, rerank=plain)
    after = searcher.search(q[None], 30, rerank=diffused)
    assert set(labels[before.ids[0]]) == {"a", "b"}
    assert (labels[after.ids[0]] == "a").all()
    np.testing.assert_allclose(after.scores[0], rows[after.ids[0]] @ q, atol=1e-5)  # cosines
    args = (q[None], ["a"], rows, list(labels))
    flat, _, _ = evaluate_embeddings(*args, map_ks=(30,), ks=(10,))
    diff, _, _ = evaluate_embeddings(*args, map_ks=(30,), ks=(10,), diffusion=4)
    assert diff["mAP@all"] == 1.0 > flat["mAP@all"]
