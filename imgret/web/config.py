"""Settings of the web app (limits, thumbnail cache, thread use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["WebConfig", "LOOPBACK_HOSTS"]

# Host header values accepted when serving on the loopback interface: a page on another site
# that rebinds its own DNS name to 127.0.0.1 is then refused (DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


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
    threads: int | None = None  # torch and BLAS threads per search; None: leave as they are
