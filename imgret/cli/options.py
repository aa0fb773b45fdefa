"""Options and printing shared by several commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..retrieval.rerank import RerankConfig

__all__ = ["add_rerank_options", "rerank_config", "print_skipped"]


def add_rerank_options(p: argparse.ArgumentParser) -> None:
    """--rerank and its settings (label-free re-ranking, imgret.rerank)."""
    g = p.add_argument_group("re-ranking (label-free: DBA + alpha query expansion)")
    g.add_argument(
        "--rerank",
        action="store_true",
        help="re-rank: each database image becomes the weighted mean of its --dba nearest "
        "neighbours, each query the weighted mean of itself and its --qe nearest (augmented) "
        "images (default: off; any of the options below switches it on)",
    )
    g.add_argument("--dba", type=int, metavar="N", help="neighbours per database image (10)")
    g.add_argument("--qe", type=int, metavar="N", help="neighbours per query (10)")
    g.add_argument("--alpha", type=float, metavar="A", help="weight = similarity ** A (3)")


def rerank_config(a: argparse.Namespace) -> RerankConfig | None:
    """The RerankConfig that `add_rerank_options` asked for, or None when it is off."""
    given = {"dba_neighbors": a.dba, "qe_neighbors": a.qe, "alpha": a.alpha}
    if not a.rerank and all(v is None for v in given.values()):
        return None
    from ..core.errors import UserError
    from ..retrieval.rerank import RerankConfig

    if (a.dba is not None and a.dba < 0) or (a.qe is not None and a.qe < 0):
        raise UserError("--dba and --qe must be 0 or more")
    if a.alpha is not None and a.alpha < 0:
        raise UserError("--alpha must be 0 or more")
    return RerankConfig(**{name: v for name, v in given.items() if v is not None})




def print_skipped(
    skipped: list[tuple[str, str]], what: str = "unreadable file(s)", more: str = ""
) -> None:
    """`skipped N WHAT:` and the first 20 (key, reason)'s reasons, names shown readably."""
    from ..core.paths import display

    reasons = [reason for _, reason in skipped]
    if not reasons:
        return
    print(f"skipped {len(reasons)} {what}:")
    for reason in reasons[:20]:
        print(f"  {display(reason)}")
    if len(reasons) > 20:
        print(f"  ... and {len(reasons) - 20} more" + (f" ({more})" if more else ""))
