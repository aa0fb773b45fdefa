"""The shared pieces of the training loops (imgret.training.schedule)."""

from __future__ import annotations

import math

import torch

from imgret.training.schedule import index_batches, set_lr


def test_a_pass_covers_every_row_once_in_batches_of_the_size() -> None:
    batches = list(index_batches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    in_order = torch.cat(list(index_batches(10, 4)))  # no generator: in order
    assert in_order.tolist() == list(range(10))


def test_a_training_pass_leaves_out_a_last_batch_of_one_row_only() -> None:
    gen = torch.Generator().manual_seed(0)
    assert [len(b) for b in index_batches(9, 4, gen, training=True)] == [4, 4]
    assert [len(b) for b in index_batches(9, 4, gen)] == [4, 4, 1]  # scoring keeps every row
    assert [len(b) for b in index_batches(10, 4, gen, training=True)] == [4, 4, 2]


def test_the_cosine_schedule_decays_from_the_peak_to_zero() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    got = []
    for share in (0.0, 0.5, 1.0, 2.0):
        set_lr(opt, 0.3, "cosine", share)
        got.append(opt.param_groups[0]["lr"])
    want = [0.3, 0.15, 0.0, 0.0]
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(got, want, strict=True))
    set_lr(opt, 0.3, "constant", 0.9)
    assert opt.param_groups[0]["lr"] == 0.3
