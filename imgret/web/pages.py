"""The HTML pages (plain HTML + JS in static/), the API documentation, and the app's 404 page.

A bad address outside /api/ (an unknown path, /clusters/abc, a cluster that does not exist)
gets the app's own "not found" page with status 404; API routes answer JSON.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .service import CollectionService

__all__ = ["add_pages", "STATIC", "docs_assets"]

STATIC = Path(__file__).resolve().parent / "static"
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_PAGES = {
    "/": "index.html", "/collection": "collection.html", "/duplicates": "duplicates.html",
}  # fmt: skip


def docs_assets() -> Path | None:
    """Swagger UI and ReDoc as the `fastapi-offline` package ships them (None: not installed)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _page(name: str, status: int = 200) -> FileResponse:
    return FileResponse(STATIC / name, status_code=status, media_type="text/html",
                        headers={"cache-control": "no-cache"})  # fmt: skip


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/openapi.json", "/static/", "/vendor/"))


def add_pages(app: FastAPI, service: CollectionService) -> None:
    for url, name in _PAGES.items():
        app.add_api_route(url, lambda name=name: _page(name), include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # the pages say `rel="icon" href="data:,"`

    @app.get("/clusters/{cluster}", include_in_schema=False)
    def cluster_page(cluster: int) -> FileResponse:
        c = service.current().clustering
        return _page("cluster.html" if c is not None and 0 <= cluster < c.k else "notfound.html",
                     200 if c is not None and 0 <= cluster < c.k else 404)  # fmt: skip

    @app.get("/add", include_in_schema=False)
    def add_page() -> FileResponse:
        if service.config.allow_add is None:
            return _page("notfound.html", 404)
        return _page("add.html")

    assets = docs_assets()

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return _page("docs.html" if assets else "nodocs.html")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> FileResponse:
        return _page("redoc.html" if assets else "nodocs.html")

    if assets is not None:
        redoc_js: list[bytes] = []

        @app.get("/vendor/redoc.standalone.js", include_in_schema=False)
        def redoc_script() -> Response:
            # ReDoc shows its makers' logo from their site; the package's icon instead, so
            # that the page asks no other host for anything.
            if not redoc_js:
                text = (assets / "redoc.standalone.js").read_bytes()
                redoc_js.append(text.replace(_REDOC_LOGO, b"/vendor/favicon.png"))
            return Response(redoc_js[0], media_type="text/javascript",
                            headers={"cache-control": "max-age=86400"})  # fmt: skip

        app.mount("/vendor", StaticFiles(directory=assets), name="vendor")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def _not_found(request: Request, exc: HTTPException) -> Response:
        if _is_api(request) or exc.status_code != 404:
            headers = getattr(exc, "headers", None)
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)
        return _page("notfound.html", 404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": _jsonable(exc.errors())}, 422)
        return _page("notfound.html", 404)


def _jsonable(errors: object) -> object:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors)
