"""Label-free objectives: NNCLR's neighbour positives, and how `imgret train` picks one."""

from __future__ import annotations

import torch

from imgret.training.config import TrainConfig
from imgret.training.trainer import Support


def test_support_keeps_the_last_rows_and_finds_nearest_neighbours() -> None:
    support = Support(4)
    rows = torch.eye(4)
    support.add(rows[:2])
    assert support.nearest(rows[:1]) is None  # not full yet: no neighbour positives
    support.add(rows[2:])
    query = torch.tensor([[0.1, 0.0, 0.9, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(support.nearest(query), rows[[2, 1]])
    support.add(torch.full((1, 4), 0.5))  # the oldest row (e0) leaves
    assert support.rows is not None and len(support.rows) == 4
    assert torch.equal(support.rows[0], rows[1])


def test_neighbor_positives_is_off_by_default() -> None:
    assert TrainConfig().neighbor_positives == 0.0
