"""The bfloat16 pre-scan (imgret.core.prescan): the float32 search's results, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from imgret.core.prescan import Prescan
from imgret.core.vectors import knn, normalize
from imgret.retrieval import searcher as searcher_module
from imgret.retrieval.searcher import Searcher
from imgret.retrieval.vector_set import ArrayVectors


def _blocks(x: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list:
    """`x` cut into blocks of these sizes, each block's positions a random part of the whole
    (blocks need not come in position order)."""
    order = rng.permutation(len(x))
    out, start = [], 0
    for size in sizes:
        positions = np.sort(order[start : start + size])
        out.append((positions, x[positions]))
        start += size
    return out


def _reference(q: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k best inner products in float64, equal scores in position order."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_prescan_gives_the_exact_ranking_over_blocks_in_any_order() -> None:
    """Multiples of 1/8 in -3/8..3/8: every float32 score is exact, so ties are real ties
    (and they are many), and they must come in position order, as `knn` gives them."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(700, 48)).astype(np.float32) / 8
    x[650:] = x[:50]  # exact copies
    prescan = Prescan(_blocks(x, [300, 3, 1, 200, 196], rng))  # blocks smaller than k too
    assert len(prescan) == 700 and prescan.nbytes == 700 * 48 * 2
    queries = np.concatenate([x[:40], rng.integers(-3, 4, size=(40, 48)) / 8]).astype(np.float32)
    for k in (1, 11, 64):
        scores, ids = prescan.knn(queries, k)
        assert np.array_equal(ids, _reference(queries, x, k)), k
        np.testing.assert_allclose(scores, knn(queries, x, k)[0], atol=1e-5)


def test_prescan_separates_rows_closer_than_bfloat16_can_tell() -> None:
    """Scores 2e-6 apart: rounding the rows to bfloat16 moves each score by about 1e-4, which
    shuffles their order in the pre-scan; the order comes from the float32 scoring of every
    row the error bound cannot rule out (a top k of the pre-scan would be wrong)."""
    rng = np.random.default_rng(1)
    n, dim = 300, 256
    q = normalize(rng.standard_normal((1, dim)).astype(np.float32))[0]
    score = 0.05 + 2e-6 * rng.permutation(n)  # a distinct score for every row, shuffled
    other = rng.standard_normal((n, dim))
    other -= np.outer(other @ q, q)  # orthogonal to q
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    x = (score[:, None] * q + np.sqrt(1 - score**2)[:, None] * other).astype(np.float32)
    want = np.argsort(-score)[:10]
    assert np.array_equal(Prescan([(np.arange(n), x)]).knn(np.stack([q, q]), 10)[1][0], want)
    import torch

    coarse = (torch.from_numpy(q[None]).bfloat16() @ torch.from_numpy(x).bfloat16().T).float()
    assert not set(torch.topk(coarse[0], 10).indices.tolist()) == set(want.tolist())


def test_prescan_pads_past_the_rows() -> None:
    x = normalize(np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32))
    scores, ids = Prescan([(np.arange(4), x)]).knn(x[:2], 6)
    assert ids[:, 4:].tolist() == [[-1, -1]] * 2 and np.isneginf(scores[:, 4:]).all()
    assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["index", "exact"])
def test_a_searcher_with_the_prescan_ranks_as_one_without(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(searcher_module, "prescan_pays", lambda: True)  # any CPU, for the test
    rng = np.random.default_rng(3)
    vectors = ArrayVectors(rng.standard_normal((500, 32)).astype(np.float32))
    plain, fast = Searcher(vectors), Searcher(vectors, prescan=True)
    queries = rng.standard_normal((9, 32)).astype(np.float32)
    exclude = rng.integers(500, size=9)
    want = plain.search(queries, 7, mode=mode, exclude=exclude)
    got = fast.search(queries, 7, mode=mode, exclude=exclude)
    assert fast._prescan is not None  # it was used
    assert np.array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_every_pre_scan_score_is_within_its_bound() -> None:
    """The error model of the module docstring, checked against float64 for rows of mixed
    norms (the bound is what makes the pre-scan exact)."""
    import torch

    from imgret.core.prescan import ROUNDED

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3000, 200)) * rng.uniform(0.1, 3, (3000, 1))).astype(np.float32)
    q = (rng.standard_normal((30, 200)) * rng.uniform(0.1, 3, (30, 1))).astype(np.float32)
    prescan = Prescan([(np.arange(3000), x)])
    q16 = torch.from_numpy(q).bfloat16()
    approx = (prescan.blocks[0][2] @ q16.T).T.float()  # as the pre-scan computes them
    bound = prescan._error(torch.from_numpy(q), q16)[:, None] + ROUNDED * approx.abs()
    error = np.abs(q.astype(np.float64) @ x.astype(np.float64).T - approx.numpy())
    assert (error <= bound.numpy()).all()
    assert (error > bound.numpy() / 100).any()  # and the bound is not wildly loose everywhere
