"""What every training loop of imgret shares: batches of shuffled rows and the learning rate."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

__all__ = ["index_batches", "set_lr"]


def index_batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, *, training: bool = False
) -> Iterator[torch.Tensor]:
    """(B,) int64 rows covering 0..n-1 in batches of `batch_size`, shuffled when given a
    `generator`. A `training` pass leaves out a last batch of one row: BatchNorm cannot train
    on one image, and the next pass reshuffles it into a full batch."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        if training and len(rows) < 2:
            return
        yield rows


def set_lr(
    optimizer: torch.optim.Optimizer, peak: float, schedule: str | None, share: float
) -> None:
    """Set every group's learning rate at `share` (0..1) of a run: decayed from `peak` to 0
    along a half cosine when `schedule` is "cosine", else `peak` throughout."""
    lr = peak
    if schedule == "cosine":
        lr = peak * 0.5 * (1 + math.cos(math.pi * min(share, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = lr
