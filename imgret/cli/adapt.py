"""`imgret adapt`: adapt a model to a collection without labels (a head on augmented views)."""

from __future__ import annotations

import argparse

from .inference import add_inference_options, inference_settings
from .options import SEED, float_in, int_in, writable_folder

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a model to a collection without labels",
        description="Embed every image of FOLDER with MODEL, as it is and as several random "
        "views (crops, flips, colour jitter; cached in OUT/views), then train a small head on "
        "those embeddings so that views of one image agree and different images separate "
        "(contrastive loss), with views of each image's nearest neighbours as extra "
        "positives. No labels are used. Use the output folder as a model: `imgret index "
        "FOLDER --model OUT`.",
    )
    p.add_argument("model", help="base model: efficientnet-lite0[@SIZE][:POOLING] (or -lite1, "
                   "-lite2; several joined by +, side by side), or a model folder")  # fmt: skip
    p.add_argument("folder", help="folder of images, or a benchmark's database images "
                   "(e.g. cifar10:database)")  # fmt: skip
    p.add_argument("--out", "-o", default="model-adapted", type=writable_folder,
                   help="output folder")  # fmt: skip
    p.add_argument("--views", type=int_in(1, 64), help="augmented views per image (default: 4)")
    p.add_argument("--view-size", type=int_in(0, 4096), help="input side of the views, "
                   "pretrained models only, every part of models side by side (default: 160; "
                   "0 = the model's own)")  # fmt: skip
    p.add_argument("--neighbors", type=int_in(0, 100), help="nearest neighbours used as positives "
                   "(default: 5; 0 = views of the same image only)")  # fmt: skip
    p.add_argument("--temperature", type=float_in(0, 100, above=True),
                   help="contrastive temperature (default: 0.1)")  # fmt: skip
    p.add_argument("--steps", type=int_in(1, 10**7), help="optimisation steps (default: 2000)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    add_inference_options(p, quantize=False)
    p.set_defaults(func=_cmd_adapt)


def _cmd_adapt(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..training.adapt import AdaptConfig, adapt

    cfg = AdaptConfig(seed=a.seed)
    changes = {"neighbors": a.neighbors, "temperature": a.temperature, "steps": a.steps}
    cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if a.view_size is not None:
        cfg = replace(cfg, view_size=a.view_size or None)
    views = {} if a.views is None else {"views": a.views}
    cfg = replace(cfg, views=replace(cfg.views, seed=a.seed, **views))
    out = adapt(a.model, a.folder, a.out, config=cfg, inference=inference_settings(a))
    took = ", ".join(f"{k} {v:.0f} s" for k, v in out.seconds.items())
    print(f"adapted to {out.n_images} images ({took}); final loss {out.losses[-1]:.4f}")
    if out.skipped:
        print(f"skipped {len(out.skipped)} unreadable file(s)")
    print(f"model: {out.model_dir}  (use it like any model: imgret index FOLDER --model "
          f"{out.model_dir})")  # fmt: skip
    return 0
