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
