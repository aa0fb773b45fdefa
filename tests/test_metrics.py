"""Retrieval metrics against values worked out by hand."""

import numpy as np
import pytest

from imgret.evaluation.metrics import (
    average_precision_all,
    average_precision_at_k,
    pr_curve,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
)

# Three queries, rankings of depth 5 (1 = relevant):
#   q0: 1 0 1 0 0   4 relevant items in the database (2 never retrieved in the top 5)
#   q1: 0 1 1 0 1   3 relevant items
#   q2: 0 0 0 0 0   2 relevant items, none retrieved
REL = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=bool)
N_REL = np.array([4, 3, 2])


def test_precision_and_recall_at_k() -> None:
    assert precision_at_k(REL, 1) == pytest.approx([1, 0, 0])
    assert precision_at_k(REL, 3) == pytest.approx([2 / 3, 2 / 3, 0])
    assert precision_at_k(REL, 5) == pytest.approx([2 / 5, 3 / 5, 0])
    assert recall_at_k(REL, 3, N_REL) == pytest.approx([2 / 4, 2 / 3, 0])
    assert recall_at_k(REL, 5, N_REL) == pytest.approx([2 / 4, 3 / 3, 0])


def test_precision_of_a_short_ranking_counts_missing_ranks_as_misses() -> None:
    assert precision_at_k(REL[:, :2], 4) == pytest.approx([1 / 4, 1 / 4, 0])


def test_average_precision_at_k_divides_by_relevant_within_k() -> None:
    # q0: (P@1 + P@3) / 2 = (1 + 2/3) / 2; q1 at k=3: (1/2 + 2/3) / 2; at k=5: + 3/5, / 3.
    assert average_precision_at_k(REL, 3) == pytest.approx([5 / 6, 7 / 12, 0])
    assert average_precision_at_k(REL, 5) == pytest.approx([5 / 6, (1 / 2 + 2 / 3 + 3 / 5) / 3, 0])
    assert average_precision_at_k(REL, 1) == pytest.approx([1, 0, 0])


def test_average_precision_all_divides_by_all_relevant_items() -> None:
    assert average_precision_all(REL, N_REL) == pytest.approx(
        [(1 + 2 / 3) / 4, (1 / 2 + 2 / 3 + 3 / 5) / 3, 0]
    )
    perfect = np.array([[1, 1, 0, 0]], dtype=bool)
    assert average_precision_all(perfect, np.array([2])) == pytest.approx([1.0])
    assert average_precision_all(perfect, np.array([0])) == pytest.approx([0.0])


def test_pr_curve_points_are_means_over_queries() -> None:
    precision, recall = pr_curve(REL, N_REL, [1, 5])
    assert precision == pytest.approx([1 / 3, (2 / 5 + 3 / 5) / 3])
    assert recall == pytest.approx([(1 / 4) / 3, (2 / 4 + 1) / 3])


def test_relevance_matrix_marks_missing_ranks_irrelevant() -> None:
    ids = np.array([[2, 0, -1], [1, 2, 0]])
    rel = relevance_matrix(ids, np.array(["a", "b"]), np.array(["a", "b", "a"]))
    assert rel.tolist() == [[True, True, False], [True, False, False]]


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="n_queries, depth"):
        precision_at_k(np.ones(3, dtype=bool), 1)
