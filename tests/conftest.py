"""Tiny generated image folders: colours and shapes in nested class folders, plus bad files."""

from __future__ import annotations

import os

# As `import imgret` does, before torch or faiss start OpenMP (the helpers import torch first):
# spinning OpenMP threads make FAISS many times slower when the cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# PyTorch unless a test asks for ONNX (exports take seconds); set on import, so that configs
# built when the test modules are collected (IndexJobConfig's backend) see it too.
os.environ.setdefault("IMGRET_BACKEND", "torch")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import CLASSES, pattern_image  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _inference_defaults(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A private cache folder for ONNX exports (CLI subprocesses inherit it)."""
    os.environ["IMGRET_CACHE_DIR"] = str(tmp_path_factory.mktemp("imgret-cache"))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """photos/<class>/NN.png (6 per class, one class nested one level deeper) + bad files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for cls in CLASSES:
        folder = root / ("more" if cls == "disc" else "") / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(6):
            img = pattern_image(cls, rng)
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
