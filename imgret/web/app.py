"""The FastAPI app: pages (plain HTML + JS in static/) and the JSON API they use.

Routes (answers to bad input: 4xx with {"detail": message}; bad page addresses: a 404 page):

    GET  /                     search page        GET  /api/info            the collection
    GET  /collection           collection page    GET  /api/items           a page of images
    GET  /clusters/{c}         a cluster's page   GET  /api/items/{id}      one image
    GET  /duplicates           near-duplicates    GET  /api/facets          labels, folders
    GET  /add                  add images (*)     POST /api/search          search by upload
    GET  /login                the token's page   GET  /api/search/{id}     more like this
    GET  /docs, /redoc         API documentation  GET  /api/clusters[/{c}]  clusters
    GET  /openapi.json         the API schema     GET  /api/duplicates      duplicate groups
    GET  /api/thumbs/{id}      thumbnail          GET  /api/images/{id}     the full image
    GET  /api/plots/{name}     elbow, clusters, loss, reconstructions
    (*) with --allow-add: POST /api/add/files, /api/add/folder, /api/remove; GET /api/jobs/{id}
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..core.errors import UserError
from .api import add_api
from .auth import TokenGate
from .config import WebConfig
from .errors import WebError
from .fastpath import SearchFastPath
from .middleware import BodyLimit, CrossSiteGuard, HostGuard, SecurityHeaders
from .pages import add_pages
from .service import CollectionService

__all__ = ["create_app"]

_MULTIPART_SLACK = 64 * 1024  # room for the multipart envelope around the image


def create_app(
    collection_path: str | Path, *, token: str | None = None, config: WebConfig | None = None
) -> FastAPI:
    """The web app of one collection; its model is loaded here, once, and the collection is
    followed as it changes (see service.CollectionService).

    `token`: when given, every request must carry it (see auth.TokenGate). Raises UserError
    for a folder that is not a collection, a token with unsafe characters, or an --allow-add
    folder that does not exist.
    """
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{8,}", token):
        raise UserError("the access token must be 8 or more of the characters A-Z a-z 0-9 . _ ~ -")
    config = config or WebConfig()
    if config.allow_add is not None and not Path(config.allow_add).is_dir():
        raise UserError(f"--allow-add {config.allow_add}: no such folder")
    service = CollectionService(collection_path, config)
    app = FastAPI(
        title="imgret",
        summary=f"Search the image collection {service.path.resolve().name}",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    add_api(app, service, config)
    larger = {}
    if config.allow_add is not None:
        from .adding import AddJobs
        from .api_add import ADD_UPLOAD_PATH, add_jobs_api

        app.state.jobs = AddJobs(service, Path(config.allow_add))
        add_jobs_api(app, app.state.jobs, config)
        larger[ADD_UPLOAD_PATH] = config.max_add_bytes
    add_pages(app, service)
    # Added innermost first: the security headers wrap everything; innermost, searches by id
    # that need none of FastAPI's checks skip it (fastpath.py).
    app.add_middleware(SearchFastPath, service=service, max_k=config.max_k)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes + _MULTIPART_SLACK,
                       larger=larger)  # fmt: skip
    app.add_middleware(TokenGate, token=token)
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(HostGuard, allowed=tuple(config.allowed_hosts))
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app
