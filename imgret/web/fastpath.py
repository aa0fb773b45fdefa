"""The busiest request, "more like this", answered without FastAPI's per-request machinery.

Under bench.web's load, FastAPI's routing, reading and validating six parameters, and
validating and serializing the answer held the GIL for about a quarter of the server's
samples (py-spy) and made the search thread wait for it. `SearchFastPath` answers
`GET /api/search/{id}` when its query string holds only `k` (1 to max_k), `mode` and
`rerank=false` (or no `rerank` where the collection's default is not to re-rank), and no
reload of the collection is due: the same service call as the route in api.py, serialized by
pydantic-core as FastAPI would. Everything else (other parameters, values it would refuse,
a reload) goes on to FastAPI, which stays the documented API and gives its errors.

It sits inside the Host check, access token, cross-site guard and security headers (app.py).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from pydantic_core import to_json
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import UserError
from .config import DEFAULT_K
from .errors import WebError
from .middleware import send_json
from .service import MODES, CollectionService

__all__ = ["SearchFastPath"]

_PATH = re.compile(r"/api/search/([0-9]{1,18})")
_COUNT = re.compile(r"[0-9]{1,9}")


class SearchFastPath:
    """ASGI middleware: searches by id with only `k` and `mode`, not re-ranked, straight to
    the service."""

    def __init__(self, app: ASGIApp, service: CollectionService, max_k: int) -> None:
        self.app = app
        self.service = service
        self.max_k = max_k

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            found = _PATH.fullmatch(scope["path"])
            params = self._params(scope["query_string"]) if found else None
            if found and params is not None and not self.service.stale():
                await self._search(int(found[1]), *params, send)
                return
        await self.app(scope, receive, send)

    def _params(self, query: bytes) -> tuple[int, str] | None:
        """(k, mode) of a query string this path answers; None: leave it to FastAPI."""
        k, mode, rerank = DEFAULT_K, "index", None
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == "k" and _COUNT.fullmatch(value) and 1 <= int(value) <= self.max_k:
                k = int(value)
            elif name == "mode" and value in MODES:
                mode = value
            elif name == "rerank" and value == "false":
                rerank = False
            else:
                return None
        return None if self.service.rerank_for(rerank, mode) else (k, mode)

    async def _search(self, item: int, k: int, mode: str, send: Send) -> None:
        try:
            answer = await self.service.search_item_async(item, k, mode)
        except WebError as e:  # as the app's exception handlers answer them
            await send_json(send, e.status, e.message)
            return
        except UserError as e:
            await send_json(send, 400, str(e))
            return
        body = to_json(answer)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
