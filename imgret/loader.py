"""Batches of images for the model: decoding in worker processes, bad files set aside."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .images import ImageError, to_array
from .sources import ImageSource

__all__ = ["ImageDataset", "Batch", "make_loader", "split_indices"]


@dataclass
class Batch:
    """A batch of decoded images and the ones that failed to decode."""

    images: torch.Tensor  # (B, C, H, W) float32 in [0, 1]
    indices: torch.Tensor  # (B,) int64 positions in the source
    failures: list[tuple[int, str]]  # (position in the source, reason) of skipped images


class ImageDataset(Dataset):
    """Item i of `source` as (index, (C, size, size) uint8 array or None, error message or None)."""

    def __init__(self, source: ImageSource, size: int, channels: int) -> None:
        self.source = source
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, to_array(self.source.load(i), self.size, self.channels), None
        except ImageError as e:
            return i, None, str(e)


def _collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> Batch:
    good = [(i, a) for i, a, _ in items if a is not None]
    failures = [(i, err or "unknown error") for i, a, err in items if a is None]
    if good:
        images = torch.from_numpy(np.stack([a for _, a in good])).float().div_(255.0)
    else:
        images = torch.empty(0)
    return Batch(images, torch.tensor([i for i, _ in good], dtype=torch.int64), failures)


def make_loader(
    source: ImageSource,
    *,
    size: int,
    channels: int,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 2,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of `Batch`es. In-memory sources are read in the main process (faster)."""
    if source.arrays is not None:
        workers = 0
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ImageDataset(source, size, channels),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=_collate,
        generator=generator,
        persistent_workers=False,
    )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed split of range(n) into (train, validation) index arrays, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
