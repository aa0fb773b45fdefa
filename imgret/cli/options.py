"""Options and printing shared by several commands."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..retrieval.rerank import RerankChoice

__all__ = [
    "add_rerank_options", "rerank_config", "print_skipped", "int_in", "float_in",
    "writable_folder", "SEED", "WORKERS", "BATCH", "K", "NPROBE", "EPOCHS", "LEARNING_RATE",
]  # fmt: skip


# -- option values with a range: one line and exit code 2 when out of it ---------------------


def int_in(lo: int, hi: int, *, multiple: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number from `lo` to `hi` (a multiple of `multiple`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {lo} to {hi:,}")
        if value % multiple:
            raise argparse.ArgumentTypeError(f"{value} is not a multiple of {multiple}")
        return value

    return parse


def float_in(lo: float, hi: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number from `lo` (excluded when `above`) to `hi`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > lo if above else value >= lo
        if not (low_ok and value <= hi) or math.isnan(value):
            what = f"more than {lo}" if above else f"{lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {what} to {hi}")
        return value

    return parse


def writable_folder(text: str) -> str:
    """An argparse type: a folder that exists and can be written, or can be made."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    try:  # the only reliable test (root passes access(), a read-only mount does not)
        os.rmdir(tempfile.mkdtemp(prefix=".imgret-probe-", dir=probe))
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f"{text}: cannot write in {probe} ({e.strerror or e})"
        ) from None
    return text


SEED = int_in(0, 2**32 - 1)
WORKERS = int_in(0, 64)
BATCH = int_in(1, 65536)
K = int_in(1, 10_000)  # results or neighbours per query
NPROBE = int_in(1, 1_000_000)
EPOCHS = int_in(1, 100_000)
LEARNING_RATE = float_in(0, 10, above=True)
NEIGHBOURS = int_in(0, 100)  # re-ranking: memory grows with it (candidates x N x dim)


def add_rerank_options(p: argparse.ArgumentParser) -> None:
    """--rerank / --no-rerank and the settings (label-free re-ranking, imgret.retrieval.rerank)."""
    g = p.add_argument_group("re-ranking (label-free: DBA + alpha query expansion, diffusion)")
    on_off = g.add_mutually_exclusive_group()
    on_off.add_argument(
        "--rerank",
        action="store_const",
        const=True,
        help="re-rank: each database image becomes the weighted mean of its --dba nearest "
        "neighbours, each query the weighted mean of itself and its --qe nearest (augmented) "
        "images (default: on in index or exact mode for a model built on a pretrained "
        "backbone, such as efficientnet-lite0, or trained on at least 5,000 images; off for "
        "one trained on fewer; any of the options below switches it on)",
    )
    on_off.add_argument("--no-rerank", dest="rerank", action="store_const", const=False,
                        help="do not re-rank, whatever the model")  # fmt: skip
    g.add_argument("--dba", type=NEIGHBOURS, metavar="N", help="neighbours per database image "
                   "(0 to 100, default 10)")  # fmt: skip
    g.add_argument("--qe", type=NEIGHBOURS, metavar="N", help="neighbours per query (0 to 100, "
                   "default 10)")  # fmt: skip
    g.add_argument("--alpha", type=float_in(0, 100), metavar="A",
                   help="weight = similarity ** A (default 3)")  # fmt: skip
    g.add_argument("--diffusion", type=NEIGHBOURS, metavar="N",
                   help="then re-order each query's top 300 by diffusion over their graph of "
                   "N neighbours each (default 0: off; 50 was chosen on validation "
                   "queries)")  # fmt: skip


def rerank_config(a: argparse.Namespace) -> RerankChoice:
    """What `add_rerank_options` asked for: a RerankConfig, None (--no-rerank) or AUTO."""
    from ..core.errors import UserError
    from ..retrieval.rerank import AUTO, RerankConfig

    given = {"dba_neighbors": a.dba, "qe_neighbors": a.qe, "alpha": a.alpha,
             "diffusion_neighbors": a.diffusion}  # fmt: skip
    settings = {name: v for name, v in given.items() if v is not None}
    if a.rerank is False:
        if settings:
            raise UserError("--no-rerank turns re-ranking off: drop --dba, --qe, --alpha and "
                            "--diffusion, or --no-rerank")  # fmt: skip
        return None
    if a.rerank is None and not settings:
        return AUTO
    return RerankConfig(**settings)


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
