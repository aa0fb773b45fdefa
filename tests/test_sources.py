import gzip
from pathlib import Path

import numpy as np
import pytest

from imgret.core.errors import UserError
from imgret.data.sources import load_key, open_source


def test_folder_source_labels_are_subfolder_names(image_folder: Path) -> None:
    src = open_source(image_folder)
    labels = dict(zip(src.keys, src.labels, strict=True))
    assert labels[str(image_folder / "more" / "disc" / "00.png")] == "disc"
    assert labels[str(image_folder / "fake.png")] is None  # top level: no label
    assert src.has_labels


def test_missing_and_empty_folders_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        open_source(tmp_path / "nope")
    with pytest.raises(UserError, match="no images found"):
        open_source(tmp_path)


def test_digits_builtin() -> None:
    src = open_source("digits")
    assert len(src) == 1797 and src.arrays is not None and src.arrays.shape == (1797, 8, 8)
    assert src.arrays.max() == 255 and src.labels[0] == "0"
    assert np.array_equal(np.asarray(load_key(src.keys[5])), src.arrays[5])


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    src = open_source(tmp_path)
    assert len(src) == 8 and src.arrays is not None and src.arrays.shape == (8, 28, 28)
    assert src.labels[:3] == ["t-shirt", "trouser", "pullover"]
    assert src.keys[5] == "builtin://fashion-mnist/test/0"
