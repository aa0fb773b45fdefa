"""The FastAPI app: pages (plain HTML + JS in static/) and the JSON API they use.

Routes (all answers to bad input are 4xx with {"detail": message}):

    GET  /                     search page        GET  /api/info            the collection
    GET  /collection           collection page    GET  /api/items           a page of images
    GET  /clusters/{c}         a cluster's page   GET  /api/items/{id}      one image
    POST /api/search           search by upload   GET  /api/search/{id}     more like this
    GET  /api/clusters         clusters, a page   GET  /api/clusters/{c}    a cluster's images
    GET  /api/thumbs/{id}      thumbnail (cached) GET  /api/images/{id}     the full image
    GET  /api/plots/{name}     elbow, clusters, loss, reconstructions
    GET  /openapi.json, /docs  the API schema
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the route
# functions, whose types (K, Offset, Limit) are local to _add_api.
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..core.errors import UserError
from . import schemas
from .config import WebConfig
from .errors import WebError
from .files import ImageBlob
from .middleware import BodyLimit, SecurityHeaders, TokenGate
from .service import PLOTS, CollectionService
from .uploads import decode_upload

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
_MULTIPART_SLACK = 64 * 1024  # room for the multipart envelope around the image
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Problem} for code in (400, 401, 403, 404, 413, 415)
}
Mode = Literal["exact", "cluster"]


def create_app(
    collection_path: str | Path, *, token: str | None = None, config: WebConfig | None = None
) -> FastAPI:
    """The web app of one collection; the collection and its model are loaded here, once.

    `token`: when given, every request must carry it (see middleware.TokenGate). Raises
    UserError for a folder that is not a collection or a token with unsafe characters.
    """
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{8,}", token):
        raise UserError("the access token must be 8 or more of the characters A-Z a-z 0-9 . _ ~ -")
    config = config or WebConfig()
    service = CollectionService(collection_path, config)
    app = FastAPI(
        title="imgret",
        summary=f"Search the image collection {service.collection.path.resolve().name}",
        version="0.1.0",
    )
    app.state.service = service
    _add_api(app, service, config)
    _add_pages(app)
    # Added innermost first: the security headers wrap everything, the body limit is innermost.
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes + _MULTIPART_SLACK)
    app.add_middleware(TokenGate, token=token)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


def _blob_response(blob: ImageBlob, max_age: int) -> Response:
    headers = {"cache-control": f"private, max-age={max_age}"}
    if blob.path is not None:
        return FileResponse(blob.path, media_type=blob.media_type, headers=headers)
    return Response(blob.data, media_type=blob.media_type, headers=headers)


def _add_api(app: FastAPI, service: CollectionService, config: WebConfig) -> None:
    K = Annotated[int, Query(ge=1, le=config.max_k, description="number of results")]
    Offset = Annotated[int, Query(ge=0, description="first entry of the page")]
    Limit = Annotated[int, Query(ge=1, le=config.max_page, description="entries per page")]

    @app.get("/api/info", response_model=schemas.Info, responses=_ERRORS, tags=["collection"])
    def info() -> dict:
        """Size, model, index type, clustering and the plots that exist."""
        return service.info()

    @app.get("/api/items", response_model=schemas.ItemPage, responses=_ERRORS, tags=["collection"])
    def items(offset: Offset = 0, limit: Limit = 60) -> dict:
        """A page of the collection's images, in stored order."""
        return service.items(offset, limit)

    @app.get(
        "/api/items/{item_id}", response_model=schemas.Item, responses=_ERRORS, tags=["collection"]
    )
    def item(item_id: int) -> dict:
        """One image of the collection."""
        return service.item(item_id)

    @app.post(
        "/api/search", response_model=schemas.SearchResult, responses=_ERRORS, tags=["search"]
    )
    async def search_upload(
        file: Annotated[UploadFile, File(description="the query image (JPEG, PNG, ...)")],
        k: Annotated[int, Form(ge=1, le=config.max_k)] = 12,
        mode: Annotated[Mode, Form()] = "exact",
        rerank: Annotated[bool, Form()] = False,
    ) -> dict:
        """Rank the collection for an uploaded image (exact, or inside its cluster; `rerank`:
        label-free re-ranking, DBA + alpha query expansion, exact mode only)."""
        data = await file.read(config.max_upload_bytes + 1)
        name = Path(file.filename or "upload").name

        def run() -> dict:  # CPU-bound: decode, embed and rank in the thread pool
            image = decode_upload(
                data, max_bytes=config.max_upload_bytes, max_pixels=config.max_pixels
            )
            return service.search_image(image, name, k, mode, rerank)

        return await run_in_threadpool(run)

    @app.get(
        "/api/search/{item_id}",
        response_model=schemas.SearchResult,
        responses=_ERRORS,
        tags=["search"],
    )
    def search_item(item_id: int, k: K = 12, mode: Mode = "exact", rerank: bool = False) -> dict:
        """More like this: rank the collection for one of its images (left out of the hits;
        `rerank` as for an upload)."""
        return service.search_item(item_id, k, mode, rerank)

    @app.get(
        "/api/clusters", response_model=schemas.ClusterPage, responses=_ERRORS, tags=["collection"]
    )
    def clusters(offset: Offset = 0, limit: Limit = 20) -> dict:
        """A page of clusters: size and the images nearest each centroid."""
        return service.clusters(offset, limit)

    @app.get(
        "/api/clusters/{cluster}",
        response_model=schemas.ClusterItems,
        responses=_ERRORS,
        tags=["collection"],
    )
    def cluster(cluster: int, offset: Offset = 0, limit: Limit = 60) -> dict:
        """A page of one cluster's images, most central first."""
        return service.cluster(cluster, offset, limit)

    image_responses: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        200: {"content": {"image/*": {}}},
    }

    @app.get(
        "/api/thumbs/{item_id}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def thumb(item_id: int) -> Response:
        """The thumbnail of an image, made on first request and cached."""
        return _blob_response(service.files.thumbnail(service.key(item_id)), 86400)

    @app.get(
        "/api/images/{item_id}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def image(item_id: int) -> Response:
        """The full image, only a file inside the collection's folder."""
        return _blob_response(service.files.full_image(service.key(item_id)), 3600)

    @app.get(
        "/api/plots/{name}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def plot(name: Literal[PLOTS]) -> Response:  # type: ignore[valid-type]
        """A plot of the collection (elbow, clusters) or of its model (loss, reconstructions)."""
        path = service.plot_path(name)
        if path is None:
            raise WebError(404, f"no {name} plot for this collection")
        return _blob_response(ImageBlob("image/png", path=path), 60)


def _add_pages(app: FastAPI) -> None:
    def page(name: str) -> FileResponse:
        return FileResponse(
            STATIC / name, media_type="text/html", headers={"cache-control": "no-cache"}
        )

    @app.get("/", include_in_schema=False)
    def search_page() -> FileResponse:
        return page("index.html")

    @app.get("/collection", include_in_schema=False)
    def collection_page() -> FileResponse:
        return page("collection.html")

    @app.get("/clusters/{cluster}", include_in_schema=False)
    def cluster_page(cluster: int) -> FileResponse:
        return page("cluster.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
