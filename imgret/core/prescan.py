"""Exact inner-product top-k of several queries, through a bfloat16 pre-scan.

On CPUs with AMX tiles, a bfloat16 matrix product runs 2-5x faster than float32 for a few
queries against many rows (`python scripts/knn_speed.py`). Its scores are approximate, but the
error of each one is bounded, so the pre-scan can only narrow the rows down, never decide. A
pre-scan score s^ of true score s (query q, row x, both rounded to bfloat16: q~, x~):

    |s - s^| <= |q~| R + |q - q~| N + d 2^-24 |q~| N~  +  2^-8 |s^| / (1 - 2^-8)

with R the largest |x - x~| of a row, N and N~ the largest norm of a row and of its rounding,
d 2^-24 the float32 accumulation and the last term the rounding of the score to bfloat16.
From the k-th best pre-scan score follows a lower bound of the true k-th best score, and from
that the least pre-scan score a row of the true top k can have (`_threshold`). The rows above
it (a few tens of 10,000 for k = 11 on CIFAR-10 embeddings of a pretrained model; hundreds
on random 1280-d rows, where scores crowd) are scored again in float32 from the original rows.
The result is the float32 search's, ties in position order.

The bfloat16 copy is half the size of the float32 rows and held in memory; the float32 rows
stay where they are (memory-mapped chunks) and only the candidates are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Prescan", "prescan_pays"]

QUERY_BLOCK = 256  # queries scanned together (their candidate rows are scored as one matrix)
SCORE_BLOCK = 1 << 24  # pre-scan scores held at once (64 MiB of float32)
BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
ROUNDED = BF16 / (1 - BF16)  # error of a score rounded to bfloat16, relative to the rounded one
F32_SUM = 2.0**-24  # unit roundoff of float32, per term of the sum


def _threshold(floor: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """(m,) the least pre-scan score a row of the true top k can have, given the k-th best
    pre-scan score so far (`floor`) and the error of a score before rounding (`before`).

    A pre-scan score s^ of true score s: |s - s^| <= before + ROUNDED |s^|. At least k rows
    have s >= lowest = floor - ROUNDED |floor| - before, so the true k-th best is at least that
    much, and a row of the top k has s^ + before + ROUNDED |s^| >= lowest."""
    import torch

    lowest = floor - ROUNDED * floor.abs() - before
    t = lowest - before
    return torch.where(t >= 0, t / (1 + ROUNDED), t / (1 - ROUNDED))


def prescan_pays() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware tiles (Intel AMX).

    Measured only there; without AMX, PyTorch's bfloat16 product can be slower than float32."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


class Prescan:
    """A bfloat16 copy of blocks of unit-norm-ish rows, for exact top-k by inner product.

    blocks : (positions (m,) int64, rows (m, d) float32) pairs, as VectorSet.iter_blocks gives
        them; the rows are kept by reference (memory-mapped is fine) for the final scoring.
    """

    def __init__(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        import torch

        self.blocks: list[tuple[np.ndarray, np.ndarray, torch.Tensor]] = []
        residual = norm = norm16 = 0.0
        for positions, rows in blocks:
            if not len(rows):
                continue
            exact = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
            rows16 = exact.to(torch.bfloat16)
            residual = max(residual, float((exact - rows16.float()).norm(dim=1).max()))
            norm = max(norm, float(exact.norm(dim=1).max()))
            norm16 = max(norm16, float(rows16.float().norm(dim=1).max()))
            self.blocks.append((np.asarray(positions, np.int64), rows, rows16))
        self.residual, self.norm, self.norm16 = residual, norm, norm16
        self.dim = self.blocks[0][1].shape[1] if self.blocks else 0
        self.nbytes = sum(r.numel() * 2 for *_, r in self.blocks)

    def __len__(self) -> int:
        return sum(len(p) for p, *_ in self.blocks)

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, d) float32 queries -> (scores, positions), (m, k): the k largest inner
        products, best first, equal scores in position order; -1 (score -inf) past the rows."""
        m = len(queries)
        scores = np.full((m, k), -np.inf, np.float32)
        ids = np.full((m, k), -1, np.int64)
        for q0 in range(0, m, QUERY_BLOCK):
            rows = slice(q0, q0 + QUERY_BLOCK)
            self._knn_block(np.ascontiguousarray(queries[rows]), k, scores[rows], ids[rows])
        return scores, ids

    def _knn_block(
        self, queries: np.ndarray, k: int, scores: np.ndarray, ids: np.ndarray
    ) -> None:
        """Pre-scan every block for candidates, then rank their union in float32 into
        `scores` and `ids` ((m, k), filled with -inf and -1 by the caller)."""
        import torch

        with torch.inference_mode():
            q = torch.from_numpy(queries)
            q16 = q.to(torch.bfloat16)
            before = self._error(q, q16)
            floor = torch.full((len(q),), -torch.inf)  # k-th best pre-scan score so far
            step = max(k, SCORE_BLOCK // len(q))
            found: list[tuple[np.ndarray, np.ndarray]] = []  # candidates: positions, scores
            for positions, rows, rows16 in self.blocks:
                cols = []
                for r0 in range(0, len(rows16), step):
                    approx = (rows16[r0 : r0 + step] @ q16.T).T.float()  # (m, step)
                    if approx.shape[1] >= k:
                        floor = torch.maximum(floor, torch.topk(approx, k, dim=1).values[:, -1])
                    near = (approx >= _threshold(floor, before)[:, None]).any(0)
                    cols.append(r0 + torch.nonzero(near)[:, 0].numpy())
                union = np.concatenate(cols)
                if len(union):
                    scored = q @ torch.from_numpy(np.ascontiguousarray(rows[union], np.float32)).T
                    found.append((positions[union], scored.numpy()))
        if not found:  # no rows: -inf and -1 stay
            return
        # every query's candidates are among the union: its best k there are its best k
        pos = np.concatenate([p for p, _ in found])
        order = np.argsort(pos)
        pos = pos[order]  # columns in position order: a stable sort keeps ties in it
        exact = np.concatenate([s for _, s in found], axis=1)[:, order]
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]  # (m, <= k)
        scores[:, : best.shape[1]] = np.take_along_axis(exact, best, 1)
        ids[:, : best.shape[1]] = pos[best]

    def _error(self, q: torch.Tensor, q16: torch.Tensor) -> torch.Tensor:
        """(m,) the largest error of each query's pre-scan scores before their rounding."""
        q_norm16 = q16.float().norm(dim=1)
        q_residual = (q - q16.float()).norm(dim=1)
        summing = self.dim * F32_SUM * self.norm16
        return q_norm16 * (self.residual + summing) + q_residual * self.norm
