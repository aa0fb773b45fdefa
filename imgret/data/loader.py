"""The one image loader of training, indexing and evaluation: decoding in worker processes.

Batches are uint8 (B, C, S, S) tensors: four times less to pass between processes than float;
the conversion to float in [0, 1] happens once, in the process that runs the model
(`to_float`). A file that cannot be decoded (ImageError) or read (OSError) is set aside with
its reason, the same way everywhere. Worker processes die with their parent, so a killed job
leaves none behind holding the collection's lock.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.errors import UserError
from ..core.progress import progress_bar
from .images import ImageError, decode_image, read_image_file, to_array
from .sources import ImageSource

__all__ = [
    "ImageDataset", "Batch", "make_loader", "iter_batches", "to_float", "decode_all",
    "sample_batches", "split_indices", "sha256_file",
]  # fmt: skip

# One dataset item: (position, (C, S, S) uint8 or None, reason or None, sha256 or None,
# Pillow's warnings while decoding)
Item = tuple[int, "np.ndarray | None", "str | None", "str | None", list[str]]


@dataclass
class Batch:
    """Decoded images of one batch and the ones that failed."""

    images: torch.Tensor  # (B, C, S, S) uint8
    indices: torch.Tensor  # (B,) int64 positions in the source of the decoded images
    failures: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)
    digests: list[str | None] = field(default_factory=list)  # sha256 per decoded image, if asked
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (position, Pillow's warning)
    transient: list[int] = field(default_factory=list)  # failures to retry: I/O, memory


class Transient(str):
    """The reason of a failure that may not happen again (an I/O or permission error, memory
    running out): reported, but the file is not recorded as bad and is retried next run."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImageDataset(Dataset):
    """Item i of `source`, decoded and resized: (i, (C, size, size) uint8 or None, reason, sha256).

    Each file is read once: its content hash (with `hash_files`, for change detection) and
    its decoding come from the same bytes; big JPEGs are decoded at a reduced scale.
    """

    def __init__(
        self, source: ImageSource, size: int, channels: int, *, hash_files: bool = False
    ) -> None:
        self.source = source
        self.size = size
        self.channels = channels
        self.hash_files = hash_files and source.arrays is None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Item:
        digest, warned = None, []
        key = self.source.keys[i]
        try:
            if self.source.arrays is not None:
                image = self.source.load(i)
            else:
                data = read_image_file(key)
                if self.hash_files:
                    digest = hashlib.sha256(data).hexdigest()
                mode = "L" if self.channels == 1 else "RGB"
                decoded = decode_image(data, name=key, mode=mode, target=self.size)
                image, warned = decoded.image, decoded.warnings
            return i, to_array(image, self.size, self.channels), None, digest, warned
        except ImageError as e:  # the file's content: recorded as bad
            return i, None, str(e), digest, warned
        except (OSError, MemoryError) as e:  # reading it, or memory: not the file's fault
            why = Transient(f"{key}: cannot read ({e or type(e).__name__})")
            return i, None, why, digest, warned


def _collate(items: list[Item]) -> Batch:
    good = [(i, a, d) for i, a, _, d, _ in items if a is not None]
    failures = [(i, err or "unknown error") for i, a, err, _, _ in items if a is None]
    warned = [(i, w) for i, _, _, _, ws in items for w in ws]
    if good:
        images = torch.from_numpy(np.stack([a for _, a, _ in good]))
    else:
        images = torch.empty((0,), dtype=torch.uint8)
    indices = torch.tensor([i for i, _, _ in good], dtype=torch.int64)
    transient = [i for i, err in failures if isinstance(err, Transient)]
    return Batch(images, indices, failures, [d for _, _, d in good], warned, transient)


def _die_with_parent(_: int) -> None:
    """Worker start: ask Linux to kill this worker when the job's process dies (even kill -9)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def make_loader(
    source: ImageSource,
    *,
    size: int,
    channels: int,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 2,
    seed: int = 0,
    hash_files: bool = False,
) -> DataLoader:
    """A DataLoader of `Batch`es. In-memory sources are read in the main process (faster)."""
    if source.arrays is not None:
        workers = 0
    return DataLoader(
        ImageDataset(source, size, channels, hash_files=hash_files),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_die_with_parent if workers else None,
        persistent_workers=False,
    )


def iter_batches(
    source: ImageSource, *, size: int, channels: int, batch_size: int = 64, workers: int = 2,
    hash_files: bool = False,
) -> Iterator[Batch]:  # fmt: skip
    """The batches of `source` in order (see make_loader)."""
    yield from make_loader(
        source, size=size, channels=channels, batch_size=batch_size, workers=workers,
        hash_files=hash_files,
    )  # fmt: skip


def sample_batches(
    source: ImageSource, size: int, channels: int, n: int = 64, batch_size: int = 16
) -> list[np.ndarray]:
    """The first `n` decodable images of `source` as (B, C, S, S) uint8 batches (calibration)."""
    out: list[np.ndarray] = []
    got = 0
    part = source.subset(range(min(len(source), 2 * n)))  # room for a few bad files
    for batch in iter_batches(part, size=size, channels=channels, batch_size=batch_size, workers=0):
        if len(batch.indices) and got < n:
            out.append(batch.images.numpy()[: n - got])
            got += len(out[-1])
    return out


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, C, S, S) uint8 -> float32 in [0, 1] on `device` (the one conversion)."""
    return images.to(device).float().div_(255.0)


def decode_all(
    source: ImageSource, size: int, channels: int, *, workers: int = 2, progress: bool = True
) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str]]]:
    """Decode every image once -> ((n_ok, C, S, S) uint8, kept positions (n_ok,), failures)."""
    chunks, kept, failures = [], [], []
    batches = iter_batches(source, size=size, channels=channels, batch_size=256, workers=workers)
    bar = progress_bar(batches, desc="decoding", unit="batch", enabled=progress, leave=False)
    for batch in bar:
        if len(batch.indices):
            chunks.append(batch.images)
            kept.append(batch.indices.numpy())
        failures += [(source.keys[i], reason) for i, reason in batch.failures]
    if not chunks:
        raise UserError(f"{source.name}: none of the {len(source)} images could be decoded")
    return torch.cat(chunks), np.concatenate(kept), failures


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed split of range(n) into (train, validation) index arrays, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
