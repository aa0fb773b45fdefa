"""Image sources: a folder of files, or a built-in dataset held as arrays.

Every image of a source has a key (its file path, or ``builtin://NAME/SPLIT/INDEX``) and an
optional label (the name of its sub-folder; used only by evaluation, never by training).
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import UserError
from .images import ImageError, open_image, scan_folder

__all__ = ["ImageSource", "open_source", "load_key", "BUILTIN_SOURCES", "FASHION_MNIST_DIRS"]

BUILTIN_SOURCES = ("digits", "fashion-mnist", "fashion-mnist:train", "fashion-mnist:test")
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageSource:
    """An ordered list of images with keys and optional labels.

    `arrays` is (n_images, H, W) or (n_images, H, W, 3) uint8 for in-memory datasets and None
    for folders, whose images are decoded from `keys` (file paths) when loaded.
    """

    name: str
    keys: list[str]
    labels: list[str | None]
    arrays: np.ndarray | None = field(default=None, repr=False)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def is_grayscale(self) -> bool:
        return self.arrays is not None and self.arrays.ndim == 3

    def load(self, i: int) -> Image.Image:
        """Image `i`, decoded (raises ImageError for a bad file)."""
        if self.arrays is not None:
            return Image.fromarray(self.arrays[i])
        return open_image(self.keys[i])

    def subset(self, indices: Iterable[int] | np.ndarray) -> ImageSource:
        idx = [int(i) for i in indices]
        return ImageSource(
            name=self.name,
            keys=[self.keys[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            arrays=None if self.arrays is None else self.arrays[idx],
            root=self.root,
        )

    @property
    def has_labels(self) -> bool:
        return any(label is not None for label in self.labels)


def open_source(spec: str | Path) -> ImageSource:
    """Open a folder of images, a folder of Fashion-MNIST idx files, or a built-in name.

    Built-in names: ``digits`` (scikit-learn, 1,797 8x8 images), ``fashion-mnist`` (train and
    test, 70,000 images), ``fashion-mnist:train`` and ``fashion-mnist:test``.
    """
    spec_s = str(spec)
    if spec_s == "digits":
        return _digits()
    if spec_s.startswith("fashion-mnist"):
        split = spec_s.partition(":")[2] or "all"
        return _fashion_mnist(_find_fashion_mnist(), split)
    folder = Path(spec_s).expanduser()
    if not folder.exists():
        raise UserError(
            f"{folder}: no such folder. Give a folder of images or one of: "
            + ", ".join(BUILTIN_SOURCES)
        )
    if not folder.is_dir():
        raise UserError(f"{folder}: is a file, not a folder of images")
    if (folder / (_IDX_FILES["train"][0] + ".gz")).exists() or (
        folder / _IDX_FILES["train"][0]
    ).exists():
        return _fashion_mnist(folder, "all")
    return _folder(folder)


def _folder(root: Path) -> ImageSource:
    root = root.resolve()
    paths = scan_folder(root)
    if not paths:
        raise UserError(
            f"{root}: no images found (looked for .jpg .jpeg .png .bmp .gif .webp .tif .tiff "
            "in all sub-folders)"
        )
    labels: list[str | None] = []
    for p in paths:
        parts = p.relative_to(root).parts
        labels.append(parts[-2] if len(parts) >= 2 else None)
    return ImageSource(name=str(root), keys=[str(p) for p in paths], labels=labels, root=root)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (
        (data.images * (255.0 / 16.0)).round().astype(np.uint8)
    )  # (1797, 8, 8): 0..16 -> 0..255
    return images, data.target


def _digits() -> ImageSource:
    images, targets = _digits_arrays()
    return ImageSource(
        name="digits",
        keys=[f"builtin://digits/all/{i}" for i in range(len(images))],
        labels=[str(int(t)) for t in targets],
        arrays=images,
    )


def _find_fashion_mnist() -> Path:
    candidates = [Path(p) for p in os.environ.get("IMGRET_FASHION_MNIST", "").split(":") if p]
    for folder in [*candidates, *FASHION_MNIST_DIRS]:
        if (folder / (_IDX_FILES["train"][0] + ".gz")).exists() or (
            folder / _IDX_FILES["train"][0]
        ).exists():
            return folder
    raise UserError(
        "Fashion-MNIST not found. Install it with `sudo apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu), or give the folder holding its idx files instead of the name, or set "
        "IMGRET_FASHION_MNIST to that folder."
    )


def _read_idx(path: Path) -> np.ndarray:
    gz = path.with_name(path.name + ".gz")
    raw = gzip.open(gz).read() if gz.exists() else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=4)
def _fashion_mnist_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _IDX_FILES[split]
    return _read_idx(folder / images_name), _read_idx(folder / labels_name)


def _fashion_mnist(folder: Path, split: str) -> ImageSource:
    if split not in ("train", "test", "all"):
        raise UserError(f"fashion-mnist split must be train or test, got {split!r}")
    splits = ["train", "test"] if split == "all" else [split]
    arrays: list[np.ndarray] = []
    keys: list[str] = []
    labels: list[str | None] = []
    for s in splits:
        images, targets = _fashion_mnist_split(folder, s)  # (n, 28, 28) uint8, (n,) uint8
        arrays.append(images)
        keys += [f"builtin://fashion-mnist/{s}/{i}" for i in range(len(images))]
        labels += [FASHION_MNIST_CLASSES[int(t)] for t in targets]
    name = "fashion-mnist" if split == "all" else f"fashion-mnist:{split}"
    return ImageSource(name=name, keys=keys, labels=labels, arrays=np.concatenate(arrays))


def load_key(key: str) -> Image.Image:
    """Decode the image behind a key (a file path or a ``builtin://`` key)."""
    if key.startswith("builtin://"):
        name, split, index = key[len("builtin://") :].split("/")
        if name == "digits":
            return Image.fromarray(_digits_arrays()[0][int(index)])
        images, _ = _fashion_mnist_split(_find_fashion_mnist(), split)
        return Image.fromarray(images[int(index)])
    return open_image(key)


_ = ImageError  # re-exported for callers that catch load errors
