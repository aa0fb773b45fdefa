"""Where the time of a 12-MP JPEG goes, per image, on one core (issue 12's profile):

    python scripts/decode_profile.py [FOLDER_12MP] [FOLDER_SMALL]

Stages, each timed on the same files (median ms per image): read the bytes; decode at full
resolution; decode with JPEG DCT scaling (`Image.draft`) at 1/2, 1/4 and 1/8; imgret's own
`decode_image` at the model's 224 px (what `imgret index` does); and its `to_array` (resize
to 224 + uint8 array). bench.throughput makes the folders (bench-out/throughput/).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from imgret.data.images import decode_image, read_image_file, to_array

ROOT = Path(__file__).resolve().parent.parent / "bench-out" / "throughput"


def _ms(fn, items) -> float:  # noqa: ANN001
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _draft(data: bytes, factor: int) -> None:
    with Image.open(io.BytesIO(data)) as img:
        if factor > 1:
            img.draft("RGB", (img.size[0] // factor, img.size[1] // factor))
        img.load()


def profile(folder: Path, n: int = 30) -> dict[str, float]:
    files = sorted(folder.rglob("*.jpg"))[:n]
    blobs = [read_image_file(p) for p in files]
    decoded = [decode_image(b, target=224).image for b in blobs]
    with Image.open(io.BytesIO(blobs[0])) as first:
        size = first.size
    out = {"pixels (first file)": f"{size[0]}x{size[1]}", "read": _ms(read_image_file, files)}
    for factor in (1, 2, 4, 8):
        out[f"decode 1/{factor}"] = _ms(lambda b, f=factor: _draft(b, f), blobs)
    out["imgret decode_image(target=224)"] = _ms(lambda b: decode_image(b, target=224), blobs)
    out["imgret to_array(224)"] = _ms(lambda im: to_array(im, 224, 3), decoded)
    return out


def main() -> None:
    big = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "caltech-900-12mp-150"
    small = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "caltech-900"
    for name, folder in (("12 MP", big), ("small", small)):
        figures = profile(folder)
        print(f"{name} ({folder}, 30 files, median ms per image, one core):")
        for k, v in figures.items():
            print(f"  {k:34s} {v if isinstance(v, str) else f'{v:7.1f}'}")


if __name__ == "__main__":
    main()
