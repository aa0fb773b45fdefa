from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgret.data.images import ImageError, open_image, scan_folder, to_array


def test_scan_finds_images_recursively_and_ignores_other_files(image_folder: Path) -> None:
    paths = scan_folder(image_folder)
    names = {p.relative_to(image_folder).as_posix() for p in paths}
    assert "more/disc/00.png" in names
    assert "notes.txt" not in names
    assert "red/corrupt.jpg" in names  # found; decoding decides later
    assert paths == sorted(paths)
    assert len(paths) == 24 + 3


def test_scan_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / ".thumbs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".thumbs" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / ".b.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "c.PNG")
    assert [p.name for p in scan_folder(tmp_path)] == ["c.PNG"]


@pytest.mark.parametrize("name", ["red/corrupt.jpg", "blue/empty.png", "fake.png"])
def test_bad_files_raise_image_error(image_folder: Path, name: str) -> None:
    with pytest.raises(ImageError, match=Path(name).name):
        open_image(image_folder / name)


def test_truncated_file_raises(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "a.png"
    )
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        open_image(tmp_path / "t.png")


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(tmp_path / "big.png")


def test_grayscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (5, 5), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 5), (255, 0, 0, 0)).save(tmp_path / "a.png")  # fully transparent
    Image.new("P", (5, 5), 3).save(tmp_path / "p.gif")
    assert open_image(tmp_path / "g.png").getpixel((0, 0)) == (77, 77, 77)
    assert open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # on white
    assert open_image(tmp_path / "p.gif").mode == "RGB"
    assert open_image(tmp_path / "a.png", mode="L").mode == "L"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif)
    assert open_image(tmp_path / "r.jpg").size == (20, 40)


def test_to_array_resizes_and_center_crops() -> None:
    # left half black, right half white; 40x20 -> 10x10 keeps the middle 20x20 square
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 20:] = 255
    out = to_array(Image.fromarray(arr), 10, 1)
    assert out.shape == (1, 10, 10) and out.dtype == np.uint8
    assert out[0, 5, 0] == 0 and out[0, 5, 9] == 255
    rgb = to_array(Image.fromarray(arr), 8, 3)
    assert rgb.shape == (3, 8, 8)


def _asymmetric(w: int, h: int) -> Image.Image:
    """A picture whose orientation can be read back: red top-left corner, blue bottom edge."""
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[: h // 4, : w // 4] = (255, 0, 0)
    arr[-h // 8 :, :] = (0, 0, 255)
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_draft_decoding_keeps_orientation_and_colour(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    _asymmetric(1600, 1200).save(tmp_path / "big.jpg", exif=exif, quality=90)
    full = open_image(tmp_path / "big.jpg")
    small = open_image(tmp_path / "big.jpg", target=64)
    assert full.mode == small.mode == "RGB"
    assert small.size[0] < full.size[0] and min(small.size) >= 2 * 64  # decoded at 1/8 .. 1/2
    assert (small.size[0] > small.size[1]) == (full.size[0] > full.size[1])  # same turn
    a = to_array(full, 32, 3).astype(int)
    b = to_array(small, 32, 3).astype(int)
    assert np.abs(a - b).mean() < 4  # the same picture, upright the same way
    gray = open_image(tmp_path / "big.jpg", mode="L", target=64)
    assert gray.mode == "L"


def test_small_jpegs_and_other_formats_are_decoded_in_full(tmp_path: Path) -> None:
    _asymmetric(300, 200).save(tmp_path / "a.jpg")
    _asymmetric(1600, 1200).save(tmp_path / "b.png")
    assert open_image(tmp_path / "a.jpg", target=224).size == (300, 200)
    assert open_image(tmp_path / "b.png", target=64).size == (1600, 1200)


@pytest.mark.parametrize("size", [(1, 3000), (3000, 1), (1, 100_000), (50, 1001)])
def test_extreme_aspect_ratios_are_refused_from_the_header(tmp_path: Path, size) -> None:
    Image.new("L", size, 200).save(tmp_path / "thin.png")
    with pytest.raises(ImageError, match="times longer than wide"):
        open_image(tmp_path / "thin.png")


def test_to_array_of_a_long_image_resizes_only_its_centre() -> None:
    arr = np.zeros((30, 570), np.uint8)  # 19:1, allowed
    arr[:, 270:300] = 255  # the central square is white
    out = to_array(Image.fromarray(arr), 16, 1)
    assert out.min() == 255


def test_float_and_16_bit_images_are_scaled_not_black(tmp_path: Path) -> None:
    ramp = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    Image.fromarray((ramp * 4000).astype(np.uint16)).save(tmp_path / "i16.png")
    for name in ("f.tif", "i16.png"):
        arr = np.asarray(open_image(tmp_path / name, mode="L"))
        assert arr.max() >= 250 and arr.min() <= 5, name


def test_pillow_warnings_are_returned_not_printed(
    recwarn: pytest.WarningsRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import struct

    from imgret.data.images import decode_image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="JPEG")
    # An Exif segment whose first directory claims 65535 entries: Pillow warns, then goes on.
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 0xFFFF) + b"\0" * 12
    data = buf.getvalue()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]
    decoded = decode_image(data, name="x.jpg")
    assert decoded.image.size == (8, 8)
    assert decoded.warnings and "EXIF" in " ".join(decoded.warnings).upper()
    assert len(recwarn) == 0 and capsys.readouterr().err == ""


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        open_image(tmp_path / "pipe.jpg")


def test_decoding_errors_name_the_file_not_a_buffer_and_memory_errors_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imgret.data.images import decode_image

    with pytest.raises(ImageError) as info:
        decode_image(b"not an image at all", name="x.png")
    assert "x.png" in str(info.value) and "BytesIO" not in str(info.value)

    def out_of_memory(*args: object, **kw: object) -> None:
        raise MemoryError

    monkeypatch.setattr(Image, "open", out_of_memory)
    with pytest.raises(MemoryError):
        decode_image(b"\x89PNG", name="y.png")
