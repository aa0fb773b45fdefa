"""The local web app: a search page, a collection page and a JSON API over one collection.

`create_app(collection)` builds the FastAPI app (the collection and its model are loaded once);
`serve(collection)` runs it with uvicorn on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from .app import create_app
from .config import WebConfig
from .server import serve

__all__ = ["create_app", "serve", "WebConfig"]
