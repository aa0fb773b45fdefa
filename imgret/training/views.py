"""Embeddings of augmented views of every image, computed once and cached on disk.

Label-free adaptation (imgret.training.adapt) learns on a frozen model's embeddings of several
random views of each image (random resized crops, flips, colour jitter). A view is made from
the decoded image (uint8, at the view side), augmented on whole batches by
imgret.training.augment, turned back into uint8 and embedded like any image: through
imgret.models.backend's fast path. The views are stored as float16 chunks in a folder, with a
manifest saying what made them, so that a second run (or a run resumed after a kill) embeds
only what is missing.

    views = embed_views(embedder, source, ViewConfig(views=4), cache=Path("out/views"))
    views.shape  # (n_images, 4, dim) float32, unit rows; NaN rows for undecodable images
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import atomic_path, read_json, read_npy, write_json
from ..core.progress import progress_bar
from ..core.vectors import normalize
from ..data.loader import iter_batches
from ..data.sources import ImageSource
from ..models.embed import embed_arrays
from .augment import AugmentConfig, augment

__all__ = ["ViewConfig", "embed_views", "make_views", "CHUNK"]

CHUNK = 4096  # images per cached chunk: a kill loses at most one chunk's work


@dataclass(frozen=True)
class ViewConfig:
    views: int = 4  # augmented views embedded per image
    crop_scale: float = 0.3  # smallest share of the image area a random crop keeps
    jitter: float = 0.4  # brightness / contrast / saturation jitter strength (0 = none)
    hue: float = 0.05  # largest hue rotation, as a share of the colour circle
    gray_p: float = 0.1  # probability of a gray view (RGB only)
    seed: int = 0  # views of chunk c are drawn from a generator seeded (seed, c)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(crop_scale=self.crop_scale, flip=True, jitter=self.jitter,
                             hue=self.hue, jitter_p=0.8, gray_p=self.gray_p)  # fmt: skip


def make_views(images: torch.Tensor, config: ViewConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) uint8 -> one random view of each, (B, C, S, S) uint8."""
    x = augment(images.float().div_(255.0), config.augment_config(), gen)
    return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _manifest(embedder: Any, source: ImageSource, config: ViewConfig, what: dict) -> dict:
    keys = hashlib.sha256("\n".join(source.keys).encode("utf-8", "surrogateescape")).hexdigest()
    return {
        "config": asdict(config), "model": what, "images": len(source), "keys_sha256": keys,
        "image_size": int(embedder.image_size), "embedding_dim": int(embedder.embedding_dim),
    }  # fmt: skip


def embed_views(
    embedder: Any,
    source: ImageSource,
    config: ViewConfig,
    *,
    cache: Path | None = None,
    model_facts: dict | None = None,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """`config.views` embedded views of every image of `source` -> (n, views, dim) float32.

    Rows are unit-norm; an image that cannot be decoded gets NaN rows. With `cache` (a
    folder), finished chunks are kept there and reused when `model_facts` (what identifies the
    model, e.g. imgret.models.registry.describe), the source's keys and `config` are the same.
    """
    n, v, dim = len(source), config.views, int(embedder.embedding_dim)
    manifest = _manifest(embedder, source, config, model_facts or {})
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if (cache / "views.json").is_file() and read_json(cache / "views.json") != manifest:
            for old in cache.glob("views-*.npy"):
                old.unlink()
            log(f"{cache}: views were made with other settings; embedding them again")
        write_json(cache / "views.json", manifest)
    out = np.full((n, v, dim), np.nan, np.float32)
    bar = progress_bar(total=n, desc=f"embedding {v} views", unit="img", enabled=progress)
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        path = None if cache is None else cache / f"views-{c:05d}.npy"
        if path is not None and path.is_file():
            out[start:stop] = read_npy(path).astype(np.float32)
            bar.update(stop - start)
            continue
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + c)
        part = source.subset(range(start, stop))
        size, channels = int(embedder.image_size), int(embedder.channels)
        for batch in iter_batches(part, size=size, channels=channels, batch_size=64,
                                  workers=workers):  # fmt: skip
            rows = batch.indices.numpy() + start
            for j in range(v if len(rows) else 0):
                emb = embed_arrays(embedder, make_views(batch.images, config, gen))
                out[rows, j] = normalize(emb)
            bar.update(len(rows) + len(batch.failures))
        if path is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, out[start:stop].astype(np.float16))
    bar.close()
    return out
