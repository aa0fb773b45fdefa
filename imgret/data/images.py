"""Finding and decoding image files; a bad file raises ImageError, never anything else."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "ImageError", "scan_folder", "open_image", "to_array"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ImageError(Exception):
    """An image file that cannot be used: corrupt, truncated, empty, not an image, or too large."""


def scan_folder(root: str | Path) -> list[Path]:
    """All image files under `root`, recursively, sorted by path (hidden files skipped)."""
    root = Path(root)
    found = []
    for path in root.rglob("*"):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found)


def open_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode an image file fully, upright (EXIF orientation applied), in `mode` ("RGB" or "L").

    Raises ImageError for anything that is not a usable image; images over Pillow's
    `Image.MAX_IMAGE_PIXELS` (about 89 million pixels) are refused as decompression bombs.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
                return convert(upright, mode)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except Exception as e:  # Pillow raises many types for bad data: report them all alike
        raise ImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None


def convert(img: Image.Image, mode: str) -> Image.Image:
    """Grayscale, palette, 16-bit and RGBA images to `mode`; transparency becomes white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255).astype(np.uint8))
    return img.convert(mode)


def to_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Resize (shorter side to `size`, then centre crop) -> (channels, size, size) uint8."""
    img = convert(img, "L" if channels == 1 else "RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    if channels == 1:
        return arr[None, :, :]  # (H, W) -> (1, H, W)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
