"""Turning images into embeddings with any Embedder: a source in batches, or a few images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import UserError
from ..core.paths import display, why_unusable
from ..core.progress import progress_bar
from ..data.images import ImageError, open_image, to_array
from ..data.loader import iter_batches, to_float
from ..data.sources import ImageSource
from .base import Embedder, device_of

__all__ = ["EmbedResult", "embed_source", "embed_arrays", "embed_images", "embed_files"]


@dataclass
class EmbedResult:
    embeddings: np.ndarray  # (n_ok, dim) float32, in the order of `positions`
    positions: np.ndarray  # (n_ok,) int64 positions in the source of the embedded images
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) skipped


def embed_arrays(embedder: Embedder, images: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) uint8 images, already resized -> (B, dim) float32 embeddings.

    A model run by ONNX Runtime takes the uint8 batch as it is (`embed_uint8`); PyTorch models
    get float in [0, 1], converted here.
    """
    if len(images) == 0:
        return np.zeros((0, int(embedder.embedding_dim)), np.float32)
    if hasattr(embedder, "embed_uint8"):
        out8 = embedder.embed_uint8(np.ascontiguousarray(images.numpy()))
        return np.ascontiguousarray(out8, dtype=np.float32)
    with torch.inference_mode():
        out = embedder.embed_batch(to_float(images, device_of(embedder)))
    return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


def embed_source(
    embedder: Embedder,
    source: ImageSource,
    *,
    batch_size: int = 128,
    workers: int = 2,
    progress: bool = True,
    need: int = 0,
) -> EmbedResult:
    """Embed every image of `source`; undecodable images are skipped and listed in failures.
    Fewer than `need` decoded images is a UserError (what would be fitted on them cannot be)."""
    chunks, positions, failures = [], [], []
    bar = progress_bar(total=len(source), desc="embedding", unit="img", enabled=progress)
    batches = iter_batches(
        source, size=embedder.image_size, channels=embedder.channels, batch_size=batch_size,
        workers=workers,
    )  # fmt: skip
    for batch in batches:
        if len(batch.indices):
            chunks.append(embed_arrays(embedder, batch.images))
            positions.append(batch.indices.numpy())
        failures += [(source.keys[i], reason) for i, reason in batch.failures]
        bar.update(len(batch.indices) + len(batch.failures))
    bar.close()
    dim = int(embedder.embedding_dim)
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if len(pos) < need:
        raise UserError(f"{source.name}: {len(pos)} of its {len(source)} image(s) could be "
                        f"decoded; {need} or more are needed")  # fmt: skip
    return EmbedResult(np.ascontiguousarray(embeddings, dtype=np.float32), pos, failures)


def embed_images(embedder: Embedder, images: list[Image.Image]) -> np.ndarray:
    """Decoded images -> (n_images, dim) float32."""
    arrays = [to_array(img, embedder.image_size, embedder.channels) for img in images]
    if not arrays:
        return np.zeros((0, int(embedder.embedding_dim)), np.float32)
    return embed_arrays(embedder, torch.from_numpy(np.stack(arrays)))


def embed_files(embedder: Embedder, paths: list[str | Path]) -> np.ndarray:
    """Image files -> (n_files, dim) float32. A query that cannot be decoded is a UserError."""
    images = []
    for p in paths:
        why = why_unusable(p)  # missing, a link loop, a fifo, a folder, a device...
        if why is not None:
            raise UserError(f"query {display(str(p))}: {why}")
        try:
            images.append(open_image(p))
        except ImageError as e:
            raise UserError(f"query image cannot be used: {e}") from None
    return embed_images(embedder, images)
