"""Settings of the web app (limits, thumbnail cache, thread use, adding images)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["WebConfig", "LOOPBACK_HOSTS", "DEFAULT_K"]

DEFAULT_K = 12  # results of a search that does not say k (the API, its fast path, the pages)

# Host header values always accepted when serving on a loopback address: a page on another
# site that rebinds its own DNS name to 127.0.0.1 is then refused (DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class WebConfig:
    max_upload_bytes: int = 20 * 1024 * 1024  # largest query image accepted (413 above)
    max_pixels: int = 50_000_000  # width x height above this is refused as a decompression bomb
    max_k: int = 200  # most results one search returns
    max_page: int = 200  # most items one listing page returns
    cluster_samples: int = 8  # images per cluster strip on the collection page
    thumb_size: int = 160  # longest side of a thumbnail, pixels
    cache_dir: Path | None = None  # thumbnail cache; None: <collection>/thumbs
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header check; ("*",) turns it off
    threads: int | None = None  # torch, BLAS and FAISS threads per search; None: as they are
    # Adding and removing images from the pages: off (None), or the folder under which
    # server-side folders may be added. Uploaded files are kept in <collection>/uploads/.
    allow_add: Path | None = None
    max_add_bytes: int = 500 * 1024 * 1024  # largest upload of files to add, all together
    max_add_files: int = 2000  # most files one upload may add
    duplicate_threshold: float = 0.95  # default similarity of the duplicates page
