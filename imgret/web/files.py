"""The files the web app serves: collection images (checked) and their cached thumbnails.

A file is only ever found through a collection key, never through a path from a request, and
only served when it is a regular image file and either its real path (symlinks resolved) lies
inside one of the collection's folders (the folder it was indexed from, its uploads), or the
key is that real path itself: `imgret add` stores the resolved path of each file it adds, so a
file added from another folder is served, while a symlink inside the folder that points out of
it is not. Thumbnails are made once and kept in a cache folder.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..core.atomic import atomic_path
from ..data.images import IMAGE_EXTENSIONS, ImageError, open_image
from .errors import WebError

__all__ = ["ItemFiles", "ImageBlob", "BUILTIN_PREFIX", "key_version"]

BUILTIN_PREFIX = "builtin://"
_SMALL_SIDE = 64  # thumbnails this small are stored as PNG (sharp, and tiny anyway)


def key_version(key: str) -> str:
    """A short tag of a key, in image URLs: ids are positions, which change with the collection,
    so a cached thumbnail of id 7 must not be shown for another image 7."""
    return format(zlib.crc32(key.encode("utf-8", "surrogateescape")), "08x")


@dataclass(frozen=True)
class ImageBlob:
    """Either a file on disk (`path`) or encoded bytes (`data`), with its media type."""

    media_type: str
    path: Path | None = None
    data: bytes | None = None


class ItemFiles:
    """Find, check and thumbnail the image behind a collection key.

    `roots` are the folders the collection was embedded from (and its uploads folder); a key
    that resolves outside them is refused unless the key is its own real path. `names_under`:
    folders that display names are made relative to first (then the roots).
    """

    def __init__(
        self, roots: list[Path], cache_dir: Path, thumb_size: int, names_under: tuple = ()
    ) -> None:
        self.roots = [Path(os.path.realpath(r)) for r in roots if Path(r).is_dir()]
        named = [*(Path(os.path.realpath(r)) for r in names_under), *self.roots]
        self._prefixes = [str(r).rstrip(os.sep) + os.sep for r in named]
        self.cache_dir = cache_dir
        self.thumb_size = thumb_size

    def display_name(self, key: str) -> str:
        """The key relative to its source folder (no absolute paths in pages)."""
        if key.startswith(BUILTIN_PREFIX):
            return key[len(BUILTIN_PREFIX) :]
        for prefix in self._prefixes:  # string prefixes: this runs for every item shown
            if key.startswith(prefix):
                return key[len(prefix) :]
        return Path(key).name

    def resolve(self, key: str) -> Path:
        """The real path of a file key, checked: a regular image file inside a source folder.

        Raises WebError 403 for a file outside the collection's folders (a symlink pointing
        out, a key with `..`), 404 for a file that is gone.
        """
        if key.startswith(BUILTIN_PREFIX):
            raise ValueError("builtin keys have no file")
        path = Path(key)
        if not path.is_absolute():
            if not self.roots:
                raise WebError(404, "the collection's folder is not available on this machine")
            path = self.roots[0] / path
        real = Path(os.path.realpath(path))
        own = path.is_absolute() and str(real) == os.path.normpath(key) and ".." not in path.parts
        if not own and not any(real.is_relative_to(root) for root in self.roots):
            raise WebError(403, "refused: the file lies outside the collection's folder")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            raise WebError(404, "the image file no longer exists") from None
        if not stat.S_ISREG(mode) or real.suffix.lower() not in IMAGE_EXTENSIONS:
            raise WebError(403, "refused: not a regular image file")
        return real

    def full_image(self, key: str) -> ImageBlob:
        """The original file of a key (or a PNG of a built-in image)."""
        if key.startswith(BUILTIN_PREFIX):
            return ImageBlob("image/png", data=_png_bytes(_load_builtin(key)))
        path = self.resolve(key)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return ImageBlob(media_type, path=path)

    def thumbnail(self, key: str) -> ImageBlob:
        """A thumbnail (longest side `thumb_size`), made on first use and cached.

        The cache name hashes the key, the file's size and modification time and the thumbnail
        size, so an edited file gets a new thumbnail.
        """
        if key.startswith(BUILTIN_PREFIX):
            stamp, path = key, None
        else:
            path = self.resolve(key)
            st = path.stat()
            stamp = f"{path}|{st.st_mtime_ns}|{st.st_size}"
        digest = hashlib.sha256(f"{stamp}|{self.thumb_size}".encode()).hexdigest()[:32]
        folder = self.cache_dir / digest[:2]
        for ext, media_type in ((".jpg", "image/jpeg"), (".png", "image/png")):
            cached = folder / f"{digest}{ext}"
            if cached.is_file():
                return ImageBlob(media_type, path=cached)
        try:
            img = _load_builtin(key) if path is None else open_image(path)
        except ImageError:
            raise WebError(404, "the image cannot be decoded any more") from None
        img.thumbnail((self.thumb_size, self.thumb_size), Image.Resampling.LANCZOS)
        small = max(img.size) <= _SMALL_SIDE
        buf = io.BytesIO()
        if small:
            img.save(buf, format="PNG")
        else:
            img.convert("RGB").save(buf, format="JPEG", quality=85)
        media_type = "image/png" if small else "image/jpeg"
        cached = folder / f"{digest}{'.png' if small else '.jpg'}"
        try:
            with atomic_path(cached) as tmp:  # concurrent makers each write whole files
                tmp.write_bytes(buf.getvalue())
        except OSError:  # a read-only cache folder: serve it anyway, made afresh each time
            return ImageBlob(media_type, data=buf.getvalue())
        return ImageBlob(media_type, path=cached)


def _load_builtin(key: str) -> Image.Image:
    from ..data.sources import load_key

    try:
        return load_key(key)
    except Exception:  # noqa: BLE001 - a missing dataset or a malformed key alike
        raise WebError(404, "this built-in image is not available on this machine") from None


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
