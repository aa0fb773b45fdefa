"""The contrastive loss that label-free training and the cluster epochs share."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["nt_xent"]


def nt_xent(p1: torch.Tensor, p2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views (B, D) of the same B images -> scalar mean over 2B."""
    z = nn.functional.normalize(torch.cat([p1, p2]), dim=1)
    n = len(p1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # an image is not its own positive or negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return nn.functional.cross_entropy(sim, target)
