"""Checking and decoding an uploaded query image; every refusal is a WebError with a message.

The upload is decoded from memory, by the same decoder as indexing (imgret.data.images:
shape limits from the header, big JPEGs decoded at reduced scale), never written anywhere.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from ..data.images import ImageError, decode_image
from .errors import WebError

__all__ = ["decode_upload", "UPLOAD_FORMATS"]

# Pillow formats accepted for queries; anything else (EPS, PSD, ...) is refused unread.
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")


def decode_upload(
    data: bytes, *, max_bytes: int, max_pixels: int, name: str = "the upload",
    target: int | None = None,
) -> Image.Image:  # fmt: skip
    """Bytes of an uploaded image -> the decoded image, upright, RGB.

    target : the side the image is resized to for the model (big JPEGs are decoded smaller).
    Raises WebError: 413 for more than `max_bytes` or more than `max_pixels` pixels (a
    possible decompression bomb, refused from the header before decoding), 415 for a file that
    is not an image of an accepted type, 400 for an empty, corrupt, truncated or too thin image.
    The message starts with `name`.
    """
    if len(data) > max_bytes:
        raise WebError(413, f"{name}: {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if not data:
        raise WebError(400, f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:  # reads the header
            fmt, (width, height) = img.format, img.size
    except UnidentifiedImageError:
        raise WebError(
            415, f"{name}: not an image of an accepted type ({', '.join(UPLOAD_FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        raise WebError(413, f"{name}: refused as a possible decompression bomb") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise WebError(400, f"{name}: cannot read the image header ({type(e).__name__})") from None
    if width * height > max_pixels:
        raise WebError(
            413,
            f"{name}: the image is {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,}; refused as a possible decompression bomb",
        )
    try:
        return decode_image(data, name=name, target=target).image
    except ImageError as e:
        reason = str(e).removeprefix(f"{name}: ")
        status = 413 if "decompression bomb" in reason else 400
        raise WebError(status, f"{name}: the {fmt} image cannot be used: {reason}") from None
