"""`imgret demo`: the whole pipeline on scikit-learn's digits."""

from __future__ import annotations

import argparse

from .options import EPOCHS, SEED, writable_folder

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on scikit-learn's digits",
        description="Write scikit-learn's digits as a folder of PNGs (with two broken files), "
        "train the autoencoder, draw reconstructions, embed, pick K by the elbow, cluster, and "
        "answer example queries in cluster and exact mode. Needs no download.",
    )
    p.add_argument("--out", "-o", default="demo-out", type=writable_folder,
                   help="output folder (default: demo-out)")
    p.add_argument("--epochs", type=EPOCHS, default=15, help="training epochs (default: 15)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from ..jobs.demo import run_demo

    out = run_demo(a.out, epochs=a.epochs, seed=a.seed)
    print()
    for line in out.summary:
        print(line)
    print(f"\ndemo finished in {out.seconds:.0f} s; files:")
    for name, path in out.files.items():
        print(f"  {name:24s} {path}")
    return 0
