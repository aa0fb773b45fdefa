"""Checking and decoding an uploaded query image; every refusal is a WebError with a message.

The upload is decoded from a temporary file in the system's temporary folder (deleted at
once), never written into the collection.
"""

from __future__ import annotations

import io
import tempfile

from PIL import Image, UnidentifiedImageError

from ..data.images import ImageError, open_image
from .errors import WebError

__all__ = ["decode_upload", "UPLOAD_FORMATS"]

# Pillow formats accepted for queries; anything else (EPS, PSD, ...) is refused unread.
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Bytes of an uploaded image -> the decoded image, upright, RGB.

    Raises WebError: 413 for more than `max_bytes` or more than `max_pixels` pixels (a
    possible decompression bomb, refused from the header before decoding), 415 for a file that
    is not an image of an accepted type, 400 for an empty, corrupt or truncated image.
    """
    if len(data) > max_bytes:
        raise WebError(413, f"the upload is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if not data:
        raise WebError(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:  # reads the header
            fmt, (width, height) = img.format, img.size
    except UnidentifiedImageError:
        raise WebError(
            415, f"not an image of an accepted type ({', '.join(UPLOAD_FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        raise WebError(413, "refused as a possible decompression bomb") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise WebError(400, f"cannot read the image header ({type(e).__name__})") from None
    if width * height > max_pixels:
        raise WebError(
            413,
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; refused as a possible decompression bomb",
        )
    suffix = "." + (fmt or "img").lower()
    with tempfile.NamedTemporaryFile(prefix="imgret-query-", suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return open_image(tmp.name)
        except ImageError as e:
            reason = str(e).split(": ", 1)[-1]  # drop the temporary file's name
            status = 413 if "decompression bomb" in reason else 400
            raise WebError(status, f"the {fmt} image cannot be decoded: {reason}") from None
