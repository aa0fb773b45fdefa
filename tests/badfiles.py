"""A corpus of bad, odd and hostile image files mixed with good ones, for indexing tests.

`make_corpus(root)` writes the files under `root` and returns one `Case` per entry, saying what
an indexer of `root` must do with it:

- ``good``: a decodable image that must be indexed;
- ``bad``: must be reported as skipped, with a reason (never a traceback);
- ``ignored``: not an image by its name, hidden, or not a regular file: must be neither indexed
  nor crash the indexer (being reported is fine);
- ``either``: may legitimately go either way (a file rewritten while indexing, a link that leads
  outside the folder, a chmod-000 file when running as root, ...).

Everything is made with Pillow, numpy and the standard library, deterministically for a seed, in
well under a second and a few hundred kilobytes. The only things written outside `root` are the
targets of the "outside-link" cases, under ``outside_dir(root)`` (``root.parent / "outside"``).
Entries that the file system refuses (a name that is not UTF-8 on a UTF-8-only file system, a
FIFO where FIFOs are not allowed) are left out and listed in `SKIPPED` as (kind, why).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "Case",
    "EXPECTS",
    "SKIPPED",
    "make_corpus",
    "orientation_reference",
    "outside_dir",
    "rewrite_while_indexing",
    "summary",
]

EXPECTS = ("good", "bad", "ignored", "either")
SKIPPED: list[tuple[str, str]] = []  # (kind, why) of entries the last make_corpus could not make


@dataclass(frozen=True)
class Case:
    name: str  # path relative to the corpus root (str; a non-UTF-8 name is surrogate-escaped)
    kind: str  # short id, e.g. "truncated-jpeg-header"
    expect: str  # "good", "bad", "ignored" or "either"
    note: str = ""

    def path(self, root: Path) -> Path:
        return Path(root) / self.name


def outside_dir(root: Path) -> Path:
    """Where make_corpus puts the targets of its outside-link cases."""
    return Path(root).parent / "outside"


# --------------------------------------------------------------------------- pictures


def _picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A distinct RGB picture: a random two-colour gradient with a few random boxes and discs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / max(w - 1, 1) * rng.uniform(-1, 1) + y / max(h - 1, 1) * rng.uniform(-1, 1)) % 1.0
    arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(int(rng.integers(2, 6))):
        colour = rng.uniform(0, 255, 3)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.08, 0.3) * min(w, h) + 1
        if rng.random() < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            mask = (np.abs(x - cx) < r) & (np.abs(y - cy) < r * rng.uniform(0.4, 1.6))
        arr[mask] = colour
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def orientation_reference() -> Image.Image:
    """The upright picture of every "exif-orientation" case (96x64 RGB, four coloured quadrants
    plus a black bar along the top edge; the top-left quadrant is red, top-right green,
    bottom-left blue, bottom-right white)."""
    w, h = 96, 64
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (220, 30, 30)
    arr[: h // 2, w // 2 :] = (30, 200, 30)
    arr[h // 2 :, : w // 2] = (30, 30, 220)
    arr[h // 2 :, w // 2 :] = (240, 240, 240)
    arr[:6, :] = 0
    return Image.fromarray(arr)


# What to store so that Pillow's exif_transpose (orientation n) gives the upright picture back.
_STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # read back with ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # read back with ROTATE_90
}


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    return _encode(img, "JPEG", quality=90, **kw)


def _png(img: Image.Image, **kw: object) -> bytes:
    return _encode(img, "PNG", **kw)


# --------------------------------------------------------------------------- crafted files


def _chunk(ctype: bytes, data: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(ctype + data)
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc & 0xFFFFFFFF)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_raw(
    w: int,
    h: int,
    idat: bytes,
    *,
    depth: int = 8,
    ctype: int = 0,
    extra: bytes = b"",
    ihdr_crc: int | None = None,
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return (
        _PNG_SIG
        + _chunk(b"IHDR", ihdr, ihdr_crc)
        + extra
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk of a PNG."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return out


def _png_insert(data: bytes, chunk: bytes) -> bytes:
    """`chunk` inserted just after IHDR."""
    pos = 8 + 12 + 13
    return data[:pos] + chunk + data[pos:]


def _jpeg_marker(data: bytes, marker: int) -> int:
    """Offset of the first 0xFF `marker` segment (walking the segments, not searching)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("not at a marker")
        m = data[pos + 1]
        if m == marker:
            return pos
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    raise ValueError(f"no marker {marker:#x}")


def _jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its SOF0 frame header claiming w x h."""
    sof = _jpeg_marker(data, 0xC0)
    return data[: sof + 5] + struct.pack(">HH", h, w) + data[sof + 9 :]


def _jpeg_with_app1(data: bytes, payload: bytes) -> bytes:
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + seg + data[2:]


def _gif_raw(screen_w: int, screen_h: int, img_w: int, img_h: int, lzw: bytes) -> bytes:
    palette = bytes([0, 0, 0, 255, 255, 255])
    out = b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x80, 0, 0) + palette
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, img_w, img_h, 0) + b"\x02"
    for i in range(0, len(lzw), 255):
        block = lzw[i : i + 255]
        out += bytes([len(block)]) + block
    return out + b"\x00\x3b"


# A valid LZW stream (min code size 2) for a few pixels: clear, 0, 1, 0, end.
_GIF_LZW_SMALL = bytes([0x44, 0x01])


def _tiff_raw(
    w: int, h: int, pixels: bytes, *, compression: int = 1, strip_offset: int | None = None
) -> bytes:
    """A little-endian 8-bit grayscale TIFF with one strip, made by hand."""
    tags = [
        (256, 4, 1, w),  # ImageWidth (LONG)
        (257, 4, 1, h),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample (SHORT)
        (259, 3, 1, compression),  # Compression
        (262, 3, 1, 1),  # PhotometricInterpretation: BlackIsZero
        (273, 4, 1, 0),  # StripOffsets (patched below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, len(pixels)),  # StripByteCounts
    ]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(tags) + 4
    offset = data_offset if strip_offset is None else strip_offset
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(tags))
    for tag, typ, count, value in tags:
        if tag == 273:
            value = offset
        packed = struct.pack("<H", value) + b"\0\0" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    return out + struct.pack("<I", 0) + pixels


def _bmp_raw(w: int, h: int, pixels: bytes, *, offset: int | None = None) -> bytes:
    """A 24-bit BMP made by hand; `offset` overrides the pixel-data offset."""
    off = 54 if offset is None else offset
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, off)
    return head + info + pixels


def _webp_size_claim(data: bytes, w: int, h: int) -> bytes:
    """A VP8X-headed WebP claiming a w x h canvas around the (small) VP8 chunk of `data`."""
    body = data[12:]  # chunks after "RIFF....WEBP"
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    payload = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def _zeros_deflated(n: int) -> bytes:
    """zlib data that inflates to `n` zero bytes, made without holding them in memory."""
    z = zlib.compressobj(9)
    block = bytes(1 << 20)
    parts = [z.compress(block) for _ in range(n >> 20)]
    return b"".join(parts) + z.compress(bytes(n & ((1 << 20) - 1))) + z.flush()


# --------------------------------------------------------------------------- the corpus


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.broot = os.fsencode(root)
        self.cases: list[Case] = []

    def add(self, name: str, kind: str, expect: str, note: str = "") -> Case:
        assert expect in EXPECTS, expect
        case = Case(name, kind, expect, note)
        self.cases.append(case)
        return case

    def file(self, name: str, data: bytes, kind: str, expect: str, note: str = "") -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.add(name, kind, expect, note)

    def symlink(
        self, name: str, target: str | Path, kind: str, expect: str, note: str = ""
    ) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        self.add(name, kind, expect, note)

    def try_(self, kind: str, fn) -> None:  # noqa: ANN001
        try:
            fn()
        except (OSError, NotImplementedError, UnicodeError) as e:
            SKIPPED.append((kind, f"{type(e).__name__}: {e}"))


def make_corpus(root: Path, *, n_good: int = 12, seed: int = 0) -> list[Case]:
    """Write the corpus under root (created; it must not exist or be empty) and return one Case
    per entry. Outside-link targets go to ``outside_dir(root)``."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: not empty")
    root.mkdir(parents=True, exist_ok=True)
    SKIPPED.clear()
    rng = np.random.default_rng(seed)
    w = _Writer(root)

    def pic(width: int = 128, height: int = 96) -> Image.Image:
        return _picture(rng, width, height)

    # ---- good images, in label sub-folders --------------------------------------------------
    labels = ("cats", "dogs", "birds")
    for i in range(n_good):
        label = labels[i % len(labels)]
        img = pic(int(rng.integers(96, 160)), int(rng.integers(80, 140)))
        if i % 2 == 0:
            w.file(f"{label}/good_{i:03d}.jpg", _jpeg(img), "good-basic", "good", "jpeg")
        else:
            w.file(f"{label}/good_{i:03d}.png", _png(img), "good-basic", "good", "png")
    w.file("nested/a/b/c/d/deep.png", _png(pic()), "nested-deep", "good", "label d")
    w.file("upper/UPPER.JPG", _jpeg(pic()), "upper-ext", "good", ".JPG")
    w.file("formats/photo.jpeg", _jpeg(pic()), "ext-jpeg", "good")
    w.file("formats/photo.bmp", _encode(pic(), "BMP"), "ext-bmp", "good")
    w.file("formats/photo.gif", _encode(pic().quantize(64), "GIF"), "ext-gif", "good")
    w.file("formats/photo.tif", _encode(pic(), "TIFF"), "ext-tif", "good")
    w.file(
        "formats/photo.tiff", _encode(pic(), "TIFF", compression="tiff_lzw"), "ext-tiff-lzw", "good"
    )
    w.file("formats/photo.webp", _encode(pic(), "WEBP", quality=80), "ext-webp", "good")
    w.file(
        "formats/lossless.webp",
        _encode(pic().convert("RGBA"), "WEBP", lossless=True),
        "webp-lossless-rgba",
        "good",
    )
    w.file("formats/progressive.jpg", _jpeg(pic(), progressive=True), "progressive-jpeg", "good")
    w.file("modes/gray.jpg", _jpeg(pic().convert("L")), "grayscale-jpeg", "good", "mode L")
    rgba = pic().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    w.file("modes/rgba.png", _png(rgba), "rgba-png", "good", "mode RGBA")
    w.file("modes/tiny_2x2.png", _png(pic(2, 2)), "tiny-2x2", "good", "2x2")
    w.file("modes/tiny_1x1.png", _png(pic(1, 1)), "tiny-1x1", "good", "1x1")
    thin = "1:3000: refused with a reason (over imgret's aspect limit) or centre-cropped"
    w.file("modes/thin_1x3000.png", _png(pic(1, 3000)), "thin-1x3000", "either", thin)
    w.file("modes/thin_3000x1.png", _png(pic(3000, 1)), "thin-3000x1", "either", thin)
    ramp = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    w.file("modes/gray16.png", _png(Image.fromarray(ramp)), "png-16bit", "good", "mode I;16")
    w.file("modes/cmyk.jpg", _jpeg(pic().convert("CMYK")), "cmyk-jpeg", "good", "mode CMYK")
    pal = pic().quantize(16)
    w.file(
        "modes/palette_trns.png",
        _png(pal, transparency=0),
        "palette-png-transparency",
        "good",
        "mode P with tRNS",
    )
    w.file("modes/la.png", _png(pic().convert("LA")), "la-png", "good", "mode LA")
    w.file("modes/bilevel.png", _png(pic().convert("1")), "bilevel-png", "good", "mode 1")
    w.file(
        "modes/gray16.tif", _encode(Image.fromarray(ramp), "TIFF"), "i16-tiff", "good", "mode I;16"
    )
    w.file(
        "modes/int32.tif",
        _encode(Image.fromarray(ramp.astype(np.int32)), "TIFF"),
        "i32-tiff",
        "good",
        "mode I",
    )
    fl = (np.linspace(-1.0, 2.5, 96 * 64).reshape(64, 96)).astype(np.float32)
    w.file(
        "modes/float.tif",
        _encode(Image.fromarray(fl), "TIFF"),
        "float-tiff",
        "good",
        "mode F, values -1..2.5",
    )
    frames = [pic(80, 60).quantize(32) for _ in range(3)]
    w.file(
        "anim/animated.gif",
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "animated-gif",
        "good",
        "3 frames",
    )
    pages = [pic(80, 60) for _ in range(3)]
    w.file(
        "anim/multipage.tif",
        _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
        "multipage-tiff",
        "good",
        "3 pages",
    )
    w.file(
        "anim/animated.png",
        _encode(pages[0], "PNG", save_all=True, append_images=pages[1:]),
        "apng",
        "good",
        "3 frames",
    )
    w.file(
        "anim/animated.webp",
        _encode(pages[0], "WEBP", save_all=True, append_images=pages[1:]),
        "animated-webp",
        "good",
        "3 frames",
    )
    w.file("odd/jpeg_named.png", _jpeg(pic()), "wrong-extension", "good", "JPEG data named .png")
    w.file(
        "odd/trailing.png",
        _png(pic()) + b"\0garbage after IEND" * 50,
        "trailing-garbage",
        "good",
        "bytes after IEND",
    )

    # ---- EXIF ---------------------------------------------------------------------------------
    upright = orientation_reference()
    for n, op in _STORE_FOR_ORIENTATION.items():
        exif = Image.Exif()
        exif[0x0112] = n
        stored = upright if op is None else upright.transpose(op)
        w.file(
            f"exif/orientation_{n}.jpg",
            _jpeg(stored, exif=exif.tobytes()),
            "exif-orientation",
            "good",
            f"orientation={n}",
        )
    for n in (0, 9):
        exif = Image.Exif()
        exif[0x0112] = n
        w.file(
            f"exif/orientation_invalid_{n}.jpg",
            _jpeg(upright, exif=exif.tobytes()),
            "exif-orientation-invalid",
            "good",
            f"orientation={n} (invalid: keep as stored)",
        )
    # An Exif APP1 whose IFD0 claims 0xFFFF entries and points past the end of the segment.
    bad_exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF)
    bad_exif += struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack(
        "<HHII", 0x8769, 4, 1, 0x7FFFFFF0
    )
    w.file(
        "exif/corrupt_exif.jpg",
        _jpeg_with_app1(_jpeg(pic()), bad_exif),
        "jpeg-corrupt-exif",
        "good",
        "pixel data intact, EXIF IFD broken: ignore the EXIF",
    )
    w.file(
        "exif/exif_not_tiff.jpg",
        _jpeg_with_app1(_jpeg(pic()), b"Exif\0\0not a tiff header"),
        "jpeg-exif-garbage",
        "good",
        "Exif APP1 without a TIFF header",
    )

    # ---- names --------------------------------------------------------------------------------
    def non_utf8() -> None:
        bname = b"names/caf\xe9.jpg"
        os.makedirs(os.path.join(w.broot, b"names"), exist_ok=True)
        with open(os.path.join(w.broot, bname), "wb") as f:
            f.write(_jpeg(pic()))
        w.add(os.fsdecode(bname), "non-utf8-name", "good", "bytes name b'caf\\xe9.jpg'")

    w.try_("non-utf8-name", non_utf8)
    w.try_(
        "newline-name", lambda: w.file("names/new\nline.jpg", _jpeg(pic()), "newline-name", "good")
    )
    w.file("names/-rf.jpg", _jpeg(pic()), "dash-name", "good", "starts with a dash")
    w.file("names/--help.png", _png(pic()), "dash-name", "good", "starts with two dashes")
    w.file("names/quote ' \" ; $(x) `y` *.png", _png(pic()), "shell-metachar-name", "good")
    w.file("names/" + "l" * 246 + ".jpg", _jpeg(pic()), "long-name", "good", "250 bytes")
    w.file("names/\u00e9t\u00e9 \u65e5\u672c.png", _png(pic()), "unicode-name", "good")
    w.file("names/caf\u00e9.png", _png(pic()), "unicode-nfc-nfd", "good", "NFC")
    w.file("names/cafe\u0301.png", _png(pic()), "unicode-nfc-nfd", "good", "NFD")
    w.file("names/Same.jpg", _jpeg(pic()), "case-collision", "good", "Same.jpg")
    w.file("names/same.jpg", _jpeg(pic()), "case-collision", "good", "same.jpg")

    # ---- ignored: hidden, not an image by name, not a regular file -----------------------------
    w.file(".hidden.jpg", _jpeg(pic()), "hidden-file", "ignored", "good image, hidden")
    w.file(".cache/inside.jpg", _jpeg(pic()), "hidden-folder", "ignored", "good image in .cache/")
    w.file("notes.txt", b"not an image\n", "non-image-extension", "ignored")
    w.file("backup.png.bak", _png(pic()), "non-image-extension", "ignored", "good PNG bytes")
    w.file("no_extension", _png(pic()), "no-extension", "ignored", "good PNG bytes")
    w.file(
        "folder.jpg/inner.png", _png(pic()), "image-in-folder-named-jpg", "good", "label folder.jpg"
    )
    w.add("folder.jpg", "folder-named-jpg", "ignored", "a directory named like an image")

    def fifo() -> None:
        os.mkfifo(root / "fifo.jpg")
        w.add("fifo.jpg", "fifo", "ignored", "named pipe: opening it for reading blocks")

    w.try_("fifo", fifo)
    w.symlink(
        "zero.png",
        "/dev/zero",
        "device-file",
        "ignored",
        "symlink to /dev/zero: endless; must not be read to the end",
    )
    w.symlink("null.jpg", "/dev/null", "device-file-null", "ignored", "symlink to /dev/null")
    w.symlink("loop_a.jpg", "loop_b.jpg", "symlink-loop", "ignored", "a -> b")
    w.symlink("loop_b.jpg", "loop_a.jpg", "symlink-loop", "ignored", "b -> a")
    w.symlink(
        "dangling.jpg",
        "does-not-exist.jpg",
        "dangling-symlink",
        "ignored",
        "broken link: may also be reported",
    )
    w.symlink(
        "selfloop",
        ".",
        "dir-symlink-loop",
        "ignored",
        "link to the root itself: following it never ends",
    )
    w.symlink("cats/up", "..", "dir-symlink-loop", "ignored", "link to the parent folder")
    first_good = w.cases[0].name
    w.symlink(
        "alias.jpg",
        first_good,
        "inside-link",
        "either",
        f"link to {first_good}: indexing it twice or once are both fine",
    )

    # ---- outside the root ------------------------------------------------------------------------
    out = outside_dir(root)
    (out / "dir").mkdir(parents=True, exist_ok=True)
    (out / "outside.png").write_bytes(_png(pic()))
    (out / "dir" / "in_outside_dir.jpg").write_bytes(_jpeg(pic()))
    w.symlink(
        "outside_link.png",
        os.path.relpath(out / "outside.png", root),
        "outside-link",
        "either",
        "outside-link",
    )
    w.symlink(
        "outside_dir_link",
        os.path.relpath(out / "dir", root),
        "outside-dir-link",
        "either",
        "outside-link (folder)",
    )

    # ---- bad: empty, not images ----------------------------------------------------------------
    w.file("bad/empty.jpg", b"", "zero-byte", "bad")
    w.file("bad/empty.png", b"", "zero-byte", "bad")
    w.file("bad/random.jpg", rng.bytes(4096), "random-bytes", "bad")
    w.file("bad/random.png", rng.bytes(4096), "random-bytes", "bad")
    w.file(
        "bad/random_jpeg_magic.jpg",
        b"\xff\xd8\xff\xe0" + rng.bytes(2048),
        "random-bytes-jpeg-magic",
        "bad",
        "JPEG magic then noise",
    )
    w.file("bad/text.jpg", b"hello, this is text\n" * 20, "text-as-image", "bad")
    w.file(
        "bad/page.png",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "html-as-image",
        "bad",
    )
    w.file(
        "bad/vector.jpg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
        b'width="10" height="10"><rect width="10" height="10"/></svg>\n',
        "svg-as-image",
        "bad",
    )

    # ---- bad: truncated ------------------------------------------------------------------------
    jpg = _jpeg(pic(160, 120))
    sos = _jpeg_marker(jpg, 0xDA)
    w.file("bad/trunc_header.jpg", jpg[:sos], "truncated-jpeg-header", "bad", "cut before SOS")
    w.file("bad/trunc_header2.jpg", jpg[:20], "truncated-jpeg-header", "bad", "first 20 bytes")
    w.file(
        "bad/trunc_mid.jpg",
        jpg[: sos + (len(jpg) - sos) // 2],
        "truncated-jpeg-mid-scan",
        "bad",
        "cut half-way through the scan",
    )
    w.file(
        "bad/trunc_noeoi.jpg",
        jpg[:-2],
        "truncated-jpeg-no-eoi",
        "either",
        "only the EOI marker missing: every row is there, but Pillow refuses it unless "
        "ImageFile.LOAD_TRUNCATED_IMAGES",
    )
    prog = _jpeg(pic(160, 120), progressive=True)
    w.file(
        "bad/trunc_progressive.jpg",
        prog[: len(prog) // 2],
        "truncated-jpeg-progressive",
        "bad",
        "progressive, cut half-way",
    )
    png = _png(pic(160, 120))
    idat = next(c for c in _png_chunks(png) if c[1] == b"IDAT")
    w.file("bad/trunc_header.png", png[:33], "truncated-png-header", "bad", "signature + IHDR")
    w.file("bad/trunc_sig.png", png[:5], "truncated-png-header", "bad", "5 bytes")
    w.file(
        "bad/trunc_mid.png",
        png[: idat[0] + 8 + idat[2] // 2],
        "truncated-png-mid-idat",
        "bad",
        "cut half-way through IDAT",
    )
    w.file(
        "bad/trunc_noiend.png",
        png[:-12],
        "truncated-png-no-iend",
        "either",
        "only IEND missing: Pillow decodes every row",
    )
    webp = _encode(pic(160, 120), "WEBP", quality=80)
    w.file("bad/trunc_header.webp", webp[:30], "truncated-webp-header", "bad", "30 bytes")
    w.file("bad/trunc_mid.webp", webp[: len(webp) // 2], "truncated-webp-mid", "bad", "half")
    w.file("bad/trunc_tail.webp", webp[:-16], "truncated-webp-tail", "bad", "last 16 bytes cut")
    gif = _encode(pic(160, 120).quantize(64), "GIF")
    w.file("bad/trunc_mid.gif", gif[: len(gif) // 2], "truncated-gif-mid", "bad", "half")
    tif = _encode(pic(160, 120), "TIFF")
    w.file("bad/trunc_mid.tif", tif[: len(tif) // 2], "truncated-tiff-mid", "bad", "half")
    bmp = _encode(pic(160, 120), "BMP")
    w.file("bad/trunc_mid.bmp", bmp[: len(bmp) // 2], "truncated-bmp-mid", "bad", "half")

    # ---- bad: lying headers --------------------------------------------------------------------
    tiny_idat = zlib.compress(b"\0" * 64)
    w.file(
        "bad/bomb.png",
        _png_raw(30000, 30000, tiny_idat),
        "png-bomb-header",
        "bad",
        "IHDR claims 30000x30000 (900 Mpx)",
    )
    w.file(
        "bad/bomb.gif",
        _gif_raw(30000, 30000, 30000, 30000, _GIF_LZW_SMALL),
        "gif-bomb-header",
        "bad",
        "screen and frame claim 30000x30000",
    )
    w.file(
        "bad/bomb.jpg",
        _jpeg_with_size(_jpeg(pic(64, 48)), 60000, 60000),
        "jpeg-bomb-header",
        "bad",
        "SOF claims 60000x60000",
    )
    w.file(
        "bad/bomb.tif",
        _tiff_raw(40000, 40000, b"\0" * 64),
        "tiff-bomb-header",
        "bad",
        "tags claim 40000x40000",
    )
    w.file(
        "bad/bomb.bmp",
        _bmp_raw(30000, 30000, b"\0" * 64),
        "bmp-bomb-header",
        "bad",
        "header claims 30000x30000",
    )
    w.file(
        "bad/bomb.webp",
        _webp_size_claim(webp, 16000, 16000),
        "webp-bomb-header",
        "bad",
        "VP8X canvas claims 16000x16000 around a 160x120 frame",
    )
    w.file("bad/width0.png", _png_raw(0, 32, tiny_idat), "png-zero-width", "bad", "width 0")
    w.file("bad/height0.png", _png_raw(32, 0, tiny_idat), "png-zero-height", "bad", "height 0")
    w.file(
        "bad/height0.jpg",
        _jpeg_with_size(_jpeg(pic(64, 48)), 64, 0),
        "jpeg-zero-height",
        "bad",
        "SOF height 0",
    )
    w.file(
        "bad/width0.jpg",
        _jpeg_with_size(_jpeg(pic(64, 48)), 0, 48),
        "jpeg-zero-width",
        "bad",
        "SOF width 0",
    )
    w.file("bad/size0.gif", _gif_raw(0, 0, 0, 0, _GIF_LZW_SMALL), "gif-zero-size", "bad", "0x0")
    w.file("bad/width0.bmp", _bmp_raw(0, 16, b""), "bmp-zero-width", "bad", "width 0")
    w.file("bad/width0.tif", _tiff_raw(0, 16, b"\0" * 16), "tiff-zero-width", "bad", "width 0")
    good_idat = zlib.compress(b"".join(b"\0" + bytes(range(16)) for _ in range(16)))
    w.file(
        "bad/bad_crc.png",
        _png_raw(16, 16, good_idat, ihdr_crc=0xDEADBEEF),
        "png-bad-crc",
        "bad",
        "IHDR CRC wrong",
    )
    w.file(
        "bad/bad_colortype.png",
        _png_raw(16, 16, good_idat, ctype=7),
        "png-bad-colortype",
        "bad",
        "colour type 7",
    )
    w.file(
        "bad/bad_zlib.png",
        _png_raw(16, 16, b"\x78\x9c" + rng.bytes(200)),
        "png-corrupt-zlib",
        "bad",
        "IDAT is not zlib data",
    )
    huge_len = png[:33] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + png[41:200]
    w.file(
        "bad/huge_chunk.png",
        huge_len,
        "png-huge-chunk-length",
        "bad",
        "IDAT length 0x7ffffff0 in a small file",
    )
    bomb_text = _zeros_deflated(64 << 20)  # 64 MiB of zeros in 64 KB
    w.file(
        "bad/ztxt_bomb.png",
        _png_insert(png, _chunk(b"zTXt", b"Comment\0\0" + bomb_text)),
        "png-ztxt-bomb",
        "bad",
        "zTXt inflating to 64 MiB (pixels intact; Pillow refuses: MAX_TEXT_CHUNK)",
    )
    w.file(
        "bad/itxt_bomb.png",
        _png_insert(png, _chunk(b"iTXt", b"Comment\0\1\0\0\0" + bomb_text)),
        "png-itxt-bomb",
        "bad",
        "compressed iTXt inflating to 64 MiB (pixels intact; Pillow refuses)",
    )
    many = b"".join(_chunk(b"tEXt", b"k%d\0" % i + b"x" * 60000) for i in range(40))
    w.file(
        "bad/text_many.png",
        _png_insert(png, many),
        "png-text-many",
        "good",
        "40 tEXt chunks of 60 KB (2.4 MB of text, under Pillow's limits)",
    )
    w.file(
        "bad/compression.tif",
        _tiff_raw(16, 16, b"\x55" * 256, compression=34712),
        "tiff-unsupported-compression",
        "bad",
        "Compression 34712 (JPEG 2000): unknown to Pillow",
    )
    w.file(
        "bad/compression_ccitt.tif",
        _tiff_raw(16, 16, b"\x55" * 256, compression=2),
        "tiff-unsupported-compression",
        "bad",
        "Compression 2 (CCITT) on 8-bit samples: libtiff refuses and prints to stderr",
    )
    w.file(
        "bad/strip_offset.tif",
        _tiff_raw(16, 16, b"\x55" * 256, strip_offset=0x7FFFFF00),
        "tiff-bad-strip-offset",
        "bad",
        "strip offset past the end",
    )
    w.file(
        "bad/offset.bmp",
        _bmp_raw(16, 16, b"\x80" * (16 * 16 * 3), offset=0x7FFFFFF0),
        "bmp-bad-offset",
        "bad",
        "pixel-data offset past the end",
    )
    lzw_bad = bytes([0xFF]) * 40
    w.file(
        "bad/bad_lzw.gif",
        _gif_raw(16, 16, 16, 16, lzw_bad),
        "gif-corrupt-lzw",
        "bad",
        "LZW codes out of range",
    )

    # ---- permissions (after everything else is written) ----------------------------------------
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    unread = "readable all the same when running as root" if is_root else "unreadable"
    w.file(
        "perm/unreadable.jpg",
        _jpeg(pic()),
        "unreadable-file",
        "either" if is_root else "bad",
        f"chmod 000; {unread}",
    )
    os.chmod(root / "perm/unreadable.jpg", 0)
    w.file(
        "perm/locked/inner.jpg",
        _jpeg(pic()),
        "file-in-unreadable-folder",
        "either",
        "inside a chmod-000 folder: listed only when running as root",
    )
    w.add(
        "perm/locked",
        "unreadable-folder",
        "ignored",
        f"chmod 000 folder; {'listable as root' if is_root else 'cannot be listed'}",
    )
    os.chmod(root / "perm/locked", 0)

    # ---- the file a test rewrites mid-run --------------------------------------------------------
    w.file(
        "volatile.jpg",
        _jpeg(pic()),
        "rewritten-while-indexing",
        "either",
        "rewrite_while_indexing() changes it during a run",
    )
    return w.cases


def rewrite_while_indexing(path: Path) -> None:
    """Overwrite the image at `path` in place with a different picture of the same format (by
    its extension), a different size in bytes and a later mtime."""
    path = Path(path)
    old = path.read_bytes()
    digest = hashlib.sha256(old).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    img = _picture(rng, 64 + digest[8] % 64, 64 + digest[9] % 64)
    fmt = {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".png": "PNG",
        ".bmp": "BMP",
        ".gif": "GIF",
        ".webp": "WEBP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
    }.get(path.suffix.lower(), "PNG")
    data = _encode(img if fmt != "GIF" else img.quantize(64), fmt)
    if len(data) == len(old):
        data += b"\0"
    st = path.stat()
    with open(path, "r+b") as f:  # in place (same inode), so a reader may see it half-written
        f.write(data)
        f.truncate()
    mtime = max(path.stat().st_mtime_ns, st.st_mtime_ns + 1_000_000_000)
    os.utime(path, ns=(st.st_atime_ns, mtime))


def summary(cases: Iterable[Case]) -> dict[str, int]:
    """How many cases of each expectation (every key of EXPECTS present)."""
    counts = Counter(c.expect for c in cases)
    return {e: counts.get(e, 0) for e in EXPECTS}
