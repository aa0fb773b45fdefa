"""Turning images into embeddings with any model that has `embed_batch`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .errors import UserError
from .images import ImageError, open_image, to_array
from .loader import make_loader
from .progress import progress_bar
from .sources import ImageSource

__all__ = [
    "Embedder", "DerivedEmbedder", "EmbedResult", "load_embedder", "embed_source",
    "embed_images", "embed_files", "describe_embedder", "parse_pretrained", "PRETRAINED_NAMES",
]  # fmt: skip

PRETRAINED_NAMES = ("efficientnet-lite0",)


class Embedder(Protocol):
    """What embedding needs of a model (the autoencoder and the pretrained backbone alike)."""

    @property
    def image_size(self) -> int:
        """Square input side in pixels the images are resized to."""
        ...

    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        ...

    @property
    def embedding_dim(self) -> int: ...

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, image_size, image_size) float32 in [0, 1] -> (B, embedding_dim)."""
        ...


class DerivedEmbedder(torch.nn.Module):
    """A frozen base embedder followed by a learned step (a fine-tuned head, a whitening).

    Images go in as the base takes them, so the input side and channels are the base's.
    """

    base: Any

    @property
    def image_size(self) -> int:
        return int(self.base.image_size)

    @property
    def channels(self) -> int:
        return int(self.base.channels)


@dataclass
class EmbedResult:
    embeddings: np.ndarray  # (n_ok, dim) float32, in the order of `positions`
    positions: np.ndarray  # (n_ok,) int64 positions in the source of the embedded images
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) skipped


def parse_pretrained(ref: str) -> tuple[str, int, str] | None:
    """``NAME[@SIZE][:POOLING]`` -> (name, input size, pooling), or None for other references.

    ``efficientnet-lite0`` = ``efficientnet-lite0@224:gem`` (GeM, p = 3); ``:avg`` averages.
    """
    rest, _, pooling = ref.partition(":")
    name, _, size = rest.partition("@")
    if name not in PRETRAINED_NAMES:
        return None
    try:
        side = int(size) if size else 224
    except ValueError:
        raise UserError(
            f"{ref}: the input size after @ must be a number, e.g. {name}@224"
        ) from None
    return name, side, pooling or "gem"


def load_embedder(ref: str | Path, device: str = "cpu") -> Embedder:
    """A model by reference: a model folder made by `imgret train` / `finetune` / `whiten`, or a
    pretrained name ``efficientnet-lite0[@SIZE][:POOLING]`` (default 224 px, GeM pooling).
    """
    ref_s = str(ref)
    pretrained = parse_pretrained(ref_s)
    if pretrained is not None:
        from .pretrained import load_pretrained

        name, size, pooling = pretrained
        try:
            return load_pretrained(name, image_size=size, pooling=pooling).to(device)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{ref_s}: {e}") from None
    doc = _model_doc(Path(ref_s) / "model.json")
    if doc.get("arch") == "projection-head":
        from .finetune import load_finetuned

        return load_finetuned(ref_s, device=device)
    if doc.get("kind") == "whitened":
        from .whiten import load_whitened

        return load_whitened(ref_s, device=device)
    from .checkpoint import load_model

    model, _ = load_model(ref_s, device=device)
    return model


def _model_doc(path: Path) -> dict:
    """A model folder's model.json, or {} (a missing or broken one is reported by load_model)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def describe_embedder(ref: str | Path, embedder: Embedder) -> dict:
    """The facts a collection records to refuse a mismatched model later."""
    ref_s = str(ref)
    pretrained = parse_pretrained(ref_s)
    if pretrained is None:
        ref_s = str(Path(ref_s).resolve())
    else:
        ref_s = f"{pretrained[0]}@{pretrained[1]}:{pretrained[2]}"  # one spelling per model
    return {
        "ref": ref_s,
        "name": getattr(embedder, "name", type(embedder).__name__),
        "embedding_dim": int(embedder.embedding_dim),
        "image_size": int(embedder.image_size),
        "channels": int(embedder.channels),
    }


def _device_of(embedder: Embedder) -> torch.device:
    params = list(embedder.parameters()) if isinstance(embedder, torch.nn.Module) else []
    return params[0].device if params else torch.device("cpu")


def embed_source(
    embedder: Embedder,
    source: ImageSource,
    *,
    batch_size: int = 128,
    workers: int = 2,
    progress: bool = True,
) -> EmbedResult:
    """Embed every image of `source`; undecodable images are skipped and listed in failures."""
    device = _device_of(embedder)
    loader = make_loader(
        source, size=embedder.image_size, channels=embedder.channels,
        batch_size=batch_size, workers=workers,
    )  # fmt: skip
    chunks, positions, failures = [], [], []
    bar = progress_bar(total=len(source), desc="embedding", unit="img", enabled=progress)
    for batch in loader:
        if len(batch.indices):
            chunks.append(embedder.embed_batch(batch.images.to(device)).float().cpu().numpy())
            positions.append(batch.indices.numpy())
        failures += [(source.keys[i], reason) for i, reason in batch.failures]
        bar.update(len(batch.indices) + len(batch.failures))
    bar.close()
    dim = int(embedder.embedding_dim)
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    return EmbedResult(np.ascontiguousarray(embeddings, dtype=np.float32), pos, failures)


def embed_images(embedder: Embedder, images: list[Image.Image]) -> np.ndarray:
    """Decoded images -> (n_images, dim) float32."""
    if not images:
        return np.zeros((0, int(embedder.embedding_dim)), np.float32)
    arrays = [to_array(img, embedder.image_size, embedder.channels) for img in images]
    x = torch.from_numpy(np.stack(arrays)).float().div_(255.0).to(_device_of(embedder))
    return embedder.embed_batch(x).float().cpu().numpy().astype(np.float32)


def embed_files(embedder: Embedder, paths: list[str | Path]) -> np.ndarray:
    """Image files -> (n_files, dim) float32. A query that cannot be decoded is a UserError."""
    images = []
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"{p}: no such file")
        try:
            images.append(open_image(p))
        except ImageError as e:
            raise UserError(f"query image cannot be used: {e}") from None
    return embed_images(embedder, images)
