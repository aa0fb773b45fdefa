"""`imgret serve`: the local web app (search page, collection page, JSON API)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import float_in, int_in

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="search a collection in the browser (a local web app and HTTP API)",
        description="Serve a search page, a collection page and a JSON API (schema at "
        "/openapi.json) for a collection. Binds to 127.0.0.1 unless --host says otherwise; on "
        "any other address a random access token is required unless --token or --no-token. "
        "Thumbnails are cached in COLLECTION/thumbs (or --cache-dir).",
    )
    p.add_argument("collection", help="collection folder made by `imgret embed`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int_in(0, 65535), default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        help="access token every request must carry (default: $IMGRET_TOKEN; a "
        "random one on non-local addresses)",
    )
    p.add_argument(
        "--no-token",
        action="store_true",
        help="serve a non-local address without a token (not recommended)",
    )
    p.add_argument("--cache-dir", type=Path, help="thumbnail cache (default: COLLECTION/thumbs)")
    p.add_argument(
        "--max-upload-mb",
        type=float_in(0, 10_000, above=True),
        default=20.0,
        help="largest query image accepted, MB (default: 20)",
    )
    p.add_argument(
        "--allow-add",
        type=Path,
        metavar="DIR",
        help="let the pages add images (uploaded files, kept in COLLECTION/uploads, or folders "
        "under DIR) and remove images (under DIR or uploaded); off by default",
    )
    p.add_argument(
        "--threads",
        type=int_in(1, 1024),
        default=1,
        help="torch, BLAS and FAISS threads per search (default: 1); concurrent searches "
        "are ranked together in batches, and uploads are embedded as many at once as there are "
        "cores per thread count",
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    import os

    from ..web import WebConfig, serve

    config = WebConfig(
        max_upload_bytes=int(a.max_upload_mb * 1024 * 1024),
        cache_dir=a.cache_dir,
        threads=a.threads,
        allow_add=a.allow_add.expanduser().resolve() if a.allow_add else None,
    )
    require = False if a.no_token else None
    token = a.token or os.environ.get("IMGRET_TOKEN") or None
    serve(a.collection, host=a.host, port=a.port, token=token, require_token=require, config=config)
    return 0
