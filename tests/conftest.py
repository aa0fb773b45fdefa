"""Tiny generated image folders: colours and shapes in nested class folders, plus bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _pattern(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy image of one of four easy-to-tell classes."""
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "red":
        arr = np.stack([np.full_like(x, 0.9), x * 0.2, y * 0.2], -1)
    elif kind == "blue":
        arr = np.stack([x * 0.2, y * 0.2, np.full_like(x, 0.9)], -1)
    elif kind == "stripes":
        v = (np.sin(x * 25) > 0).astype(float)
        arr = np.stack([v, v, v], -1)
    else:  # "disc"
        v = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.1).astype(float)
        arr = np.stack([v * 0.2, v, v * 0.2], -1)
    arr = np.clip(arr + rng.normal(0, 0.05, arr.shape), 0, 1)
    return Image.fromarray((arr * 255).astype(np.uint8))


CLASSES = ("red", "blue", "stripes", "disc")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """photos/<class>/NN.png (6 per class, one class nested one level deeper) + bad files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for cls in CLASSES:
        folder = root / ("more" if cls == "disc" else "") / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(6):
            img = _pattern(cls, rng)
            if cls == "stripes" and i == 0:
                img = img.convert("L")  # a grayscale image
            if cls == "blue" and i == 0:
                img = img.convert("RGBA")  # an RGBA image
            ext = "jpg" if (cls == "red" and i % 2) else "png"
            img.save(folder / f"{i:02d}.{ext}")
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0not a jpeg at all")
    (root / "blue" / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, and not an image extension")
    (root / "fake.png").write_text("a text file with an image extension")
    return root


@pytest.fixture
def good_count() -> int:
    return 6 * len(CLASSES)
