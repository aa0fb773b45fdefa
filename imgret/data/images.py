"""Finding and decoding image files; a bad file raises ImageError, never anything else.

Decoding scales with the photo, not with its megapixels: the header is read first, and

- an image whose sides differ more than MAX_ASPECT times (a 1x100000 PNG) is refused before
  its pixels are decoded: only its central square would be used, and resizing the whole
  strip would take gigabytes;
- a JPEG far larger than the model's input is decoded at 1/2, 1/4 or 1/8 scale by the JPEG
  decoder itself (DCT scaling, `Image.draft`), keeping its shorter side >= DRAFT_MARGIN x the
  input size;
- only the central square, the part the model sees, is resized (`to_array`).

Pillow's warnings (corrupt EXIF and the like) are caught and returned with the image, never
printed in the middle of a progress bar.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS", "ImageError", "Decoded", "scan_folder", "read_image_file",
    "decode_image", "open_image", "convert", "to_array", "MAX_ASPECT", "MAX_PIXELS",
    "MAX_FILE_BYTES",
]  # fmt: skip

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_ASPECT = 20  # longer side / shorter side beyond which an image is refused (from its header)
MAX_PIXELS = 90_000_000  # width x height beyond which an image is refused as a decompression bomb
MAX_FILE_BYTES = 1 << 30  # files larger than this are refused unread
DRAFT_MARGIN = 2  # JPEG DCT scaling keeps the shorter side >= this x the model's input side
_BYTESIO = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


class ImageError(Exception):
    """An image file that cannot be used: corrupt, truncated, empty, not an image, or too large."""


@dataclass
class Decoded:
    image: Image.Image  # upright (EXIF orientation applied), in the mode asked for
    warnings: list[str] = field(default_factory=list)  # what Pillow warned about while decoding


def scan_folder(root: str | Path, unreadable: list[Path] | None = None) -> list[Path]:
    """All image files under `root`, recursively, sorted by path (hidden files skipped).

    Links to files are listed (their target is read), links to folders are not followed.
    Folders that cannot be listed are skipped, and appended to `unreadable` when given, so
    that the caller does not take their images for deleted.
    """
    root = Path(root)
    found = []

    def failed(e: OSError) -> None:
        if unreadable is not None and e.filename is not None:
            unreadable.append(Path(e.filename))

    for folder, dirs, files in os.walk(root, onerror=failed):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if path.is_file():
                found.append(path)
    return sorted(found)


def read_image_file(path: str | Path) -> bytes:
    """The bytes of an image file, read once (OSError when it cannot be read).

    Raises ImageError for what is not a regular file (reading a fifo would block), an empty
    file, or a file over MAX_FILE_BYTES.
    """
    st = os.stat(path)  # follows symlinks; OSError when missing or a loop
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {st.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    with open(path, "rb") as f:
        return f.read()


def decode_image(
    data: bytes, *, name: str = "image", mode: str = "RGB", target: int | None = None
) -> Decoded:
    """Decode image bytes fully, upright, in `mode` ("RGB" or "L").

    target : the side the image will be resized to (its shorter side); big JPEGs are then
        decoded at a reduced scale. None: full resolution.
    Raises ImageError for anything that is not a usable image (see the module docstring), and
    MemoryError as it is (not the file's fault).
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                _check_header(img.size, name)
                if target is not None and img.format == "JPEG":
                    shorter = min(img.size)
                    want = min(shorter, target * DRAFT_MARGIN)
                    scale = want / shorter
                    img.draft(img.mode, (int(img.size[0] * scale), int(img.size[1] * scale)))
                img.load()
                upright = ImageOps.exif_transpose(img)
                image = convert(upright, mode)
    except (ImageError, MemoryError):
        raise  # running out of memory is not the file's fault: the caller may retry
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data: report them all alike
        why = _BYTESIO.sub("the data", str(e))  # "cannot identify image file <_io.BytesIO ...>"
        raise ImageError(f"{name}: cannot decode ({type(e).__name__}: {why})") from None
    return Decoded(image, [f"{w.category.__name__}: {w.message}" for w in caught])


def _check_header(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: the header says {w}x{h} pixels")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"{name}: {w}x{h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,}; refused as "
            "a possible decompression bomb"
        )
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(
            f"{name}: {w}x{h} pixels is more than {MAX_ASPECT} times longer than wide; refused "
            "(only its central square would be used)"
        )


def open_image(path: str | Path, mode: str = "RGB", target: int | None = None) -> Image.Image:
    """Decode an image file (see decode_image); ImageError for anything unusable."""
    try:
        data = read_image_file(path)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, name=str(path), mode=mode, target=target).image


def convert(img: Image.Image, mode: str) -> Image.Image:
    """Grayscale, palette, 16-bit, float and RGBA images to `mode`; transparency becomes white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit, 32-bit integer and float images: stretch their own range to 0..255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if img.mode != "F":
            lo = min(lo, 0.0)
        span = hi - lo if np.isfinite(hi - lo) and hi > lo else 1.0
        arr = np.nan_to_num((arr - lo) / span, nan=0.0, posinf=1.0, neginf=0.0)
        img = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
    return img.convert(mode)


def to_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Central square, resized to `size` -> (channels, size, size) uint8.

    The same as resizing the shorter side to `size` and cropping the centre, without resizing
    the parts that are cropped away.
    """
    img = convert(img, "L" if channels == 1 else "RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (side, side):
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    if channels == 1:
        return arr[None, :, :]  # (H, W) -> (1, H, W)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
